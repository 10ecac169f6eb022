"""Training on the look the model is shown (``finetune cohort --harmonize auto``): each case is harmonized as
``analyze`` harmonizes a scan before its patches are cut, a clean case is left as stored, the card says so, and a
bad mode is one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from test_harmonize import LUNG, SOFT, chest

from drasclr.acquisition import harmonize as H
from drasclr.dense.recipe import harmonized_for_training
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from drasclr.model import read_card
from synthetic import synthetic_cohort

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def test_a_noisy_case_is_trained_on_as_analyze_would_show_it_and_a_clean_one_as_stored():
    noisy, lung = chest(60.0, LUNG, seed=3)
    lungs = noisy.with_array(lung.astype(np.uint8))
    seen = harmonized_for_training(noisy, lungs, "auto")
    expected, rec = H.harmonize(noisy, lungs, "auto")
    assert rec.applied
    np.testing.assert_array_equal(seen.array, expected.array)
    assert seen.array.dtype == noisy.array.dtype
    # the noise's false low attenuation in the normal lung is what the model no longer learns from
    assert (noisy.array[lung] < -950).mean() > 0.05 > 0.02 > (seen.array[lung] < -950).mean()
    assert harmonized_for_training(noisy, lungs, "off") is noisy
    clean, clung = chest(8.0, SOFT)
    same = harmonized_for_training(clean, clean.with_array(clung.astype(np.uint8)), "auto")
    np.testing.assert_array_equal(same.array, clean.array)


def test_cli_records_the_harmonized_training_and_refuses_a_bad_mode(tmp_path):
    data = synthetic_cohort(tmp_path / "data", 3, seed=21)
    torch.manual_seed(0)
    parent = save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp_path / "t-v1",
                            {"name": "t", "version": "t-v1"})
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(out, *extra):
        return subprocess.run([sys.executable, "-m", "drasclr", "finetune", "cohort", "--data", str(data), "-o",
                               str(out), "--from", str(parent), "--steps", "2", "--batch-size", "2",
                               "--val-fraction", "0.34", "--device", "cpu", "--no-calibrate", *extra],
                              capture_output=True, text=True, timeout=300, env=env)

    bad = run(tmp_path / "bad", "--harmonize", "strong")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error:")
    assert "--harmonize" in bad.stderr and not (tmp_path / "bad").exists()
    done = run(tmp_path / "t-v2", "--harmonize", "auto")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 2
    assert read_card(tmp_path / "t-v2")["training"]["harmonize"] == "auto"
    plain = run(tmp_path / "t-v3")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert read_card(tmp_path / "t-v3")["training"]["harmonize"] == "off"
