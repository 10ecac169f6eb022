"""A TID 1500 Measurement Report (highdicom Comprehensive 3D SR) holding the rows of ``stats.csv``: one volumetric
ROI group per region, referencing its segment in the regions SEG (and through it the source series), with volume,
mean HU, Perc15, LAA-950/-910/-856, the subtype percentages and, where the HU calibration was applied, its offset.
"""

from __future__ import annotations

import math

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes as dcodes
from pydicom.uid import generate_uid

from . import codes
from .identity import Algorithm
from .seg import SR_SERIES_NUMBER

CT_CHEST = hd.sr.CodedConcept("24627-2", "LN", "CT Chest")


def _group(name: str, row: dict, seg: pydicom.Dataset, number: int, algorithm: Algorithm,
           calibration_hu: float | None):
    algo = algorithm.sr_identification()
    measurements = []
    for column, (concept, unit, derivation) in codes.MEASUREMENTS.items():
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # an empty region has no mean or percentile; the SR leaves it out as stats.csv leaves it blank
        measurements.append(hd.sr.Measurement(name=concept, value=float(value), unit=unit, derivation=derivation,
                                              algorithm_id=algo))
    if calibration_hu is not None:
        measurements.append(hd.sr.Measurement(name=codes.CALIBRATION, value=calibration_hu, unit=codes.HU,
                                              algorithm_id=algo))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name),
        referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, number),
        finding_type=codes.LUNG, algorithm_id=algo, measurements=measurements)


def measurement_report(rows: list[dict], region_seg: pydicom.Dataset, segment_names: list[str],
                       evidence: list[pydicom.Dataset], algorithm: Algorithm,
                       calibration: dict | None = None) -> hd.sr.Comprehensive3DSR:
    """``rows``: stats rows (``region`` + the stats.csv columns); ``segment_names[i]`` is the region of segment
    ``i + 1`` of ``region_seg``; ``evidence``: the SEGs and the source slices the report refers to."""
    applied = float(calibration.get("applied_hu") or 0.0) if calibration else 0.0
    calibration_hu = applied if applied != 0.0 else None
    groups = [_group(r["region"], r, region_seg, segment_names.index(r["region"]) + 1, algorithm, calibration_hu)
              for r in rows if r["region"] in segment_names]
    observer = hd.sr.ObserverContext(
        observer_type=dcodes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=algorithm.name, manufacturer_name=algorithm.manufacturer,
            model_name=algorithm.version))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=observer),
                                     procedure_reported=CT_CHEST, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=algorithm.manufacturer, is_complete=True,
        series_description="Emphysema subtype measurements")
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = codes.PRIVATE_SCHEME
    item.CodingSchemeName = codes.PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "DrasCLRSlicer"
    sr.CodingSchemeIdentificationSequence = [item]
    return sr
