"""The reading room page: trame layout and state over a trame-slicer scene; every button calls the Logic.

One :class:`ReadingRoom` per session process (:mod:`.room`, started per browser session by the gateway,
:mod:`.gateway`): one MRML scene (``trame_slicer.core.SlicerApp``), one ``DrasCLRSlicerLib.logic.DrasCLRLogic`` on
it, one session folder (its ``session.json``: :mod:`.records`), one job at a time, waiting in the queue all
sessions share (:mod:`.jobs`, :mod:`.jobqueue`). Every open, analysis, correction and export goes to the audit
log (:mod:`.audit`). Views: axial, coronal (slice views) and 3-D (segment
surfaces only: no volume rendering, which is a GPU ray cast and far too slow in software).

Guided correction, as in the Qt panel: the *Uncertainty* switch calls ``DrasCLRLogic.show_uncertainty`` (heat overlay
in the slice views), *Next region to review* calls ``DrasCLRLogic.next_review_unit`` (views centred on the unit, unit
marked reviewed), and fine-tuning passes ``DrasCLRLogic.reviewed_mask`` through ``prepare_finetune``. The slice views'
positions are kept in the ``slice_positions`` state (shown in the toolbar).
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

from trame.app.file_upload import ClientFile
from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_server.utils.asynchronous import create_task
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint
from trame_slicer.views import Layout, LayoutDirection, SliceView, ThreeDView, ViewLayoutDefinition

from drasclr.analysis.stats import COLUMNS
from drasclr.core import names
from drasclr.core.errors import InputError
from DrasCLRSlicerLib import process
from DrasCLRSlicerLib.guided import describe_unit, unit_classes
from DrasCLRSlicerLib.logic import DrasCLRLogic
from DrasCLRSlicerLib.models import PACKAGE_MODELS
from DrasCLRSlicerLib.segmentations import segment_names

from . import followup_panel, records, settings_panel
from .audit import AuditLog
from .jobs import JobBusy, JobRunner, JobState, failure_text
from .paths import PathRejected, Workspace, check_upload, inside

log = logging.getLogger(__name__)

SUBTYPES = [(shown.key, shown.short, value) for value, shown in names.SUBTYPES.items()]  # (key, label, value)
TABLE_COLUMNS = [(c, names.column_title(c)) for c in ("region", "volume_ml", "mean_hu", "perc15_hu", "laa950_pct",
                                                      "normal_pct", "cle_pct", "pse_pct", "ple_pct")]
LAYOUT_ID = "reading room"
DEMO_SOURCE = object()  # the record's "demo": the bundled demo CT


def table_rows(rows: list[dict]) -> list[dict]:
    """The table as people read it: regions by name, the column's decimals, an en dash for a missing value."""
    return [{c: (names.region_title(str(r[c])) if c == "region" else names.format_value(c, r[c]))
             for c, _ in TABLE_COLUMNS} for r in rows]


def bar_rows(rows: list[dict], colors: dict[str, str]) -> list[dict]:
    """Stacked subtype bars per region (percent of the region's lung volume)."""
    out = []
    for r in rows:
        parts = [{"key": key, "label": label, "pct": 0.0 if math.isnan(r[f"{key}_pct"]) else round(r[f"{key}_pct"], 2),
                  "color": colors.get(key, "#888")} for key, label, _ in SUBTYPES]
        out.append({"region": names.region_title(str(r["region"])), "parts": parts})
    return out


def slice_position(view) -> dict:
    """Where a slice view is: its orientation, the RAS axis across its plane and the coordinate (mm) along it."""
    m = view.get_view_node().GetSliceToRAS()
    normal = [m.GetElement(i, 2) for i in range(3)]
    k = max(range(3), key=lambda i: abs(normal[i]))
    value = float(view.get_slice_value()) * (1.0 if normal[k] >= 0 else -1.0)
    name = view.get_orientation()
    return {"view": name, "axis": "RAS"[k], "mm": round(value, 2), "label": f"{name} {'RAS'[k]} {value:.1f} mm"}


def review_item(unit: dict, total: int) -> dict:
    """The state the page shows for the review unit the views were moved to."""
    return {"rank": int(unit["rank"]), "total": int(total), "region": unit["region"].replace("_", " "),
            "volume_ml": round(float(unit["volume_ml"]), 1), "classes": unit_classes(unit),
            "score": round(float(unit["score"]), 1), "centre_ras": [round(v, 2) for v in unit["centre_ras"]],
            "text": describe_unit(unit, total)}


