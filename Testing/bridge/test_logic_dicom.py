"""DrasCLRLogic.export_dicom: the results in the scene as DICOM SEG + SR referencing the series the CT came from."""

from __future__ import annotations

import numpy as np
import pytest
from bridge_support import synthetic_chest

from dicom_checks import assert_regions_equal, assert_sr_equals_csv, source_order
from dicom_writer import write_dicom_series
from drasclr.analysis.stats import write_csv
from drasclr.core.io import write_image
from DrasCLRSlicerLib.logic import DrasCLRLogic
from DrasCLRSlicerLib.segmentations import segmentation_to_labelmap
from DrasCLRSlicerLib.terminology import region_entries

hd = pytest.importorskip("highdicom", reason="highdicom not installed (pip install '.[dicom]')")


def test_export_dicom_from_the_scene(scene, tmp_path):
    series = tmp_path / "series"
    write_dicom_series(synthetic_chest(), series)
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(logic.load_ct(series, "chest"), use_model=False)
    written = logic.export_dicom(nodes, series, tmp_path / "dicom")
    assert set(written) == {"regions", "sr"}  # densitometry only: no subtype SEG
    uids = source_order(series)
    seg = hd.seg.segread(written["regions"])
    regions = segmentation_to_labelmap(nodes.regions, nodes.volume, region_entries())
    assert np.isin(regions.array, [1, 2, 3, 4, 5]).sum() > 1000
    write_image(regions, tmp_path / "regions.nii.gz", dtype=np.uint8)
    assert_regions_equal(seg, tmp_path / "regions.nii.gz", uids)
    write_csv(nodes.rows, tmp_path / "stats.csv")
    assert_sr_equals_csv(hd.sr.srread(written["sr"]), tmp_path / "stats.csv", seg.SOPInstanceUID, set(uids))


def test_export_dicom_refuses_a_series_that_is_not_the_ct(scene, tmp_path):
    from drasclr.core.errors import InputError

    write_dicom_series(synthetic_chest(), tmp_path / "a")
    write_dicom_series(synthetic_chest(shape_zyx=(60, 96, 96)), tmp_path / "b")
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(logic.load_ct(tmp_path / "a", "chest"), use_model=False)
    with pytest.raises(InputError, match="matches the analysed grid"):
        logic.export_dicom(nodes, tmp_path / "b", tmp_path / "dicom")
    assert not (tmp_path / "dicom").exists()
