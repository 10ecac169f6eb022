"""Where ``analyze``'s regions come from: a user lobe file (always wins), zones on request, lobes from an
installed deep-learning tool on request, else the estimated lobes of this package.

``region_source`` values recorded in stats.json: ``file``, ``atlas+fissures``, ``lungmask``,
``totalsegmentator``, ``zones``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core.errors import InputError
from ...core.image import CTImage
from ..regions import check_ltrc_lobes, zones_from_lungs

REGION_KINDS = ("lobes", "zones")
LOBE_TOOLS = ("lungmask", "totalsegmentator")


@dataclass
class Regions:
    """The region labelmap on the CT's grid (inside the lung mask) and how it was made."""

    image: CTImage
    kind: str  # "lobes" or "zones"
    source: str  # "file", "atlas+fissures", "lungmask", "totalsegmentator" or "zones"
    warnings: list[str] = field(default_factory=list)


def check_region_options(regions: str = "lobes", lobes_from: str | None = None) -> None:
    """Refuse unknown choices, and a lobe tool that is not installed, before any work starts."""
    if regions not in REGION_KINDS:
        raise InputError(f"unknown regions {regions!r}; expected one of {', '.join(REGION_KINDS)}")
    if lobes_from is None:
        return
    if lobes_from not in LOBE_TOOLS:
        raise InputError(f"unknown lobe tool {lobes_from!r}; expected one of {', '.join(LOBE_TOOLS)}")
    from ..adapters import lungmask_adapter, totalseg_adapter

    adapter = lungmask_adapter if lobes_from == "lungmask" else totalseg_adapter
    if not adapter.available():
        raise InputError(f"--lobes-from {lobes_from}: {lobes_from} is not installed (install it with its weights, "
                         "or leave the option out to use the estimated lobes)")


def lobes_from_tool(ct: CTImage, tool: str, device: str = "cpu") -> CTImage:
    """LTRC lobes (1–5) on ``ct``'s grid from lungmask (``LTRCLobes``) or TotalSegmentator (task ``total``)."""
    from ..adapters import lungmask_adapter, totalseg_adapter

    if tool == "lungmask":
        lobes = lungmask_adapter.segment(ct, "LTRCLobes", force_cpu=device == "cpu")
    elif tool == "totalsegmentator":
        lobes = totalseg_adapter.segment_lobes(ct, device="gpu" if device.startswith("cuda") else "cpu")
    else:
        raise InputError(f"unknown lobe tool {tool!r}; expected one of {', '.join(LOBE_TOOLS)}")
    check_ltrc_lobes(lobes, ct)
    if not lobes.array.any():
        raise InputError(f"{tool} found no lung lobe in this CT")
    return lobes


def choose_regions(ct: CTImage, lungs: CTImage, lobes: CTImage | None = None, regions: str = "lobes",
                   lobes_from: str | None = None, device: str = "cpu", affine=None) -> Regions:
    """The regions for statistics: ``lobes`` (a user labelmap in LTRC numbering on the CT's grid) always wins;
    else ``regions="zones"`` gives zones 11–16; else lobes from ``lobes_from`` (an installed tool) or estimated
    by :func:`drasclr.anatomy.lobes.estimate_lobes` (atlas + fissures; ``affine``: the atlas registration of ``lungs``
    when the caller already has one)."""
    in_lung = lungs.array > 0
    if lobes is not None:
        from ...checks.lung_checks import check_lobes_cover_lungs

        check_ltrc_lobes(lobes, ct)
        inside = np.where(in_lung, lobes.array, 0).astype(np.uint8)
        check_lobes_cover_lungs(inside, lungs.array)
        return Regions(lungs.with_array(inside), "lobes", "file")
    check_region_options(regions, lobes_from)
    if regions == "zones":
        return Regions(zones_from_lungs(lungs), "zones", "zones")
    if lobes_from is not None:
        tool = lobes_from_tool(ct, lobes_from, device)
        return Regions(lungs.with_array(np.where(in_lung, tool.array, 0).astype(np.uint8)), "lobes", lobes_from)
    from . import estimate_lobes

    est = estimate_lobes(ct, lungs, affine=affine)
    return Regions(est.lobes, "lobes", est.source, [f"estimated lobes: {p}" for p in est.problems])
