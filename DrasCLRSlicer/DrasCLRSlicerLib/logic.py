"""The module's Logic, free of Qt: everything a button of the panel does is a method here.

``DrasCLRLogic(scene)`` turns a CT volume node into result nodes:

- ``<CT> subtypes``: segmentation with the four subtype segments (names/colours from the terminology JSON);
  absent while the engine has no subtype model (``Analysis.subtypes is None``);
- ``<CT> regions``: segmentation with one segment per lobe (1-5) or zone (11-16); without a lobe input the
  engine estimates the lobes (``regions="zones"`` for zones), as ``drasclr analyze`` does;
- ``<CT> statistics``: table node, columns ``drasclr.analysis.stats.COLUMNS``;
- ``<CT> chart``: plot chart node, bars of subtype % (or LAA-950 % without a model) per region.

Two paths compute them, both shown from the output folder by :meth:`DrasCLRLogic.load_outputs`:
:meth:`DrasCLRLogic.analyze` calls the engine in this process (tests, scripts) and writes the folder, and
:meth:`DrasCLRLogic.run_in_subprocess` runs ``python -m drasclr analyze`` in a child process and reads its
output folder back (the GUI: the UI stays responsive and Cancel kills the child; no node is created until
the child succeeded). :meth:`DrasCLRLogic.finetune_from_corrections` turns the corrected subtype segmentation
into a new model version with ``drasclr finetune corrections`` in a child process; the panel disables its
button while the engine lacks ``drasclr.dense.corrections``.

Guided correction (with a subtype model): :meth:`DrasCLRLogic.show_uncertainty` toggles the voxel uncertainty as
a heat overlay, :meth:`DrasCLRLogic.next_review_unit` centres the slice views on the next unit of the review queue
and marks it reviewed, and fine-tuning passes the reviewed units (:meth:`DrasCLRLogic.reviewed_mask`) as
confirmed labels.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer

from drasclr.analysis.stats import read_csv, read_json, write_csv
from drasclr.anatomy.regions import ltrc_lobes
from drasclr.core import labels
from drasclr.core.image import CTImage, resample_to
from drasclr.core.io import read_image, write_image
from drasclr.core.settings import AnalysisSettings

from . import guided, process, tables
from .segmentations import labelmap_to_segmentation, segment_names, segmentation_to_labelmap
from .storage import load_volume, save_node
from .terminology import region_entries, subtype_entries
from .volumes import add_volume_node, image_from_volume_node

DEMO_CT = Path(__file__).resolve().parents[1] / "drasclr" / "data" / "demo_ct.nii.gz"
SUFFIXES = {"subtypes": "subtypes", "regions": "regions", "table": "statistics", "chart": "chart"}


@dataclass
class AnalysisNodes:
    """The nodes one analysis produced or updated (``subtypes`` is None without a subtype model)."""

    volume: object
    regions: object
    table: object
    chart: object
    subtypes: object | None = None
    prediction: CTImage | None = None  # the subtype map as the model produced it (before corrections)
    model: Path | None = None  # the model folder that produced it
    rows: list[dict] = field(default_factory=list)
    region_kind: str = "zones"
    output_dir: Path | None = None
    uncertainty: CTImage | None = None  # uint8 0..100 on the CT's grid (uncertainty.nii.gz)
    review: guided.ReviewWalk | None = None  # the review queue and the units visited
    warnings: list[dict] = field(default_factory=list)  # {"code", "message"}: HU calibration, resolution guard
    calibration: dict | None = None  # stats.json "calibration": air/blood measured, offset applied
    harmonization: dict | None = None  # stats.json "harmonization": noise measured, what the model read

    @property
    def calibration_line(self) -> str:
        """One line on an applied HU correction (offset, references; "" when the HU were used as read): what the
        Slicer panel and the web table show beside the numbers."""
        from drasclr.anatomy.hu_calibration import describe

        return describe(self.calibration)

    @property
    def harmonization_line(self) -> str:
        """One line on what harmonization did to the scan the model read ("" when it read the scan as is): shown
        beside the calibration line."""
        from drasclr.acquisition.harmonize import describe

        return describe(self.harmonization)


def ensure_scene_logics(scene) -> None:
    """Register what segmentations need on a bare scene (slicer-core has no ``slicer.modules``)."""
    if getattr(scene, "_drasclr_logics", None) is None:
        seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
        seg_logic.SetMRMLScene(scene)
        scene._drasclr_logics = [seg_logic]


# the five lobes among the classes of TotalSegmentator's "total" task (the names its extension gives the segments
# with standard segment names off; with them on, "Left upper lobe of lung" etc., read the same way)
TOTALSEG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
                  "lung_lower_lobe_right")


def totalsegmentator_extension():
    """The SlicerTotalSegmentator extension's scripted module (``TotalSegmentator``), or None when the extension
    is not installed (slicer-core, or a Slicer without it)."""
    try:
        if importlib.util.find_spec("TotalSegmentator") is None:
            return None
    except (ImportError, ValueError):
        return None
    return importlib.import_module("TotalSegmentator")


def totalsegmentator_available() -> bool:
    """True when the SlicerTotalSegmentator extension is installed (its module is loaded or importable): the panel
    shows "Compute lobes with TotalSegmentator" only then. (The TotalSegmentator Python package alone serves the
    CLI's ``--lobes-from totalsegmentator``, not this action.)"""
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "totalsegmentator"):
        return True
    try:
        return importlib.util.find_spec("TotalSegmentator") is not None
    except (ImportError, ValueError):
        return False