class ReadingRoom:
    """Builds the page on ``server`` and handles its buttons (every one a Logic call)."""

    def __init__(self, server, workspace: Workspace, device: str = "auto", finetune_seconds: float = 30.0,
                 session=None, queue=None, audit: AuditLog | None = None, max_upload_mb: float = 2048,
                 user: str = ""):
        self.server, self.state, self.ctrl = server, server.state, server.controller
        self.workspace = workspace
        self.session = session or workspace.new_session()
        self.audit = audit or AuditLog(workspace.data_root / "audit.log", user=user, session=self.session.id)
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self._audited = None  # the last correction tool written to the audit log
        self.finetune_seconds = float(finetune_seconds)
        self.slicer_app = SlicerApp()
        self.scene = self.slicer_app.scene
        self.scene._drasclr_logics = [self.slicer_app.segmentations_logic]  # the Logic reuses the app's
        self.logic = DrasCLRLogic(self.scene)
        self.editor = self.slicer_app.segmentation_editor
        register_rca_factories(self.slicer_app.view_manager, server)
        self.layout_manager = LayoutManager(self.scene, self.slicer_app.view_manager, server)
        self.layout_manager.register_layout_dict({LAYOUT_ID: Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(),
            Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.coronal_view(),
                                              ViewLayoutDefinition.threed_view()]),
        ])})
        self.layout_manager.set_layout(LAYOUT_ID)
        self.jobs = JobRunner(self._on_job, queue=queue, folder=self.session.folder)
        self.volume = None
        self.nodes = None
        self.colors = {shown.key: names.hex_color(shown.color) for shown in names.SUBTYPES.values()}
        self._init_state(device)
        self._build_ui()
        self.refresh_models()
        self._positions_pending = False
        for view in self.slicer_app.view_manager.get_views():
            if isinstance(view, SliceView):
                view.modified.connect(self._on_view_modified)

    # --- state ------------------------------------------------------------------------------------------
    def _init_state(self, device: str) -> None:
        s = self.state
        s.trame__title = "DrasCLR reading room"
        s.session_id = self.session.id
        s.user_name = self.audit.user
        s.ct_name = ""
        s.ct_path = ""
        s.message = ""
        s.error = ""
        s.models = []
        s.model_path = None
        s.device = device
        s.tta = True
        settings_panel.init_state(s)
        s.job_kind = ""
        s.job_status = "idle"
        s.job_desc = ""
        s.job_fraction = 0
        s.job_indeterminate = False
        s.job_message = ""
        s.running = False
        s.has_ct = False
        s.has_result = False
        s.analysis_count = 0
        s.rows = []
        s.calibration = ""  # an applied HU correction, shown above the table (Logic's calibration_line)
        s.harmonization = ""  # what harmonization did to the scan the model read (Logic's harmonization_line)
        s.bars = []
        s.opacity = 0.6
        s.effect = "none"
        s.segment = "ple"
        s.brush = 8.0
        s.finetune_seconds = self.finetune_seconds
        s.versions = []
        s.version = None
        s.last_model = ""
        s.segment_items = [{"title": label, "value": key} for key, label, _ in SUBTYPES]
        s.colors = self.colors
        s.uncertainty = False
        s.has_review = False
        s.review_total = 0
        s.reviewed_count = 0
        s.review = None  # the unit the views were last moved to (review_item)
        s.review_done = False
        s.slice_positions = []
        s.change("opacity")(self._on_opacity)
        s.change("effect", "segment", "brush")(self._on_effect)
        s.change("uncertainty")(self._on_uncertainty)

    def _flush(self, **values) -> None:
        with self.state:
            for k, v in values.items():
                self.state[k] = v

    def _error(self, text: str) -> None:
        self._flush(error=text, message="")

    def _info(self, text: str) -> None:
        self._flush(message=text, error="")

    def _on_job(self, job: JobState) -> None:
        self._flush(job_kind=job.kind, job_status=job.status, job_desc=job.desc, running=job.running,
                    job_fraction=round(100 * (job.fraction or 0)),
                    job_indeterminate=job.running and job.fraction is None, job_message=job.message)

    # --- opening a CT -----------------------------------------------------------------------------------
    def load_demo(self) -> None:
        self._open(self.logic.load_demo_ct, source="demo")

    def open_path(self, text: str | None = None) -> None:
        """Open the CT at ``text`` (sent by the page with the click; else the ``ct_path`` state)."""
        try:
            path = self.workspace.resolve_input(self.state.ct_path if text is None else text, own=self.session.folder)
        except InputError as exc:
            self._error(str(exc))
            return
        self._open(lambda: self.logic.load_ct(path), source=path)

    def upload(self, files) -> None:
        if not files:
            return
        try:
            f = ClientFile(files[0] if isinstance(files, list) else files)
            target = self.session.upload_path(f.name)
            check_upload(f.content, f.name, self.max_upload_bytes)  # size and image header, before any work
            self.session.write_file(target, f.content)
        except InputError as exc:
            self._error(str(exc))
            return
        except OSError as exc:
            self._error(f"could not store the upload: {failure_text(exc, self.session.folder)}")
            return
        self.audit.write("upload", target.name)
        self._open(lambda: self.logic.load_ct(target), source=target)

    def _open(self, load, source=None) -> None:
        if self.jobs.busy:
            self._error("wait for the running job to finish (or cancel it) before opening another CT")
            return
        try:
            node = load()
        except (InputError, OSError, RuntimeError, ValueError) as exc:
            self._error(f"could not open the CT: {exc}")
            return
        self._clear_results()
        if self.volume is not None:
            self.scene.RemoveNode(self.volume)
        self.volume = node
        dm = self.slicer_app.display_manager
        dm.show_volume_in_slice_background(node)
        dm.show_volume_in_slice_foreground(None)
        dm.reset_views()
        self._flush(has_ct=True, ct_name=node.GetName(), has_result=False, rows=[], bars=[], effect="none",
                    calibration="", harmonization="")
        self._info(f"opened {node.GetName()}")
        if source is not None:
            self._remember(ct=str(source), result=None)
            self.audit.write("open", self._file_label(source))

    def _clear_results(self) -> None:
        self.editor.deactivate_effect()
        if self.nodes is not None:
            heat = self.logic.show_uncertainty(self.nodes, False)  # off the views; the node goes with the CT
            for n in (self.nodes.subtypes, self.nodes.regions, self.nodes.table, self.nodes.chart, heat):
                if n is not None and self.scene.IsNodePresent(n):
                    self.scene.RemoveNode(n)
        self.nodes = None
        self._show_crosshair(False)
        self._flush(uncertainty=False, **self._review_reset(None))

    def shutdown(self) -> None:
        """Stop a running job (its child process is killed) when the server stops."""
        if self.jobs.cancel():
            self.jobs.wait_worker(10)

    def reset_views(self) -> None:
        self.slicer_app.display_manager.reset_views()

    # --- slice positions (toolbar) ----------------------------------------------------------------------
    def _on_view_modified(self, _view) -> None:
        """A slice view moved: push the positions once the current event is handled (many events, one push)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._push_positions()
            return
        if not self._positions_pending:
            self._positions_pending = True
            loop.call_soon(self._push_positions)

    def _push_positions(self) -> None:
        self._positions_pending = False
        views = [v for v in self.slicer_app.view_manager.get_views() if isinstance(v, SliceView)]
        self._flush(slice_positions=[slice_position(v) for v in views if v.get_view_node() is not None])

    def _render_slices(self) -> None:
        for view in self.slicer_app.view_manager.get_views():
            if isinstance(view, SliceView):
                view.schedule_render()
        self._push_positions()

    # --- models -----------------------------------------------------------------------------------------
    def refresh_models(self, select: str | None = None) -> None:
        store = self.logic.model_store(self.workspace.models_root)
        entries = store.all()
        items = [{"title": e.label, "value": str(e.path)} for e in entries]
        current = select or self.state.model_path
        if current not in {i["value"] for i in items}:
            chosen = store.default()  # the engine's default model family, its active version
            current = str(chosen.path) if chosen else None
        names = {e.name for e in entries if str(e.path) == current}
        versions = [{"title": e.label, "value": e.version} for e in entries if e.name in names]
        self._flush(models=items, model_path=current, versions=versions,
                    version=Path(current).name if current else None)

    def revert(self) -> None:
        version = self.state.version
        entry = next((e for e in self.logic.model_store(self.workspace.models_root).all() if e.version == version),
                     None)
        if entry is None:
            self._error(f"no model version {version!r}")
            return
        reverted = self.logic.model_store(self.workspace.models_root).revert(entry.name, entry.version)
        self.audit.write("revert", reverted.version)
        self.refresh_models(select=str(reverted.path))
        self._info(f"{reverted.version} is the active version; analyze again to use it")

    def _model(self) -> Path | None:
        if not self.state.model_path:
            return None
        return self.workspace.resolve_model(self.state.model_path, PACKAGE_MODELS)

    def _env(self) -> dict:
        env = process.engine_environment()
        env["DRASCLR_MODELS"] = str(self.workspace.models_root)
        return env

    # --- analysis ---------------------------------------------------------------------------------------
    def analyze(self) -> None:
        create_task(self._analyze())

    async def _analyze(self):
        if self.volume is None:
            self._error("open a CT first")
            return
        try:
            model = self._model()
        except InputError as exc:
            self._error(str(exc))
            return
        try:
            settings = settings_panel.settings(self.state, model=str(model) if model else None,
                                               device=self.state.device, tta=bool(self.state.tta))
        except InputError as exc:
            self._error(str(exc))
            return
        volume = self.volume
        ran = {}

        def prepare():
            work = ran["dir"] = self.session.run_dir("analysis")
            records.job_started(self.session.folder, "analysis", work)
            self.audit.write("analyze", f"{self.state.ct_name} -> {work.name}", model=model.name if model else "")
            cmd, out_dir = self.logic.prepare_analysis(volume, None, work, settings)
            return cmd, out_dir

        def work(ctx, on_progress, should_cancel):
            return process.run_engine(ctx[0], on_progress=on_progress, should_cancel=should_cancel, env=self._env())

        def finish(ctx, _lines):
            nodes = self.logic.finish_analysis(volume, ctx[1])
            self._show_results(nodes)
            self._remember(result=str(Path(ctx[1]).relative_to(self.session.folder)))
            return nodes

        self._flush(error="")  # the message (e.g. the fine-tuning summary) stays
        try:
            await self.jobs.run("analysis", prepare, work, finish)
        except JobBusy as exc:
            self._error(str(exc))
            return
        self._job_ended(ran.get("dir"))

    def _show_results(self, nodes) -> None:
        self.editor.deactivate_effect()
        if self.nodes is not None:  # the Logic updates its result nodes in place; drop only ones it replaced
            keep = {n for n in (nodes.subtypes, nodes.regions, nodes.table, nodes.chart) if n is not None}
            for n in (self.nodes.subtypes, self.nodes.regions, self.nodes.table, self.nodes.chart):
                if n is not None and n not in keep and self.scene.IsNodePresent(n):
                    self.scene.RemoveNode(n)
        self.nodes = nodes
        self.logic.set_opacity(nodes, float(self.state.opacity))
        if nodes.subtypes is not None:
            self.editor.set_active_segmentation(nodes.subtypes, nodes.volume)
        for view in self.slicer_app.view_manager.get_views():
            if isinstance(view, ThreeDView):
                for renderer in view.renderers():  # translucent surfaces vanish with depth peeling on software EGL
                    renderer.SetUseDepthPeeling(False)
                view.reset_view()
            view.schedule_render()
        if self.state.uncertainty:  # the switch stays on: the new analysis' map (off when it has none)
            self.logic.show_uncertainty(nodes, nodes.uncertainty is not None)
        self._flush(has_result=True, rows=table_rows(nodes.rows), bars=bar_rows(nodes.rows, self.colors),
                    calibration=nodes.calibration_line, harmonization=nodes.harmonization_line,
                    analysis_count=self.state.analysis_count + 1, effect="none",
                    last_model=nodes.model.name if nodes.model else "",
                    uncertainty=bool(self.state.uncertainty and nodes.uncertainty is not None),
                    **self._review_reset(nodes))
        self._show_crosshair(False)  # a new queue: nothing visited yet
        if nodes.subtypes is not None:
            self._show_3d_soon(nodes.subtypes)

    def _show_3d_soon(self, segmentation, delay_s: float = 0.5) -> None:
        """The 3-D surfaces once the 2-D overlay and the table have gone to the page (building them takes about a
        second on a full-size CT; bench/bench_web.py); at once where no event loop runs."""
        def show():
            if self.nodes is None or self.nodes.subtypes is not segmentation:
                return  # a newer result replaced it
            self._show_3d(segmentation)
            for view in self.slicer_app.view_manager.get_views():
                if isinstance(view, ThreeDView):
                    view.reset_view()
                    view.schedule_render()

        try:
            asyncio.get_running_loop().call_later(delay_s, show)
        except RuntimeError:
            show()

    def _show_3d(self, segmentation) -> None:
        """Segment surfaces in the 3-D view for the emphysema subtypes only (normal lung would hide them)."""
        # the editor drops closed surfaces of its active segmentation on every change unless told to show 3-D
        self.editor.set_surface_representation_enabled(True)
        segmentation.CreateClosedSurfaceRepresentation()
        display = segmentation.GetDisplayNode()
        ids = segment_names(segmentation)
        normal = next((e.name for e in self.logic.subtype_entries if e.value == 1), None)
        if display is not None and normal in ids:
            display.SetSegmentVisibility3D(ids[normal], False)

    def _on_opacity(self, opacity, **_):
        if self.nodes is not None:
            self.logic.set_opacity(self.nodes, float(opacity))

    # --- correcting -------------------------------------------------------------------------------------
    def _on_effect(self, effect, segment, brush, **_):
        if self.nodes is None or self.nodes.subtypes is None:
            return
        if effect not in ("paint", "erase"):
            self.editor.deactivate_effect()
            return
        if self._audited != (effect, segment, self._result_label()):  # not once per brush change
            self._audited = (effect, segment, self._result_label())
            self.audit.write("correct", f"{effect} {segment}", analysis=self._result_label())
        value = {k: v for k, _, v in SUBTYPES}[segment]
        entry = next(e for e in self.logic.subtype_entries if e.value == value)
        segment_id = segment_names(self.nodes.subtypes).get(entry.name)
        if segment_id is None:
            self._error(f"no {entry.name} segment")
            return
        self.editor.set_active_segment_id(segment_id)
        effect_obj = self.editor.set_active_effect_type(
            SegmentationEffectPaint if effect == "paint" else SegmentationEffectErase)
        try:
            effect_obj.set_brush_diameter(float(brush))
        except AttributeError:
            pass

    # --- guided correction ------------------------------------------------------------------------------
    @staticmethod
    def _review_reset(nodes) -> dict:
        review = nodes.review if nodes is not None else None
        return {"has_review": review is not None, "review_total": len(review.units) if review else 0,
                "reviewed_count": 0, "review": None, "review_done": False}

    def _on_uncertainty(self, uncertainty, **_):
        """The Uncertainty switch: the heat overlay over the CT in the slice views, on or off (Logic)."""
        nodes = self.nodes
        if nodes is None or nodes.uncertainty is None:
            if uncertainty:
                self._flush(uncertainty=False)
            return
        try:
            self.logic.show_uncertainty(nodes, bool(uncertainty))
        except ValueError as exc:
            self._error(str(exc))
            return
        self._render_slices()

    def next_review(self) -> None:
        """Next region to review (Logic): centre the views on the best-ranked unit not yet reviewed, mark it."""
        nodes = self.nodes
        if nodes is None or nodes.review is None:
            self._error("no review queue: analyze the CT with a subtype model first")
            return
        unit = self.logic.next_review_unit(nodes)
        if unit is None:
            self._flush(review_done=True)
            self._info("every region of the review queue has been reviewed")
            return
        self._show_crosshair(True)  # the Logic put it on the unit's centre
        self._render_slices()
        self._flush(review=review_item(unit, len(nodes.review.units)), reviewed_count=len(nodes.review.reviewed),
                    error="", message="")

    def _show_crosshair(self, visible: bool) -> None:
        """The crosshair marks the review unit's centre in the views while the queue is walked."""
        crosshair = self.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is not None:
            crosshair.SetCrosshairMode(crosshair.ShowSmallBasic if visible else crosshair.NoCrosshair)

    # --- fine-tuning ------------------------------------------------------------------------------------
    def finetune(self) -> None:
        create_task(self._finetune())

    async def _finetune(self):
        nodes = self.nodes
        if nodes is None:
            self._error("analyze a CT first")
            return
        device, seconds = self.state.device, float(self.state.finetune_seconds or self.finetune_seconds)
        self.editor.deactivate_effect()
        self._flush(effect="none")

        ran = {}

        def prepare():
            work = ran["dir"] = self.session.run_dir("finetune")
            records.job_started(self.session.folder, "fine-tuning", work)
            self.audit.write("finetune", f"{self._result_label()} -> {work.name}")
            # the review units visited with Next region count as confirmed labels (--reviewed), as in Slicer
            return self.logic.prepare_finetune(nodes, work, device=device, max_seconds=seconds,
                                               output_root=self.workspace.models_root, use_reviewed=True)

        def work(cmd, on_progress, should_cancel):
            return process.run_engine(cmd, on_progress=on_progress, should_cancel=should_cancel, env=self._env())

        def finish(_cmd, lines):
            return process.last_json(lines)

        try:
            summary = await self.jobs.run("fine-tuning", prepare, work, finish)
        except JobBusy as exc:
            self._error(str(exc))
            return
        self._job_ended(ran.get("dir"))
        if summary is None:
            return
        self.audit.write("model", Path(summary["model"]).name)
        new = Path(summary["model"])
        self.refresh_models(select=str(new))
        reviewed = len(nodes.review.reviewed) if nodes.review is not None else 0
        self._info(f"{self.logic.finetune_message(summary, reviewed)}; re-analyzing")
        await self._analyze()

    def cancel(self) -> None:
        if not self.jobs.cancel():
            self._info("nothing to cancel")

    # --- downloads --------------------------------------------------------------------------------------
    def download(self, what: str):
        """Bytes of one result file for the browser (written into the session's export folder first)."""
        if self.nodes is None:
            self._error("nothing to download yet: analyze a CT first")
            return None
        nodes = self.nodes
        writers = {"segmentation": ("drasclr-subtypes.seg.nrrd", lambda p: self.logic.export_segmentation(nodes, p)),
                   "csv": ("stats.csv", lambda p: self.logic.export_csv(nodes, p)),
                   "report": ("report.html", lambda p: self.logic.export_html(nodes, p)),
                   "scene": ("drasclr-scene.mrb", self.logic.export_scene)}
        if what not in writers:
            return None
        name, write = writers[what]
        try:
            path = self.session.export(name, write)  # staged: a full disk leaves no half-written file
        except (OSError, RuntimeError, ValueError) as exc:
            self._error(f"could not write {name}: {failure_text(exc, self.session.folder)}")
            return None
        self.audit.write("export", name, analysis=self._result_label())
        return self.server.protocol.addAttachment(Path(path).read_bytes())

    # --- the session's record (reopen, audit) ------------------------------------------------------------
    def _remember(self, **changes) -> None:
        try:
            records.update(self.session.folder, **changes)
        except OSError as exc:
            log.warning("could not update the session record: %s", exc)

    def _job_ended(self, run: Path | None) -> None:
        """Record how the job that ran in folder ``run`` (None: it never started) ended; empty ``run`` unless done."""
        job = self.jobs.finished  # not .state: the session's next job may already be queued
        if run is None:
            return
        if job.status != "done":
            records.clean_run(run)  # inputs and a killed engine's staging folder
        try:
            records.job_ended(self.session.folder, run.name, job.status, job.message)
        except OSError as exc:
            log.warning("could not update the session record: %s", exc)
        self.audit.write(f"{job.kind} {job.status}", self.state.ct_name)

    def _file_label(self, source) -> str:
        """A CT as the audit log names it: ``demo``, an upload's file name, or a path inside the data folder."""
        if source == "demo":
            return "demo"
        path = Path(source)
        if inside(path, self.session.folder):
            return path.name  # an upload
        try:
            return str(path.resolve().relative_to(self.workspace.data_root))
        except ValueError:
            return path.name

    def _result_label(self) -> str:
        out = self.nodes.output_dir if self.nodes is not None else None
        return f"{out.parent.name}" if out is not None else ""

    def restore(self) -> None:
        """Reopen the session from its record: the CT, the last result, and why a cut-off job failed."""
        note = records.recover(self.session.folder)
        rec = records.read(self.session.folder)
        ct, result = rec.get("ct"), rec.get("result")
        if ct:
            try:
                path = DEMO_SOURCE if ct == "demo" else self.workspace.resolve_input(ct, own=self.session.folder)
            except PathRejected as exc:
                self._error(f"could not reopen the CT: {exc}")
                return
            self._open(self.logic.load_demo_ct if path is DEMO_SOURCE else (lambda: self.logic.load_ct(path)))
            out = self.session.folder / result if result else None
            if self.volume is not None and out is not None and (out / "stats.csv").is_file():
                self._show_results(self.logic.finish_analysis(self.volume, out))
        if note:
            self._flush(job_status="failed", job_message=note)
        self.audit.write("reopen" if ct or rec.get("jobs") else "session start", self.session.id)

    # --- page -------------------------------------------------------------------------------------------
    def _download_button(self, what: str, file_name: str, label: str, mime: str):
        trigger = self.ctrl.trigger_name(self.download)
        v3.VBtn(label, id=f"btn-download-{what}", size="small", variant="tonal", classes="ma1 mr-1 mb-1",
                disabled=("!has_result",),
                click=f"utils.download('{file_name}', trigger('{trigger}', ['{what}']), '{mime}')")

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, theme="dark") as layout:
            self.ui = layout
            layout.title.set_text("DrasCLR reading room")
            client.Style("html { overflow-y: auto; } .drasclr td, .drasclr th { padding: 2px 6px; "
                         "text-align: right; font-size: 12px; } .drasclr td:first-child { text-align: left; }")
            with layout.toolbar:
                v3.VSpacer()
                v3.VBtn("Reset views", id="btn-reset-views", size="small", variant="text", click=self.reset_views,
                        disabled=("!has_ct",), classes="mr-2")
                with html.Div(id="slice-positions", classes="text-caption mr-4"):
                    html.Span("{{ p.label }}", v_for="p in slice_positions", key="p.view", classes="slice-pos mr-2",
                              __properties=[("data_view", "data-view"), ("data_mm", "data-mm")],
                              data_view=("p.view",), data_mm=("p.mm",))
                html.Div("{{ ct_name }}", id="ct-name", classes="text-body-2 mr-4")
                html.Div("session {{ session_id }}", classes="text-caption mr-2", id="session-id")
                html.A("{{ user_name }} · sessions", href="../../sessions", v_show="user_name", id="user-name",
                       classes="text-caption mr-4")
            with layout.drawer as drawer:
                drawer.width = 380
                with html.Div(classes="pa-3"):
                    self._drawer_open()
                    self._drawer_analyze()
                    self._drawer_correct()
                    self._drawer_models()
                    self._drawer_downloads()
                    followup_panel.section(self)
            with layout.content:
                with html.Div(style="display:flex; flex-direction:column; height:100%;"):
                    with html.Div(style="flex: 1 1 60%; min-height: 420px; position: relative;", id="views"):
                        self.layout_manager.initialize_layout_grid(layout)
                    self._results_panel()

    def _drawer_open(self):
        html.Div("1 · Open a chest CT", classes="text-subtitle-2 mb-1")
        with html.Div(classes="d-flex flex-wrap mb-2"):
            v3.VBtn("Load demo CT", id="btn-demo", size="small", color="primary", classes="mr-2 mb-1",
                    click=self.load_demo, disabled=("running",))
            v3.VFileInput(label="Upload CT (.nii.gz, .nrrd, .mha)", density="compact", hide_details=True,
                          id="upload", disabled=("running",),
                          change=f"trigger('{self.ctrl.trigger_name(self.upload)}', [$event.target.files])")
        with html.Div(classes="d-flex mb-3"):
            v3.VTextField(v_model=("ct_path",), label="…or a path in the server's data folder", density="compact",
                          hide_details=True, id="ct-path")
            v3.VBtn("Open", size="small", classes="ml-1 mt-1", click=(self.open_path, "[ct_path]"),
                    disabled=("running",), id="btn-open")

    def _drawer_analyze(self):
        html.Div("2 · Analyze", classes="text-subtitle-2 mb-1")
        v3.VSelect(v_model=("model_path",), items=("models",), label="Model", density="compact", hide_details=True,
                   classes="mb-2", id="model-select")
        with html.Div(classes="d-flex align-center mb-2"):
            v3.VSelect(v_model=("device",), items=("['auto', 'cpu', 'cuda']",), label="Device", density="compact",
                       hide_details=True, style="max-width: 120px")
            v3.VCheckbox(v_model=("tta",), label="Mirror augmentation", density="compact", hide_details=True,
                         classes="ml-2")
        with html.Div(classes="d-flex mb-1"):
            v3.VBtn("Analyze lung", id="btn-analyze", color="primary", size="small", click=self.analyze,
                    disabled=("!has_ct || running",), classes="mr-2")
            v3.VBtn("Cancel", id="btn-cancel", size="small", click=self.cancel, disabled=("!running",))
            html.Span("analyses: {{ analysis_count }}", id="analysis-count", classes="text-caption ml-3 mt-1")
        settings_panel.section()
        v3.VProgressLinear(model_value=("job_fraction",), indeterminate=("job_indeterminate",), height=6,
                           color="primary", active=("running",), classes="mb-1", id="progress")
        html.Div("{{ running ? (job_kind + ': ' + job_desc) : job_message }}", id="job-message",
                 classes="text-caption mb-1")
        html.Div("{{ error }}", id="error", v_show="error", classes="text-caption text-error mb-1")
        html.Div("{{ message }}", id="message", v_show="message", classes="text-caption text-info mb-1")
        v3.VSlider(v_model=("opacity",), min=0, max=1, step=0.05, label="Overlay opacity", density="compact",
                   hide_details=True, classes="mb-3", id="opacity", disabled=("!has_result",))

    def _drawer_correct(self):
        html.Div("3 · Review and correct", classes="text-subtitle-2 mb-1")
        with html.Div(classes="d-flex align-center mb-1"):
            v3.VSwitch(v_model=("uncertainty",), label="Uncertainty", density="compact", hide_details=True,
                       color="warning", id="switch-uncertainty", disabled=("!has_review || running",),
                       classes="mr-3", style="flex: 0 0 auto")
            v3.VBtn("Next region to review", id="btn-next-review", size="small", color="warning", variant="tonal",
                    click=self.next_review, disabled=("!has_review || running",))
        html.Div("{{ review ? review.text : '' }}", id="review-unit", v_show="review", classes="text-caption mb-1")
        html.Div("reviewed {{ reviewed_count }} of {{ review_total }} regions"
                 "{{ review_done ? ' (all)' : '' }}; they count as confirmed labels when fine-tuning",
                 id="review-count", v_show="has_review", classes="text-caption text-medium-emphasis mb-2")
        with v3.VBtnToggle(v_model=("effect",), density="compact", mandatory=True, divided=True, classes="mb-2",
                           disabled=("!has_result || running",)):
            v3.VBtn("Off", value="none", size="small", id="btn-effect-none")
            v3.VBtn("Paint", value="paint", size="small", id="btn-paint")
            v3.VBtn("Erase", value="erase", size="small", id="btn-erase")
        v3.VSelect(v_model=("segment",), items=("segment_items",), label="Subtype to paint", density="compact",
                   hide_details=True, classes="mb-2", id="segment-select")
        v3.VSlider(v_model=("brush",), min=2, max=30, step=1, label="Brush %", density="compact", hide_details=True,
                   classes="mb-2")
        with html.Div(classes="d-flex align-center mb-3"):
            v3.VBtn("Fine-tune from corrections", id="btn-finetune", color="secondary", size="small",
                    click=self.finetune, disabled=("!has_result || running",), classes="mr-2")
            v3.VTextField(v_model=("finetune_seconds",), type="number", label="seconds", density="compact",
                          hide_details=True, style="max-width: 90px")

    def _drawer_models(self):
        html.Div("4 · Model versions", classes="text-subtitle-2 mb-1")
        with html.Div(classes="d-flex mb-3"):
            v3.VSelect(v_model=("version",), items=("versions",), label="Version", density="compact",
                       hide_details=True, id="version-select")
            v3.VBtn("Revert", size="small", classes="ml-1 mt-1", click=self.revert, id="btn-revert",
                    disabled=("running",))

    def _drawer_downloads(self):
        html.Div("5 · Download", classes="text-subtitle-2 mb-1")
        with html.Div(classes="d-flex flex-wrap"):
            self._download_button("segmentation", "subtypes.seg.nrrd", "Segmentation", "application/octet-stream")
            self._download_button("csv", "stats.csv", "stats.csv", "text/csv")
            self._download_button("report", "report.html", "report.html", "text/html")
            self._download_button("scene", "scene.mrb", "Scene .mrb", "application/zip")

    def _results_panel(self):
        with html.Div(v_if="has_result", classes="drasclr pa-2 d-flex", style="flex: 0 0 auto; gap: 16px;",
                      id="results"):
            with html.Div():
                html.Div("Per-region statistics (model {{ last_model }})", classes="text-subtitle-2")
                html.Div("{{ calibration }}", v_if="calibration", id="calibration-line",
                         style="font-size: 12px; color: #8ab4f8; max-width: 720px;")
                html.Div("{{ harmonization }}", v_if="harmonization", id="harmonization-line",
                         style="font-size: 12px; color: #8ab4f8; max-width: 720px;")
                with html.Table(id="stats-table"):
                    with html.Tr():
                        for _, title in TABLE_COLUMNS:
                            html.Th(title)
                    with html.Tr(v_for="row in rows", key="row.region", classes="stats-row"):
                        for key, _ in TABLE_COLUMNS:
                            html.Td(f"{{{{ row.{key} }}}}", classes=f"col-{key}")
            with html.Div(style="min-width: 320px", id="chart"):
                html.Div("Subtype % per region", classes="text-subtitle-2")
                with html.Div(v_for="bar in bars", key="bar.region", classes="d-flex align-center",
                              style="height: 16px; margin: 2px 0;"):
                    html.Div("{{ bar.region }}", style="width: 110px; font-size: 11px;")
                    with html.Div(style="flex: 1; display: flex; height: 12px; background: #333;"):
                        html.Div(v_for="p in bar.parts", key="p.key",
                                 style=("{ width: p.pct + '%', background: p.color }",),
                                 title=("p.label + ' ' + p.pct + '%'",))
                with html.Div(classes="d-flex mt-1", style="font-size: 11px; gap: 8px;"):
                    for key, label, _ in SUBTYPES:
                        html.Span(label, style=f"border-left: 10px solid {self.colors.get(key, '#888')}; "
                                               "padding-left: 3px;")


__all__ = ["ReadingRoom", "COLUMNS"]
