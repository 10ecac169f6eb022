"""Resumable cohort training: a run paused and resumed step by step ends with exactly the weights of an
uninterrupted run; the CLI pauses with exit 75, resumes with --resume, and refuses a resume of another run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from drasclr.core import labels
from drasclr.core.distributed import state_digest
from drasclr.core.errors import InputError
from drasclr.dense.checkpoint import TrainingPaused
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from drasclr.dense.train import fixed_patches, prepare_case, train_segmenter
from drasclr.model import read_card
from synthetic import synthetic_chest, synthetic_cohort

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def _model():
    torch.manual_seed(0)
    return SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4))


def _case():
    ct, truth = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    sub = ct.with_array(np.where(truth > 0, np.where(ct.array < -860, labels.CLE, labels.NORMAL), 0).astype(np.uint8))
    return prepare_case(ct, sub, ct.with_array(truth), lambda p: np.clip(np.asarray(p) / 150.0, -1, 1)
                        .astype(np.float32))


def test_paused_and_resumed_training_takes_exactly_the_uninterrupted_steps(tmp_path):
    torch.set_num_threads(1)
    case = _case()
    val = fixed_patches([case], 2)
    kw = dict(steps=5, batch_size=2, eval_every=2, patience=0, mirror=True)
    straight = _model()
    h1 = train_segmenter(straight, [case], val, **kw)

    sessions, resumed = 0, _model()
    while True:  # every "session" trains one step, checkpoints and stops; the next one resumes
        resumed = _model()
        try:
            h2 = train_segmenter(resumed, [case], val, checkpoints=tmp_path / "ck", resume=sessions > 0,
                                 pause_after_seconds=1e-9, **kw)
            break
        except TrainingPaused as p:
            sessions += 1
            assert p.step == sessions and (tmp_path / "ck" / "latest").is_file()
        assert sessions < 10
    assert sessions == 4 and h2["sessions"] == 5 and h2["steps"] == 5
    assert state_digest(resumed) == state_digest(straight)
    assert [h["val"] for h in h2["history"]] == [h["val"] for h in h1["history"]]
    assert h2["best_val"] == h1["best_val"]
    assert len(list((tmp_path / "ck").glob("step_*"))) <= 2  # old checkpoints pruned

    with pytest.raises(InputError, match="another run.*steps"):
        train_segmenter(_model(), [case], val, checkpoints=tmp_path / "ck", resume=True, **{**kw, "steps": 7})
    with pytest.raises(InputError, match="nothing to resume"):
        train_segmenter(_model(), [case], val, checkpoints=tmp_path / "none", resume=True, **kw)


def _cohort(root, n=3):
    return synthetic_cohort(root, n, seed=20)


def test_cli_pauses_with_exit_75_and_resumes_into_one_model(tmp_path):
    data = _cohort(tmp_path / "data")
    parent = save_segmenter(_model(), tmp_path / "t-v1", {"name": "t", "version": "t-v1"})
    out = tmp_path / "t-v2"
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(*extra, steps="4"):
        return subprocess.run([sys.executable, "-m", "drasclr", "finetune", "cohort", "--data", str(data), "-o",
                               str(out), "--from", str(parent), "--steps", steps, "--batch-size", "2",
                               "--val-fraction", "0.34", "--device", "cpu", "--no-calibrate", *extra],
                              capture_output=True, text=True, timeout=300, env=env)

    p = run("--pause-after-minutes", "0.00001")
    assert p.returncode == 75, p.stderr[-2000:]
    assert "info: paused at step 1 of 4" in p.stderr and "--resume" in p.stderr
    assert not out.exists() and (tmp_path / "t-v2.checkpoints" / "latest").is_file()

    again = run()  # a fresh start would silently throw the paused run away: refused
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error:")
    assert "--resume" in again.stderr and not out.exists()
    other = run("--resume", steps="6")
    assert other.returncode == 2 and "another run" in other.stderr and not out.exists()

    done = run("--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 4
    card = read_card(out)
    assert card["training"]["steps"] == 4 and card["training"]["sessions"] == 2
    assert not (tmp_path / "t-v2.checkpoints").exists()  # spent once the model is written
