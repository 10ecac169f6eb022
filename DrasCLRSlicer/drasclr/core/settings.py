"""One analysis, described once: :class:`AnalysisSettings`.

Every shell builds the same object — the command line from its arguments (:func:`add_arguments` /
:meth:`AnalysisSettings.from_args`), the Slicer panel from its parameter node, the web reading room from its
state — and the engine records it in stats.json (``settings``). A child process receives it as command-line
flags (:meth:`AnalysisSettings.to_args`), so what the user chose in a panel is exactly what the engine runs.

Adding an analysis option: one field here (with its :func:`option` metadata: the flag, the help text, the label
and, for the shells, whether it belongs to the advanced section), then one widget per shell. The command line,
the child-process flags, stats.json, validation and the web app's advanced section follow from the field.

Torch-free and slicer-free: the panels import it without loading the engine.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
REGIONS = ("lobes", "zones")
LOBE_TOOLS = ("lungmask", "totalsegmentator")
LOBE_CONVENTIONS = ("auto", "ltrc", "totalseg", "cip")
HU_CALIBRATIONS = ("auto", "air", "none")
HARMONIZATIONS = ("auto", "off")
THIN_SLICES = ("auto", "native", "slabs")  # drasclr.analysis.thin_slices.MODES


def option(default, *, flag: str, help: str, label: str, choices: tuple | None = None, kind: str | None = None,
           advanced: bool = True, shell: bool = True, lo: int | None = None, hi: int | None = None):
    """A settings field with what the shells need to show it. ``kind``: ``bool`` (a ``--x/--no-x`` pair),
    ``tristate`` (``--x/--no-x``, absent = the model card decides), ``choice``, ``int``, ``text``; ``shell``
    False: command line only (e.g. the DICOM series picked from a folder); ``lo``/``hi``: an integer's range."""
    if kind is None:
        kind = "choice" if choices else "bool" if isinstance(default, bool) else "text"
    meta = {"flag": flag, "help": help, "label": label, "choices": choices, "kind": kind, "advanced": advanced,
            "shell": shell, "lo": lo, "hi": hi}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AnalysisSettings:
    """What one ``analyze`` does (all defaults = ``drasclr analyze CT -o OUT``)."""

    model: str | None = option(
        None, flag="--model", label="Model", advanced=False,
        help="model folder or .safetensors (default: the bundled demo model, or $DRASCLR_MODEL), or cip-lh: the "
             "reference classifier trained on real expert labels (also reads single axial slices and sparse series)")
    use_model: bool = option(
        True, flag="--model-subtypes", label="Subtype model", advanced=False,
        help="run the subtype model (--no-model: densitometry only, no subtype map, no embedding)")
    device: str = option("auto", flag="--device", label="Device", choices=DEVICES, advanced=False,
                         help="where the model runs (auto: CUDA when present, else CPU)")
    tta: bool = option(
        True, flag="--tta", label="Test-time augmentation",
        help="test-time augmentation: also predict mirrored left-right and average (default; --no-tta about halves "
             "the subtype step, a little less accurate)")
    regions: str = option("lobes", flag="--regions", label="Regions", choices=REGIONS,
                          help="statistics per lobe (default) or per zone (thirds of each lung, 11-16)")
    lobes_from: str | None = option(
        None, flag="--lobes-from", label="Lobes from tool", choices=LOBE_TOOLS,
        help="lobes from this tool when it is installed with its weights (instead of the estimate)")
    lobes_convention: str = option("auto", flag="--lobes-convention", label="Lobe labels", choices=LOBE_CONVENTIONS,
                                   help="label convention of --lobes (default: detect)")
    hu_calibration: str = option(
        "auto", flag="--hu-calibration", label="HU calibration", choices=HU_CALIBRATIONS,
        help="scanner HU calibration from outside (or tracheal) air: auto corrects an offset beyond ±20 HU, air "
             "always corrects, none only measures (default auto; see docs/calibration.md)")
    harmonize: str = option(
        "auto", flag="--harmonize", label="Kernel/dose harmonization", choices=HARMONIZATIONS,
        help="acquisition harmonization: auto brings a sharp-kernel or noisy scan to the training noise look before "
             "the model, and adds harmonized_* densitometry columns; off only measures (default auto; "
             "docs/acquisition.md)")
    thin_slices: str = option(
        "auto", flag="--thin-slices", label="Thin slices", choices=THIN_SLICES,
        help="slices under 1 mm: auto (default) analyses them as slabs of about 2 mm when they hold no finer detail "
             "(measured along the body axis: a scan reconstructed with overlap, or resampled), else natively; "
             "native runs every stage on the native slices; slabs always averages them (faster, but on true "
             "thin-slice detail about 0.02 macro Dice less). Maps come back to every slice, the contract "
             "densitometry is measured on the native voxels (docs/inference_speed.md)")
    density_veto: bool | None = option(
        None, flag="--density-veto", label="Density rule", kind="tristate",
        help="turn emphysema called in normal-density lung normal: too little of the lung around it below the "
             "card's cut (demo-v10: under 8 %% within 20 mm below -955 HU, each slice smoothed at 0.5 mm) (default: "
             "as the model card says; docs/demo_model.md)")
    strict: bool = option(
        False, flag="--strict", label="Refuse unvalidated voxel sizes",
        help="refuse a scan whose voxel size is outside the model's validated range (default: analyze it and flag "
             "the subtype map)")
    embedding: bool = option(
        False, flag="--embedding", label="Patient embedding", shell=False,
        help="also write embedding.npy, the patient's mean patch representation (the features of `drasclr outcome`; "
             "about 1-2 s more on a CPU)")
    batch_size: int | None = option(None, flag="--batch-size", label="Patches per pass", kind="int", lo=1, hi=65536,
                                    help="patches per forward pass (default: from memory)")
    series: str | None = option(None, flag="--series", label="DICOM series", shell=False,
                                help="DICOM SeriesInstanceUID when the folder holds several")
    allow_uneven_slices: bool = option(
        False, flag="--allow-uneven-slices", label="Allow uneven slices", shell=False,
        help="accept a DICOM series with missing slices or uneven spacing: resample it to its median step")

    # --- building --------------------------------------------------------------------------------------------
    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AnalysisSettings:
        """From the namespace :func:`add_arguments` filled (``--no-model`` sets ``use_model`` False)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if getattr(args, "no_model", False):
            values["use_model"] = False
        return cls(**values).checked()

    @classmethod
    def from_panel(cls, values: dict[str, Any], base: AnalysisSettings | None = None,
                   strict: bool = False) -> AnalysisSettings:
        """From what a panel holds, keyed by field name or its camelCase (a Slicer parameter node's names):
        choices in any letter case (``"Auto"``), a tri-state as ``"Model card"``/``"On"``/``"Off"``, an integer
        0 or empty for "automatic", an empty model for the default model. Keys that are not settings are ignored
        (a panel holds more than settings), or refused with ``strict``."""
        by_camel = {camel(f.name): f for f in fields(cls)}
        changes = {}
        for key, value in values.items():
            f = by_camel.get(camel(key))
            if f is not None:
                changes[f.name] = _from_widget(f.metadata["kind"], value)
            elif strict:
                raise InputError(f"unknown analysis setting {key!r}")
        return (base or cls()).replace(**changes)

    @classmethod
    def from_json(cls, data: dict | None) -> AnalysisSettings:
        """From :meth:`to_json` (unknown keys refused: a typo must not silently fall back to a default)."""
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown analysis setting(s): {', '.join(unknown)}")
        return cls(**data).checked()

    def replace(self, **changes) -> AnalysisSettings:
        return dataclasses.replace(self, **changes).checked()

    def checked(self) -> AnalysisSettings:
        """Raise :class:`InputError` for a value outside its choices or range (one message, the flag named)."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            if meta["choices"] and value not in meta["choices"]:
                raise InputError(f"{meta['flag']} must be one of {', '.join(meta['choices'])} (got {value!r})")
            if meta["kind"] in ("bool", "tristate") and not isinstance(value, bool):
                raise InputError(f"{meta['flag']} must be true or false (got {value!r})")
            if meta["kind"] == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InputError(f"{meta['flag']} must be an integer (got {value!r})")
                if (meta["lo"] is not None and value < meta["lo"]) or (meta["hi"] is not None and value > meta["hi"]):
                    raise InputError(f"{meta['flag']} must be in [{meta['lo']}, {meta['hi']}] (got {value})")
        return self

    # --- serialising ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Every field, for stats.json and for a settings file."""
        return dataclasses.asdict(self)

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        default = type(self)()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    def to_args(self) -> list[str]:
        """The ``drasclr analyze`` flags that give these settings (defaults left out), for a child process."""
        args: list[str] = []
        for name, value in self.changed().items():
            meta = field_meta(name, self)
            flag = meta["flag"]
            if name == "use_model":
                args.append("--no-model")
            elif meta["kind"] in ("bool", "tristate"):
                args.append(flag if value else "--no-" + flag[2:])
            elif value is not None:
                args += [flag, str(value)]
        return args


TRISTATE = {"model card": None, "on": True, "off": False}


def _from_widget(kind: str, value):
    if kind == "choice":
        return value.lower() if isinstance(value, str) and value else None
    if kind == "tristate" and isinstance(value, str):
        if value.lower() not in TRISTATE:
            raise InputError(f"expected one of {', '.join(TRISTATE)} (got {value!r})")
        return TRISTATE[value.lower()]
    if kind == "int":
        if value in (None, "", 0, "0"):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InputError(f"expected a whole number (got {value!r})") from None
    if kind == "text":
        return str(value) if value not in (None, "") else None
    return value


def camel(name: str) -> str:
    """``hu_calibration`` -> ``huCalibration`` (Slicer's parameter-node naming)."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def fields(settings=None) -> tuple[dataclasses.Field, ...]:
    """The settings fields (of ``settings``, a settings class or object; default :class:`AnalysisSettings`)."""
    return dataclasses.fields(settings or AnalysisSettings)


def field_meta(name: str, settings=None) -> dict:
    return next(f.metadata for f in fields(settings) if f.name == name)


def add_arguments(parser: argparse.ArgumentParser, settings=None) -> None:
    """The command-line options of every setting (``drasclr analyze``)."""
    for f in fields(settings):
        meta = f.metadata
        if f.name == "use_model":
            parser.add_argument("--no-model", action="store_true", help="densitometry only: no subtype map, no "
                                                                        "embedding")
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": meta["help"]}
        if meta["kind"] in ("bool", "tristate"):
            if f.default is False and meta["kind"] == "bool":
                kwargs["action"] = "store_true"
            else:
                kwargs["action"] = argparse.BooleanOptionalAction
        elif meta["kind"] == "int":
            kwargs["type"] = int
        if meta["choices"]:
            kwargs["choices"] = list(meta["choices"])
        parser.add_argument(meta["flag"], **kwargs)


def shell_options(advanced: bool | None = None) -> list[dict]:
    """What a panel shows for each setting a user may change: ``name``, ``label``, ``kind``, ``choices``,
    ``default``, ``help``, ``advanced`` (``advanced``: only those of that section; None: all)."""
    out = []
    for f in fields():
        meta = f.metadata
        if not meta["shell"] or (advanced is not None and meta["advanced"] != advanced):
            continue
        out.append({"name": f.name, "label": meta["label"], "kind": meta["kind"],
                    "choices": list(meta["choices"]) if meta["choices"] else None, "default": f.default,
                    "help": meta["help"].replace("%%", "%"), "advanced": meta["advanced"]})
    return out
