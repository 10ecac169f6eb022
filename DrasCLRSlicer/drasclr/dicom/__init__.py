"""DICOM outputs of an analysis (``drasclr analyze ... --dicom`` -> ``OUT/dicom/``), see docs/dicom.md.

- ``seg_subtypes.dcm``: DICOM SEG of the subtype map (segments 1-4 = label values 1-4);
- ``seg_regions.dcm``: DICOM SEG of the regions (lobes or zones) plus left, right and both lungs;
- ``sr_measurements.dcm``: TID 1500 measurement report of every ``stats.csv`` row, referencing the regions SEG.

Both SEGs reference the source series (frames on its slices) and copy its patient and study; nothing is invented,
so a NIfTI/NRRD input is refused. The engine's import rule holds: highdicom and pydicom only, no slicer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..core.errors import InputError

log = logging.getLogger(__name__)

FILES = {"subtypes": "seg_subtypes.dcm", "regions": "seg_regions.dcm", "sr": "sr_measurements.dcm"}


def require_packages() -> None:
    """highdicom (and pydicom) are an extra: a clear error line where they are missing."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise InputError("--dicom needs highdicom: pip install 'drasclr[dicom]'") from None


def write_dicom(result, source: list, folder: str | Path) -> dict[str, Path]:
    """Write the SEGs and the SR of ``result`` (a :class:`drasclr.analysis.analyze.Analysis`) into ``folder``.

    ``source``: the source slice headers (pydicom datasets) in the grid's slice order
    (:func:`drasclr.dicom.source.source_slices`)."""
    from .identity import Algorithm
    from .seg import region_seg, subtype_seg
    from .sr import measurement_report

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every module it copies at INFO
    t0 = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    algorithm = Algorithm.from_card(result.model_card)
    written: dict[str, Path] = {}
    evidence = list(source)
    if result.subtypes is not None:
        seg = subtype_seg(source, result.subtypes, algorithm)
        seg.save_as(folder / FILES["subtypes"])
        written["subtypes"] = folder / FILES["subtypes"]
        evidence.append(seg)
    regions, names = region_seg(source, result.regions, algorithm)
    regions.save_as(folder / FILES["regions"])
    written["regions"] = folder / FILES["regions"]
    sr = measurement_report(result.rows, regions, names, [regions, *evidence], algorithm, result.calibration)
    sr.save_as(folder / FILES["sr"])
    written["sr"] = folder / FILES["sr"]
    log.info("DICOM SEG and SR written in %.1f s", time.perf_counter() - t0)
    return written
