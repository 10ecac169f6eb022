"""Coded concepts of the DICOM outputs: segment categories/types (SNOMED CT where a code exists) and the names of
the SR measurements (DICOM/SNOMED where one exists, else the private scheme ``99DRASCLR``).

Subtypes: centriacinar (= centrilobular) emphysema SCT 68328006, paraseptal emphysema SCT 31898008, panacinar
(= panlobular) emphysema SCT 4981000, category "Morphologically Abnormal Structure" SCT 49755003; normal
parenchyma is "Parenchyma" (SCT 91772007) of the lung, category "Tissue" (SCT 85756007). Lobes follow the DICOM
master list (as TotalSegmentator and Slicer do): "Upper/Lower lobe of lung" + laterality modifier Left/Right, and
"Middle lobe of right lung". Zones (no SNOMED concept for thirds of a lung by volume) are "Upper/Middle/Lower zone
of lung" + laterality; left, right and both lungs are "Lung" (+ laterality).
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from ..core import labels, names

PRIVATE_SCHEME = "99DRASCLR"
PRIVATE_SCHEME_NAME = "DrasCLR emphysema-subtype analysis"


def _sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "SCT", meaning)


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


TISSUE = _sct("85756007", "Tissue")
ABNORMAL = _sct("49755003", "Morphologically Abnormal Structure")
ANATOMY = _sct("91723000", "Anatomical Structure")
LUNG = _sct("39607008", "Lung")
LEFT, RIGHT = _sct("7771000", "Left"), _sct("24028007", "Right")

# label value -> (category, type, colour RGB 0..255: drasclr.core.names, the colours of every other display)
SUBTYPE_CODES = {
    labels.NORMAL: (TISSUE, _sct("91772007", "Parenchyma"), names.SUBTYPES[labels.NORMAL].color),
    labels.CLE: (ABNORMAL, _sct("68328006", "Centriacinar emphysema"), names.SUBTYPES[labels.CLE].color),
    labels.PSE: (ABNORMAL, _sct("31898008", "Paraseptal emphysema"), names.SUBTYPES[labels.PSE].color),
    labels.PLE: (ABNORMAL, _sct("4981000", "Panacinar emphysema"), names.SUBTYPES[labels.PLE].color),
}

_UPPER, _LOWER = _sct("45653009", "Upper lobe of lung"), _sct("90572001", "Lower lobe of lung")
_ZONES = (_sct("281392002", "Upper zone of lung"), _sct("281393007", "Middle zone of lung"),
          _sct("281394001", "Lower zone of lung"))
# region label value -> (type, laterality modifier or None)
REGION_CODES = {
    1: (_UPPER, LEFT), 2: (_LOWER, LEFT), 3: (_UPPER, RIGHT), 4: (_sct("72481006", "Middle lobe of right lung"), None),
    5: (_LOWER, RIGHT),
    **{11 + i: (z, LEFT) for i, z in enumerate(_ZONES)}, **{14 + i: (z, RIGHT) for i, z in enumerate(_ZONES)},
}
# the rows of stats.csv that are not a labelled region: whole lungs (segments of their own in the regions SEG)
LUNG_ROWS = {"left_lung": (LUNG, LEFT), "right_lung": (LUNG, RIGHT), "whole_lung": (LUNG, None)}

# --- SR measurement names: stats.csv column -> (name, unit, derivation) ---------------------------------------
ML = CodedConcept("ml", "UCUM", "milliliter")
HU = CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
PERCENT = CodedConcept("%", "UCUM", "percent")
ATTENUATION = CodedConcept("112031", "DCM", "Attenuation Coefficient")
MEASUREMENTS = {
    "volume_ml": (CodedConcept(codes.SCT.Volume.value, "SCT", "Volume"), ML, None),
    "mean_hu": (ATTENUATION, HU, CodedConcept(codes.SCT.Mean.value, "SCT", "Mean")),
    "perc15_hu": (private("PERC15", "15th percentile of attenuation (Perc15)"), HU, None),
    "laa950_pct": (private("LAA950", "Low attenuation area below -950 HU (LAA-950)"), PERCENT, None),
    "laa910_pct": (private("LAA910", "Low attenuation area below -910 HU (LAA-910)"), PERCENT, None),
    "laa856_pct": (private("LAA856", "Low attenuation area below -856 HU (LAA-856)"), PERCENT, None),
    "normal_pct": (private("NORMALPCT", "Normal parenchyma fraction"), PERCENT, None),
    "cle_pct": (private("CLEPCT", "Centrilobular emphysema fraction"), PERCENT, None),
    "pse_pct": (private("PSEPCT", "Paraseptal emphysema fraction"), PERCENT, None),
    "ple_pct": (private("PLEPCT", "Panlobular emphysema fraction"), PERCENT, None),
}
CALIBRATION = private("HUOFFSET", "HU calibration offset subtracted (air reference)")
