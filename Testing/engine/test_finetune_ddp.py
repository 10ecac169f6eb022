"""`drasclr finetune cohort` under torchrun: two gloo processes on CPU train one model with DDP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import torch

from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from drasclr.model import read_card
from drasclr.model.checkpoint import sha256_file
from synthetic import synthetic_cohort

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def _cohort(root, n=4):
    return synthetic_cohort(root, n, seed=10)


def test_two_rank_finetune_trains_one_model_with_identical_weights(tmp_path):
    data = _cohort(tmp_path / "data")
    torch.manual_seed(0)
    parent = save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp_path / "t-v1",
                            {"name": "t", "version": "t-v1"})
    digest = sha256_file(parent / "model.safetensors")
    out = tmp_path / "t-ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "drasclr", "finetune", "cohort", "--data", str(data), "-o", str(out),
                           "--from", str(parent), "--steps", "4", "--batch-size", "2", "--val-fraction", "0.25",
                           "--device", "cpu", "--no-calibrate"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["world_size"] == 2  # only rank 0 writes and reports
    digests = dict(re.findall(r"rank (\d): trained 4 steps, weights sha256 ([0-9a-f]{64})", proc.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # DDP kept the ranks in step
    card = read_card(out)
    tr = card["training"]
    assert tr["world_size"] == 2 and tr["global_batch"] == 4 and tr["batch_size"] == 2 and tr["steps"] == 4
    assert len(tr["cases"]) == 3 and len(tr["val_cases"]) == 1 and tr["amp"] is None  # no autocast on CPU
    assert card["parent"]["sha256"] == digest and sha256_file(parent / "model.safetensors") == digest
    assert sha256_file(out / "model.safetensors") != digest  # it learned


def test_bad_loss_weights_are_one_error_line_and_nothing_written(tmp_path):
    data = _cohort(tmp_path / "data", n=2)
    proc = subprocess.run([sys.executable, "-m", "drasclr", "finetune", "cohort", "--data", str(data), "-o",
                           str(tmp_path / "m"), "--loss-weights", "1,1,3,3"], capture_output=True, text=True,
                          timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: --loss-weights needs 5")
    assert not (tmp_path / "m").exists()
