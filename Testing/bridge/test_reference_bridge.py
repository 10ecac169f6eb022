"""The reference classifier cip-lh in the Slicer bridge: offered by the model list, run in process on a sparse
series and in a child process on a single axial slice (one-slice outputs load as nodes)."""

from __future__ import annotations

from drasclr.core import names
from drasclr.core.versions import REFERENCE_MODEL
from DrasCLRSlicerLib import models, segmentations, tables, volumes
from DrasCLRSlicerLib.logic import DrasCLRLogic
from reference_synthetic import chest_slice


def test_model_list_offers_cip_lh(tmp_path):
    store = models.ModelStore(tmp_path / "user")
    entry = store.find(REFERENCE_MODEL)
    assert entry is not None and entry.label == "cip-lh (bundled)" and entry.source == "bundled"


def test_analyze_in_process_with_cip_lh_on_a_sparse_series(scene):
    ct, truth = chest_slice(seed=3, n_slices=6, slice_mm=10.0, size=256)  # 6 cm of lung: above the 250 ml floor
    node = volumes.add_volume_node(scene, ct, "sparse")
    nodes = DrasCLRLogic(scene).analyze(node, model=REFERENCE_MODEL, regions="zones")
    assert nodes.subtypes is not None and nodes.model == REFERENCE_MODEL
    assert nodes.region_kind == "zones"
    rows = {r["region"]: r for r in tables.table_to_rows(nodes.table)}
    assert rows["right_lung"]["normal_pct"] > 90
    assert set(segmentations.segment_names(nodes.subtypes)) == {s.title for s in names.SUBTYPES.values()}


def test_single_slice_in_a_child_process(scene, tmp_path):
    ct, truth = chest_slice(seed=8)
    node = volumes.add_volume_node(scene, ct, "slice")
    nodes = DrasCLRLogic(scene).run_in_subprocess(node, model="cip-lh", device="cpu", work_dir=tmp_path)
    assert nodes.region_kind == "lungs"
    assert [r["region"] for r in tables.table_to_rows(nodes.table)] == ["left_lung", "right_lung", "whole_lung"]
    assert nodes.prediction.array.shape == ct.array.shape
    assert ((nodes.prediction.array > 0) == (truth > 0)).mean() > 0.99
