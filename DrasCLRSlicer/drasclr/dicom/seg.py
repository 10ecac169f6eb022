"""DICOM Segmentations (highdicom, BINARY, one frame per source slice that holds the segment) of the subtype map
and of the regions.

Subtype SEG: segments 1-4 = label values 1-4 (normal parenchyma, CLE, PSE, PLE); they never overlap, so the SEG
turns back into ``subtypes.nii.gz`` exactly. Regions SEG: one segment per region label present (lobes 1-5 or
zones 11-16, in label order), then left lung, right lung and both lungs (overlapping the regions), so every row of
``stats.csv`` has a segment for the SR to reference.
"""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from ..core import labels, names
from ..core.image import CTImage
from . import codes
from .identity import Algorithm

SUBTYPE_SERIES_NUMBER, REGION_SERIES_NUMBER, SR_SERIES_NUMBER = 9101, 9102, 9103


def _description(number: int, label: str, category, kind, modifier, rgb, algorithm: Algorithm):
    kind = copy.deepcopy(kind)  # the modifier below goes into this segment's item, never into the shared constant
    desc = hd.seg.SegmentDescription(
        segment_number=number, segment_label=label, segmented_property_category=category,
        segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.seg_identification(), tracking_uid=generate_uid(), tracking_id=label,
        display_color=hd.color.CIELabColor.from_rgb(*rgb))
    if modifier is not None:
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return desc


def _segmentation(source: list[pydicom.Dataset], masks: np.ndarray, descriptions, series_number: int,
                  title: str, algorithm: Algorithm) -> hd.seg.Segmentation:
    """``masks``: uint8 label array ``(Z, Y, X)`` (values = segment numbers) or bool ``(Z, Y, X, S)``."""
    return hd.seg.Segmentation(
        source_images=source, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.name, software_versions=algorithm.software_version,
        device_serial_number="none", series_description=title, content_label=title.upper().replace(" ", "_")[:16],
        content_description=title, content_creator_name="DrasCLR^Automatic")


def subtype_seg(source: list[pydicom.Dataset], subtypes: CTImage, algorithm: Algorithm) -> hd.seg.Segmentation:
    """The subtype map as segments 1-4 (label value = segment number)."""
    descriptions = [_description(v, names.SUBTYPES[v].title, *codes.SUBTYPE_CODES[v][:2], None,
                                 codes.SUBTYPE_CODES[v][2], algorithm) for v in sorted(labels.SUBTYPES)]
    arr = np.where(subtypes.array <= max(labels.SUBTYPES), subtypes.array, 0).astype(np.uint8)
    return _segmentation(source, arr, descriptions, SUBTYPE_SERIES_NUMBER, "Emphysema subtypes", algorithm)


def region_segments(regions: CTImage) -> list[tuple[str, np.ndarray]]:
    """``(stats.csv region name, mask)`` for each segment of the regions SEG, in segment-number order."""
    arr = regions.array
    present = [int(v) for v in np.unique(arr) if int(v) in labels.REGION_NAMES]
    out = [(labels.REGION_NAMES[v], arr == v) for v in present]
    left = np.isin(arr, [v for v in present if v in (*labels.LEFT_LOBES, *labels.LEFT_ZONES)])
    right = np.isin(arr, [v for v in present if v in (*labels.RIGHT_LOBES, *labels.RIGHT_ZONES)])
    return [*out, ("left_lung", left), ("right_lung", right), ("whole_lung", left | right)]


def _region_code(name: str):
    if name in codes.LUNG_ROWS:
        return codes.LUNG_ROWS[name]
    value = next(v for v, n in labels.REGION_NAMES.items() if n == name)
    return codes.REGION_CODES[value]


def region_seg(source: list[pydicom.Dataset], regions: CTImage, algorithm: Algorithm):
    """The regions SEG and the stats.csv region name of each segment (segment ``i + 1`` is ``names[i]``)."""
    segments = region_segments(regions)
    descriptions = []
    for i, (name, _mask) in enumerate(segments):
        kind, modifier = _region_code(name)
        rgb = (128, 128, 128) if name in codes.LUNG_ROWS else _region_rgb(i)
        descriptions.append(_description(i + 1, name.replace("_", " ").capitalize(), codes.ANATOMY, kind,
                                         modifier, rgb, algorithm))
    masks = np.stack([m for _n, m in segments], axis=-1)
    seg = _segmentation(source, masks, descriptions, REGION_SERIES_NUMBER, "Lung regions", algorithm)
    return seg, [n for n, _m in segments]


def _region_rgb(i: int) -> tuple[int, int, int]:
    palette = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0)]
    return palette[i % len(palette)]
