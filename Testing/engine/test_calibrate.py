"""Per-class decision weights: fitted on whole volumes, stored in the card, applied by analyze."""

import json

import numpy as np
import pytest
import torch

from cli_runner import run_cli
from drasclr.core import labels
from drasclr.core.io import read_image, write_image
from drasclr.dense import ProbabilityMap
from drasclr.dense.calibrate import fit_class_weights, weighted_labels
from drasclr.dense.infer import card_class_weights
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from drasclr.model import read_card
from drasclr.model.checkpoint import sha256_file
from synthetic import synthetic_chest

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def over_called_cle(n=20000, seed=0):
    """Probabilities (classes 1-4) of a model that calls CLE on a fifth of the normal voxels too."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.1, labels.CLE, labels.NORMAL).astype(np.uint8)
    p = np.zeros((4, n), np.float32)
    p[0] = 0.5
    p[1] = np.where(truth == labels.CLE, 0.62, np.where(rng.random(n) < 0.2, 0.55, 0.2))
    p[2:] = 0.01
    return p / p.sum(0), truth


def test_weights_undo_an_over_called_subtype():
    p, t = over_called_cle()
    cal = fit_class_weights([p], [t])
    assert cal.macro_before < 0.6  # plain argmax: CLE Dice = 2*2000 / (2000 + 2000 + 3600)
    assert cal.macro_after > 0.95
    assert cal.weights[0] == 1.0 and cal.weights[1] < 1.0
    assert (weighted_labels(p, cal.weights) == t).mean() > 0.99


def test_weights_stay_one_when_argmax_is_already_right():
    p, t = over_called_cle()
    p = np.where(np.arange(4)[:, None] == (t - 1)[None], 0.9, 0.02).astype(np.float32)
    cal = fit_class_weights([p], [t])
    assert cal.weights == [1.0, 1.0, 1.0, 1.0] and cal.macro_after == pytest.approx(1.0)


def test_probabilities_to_labels_applies_the_weights():
    ct, truth = synthetic_chest(shape=(16, 32, 32), spacing=(4.0, 4.0, 4.0))
    probs = np.zeros((5, *ct.array.shape), np.float32)
    probs[labels.NORMAL] = 0.6
    probs[labels.PLE] = 0.4
    pmap = ProbabilityMap(probs, ct)
    plain = pmap.labels(ct, truth).array
    weighted = pmap.labels(ct, truth, [1.0, 1.0, 1.0, 2.0]).array
    lung = truth > 0
    assert (plain[lung] == labels.NORMAL).all() and (weighted[lung] == labels.PLE).all()
    assert (weighted[~lung] == 0).all()


def test_card_weights_are_checked():
    assert card_class_weights({"name": "m"}) is None
    assert card_class_weights({"inference": {"class_weights": [1, 2, 3, 4]}}) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        card_class_weights({"inference": {"class_weights": [1, 2]}})
    with pytest.raises(ValueError):
        card_class_weights({"inference": {"class_weights": [1, 0, 1, 1]}})


def test_a_card_with_bad_weights_is_refused_at_load(tmp_path):
    from drasclr.core.errors import InputError
    from drasclr.dense.store import load_segmenter

    torch.manual_seed(0)
    folder = save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp_path / "m-v1",
                            {"name": "m", "inference": {"class_weights": [1.0, -2.0, 1.0, 1.0]}})
    with pytest.raises(InputError, match="class_weights"):
        load_segmenter(folder)
    ct, _ = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0))
    write_image(ct, tmp_path / "ct.nii.gz")
    proc = run_cli("analyze", tmp_path / "ct.nii.gz", "-o", tmp_path / "out", "--model", folder)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "class_weights" in proc.stderr
    assert not (tmp_path / "out").exists()



@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    for i in range(2):
        ct, truth = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0), seed=i)
        sub = np.where(truth == 1, labels.NORMAL, np.where(truth == 2, labels.PLE, 0)).astype(np.uint8)
        (tmp / "data" / f"case_{i}").mkdir(parents=True)
        write_image(ct, tmp / "data" / f"case_{i}" / "ct.nii.gz")
        write_image(ct.with_array(sub), tmp / "data" / f"case_{i}" / "subtypes.nii.gz")
    torch.manual_seed(0)
    model = save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp / "models" / "t-v1",
                           {"name": "t", "version": "t-v1"})
    return tmp, model


def test_calibrate_cli_writes_a_new_version_and_analyze_uses_its_weights(cohort):
    tmp, model = cohort
    digest = sha256_file(model / "model.safetensors")
    out = tmp / "models" / "t-v2"
    proc = run_cli("finetune", "calibrate", "--data", tmp / "data", "--model", model, "-o", out)
    assert proc.returncode == 0, proc.stderr
    card = read_card(out)
    inf = card["inference"]
    assert len(inf["class_weights"]) == 4 and inf["calibrated_on"] == ["case_0", "case_1"]
    assert inf["val_volume_macro_dice_after"] >= inf["val_volume_macro_dice_before"]
    assert card["parent"] == {"folder": "t-v1", "sha256": digest} and card["lineage"] == ["t-v1"]
    assert sha256_file(model / "model.safetensors") == digest and "inference" not in read_card(model)
    again = run_cli("finetune", "calibrate", "--data", tmp / "data", "--model", model, "-o", out)
    assert again.returncode == 2 and again.stderr.startswith("error:")

    # analyze applies the card's weights: an overwhelming PSE weight makes every lung voxel PSE
    card_path = out / "model.json"
    forced = json.loads(card_path.read_text())
    forced["inference"]["class_weights"] = [1e-6, 1e-6, 1e6, 1e-6]
    card_path.write_text(json.dumps(forced))
    res = tmp / "res"
    proc = run_cli("analyze", tmp / "data" / "case_0" / "ct.nii.gz", "-o", res, "--model", out)
    assert proc.returncode == 0, proc.stderr
    sub = read_image(res / "subtypes.nii.gz").array
    assert (sub > 0).any() and set(np.unique(sub[sub > 0]).tolist()) == {labels.PSE}
    assert json.loads((res / "stats.json").read_text())["model"]["tta"] is True  # mirrored TTA by default
