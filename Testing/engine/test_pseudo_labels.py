"""Real CTs as training cases: the reference classifier's confident labels, vetoed where density disagrees;
weighted case sampling; pseudo-labelled cases never validate."""

from __future__ import annotations

import json

import numpy as np
import torch

from drasclr.core import labels
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct, read_image, write_image
from drasclr.dense.cohort import disease_burden
from drasclr.dense.pseudo import is_pseudo, pseudo_label, sample_weight, write_pseudo_case
from drasclr.dense.recipe import CohortRecipe, train_cohort
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.train import TrainCase, sample_batch
from drasclr.model import read_card
from drasclr.reference.predict import UNSURE
from drasclr.research.phantom import demo_paths
from synthetic import synthetic_chest

DEMO_CT = demo_paths()["ct"]


def test_pseudo_labels_keep_confident_density_consistent_calls_only(tmp_path):
    ct = read_ct(DEMO_CT)
    case = pseudo_label(ct, min_confidence=0.8, sample_weight=4.0)
    sub, a = case.subtypes.array, case.ct.array
    lung = sub > 0
    assert set(np.unique(sub)) <= {0, 1, 2, 3, 4, UNSURE}
    m = case.meta
    assert sum(m["counts"].values()) == m["lung_voxels"] == int(lung.sum())
    assert 0.1 < m["labelled_fraction"] < 1.0  # some lung is left unlabelled (ignored), most is labelled or not
    emph = (sub >= labels.CLE) & (sub <= labels.PLE)
    if emph.any():  # every emphysema label sits in lung that is low-attenuating around it
        assert (a[emph] < -950).mean() > (a[sub == labels.NORMAL] < -950).mean()
    out = write_pseudo_case(case, tmp_path / "real_demo", DEMO_CT)
    assert is_pseudo(out) and sample_weight(out) == 4.0
    assert json.loads((out / "meta.json").read_text())["source"] == DEMO_CT.name  # a file name, never a path
    assert np.array_equal(read_image(out / "subtypes.nii.gz").array, sub)
    assert disease_burden(out) == float(emph.mean())  # unlabelled lung (255) is not emphysema


def test_case_weights_steer_the_sampler():
    grid = CTImage(np.zeros((40, 40, 40), np.int16))
    cases = []
    for w in (1.0, 9.0):
        target = np.full((40, 40, 40), labels.NORMAL, np.uint8)
        c = TrainCase(np.full((40, 40, 40), w, np.int16), target, grid, lambda p: np.zeros((len(p), 3), np.float32),
                      weight=w)
        c.by_class[labels.NORMAL] = np.flatnonzero(target)[:100]
        cases.append(c)
    x, _, _ = sample_batch(cases, 400, np.random.default_rng(0), jitter=0)
    heavy = (x[:, 16, 16, 16] == 9).mean()
    assert 0.84 < heavy < 0.96  # 9 : 1


def test_pseudo_labelled_cases_always_train_never_validate(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        ct, truth = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0), seed=30 + i)
        sub = np.where(truth == 1, labels.NORMAL, np.where(truth == 2, labels.PLE, 0)).astype(np.uint8)
        if i == 0:  # a pseudo-labelled case with heavy disease: stratification alone would put it in validation
            sub = np.where(truth > 0, np.where(np.arange(48)[None, None] % 2 == 0, labels.CLE, UNSURE), 0)
        (data / f"case_{i}").mkdir(parents=True)
        write_image(ct, data / f"case_{i}" / "ct.nii.gz")
        write_image(ct.with_array(sub.astype(np.uint8)), data / f"case_{i}" / "subtypes.nii.gz")
    (data / "case_0" / "meta.json").write_text(json.dumps({"labels": "pseudo", "sample_weight": 2.0}))
    torch.manual_seed(0)
    model = SubtypeSegmenter(encoder={"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1},
                             decoder=(8, 8, 8, 4, 4))
    recipe = CohortRecipe(steps=2, batch_size=2, val_fraction=0.5, calibrate=False, save_every=0)
    train_cohort(model, data, tmp_path / "m", recipe, torch.device("cpu"), {"name": "m", "version": "m"})
    tr = read_card(tmp_path / "m")["training"]
    assert "case_0" in tr["cases"] and "case_0" not in tr["val_cases"] and len(tr["val_cases"]) == 2
