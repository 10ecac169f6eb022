"""Fine-tuning from corrections with a reviewed mask: reviewed-and-accepted voxels count as confirmed labels, so a
review without any change is something to learn from; the CLI takes ``--reviewed`` and refuses a mask on another
grid with one error line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.io import write_image
from drasclr.dense.corrections import finetune_from_corrections
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from synthetic import synthetic_chest

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reviewed")
    ct, truth = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0))
    torch.manual_seed(0)
    model_dir = save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp / "models" / "t-v1",
                               {"name": "t", "version": "t-v1"})
    pred = ct.with_array(np.where(truth > 0, labels.NORMAL, 0).astype(np.uint8))
    reviewed = np.zeros(truth.shape, np.uint8)
    reviewed[:12][truth[:12] == labels.RIGHT_LUNG] = 1  # the lower half of the right lung was looked at
    corrected = pred.array.copy()
    corrected[(reviewed > 0) & (np.arange(48)[None, None, :] < 14)] = labels.CLE  # part of it corrected
    return tmp, ct, truth, pred, pred.with_array(corrected), ct.with_array(reviewed), model_dir


def test_accepted_review_alone_is_something_to_learn(case):
    tmp, ct, truth, pred, _, reviewed, model_dir = case
    with pytest.raises(InputError, match="nothing to learn"):
        finetune_from_corrections(model_dir, ct, pred, pred, max_seconds=1)
    res = finetune_from_corrections(model_dir, ct, pred, pred, max_seconds=1, reviewed=reviewed)
    n_reviewed = int(((reviewed.array > 0) & (truth > 0)).sum())
    assert res.corrected_voxels == 0 and res.reviewed_voxels == n_reviewed
    assert res.before["voxels"] == n_reviewed  # metrics on the confirmed voxels
    card = json.loads((res.model_dir / "model.json").read_text())
    assert card["finetune"]["reviewed_voxels"] == n_reviewed and card["finetune"]["corrected_voxels"] == 0


def test_reviewed_voxels_are_the_accepted_ones_beside_the_corrections(case):
    tmp, ct, truth, pred, corrected, reviewed, model_dir = case
    res = finetune_from_corrections(model_dir, ct, pred, corrected, max_seconds=1, reviewed=reviewed)
    changed = int((corrected.array != pred.array).sum())
    assert res.corrected_voxels == changed > 0
    assert res.reviewed_voxels == int(((reviewed.array > 0) & (truth > 0)).sum()) - changed > 0
    assert res.before["voxels"] == changed + res.reviewed_voxels


def test_cli_reviewed_mask(case, tmp_path):
    _, ct, truth, pred, corrected, reviewed, model_dir = case
    for name, img in (("ct", ct), ("pred", pred), ("corr", corrected), ("rev", reviewed)):
        write_image(img, tmp_path / f"{name}.nii.gz")
    write_image(reviewed.crop((0, 0, 0), (10, 48, 48)), tmp_path / "small.nii.gz")
    base = [sys.executable, "-m", "drasclr", "finetune", "corrections", tmp_path / "ct.nii.gz",
            tmp_path / "pred.nii.gz", tmp_path / "corr.nii.gz", "--model", model_dir, "-o", tmp_path / "models",
            "--max-seconds", "1", "--device", "cpu"]
    bad = subprocess.run([*base, "--reviewed", tmp_path / "small.nii.gz"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "reviewed" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "models").exists()
    ok = subprocess.run([*base, "--reviewed", tmp_path / "rev.nii.gz"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout[ok.stdout.index("{"):])
    assert out["reviewed_voxels"] > 0 and (tmp_path / "models" / "t-v2" / "model.safetensors").exists()
