"""Fine-tuning from corrections: a new model version beside the old one, the old one untouched, metrics
before/after on the corrected voxels, and clear refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.io import write_image
from drasclr.dense.cohort import stratified_split
from drasclr.dense.corrections import finetune_from_corrections
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from drasclr.model.checkpoint import sha256_file
from synthetic import synthetic_chest

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corr")
    ct, truth = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0))
    torch.manual_seed(0)
    model_dir = save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp / "models" / "t-v1",
                               {"name": "t", "version": "t-v1"})
    pred = ct.with_array(np.where(truth > 0, labels.NORMAL, 0).astype(np.uint8))
    corrected = pred.array.copy()
    corrected[(truth == labels.LEFT_LUNG)] = labels.CLE  # the annotator marks the left lung centrilobular
    return tmp, ct, pred, pred.with_array(corrected), model_dir


def test_new_version_beside_the_old_with_metrics(case):
    tmp, ct, pred, corrected, model_dir = case
    digest = sha256_file(model_dir / "model.safetensors")
    res = finetune_from_corrections(model_dir, ct, pred, corrected, max_seconds=3)
    assert res.model_dir == model_dir.parent / "t-v2" and (res.model_dir / "model.safetensors").exists()
    assert sha256_file(model_dir / "model.safetensors") == digest  # the parent is never overwritten
    card = json.loads((res.model_dir / "model.json").read_text())
    assert card["parent"]["sha256"] == digest and card["lineage"] == ["t-v1"]
    ft = card["finetune"]
    assert ft["corrected_voxels"] == int((corrected.array != pred.array).sum()) > 0
    assert 0 <= ft["metrics_before"]["accuracy"] <= 1 and 0 <= ft["metrics_after"]["accuracy"] <= 1
    again = finetune_from_corrections(model_dir, ct, pred, corrected, max_seconds=1)
    assert again.model_dir.name == "t-v3"


def test_refusals(case):
    tmp, ct, pred, corrected, model_dir = case
    bad = corrected.with_array(np.where(corrected.array > 0, 7, 0).astype(np.uint8))
    with pytest.raises(InputError, match="unknown label values"):
        finetune_from_corrections(model_dir, ct, pred, bad)
    with pytest.raises(InputError, match="nothing to learn"):
        finetune_from_corrections(model_dir, ct, pred, pred)
    other = ct.crop((0, 0, 0), (20, 48, 48))
    with pytest.raises(InputError, match="grid"):
        finetune_from_corrections(model_dir, ct, pred, other.with_array(np.zeros(other.array.shape, np.uint8)))


def test_strokes_outside_the_lung_are_ignored_and_counted(case, tmp_path):
    _, ct, pred, corrected, model_dir = case
    wall = (pred.array == 0) & (ct.array > -200)  # body wall: outside the analysed lung
    assert wall.sum() > 50
    stray = corrected.array.copy()
    stray[wall] = labels.PLE  # a stroke that slipped onto the chest wall
    res = finetune_from_corrections(model_dir, ct, pred, corrected.with_array(stray), max_seconds=1,
                                    out_root=tmp_path)
    assert res.outside_lung_voxels == int(wall.sum())
    assert res.corrected_voxels == int((corrected.array != pred.array).sum())  # only the lung's changes
    card = json.loads((res.model_dir / "model.json").read_text())
    assert card["finetune"]["outside_lung_voxels"] == int(wall.sum())
    only_outside = pred.array.copy()
    only_outside[wall] = labels.PLE
    with pytest.raises(InputError, match="nothing to learn .*outside the lung are ignored"):
        finetune_from_corrections(model_dir, ct, pred, pred.with_array(only_outside), out_root=tmp_path)


def test_cli_refuses_corrections_on_another_grid(case, tmp_path):
    _, ct, pred, corrected, model_dir = case
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(pred, tmp_path / "pred.nii.gz")
    small = corrected.crop((0, 0, 0), (10, 48, 48))
    write_image(small, tmp_path / "corr.nii.gz")
    proc = subprocess.run([sys.executable, "-m", "drasclr", "finetune", "corrections", tmp_path / "ct.nii.gz",
                           tmp_path / "pred.nii.gz", tmp_path / "corr.nii.gz", "--model", model_dir],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "grid" in proc.stderr
    assert not (model_dir.parent / "t-v9").exists()


def test_stratified_split_spreads_over_burden():
    burden = [0.0] * 10 + [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    val = stratified_split(burden, 0.2, seed=0)
    assert len(val) == 4 and len(set(val)) == 4
    assert sum(burden[i] > 0 for i in val) >= 2  # not only healthy cases
    assert stratified_split(burden, 0.2, seed=0) == val
