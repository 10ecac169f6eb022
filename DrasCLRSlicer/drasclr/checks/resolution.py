"""Resolution guard: is a scan's voxel size inside the range the subtype model was trained and validated on?

The model reads 1 mm resampled patches, but resampling cannot create texture a coarse scan never recorded: a
4 mm scan resampled to 1 mm is a blur the model never saw. Its model card therefore records the voxel sizes of
the scans it was trained and validated on, as ``validated_spacing_mm``::

    {"in_plane": [min, max], "slice": [min, max], "source": "..."}

(in-plane = the larger of the two in-plane spacings; slice = the spacing along the scan's cranio-caudal axis).
Cards without the field get :data:`DEFAULT_VALIDATED_SPACING`. A scan outside the range still gets its subtype
map, flagged (``warnings`` in stats.json, the report and the Slicer panel); with ``--strict`` it is refused
(``InputError`` -> ``error:`` and exit 2). Densitometry does not depend on the model and always runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import InputError
from ..core.image import CTImage

# for cards without the field: the clinical chest-CT range the 1 mm preprocessing is meant for
DEFAULT_VALIDATED_SPACING = {"in_plane": [0.4, 2.5], "slice": [0.5, 5.0],
                             "source": "default for model cards without validated_spacing_mm"}
ROUND = 3


@dataclass
class ResolutionCheck:
    spacing_mm: dict  # {"in_plane": float, "slice": float}
    validated_spacing_mm: dict
    from_card: bool
    in_range: bool

    def describe(self) -> str:
        v, sp = self.validated_spacing_mm, self.spacing_mm
        return (f"voxels of {sp['in_plane']:g} mm in-plane x {sp['slice']:g} mm slices are outside the model's "
                f"validated range (in-plane {v['in_plane'][0]:g}-{v['in_plane'][1]:g} mm, slices "
                f"{v['slice'][0]:g}-{v['slice'][1]:g} mm)")

    def coarser(self) -> bool:
        """True when a dimension is coarser than validated (texture the model needs is missing), False when the
        scan is only finer than validated (sharper texture than the model was trained on)."""
        v, sp = self.validated_spacing_mm, self.spacing_mm
        return any(sp[k] > v[k][1] + 1e-6 for k in ("in_plane", "slice"))

    def warning(self) -> dict | None:
        if self.in_range:
            return None
        why = ("coarser voxels lose the texture the subtype model reads" if self.coarser() else
               "finer voxels give sharper texture than the model was trained on")
        return {"code": "resolution_outside_validated",
                "message": f"{self.describe()}: {why}, so the subtype map is unverified; densitometry is unaffected"}

    def to_json(self) -> dict:
        return asdict(self)


def scan_spacing(spacing_xyz, direction=None) -> dict:
    """``{"in_plane": ..., "slice": ...}`` mm for an image's ITK spacing; the slice axis is the index axis closest
    to the patient's S direction (axis z when ``direction`` is None)."""
    sp = [float(s) for s in spacing_xyz]
    if direction is None:
        k = 2
    else:
        import numpy as np

        k = int(np.argmax(np.abs(np.asarray(direction, float).reshape(3, 3)[2, :])))
    others = [sp[i] for i in range(3) if i != k]
    return {"in_plane": round(max(others), ROUND), "slice": round(sp[k], ROUND)}


def validated_spacing(card: dict | None) -> tuple[dict, bool]:
    """The card's ``validated_spacing_mm`` (checked) and True, or the default and False."""
    v = (card or {}).get("validated_spacing_mm")
    if v is None:
        return dict(DEFAULT_VALIDATED_SPACING), False
    try:
        rng = {k: [float(v[k][0]), float(v[k][1])] for k in ("in_plane", "slice")}
    except (KeyError, TypeError, IndexError, ValueError):
        raise InputError(f"model card: malformed validated_spacing_mm {v!r} (needs in_plane and slice [min, max])") \
            from None
    if any(lo <= 0 or hi < lo for lo, hi in rng.values()):
        raise InputError(f"model card: impossible validated_spacing_mm {v!r}")
    return {**rng, "source": v.get("source", "model card")}, True


def check_resolution(ct: CTImage, card: dict | None) -> ResolutionCheck:
    """Compare ``ct``'s voxel size with the model card's validated range."""
    rng, from_card = validated_spacing(card)
    sp = scan_spacing(ct.spacing, ct.direction)
    ok = all(rng[k][0] - 1e-6 <= sp[k] <= rng[k][1] + 1e-6 for k in ("in_plane", "slice"))
    return ResolutionCheck(spacing_mm=sp, validated_spacing_mm=rng, from_card=from_card, in_range=ok)


def require_resolution(ct: CTImage, card: dict | None) -> ResolutionCheck:
    """Strict mode: :func:`check_resolution`, raising ``InputError`` when out of range."""
    check = check_resolution(ct, card)
    if not check.in_range:
        raise InputError(check.describe() + " (--strict: run without it for a flagged map, or with --no-model "
                         "for densitometry only)")
    return check


def spacing_range(spacings: list[dict], source: str) -> dict:
    """The card field covering a list of :func:`scan_spacing` results."""
    if not spacings:
        raise ValueError("no scans")
    return {k: [min(s[k] for s in spacings), max(s[k] for s in spacings)] for k in ("in_plane", "slice")} | {
        "source": source}


def spacing_of_file(path: str | Path) -> dict:
    """:func:`scan_spacing` of an image file, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return scan_spacing(reader.GetSpacing(), reader.GetDirection())


def merge_ranges(a: dict | None, b: dict, source: str) -> dict:
    """The union of two card fields (a parent model's and a new cohort's)."""
    if not a:
        return {**b, "source": source}
    return {k: [min(a[k][0], b[k][0]), max(a[k][1], b[k][1])] for k in ("in_plane", "slice")} | {"source": source}
