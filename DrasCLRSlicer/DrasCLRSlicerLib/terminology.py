"""Names, colours and codes of the emphysema subtypes, read from the module's terminology JSON.

The JSON (``Resources/SegmentationCategoryTypeModifier-DrasCLR.term.json``) is in Slicer's terminology format,
so Slicer's Terminologies module can load it too; each type carries its DrasCLR label value and the matching
Chest Imaging Platform chest types as extra keys. No slicer import here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from drasclr.core import labels, names

RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
TERMINOLOGY_FILE = RESOURCES / "SegmentationCategoryTypeModifier-DrasCLR.term.json"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class SegmentEntry:
    """One label value of a labelmap and the segment that stands for it."""

    value: int
    name: str
    color: tuple[float, float, float]  # RGB in [0, 1]
    code: tuple[str, str, str] | None = None  # (CodingSchemeDesignator, CodeValue, CodeMeaning)
    terminology: str | None = None  # Slicer's serialized terminology entry (vtkSegment.SetTerminology)


def subtype_entries(path: str | Path = TERMINOLOGY_FILE) -> list[SegmentEntry]:
    """The four subtype segments (values 1..4) in label order, from the terminology JSON."""
    doc = json.loads(Path(path).read_text())
    context = doc["SegmentationCategoryTypeContextName"]
    entries = []
    for category in doc["SegmentationCodes"]["Category"]:
        cat = "^".join(category[k] for k in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning"))
        for t in category["Type"]:
            rgb = tuple(c / 255.0 for c in t["recommendedDisplayRGBValue"])
            code = (t["CodingSchemeDesignator"], t["CodeValue"], t["CodeMeaning"])
            term = f"{context}~{cat}~{'^'.join(code)}~^^~{ANATOMIC_CONTEXT}~^^~^^"
            entries.append(SegmentEntry(int(t["DrasCLRLabelValue"]), t["CodeMeaning"], rgb, code, term))
    return sorted(entries, key=lambda e: e.value)


def region_entries(values=None) -> list[SegmentEntry]:
    """Segments for lobes (1-5) and zones (11-16): names and colours from ``drasclr.core.names`` (as in the report)."""
    values = sorted(labels.REGION_NAMES) if values is None else sorted(int(v) for v in values)
    out = []
    for v in values:
        if v not in names.REGIONS:
            raise KeyError(f"unknown region label {v}")
        shown = names.REGIONS[v]
        out.append(SegmentEntry(v, shown.title, tuple(c / 255.0 for c in shown.color)))
    return out