def finetune_available() -> bool:
    """True when the engine ships fine-tuning from corrections (``drasclr.dense.corrections``)."""
    try:
        return importlib.util.find_spec("drasclr.dense.corrections") is not None
    except ModuleNotFoundError:
        return False


def lobes_image(lobes_node, ct_node, ct: CTImage) -> CTImage:
    """A lobe input as an LTRC labelmap (1-5) on the CT's grid: a labelmap volume in any convention the CLI reads
    (LTRC, TotalSegmentator, CIP; detected from its values), or a segmentation whose segment names say
    left/right + upper/middle/lower."""
    if lobes_node.IsA("vtkMRMLSegmentationNode"):
        entries = []
        for name in segment_names(lobes_node):
            value = lobe_value_from_name(name)
            if value is not None:
                entries.append(_Named(value, name))
        if not entries:
            raise ValueError(f"no segment of {lobes_node.GetName()!r} is named like a lung lobe "
                             "(e.g. 'left upper lobe', 'lung_lower_lobe_right')")
        return segmentation_to_labelmap(lobes_node, ct_node, entries)
    image = ltrc_lobes(image_from_volume_node(lobes_node), what=f"lobe labelmap {lobes_node.GetName()!r}")
    if not image.same_grid(ct):
        image = resample_to(image, ct)
    return image.with_array(image.array.astype(np.uint8))


@dataclass(frozen=True)
class _Named:
    value: int
    name: str


def _progress_sink(on_progress):
    """A stage sink (drasclr.core.stages) that hands ``on_progress`` the Progress a child's line would give; None
    (print the lines) without ``on_progress``."""
    if on_progress is None:
        return None
    reader = process.ProgressReader()
    return lambda event: on_progress(reader.read(event.line()))


def lobe_value_from_name(name: str) -> int | None:
    """LTRC lobe value of a segment name such as 'Left upper lobe' or 'lung_middle_lobe_right'."""
    words = set(name.lower().replace("_", " ").replace("-", " ").split())
    side = "left" if "left" in words else "right" if "right" in words else None
    level = ("upper" if words & {"upper", "superior"} else "middle" if "middle" in words
             else "lower" if words & {"lower", "inferior"} else None)
    if side is None or level is None or not words & {"lobe", "lung"}:
        return None
    for value, lobe in labels.LOBES.items():
        if lobe == f"{side}_{level}_lobe":
            return value
    return None


class DrasCLRLogic:
    """Analysis of CT volume nodes in an MRML scene (``slicer.mrmlScene`` inside Slicer)."""

    def __init__(self, scene=None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        ensure_scene_logics(self.scene)
        self.subtype_entries = subtype_entries()
        self.last: AnalysisNodes | None = None
        self._kept_dir: Path | None = None

    def cleanup(self) -> None:
        """Remove the temporary files kept from the last child-process run (call when the module closes)."""
        if self._kept_dir is not None:
            shutil.rmtree(self._kept_dir, ignore_errors=True)
            self._kept_dir = None

    def load_demo_ct(self, name: str = "DrasCLR demo CT"):
        """The engine's bundled demo CT (``drasclr/data/demo_ct.nii.gz``) as a volume node, read by Slicer's
        own reader; the module's chest phantom when no demo CT ships."""
        if DEMO_CT.exists():
            return load_volume(self.scene, DEMO_CT, name=name)
        from .phantom import chest_phantom

        return add_volume_node(self.scene, chest_phantom(), name)

    # --- analysis --------------------------------------------------------------------------------------
    @staticmethod
    def settings(settings: AnalysisSettings | None = None, **overrides) -> AnalysisSettings:
        """The analysis settings a shell asks for: ``settings`` (default: ``drasclr analyze``'s) with
        ``overrides`` (settings fields, snake_case or camelCase, choices in any case: ``use_model=False``,
        ``regions="zones"``, ``device="CPU"``); raises ``InputError`` for an unknown setting or a value outside
        its choices."""
        return AnalysisSettings.from_panel(overrides, base=settings, strict=True)

    def analyze(self, volume_node, lobes_node=None, settings: AnalysisSettings | None = None, on_progress=None,
                **overrides) -> AnalysisNodes:
        """Run the engine on ``volume_node`` in this process (tests, scripts) and create/update the result nodes.

        ``settings``/``overrides``: see :meth:`settings`. The analysis is written to a temporary output folder
        and shown from it by :meth:`load_outputs`, the same path as :meth:`run_in_subprocess` (one way to build
        the displayed result); the folder is kept as ``nodes.output_dir`` until the next analysis.
        ``on_progress(Progress)``: each stage as it starts (name, index, estimate), as :meth:`run_in_subprocess`
        reports them."""
        from drasclr.analysis.analyze import analyze as engine_analyze
        from drasclr.analysis.analyze import write_analysis
        from drasclr.analysis.loaded_model import load_for_analysis
        from drasclr.analysis.stage_plan import track_analysis

        started = time.perf_counter()
        settings = self.settings(settings, **overrides)
        ct = image_from_volume_node(volume_node)
        lobes = lobes_image(lobes_node, volume_node, ct) if lobes_node is not None else None
        model = load_for_analysis(settings)
        work = Path(tempfile.mkdtemp(prefix="drasclr-"))
        try:
            with track_analysis(ct, settings, model, lobes is not None, sink=_progress_sink(on_progress),
                                started=started):
                result = engine_analyze(ct, lobes, model=model, settings=settings)
                write_analysis(result, work / "output")
            nodes = self.finish_analysis(volume_node, work / "output")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._keep(work)
        return nodes

    # --- lobes from TotalSegmentator ------------------------------------------------------------------
    def compute_lobes_totalsegmentator(self, volume_node, cpu: bool = False, fast: bool = True):
        """A ``<CT> lobes (TotalSegmentator)`` segmentation of the five lobes, ready as the lobe input.

        Runs the lung lobes of TotalSegmentator's ``total`` task through the SlicerTotalSegmentator extension's
        Logic (``TotalSegmentatorLogic.process``, its public API; the extension manages the package and its
        weights). ``cpu``: force the CPU; ``fast``: TotalSegmentator's 3 mm model (minutes on a CPU). Raises
        RuntimeError when the extension is not installed (:func:`totalsegmentator_available` says so first)."""
        module = totalsegmentator_extension()
        if module is None:
            raise RuntimeError("the TotalSegmentator extension is not installed: install 'TotalSegmentator' from "
                               "the Extensions Manager and restart Slicer")
        raw = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume_node.GetName()} TotalSegmentator")
        try:
            module.TotalSegmentatorLogic().process(volume_node, raw, fast=fast, cpu=cpu, task="total",
                                                   subset=list(TOTALSEG_LOBES))
            return self.lobes_from_segmentation(raw, volume_node, f"{volume_node.GetName()} lobes (TotalSegmentator)")
        finally:
            self.scene.RemoveNode(raw)

    def lobes_from_segmentation(self, segmentation_node, volume_node, name: str):
        """A segmentation whose segments are named like lobes (TotalSegmentator's, either naming) → a five-segment
        lobe segmentation ``name`` (replaced when it exists) on the CT's grid, LTRC values, our segment names.
        Raises ValueError when a lobe is missing."""
        ct = image_from_volume_node(volume_node)
        lobes = lobes_image(segmentation_node, volume_node, ct)
        missing = [labels.LOBES[v] for v in labels.LOBES if not np.any(lobes.array == v)]
        if missing:
            raise ValueError(f"{segmentation_node.GetName()!r} lacks {', '.join(missing)}")
        node = self.scene.GetFirstNode(name, "vtkMRMLSegmentationNode")
        return labelmap_to_segmentation(self.scene, lobes, volume_node, region_entries(labels.LOBES), node=node,
                                        name=name)

    # --- child process (GUI) --------------------------------------------------------------------------
    def write_inputs(self, volume_node, lobes_node, work_dir: Path) -> tuple[Path, Path | None]:
        """Write the CT (and lobes) as NRRD files for the child process; geometry through geometry.py."""
        work_dir.mkdir(parents=True, exist_ok=True)
        ct = image_from_volume_node(volume_node)
        ct_path = write_image(ct, work_dir / "ct.nrrd", compress=False)  # temporary: speed over size
        lobes_path = None
        if lobes_node is not None:
            lobes = lobes_image(lobes_node, volume_node, ct)
            lobes_path = write_image(lobes, work_dir / "lobes.nrrd", dtype=np.uint8, compress=False)
        return ct_path, lobes_path

    def run_in_subprocess(self, volume_node, lobes_node=None, settings: AnalysisSettings | None = None,
                          on_progress=None, on_line=None, should_cancel=None, on_idle=None, env=None,
                          work_dir: Path | None = None, **overrides) -> AnalysisNodes:
        """Run ``python -m drasclr analyze`` in a child process and load its outputs as nodes (the GUI: the UI
        stays responsive and Cancel kills the child). ``settings``/``overrides``: see :meth:`settings`.

        Progress/cancel/idle callbacks: see :func:`process.run_engine`. The output folder (``nodes.output_dir``:
        report.html, stats.json) is kept until the next analysis (a ``work_dir`` given by the caller stays the
        caller's). On cancel or error no node is created and the temporary files are removed
        (:class:`process.Cancelled` / :class:`process.EngineError` propagate)."""
        own = work_dir is None
        work_dir = Path(tempfile.mkdtemp(prefix="drasclr-")) if own else Path(work_dir)
        try:
            cmd, out_dir = self.prepare_analysis(volume_node, lobes_node, work_dir, settings, **overrides)
            process.run_engine(cmd, on_progress=on_progress, on_line=on_line, should_cancel=should_cancel,
                               on_idle=on_idle, env=env)
            nodes = self.finish_analysis(volume_node, out_dir)
        except BaseException:
            if own:
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        if own:  # keep only the latest run's temporary files
            self._keep(work_dir)
        return nodes

    def _keep(self, work_dir: Path) -> None:
        """Keep ``work_dir`` (the latest analysis's files) and remove the one kept before."""
        if self._kept_dir is not None and self._kept_dir != work_dir:
            shutil.rmtree(self._kept_dir, ignore_errors=True)
        self._kept_dir = work_dir

    def prepare_analysis(self, volume_node, lobes_node, work_dir: Path, settings: AnalysisSettings | None = None,
                         **overrides) -> tuple[list[str], Path]:
        """First step of a child-process analysis (MRML: run it on the GUI/event-loop thread): write the inputs
        into ``work_dir/input`` and return the ``drasclr analyze`` command and its output folder
        (``work_dir/output``). Run the command with :func:`process.run_engine` (any thread), then
        :meth:`finish_analysis`."""
        ct_path, lobes_path = self.write_inputs(volume_node, lobes_node, Path(work_dir) / "input")
        out_dir = Path(work_dir) / "output"
        cmd = process.analyze_command(ct_path, out_dir, self.settings(settings, **overrides), lobes_path=lobes_path)
        return cmd, out_dir

    def finish_analysis(self, volume_node, out_dir: Path) -> AnalysisNodes:
        """Last step of an analysis (child process or in process): the output folder as nodes, with
        ``output_dir`` set (the model folder that ran is read from ``stats.json`` by :meth:`load_outputs`)."""
        nodes = self.load_outputs(volume_node, out_dir)
        nodes.output_dir = Path(out_dir)
        return nodes

    def load_outputs(self, volume_node, out_dir: Path) -> AnalysisNodes:
        """Nodes from an ``drasclr analyze`` output folder computed on ``volume_node``'s CT. The region kind and the
        model folder are the facts the engine recorded in ``stats.json``."""
        out_dir = Path(out_dir)
        ct = image_from_volume_node(volume_node)
        regions = self._on_grid(read_image(out_dir / "regions.nii.gz", single_slice=True), ct)  # cip-lh: a slice
        sub_path = out_dir / "subtypes.nii.gz"
        subtypes = self._on_grid(read_image(sub_path, single_slice=True), ct) if sub_path.exists() else None
        facts = read_json(out_dir / "stats.json")
        folder = (facts.get("model") or {}).get("folder") if subtypes is not None else None
        nodes = self._show(volume_node, regions, subtypes, read_csv(out_dir / "stats.csv"), facts["region_kind"],
                           model=Path(folder) if folder else None)
        nodes.warnings, nodes.calibration = list(facts.get("warnings") or []), facts.get("calibration")
        nodes.harmonization = facts.get("harmonization")
        if subtypes is not None and (out_dir / "review.json").exists():
            from drasclr.analysis.review import read_review

            nodes.uncertainty = self._on_grid(read_image(out_dir / "uncertainty.nii.gz"), ct)
            units = read_image(out_dir / "review_units.nii.gz")
            units = units if units.same_grid(ct) else resample_to(units, ct)
            nodes.review = guided.ReviewWalk(read_review(out_dir / "review.json")["units"],
                                             units.with_array(units.array.astype(np.uint16)))
        return nodes

    @staticmethod
    def _on_grid(image: CTImage, ct: CTImage) -> CTImage:
        image = image if image.same_grid(ct) else resample_to(image, ct)
        return image.with_array(image.array.astype(np.uint8))

    # --- nodes ----------------------------------------------------------------------------------------
    def _node(self, volume_node, key: str, cls: str):
        name = f"{volume_node.GetName()} {SUFFIXES[key]}"
        node = self.scene.GetFirstNode(name, cls)
        return node, name

    def _show(self, volume_node, regions: CTImage, subtypes: CTImage | None, rows, kind,
              model: Path | None = None) -> AnalysisNodes:
        guided.clear_unit_marker(self.scene)  # a new analysis, a new review queue
        reg_node, reg_name = self._node(volume_node, "regions", "vtkMRMLSegmentationNode")
        present = sorted(int(v) for v in np.unique(regions.array) if int(v) in labels.REGION_NAMES)
        reg_node = labelmap_to_segmentation(self.scene, regions, volume_node, region_entries(present),
                                            node=reg_node, name=reg_name)
        sub_node = None
        if subtypes is not None:
            sub_node, sub_name = self._node(volume_node, "subtypes", "vtkMRMLSegmentationNode")
            sub_node = labelmap_to_segmentation(self.scene, subtypes, volume_node, self.subtype_entries,
                                                node=sub_node, name=sub_name)
            reg_node.GetDisplayNode().SetVisibility(False)  # the subtype map is what one looks at
        table, table_name = self._node(volume_node, "table", "vtkMRMLTableNode")
        table = tables.rows_to_table(self.scene, rows, node=table, name=table_name)
        chart, chart_name = self._node(volume_node, "chart", "vtkMRMLPlotChartNode")
        chart = tables.bar_chart(self.scene, table, rows, chart=chart, name=chart_name)
        self.last = AnalysisNodes(volume_node, reg_node, table, chart, sub_node, subtypes,
                                  Path(model) if model else None, list(rows), kind)
        return self.last

    def segment_editor_node(self):
        """The module's Segment Editor parameter node (a singleton of the scene), for correcting the results."""
        node = self.scene.GetSingletonNode("DrasCLRSlicer", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag("DrasCLRSlicer")
            node = self.scene.AddNode(node)
        return node

    def set_opacity(self, nodes: AnalysisNodes, opacity: float) -> None:
        """Opacity of the result segmentations in the slice views (0..1)."""
        for node in (nodes.subtypes, nodes.regions):
            if node is not None and node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetOpacity2DFill(float(opacity))
                node.GetDisplayNode().SetOpacity3D(float(opacity))

    def corrected_subtypes(self, nodes: AnalysisNodes) -> CTImage:
        """The (possibly edited) subtype segmentation as a labelmap with values 1..4, matched by name."""
        if nodes.subtypes is None:
            raise ValueError("no subtype map to correct: the engine produced regions only")
        return segmentation_to_labelmap(nodes.subtypes, nodes.volume, self.subtype_entries)

    # --- fine-tuning from corrections ---------------------------------------------------------------------
    def finetune_from_corrections(self, nodes: AnalysisNodes, model=None, device: str = "auto",
                                  max_seconds: float = 30.0, output_root=None, on_progress=None, on_line=None,
                                  should_cancel=None, on_idle=None, env=None, use_reviewed: bool = True) -> dict:
        """Train a new model version from the corrected subtype segmentation (``drasclr finetune corrections``
        in a child process). The corrected labelmap is read from the segmentation by segment name.

        ``model``: the model that made the prediction (default: the one recorded in ``nodes``, else the
        engine's default). ``use_reviewed``: pass the review units visited with :meth:`next_review_unit` as
        ``--reviewed`` (their labels count as confirmed, whether corrected or accepted).
        Returns the engine's summary: ``{"model": new folder, "before": ..., "after": ...}``.
        Raises :class:`process.Cancelled` / :class:`process.EngineError`; nothing is written on failure.
        """
        work = Path(tempfile.mkdtemp(prefix="drasclr-finetune-"))
        try:
            cmd = self.prepare_finetune(nodes, work, model=model, device=device, max_seconds=max_seconds,
                                        output_root=output_root, use_reviewed=use_reviewed)
            lines = process.run_engine(cmd, on_progress=on_progress, on_line=on_line, should_cancel=should_cancel,
                                       on_idle=on_idle, env=env)
            return process.last_json(lines)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def finetune_message(summary: dict, reviewed_regions: int = 0) -> str:
        """One line for the shells about a finished fine-tuning: the new version, the accuracy on the corrected
        voxels before -> after, the reviewed regions, and strokes ignored outside the lung."""
        before, after = summary.get("before", {}), summary.get("after", {})
        text = (f"new model version {Path(summary['model']).name} (accuracy on the corrected voxels "
                f"{before.get('accuracy', math.nan):.2f} -> {after.get('accuracy', math.nan):.2f}")
        if reviewed_regions:
            text += f", {reviewed_regions} reviewed regions ({summary.get('reviewed_voxels', 0)} confirmed voxels)"
        text += ")"
        if summary.get("outside_lung_voxels"):
            text += f"; {summary['outside_lung_voxels']} painted voxels outside the lung were ignored"
        return text

    # --- guided correction ------------------------------------------------------------------------------
    def show_uncertainty(self, nodes: AnalysisNodes, visible: bool = True):
        """Toggle the voxel uncertainty (0..100) as a heat overlay over the CT in every slice view; returns the
        ``<CT> uncertainty`` volume node (None when hiding one never shown)."""
        if visible and nodes.uncertainty is None:
            raise ValueError("no uncertainty map: analyze with a subtype model first")
        return guided.show_heat_overlay(self.scene, nodes.volume, nodes.uncertainty,
                                        f"{nodes.volume.GetName()} uncertainty", visible)

    def uncertainty_visible(self, nodes: AnalysisNodes) -> bool:
        node = self.scene.GetFirstNode(f"{nodes.volume.GetName()} uncertainty", "vtkMRMLScalarVolumeNode")
        return guided.overlay_visible(self.scene, node)

    def next_review_unit(self, nodes: AnalysisNodes) -> dict | None:
        """Centre the slice views on the best-ranked review unit not yet reviewed and mark it reviewed; returns
        the unit (as in ``review.json``: rank, region, centre_lps, bbox_lps, predicted, score) with ``centre_ras``
        added, or None when every unit has been reviewed."""
        if nodes.review is None:
            raise ValueError("no review queue: analyze with a subtype model first")
        unit = nodes.review.next_unit()
        if unit is None:
            return None
        ras = guided.center_slices(self.scene, unit["centre_lps"])
        guided.mark_unit(self.scene, ras, f"Region {unit['rank']}")
        nodes.review.mark(unit["rank"])
        return {**unit, "centre_ras": [float(v) for v in ras]}

    def reviewed_mask(self, nodes: AnalysisNodes) -> CTImage | None:
        """The review units visited so far as a 0/1 labelmap on the CT's grid (None without a review queue)."""
        return nodes.review.mask() if nodes.review is not None else None

    def prepare_finetune(self, nodes: AnalysisNodes, work_dir: Path, model=None, device: str = "auto",
                         max_seconds: float = 30.0, output_root=None, use_reviewed: bool = True) -> list[str]:
        """First step of :meth:`finetune_from_corrections` (MRML: GUI/event-loop thread): write the CT, the
        prediction, the corrected labelmap and the reviewed units (``ct.nrrd``, ``prediction.nrrd``,
        ``corrected.nrrd``, ``reviewed.nrrd``) into ``work_dir`` and return the ``drasclr finetune corrections``
        command."""
        if nodes.subtypes is None or nodes.prediction is None:
            raise ValueError("no subtype map to learn from: analyze with a subtype model first")
        corrected = self.corrected_subtypes(nodes)
        reviewed = self.reviewed_mask(nodes) if use_reviewed else None
        if np.array_equal(corrected.array, nodes.prediction.array) and (reviewed is None or not reviewed.array.any()):
            raise ValueError("the subtype map has not been corrected yet (paint into the subtype segments) and no "
                             "region was reviewed")
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        ct = image_from_volume_node(nodes.volume)
        ct_path = write_image(ct, work / "ct.nrrd", compress=False)
        pred_path = write_image(nodes.prediction, work / "prediction.nrrd", dtype=np.uint8, compress=False)
        corr_path = write_image(corrected, work / "corrected.nrrd", dtype=np.uint8, compress=False)
        rev_path = None
        if reviewed is not None and reviewed.array.any():
            rev_path = write_image(reviewed, work / "reviewed.nrrd", dtype=np.uint8, compress=False)
        return process.finetune_command(ct_path, pred_path, corr_path, model=model or nodes.model,
                                        output_root=output_root, device=device, max_seconds=max_seconds,
                                        reviewed_path=rev_path)

    # --- models and CTs ---------------------------------------------------------------------------------
    @staticmethod
    def model_store(user_root=None):
        """The model versions a shell offers (bundled + ``user_root``, default the user folder); ``revert``
        on it makes an older version the active one."""
        from .models import ModelStore

        return ModelStore(user_root)

    def load_ct(self, path, name: str | None = None):
        """A CT file (read by Slicer's own reader) or a DICOM folder (read by the engine) as a volume node."""
        path = Path(path)
        if path.is_dir():
            from drasclr.core.io import read_ct

            return add_volume_node(self.scene, read_ct(path), name or path.name)
        stem = path.name.split(".")[0]
        return load_volume(self.scene, path, name=name or stem)

    # --- follow-up: compare with prior (DrasCLRSlicerLib.followup) --------------------------------------
    def compare_with_prior(self, volume_node, prior, model=None, device: str = "auto", use_model: bool = True,
                           work_dir: Path | None = None, on_progress=None, on_line=None, should_cancel=None,
                           on_idle=None, env=None):
        """Compare ``volume_node`` with an earlier scan ``prior`` (a volume node, or an analysis folder) by
        ``drasclr compare`` in a child process; the change map lands on the prior (baseline) volume. Returns
        :class:`followup.FollowupNodes` (the files stay in ``output_dir``: report.html, change.csv)."""
        from . import followup

        work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="drasclr-compare-"))
        cmd, out_dir, baseline_node = followup.prepare_compare(self, volume_node, prior, work_dir, model=model,
                                                               device=device, use_model=use_model)
        process.run_engine(cmd, on_progress=on_progress, on_line=on_line, should_cancel=should_cancel,
                           on_idle=on_idle, env=env)
        return followup.load_comparison(self.scene, baseline_node, out_dir)

    # --- exports ----------------------------------------------------------------------------------------
    def export_segmentation(self, nodes: AnalysisNodes, path) -> Path:
        """The (possibly corrected) subtype segmentation, or the regions without a model, as ``.seg.nrrd``."""
        node = nodes.subtypes if nodes.subtypes is not None else nodes.regions
        node.SetReferenceImageGeometryParameterFromVolumeNode(nodes.volume)  # else the file is cropped
        return save_node(node, path)

    def export_scene(self, path) -> Path:
        """The whole scene (CT, results, table, chart) as a Slicer ``.mrb`` bundle."""
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.scene.SetURL(str(path.with_suffix(".mrml")))
        self.scene.SetRootDirectory(str(path.parent))
        if not self.scene.WriteToMRB(str(path)):
            raise OSError(f"could not write the scene to {path.name}")
        return path

    def export_csv(self, nodes: AnalysisNodes, path) -> Path:
        """The statistics table as CSV (the columns of ``stats.csv``)."""
        path = Path(path)
        write_csv(tables.table_to_rows(nodes.table), path)
        return path

    def export_html(self, nodes: AnalysisNodes, path) -> Path:
        """The engine's ``report.html`` of this analysis (kept with its output folder until the next one)."""
        report = nodes.output_dir / "report.html" if nodes.output_dir is not None else None
        if report is None or not report.exists():
            raise FileNotFoundError("the report of this analysis is no longer kept: analyze again to export it")
        path = Path(path)
        shutil.copyfile(report, path)
        return path

    def export_dicom(self, nodes: AnalysisNodes, source_folder, folder) -> dict[str, Path]:
        """DICOM SEG (the subtype map as corrected, and the regions) and TID 1500 SR of the numbers, referencing
        the DICOM series in ``source_folder`` that the CT was read from (drasclr.dicom; docs/dicom.md). The SR's
        subtype percentages are recomputed from the corrected map; the densitometry is the analysis's."""
        from types import SimpleNamespace

        from drasclr.analysis.stats import region_stats
        from drasclr.dicom import require_packages, write_dicom
        from drasclr.dicom.source import source_slices
        from drasclr.model import read_card

        require_packages()
        ct = image_from_volume_node(nodes.volume)
        source = source_slices(source_folder, ct)
        regions = segmentation_to_labelmap(nodes.regions, nodes.volume, region_entries())
        subtypes = self.corrected_subtypes(nodes) if nodes.subtypes is not None else None
        rows = [dict(r) for r in nodes.rows]
        if subtypes is not None:
            fractions = {r["region"]: r for r in region_stats(ct, regions, subtypes)}
            for r in rows:
                r.update({k: v for k, v in fractions.get(r["region"], {}).items() if k.endswith("_pct")
                          and not k.startswith("laa")})
        card = read_card(nodes.model) if nodes.model is not None else None
        result = SimpleNamespace(subtypes=subtypes, regions=regions, rows=rows, model_card=card,
                                 calibration=nodes.calibration)
        return write_dicom(result, source, folder)

