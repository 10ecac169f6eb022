"""DDP: two gloo processes on CPU train a few steps, checkpoint, resume, and end with identical weights."""

from __future__ import annotations

import json

from drasclr.model import load_model
from drasclr.pretrain.toy import write_toy_cohort
from drasclr.pretrain.trainer import PretrainConfig, pretrain_local_ddp


def test_two_process_gloo_training_and_resume(tmp_path):
    data = write_toy_cohort(tmp_path / "toy", n=4, seed=3)
    cfg = PretrainConfig(data=str(data), out=str(tmp_path / "run"), channels=[2, 2, 4, 4, 8, 8, 8], num_experts=2,
                         dim=8, queue_size=8, batch_size=2, max_steps=3, save_every=3, log_every=1, workers=0,
                         threads=1, device="cpu", locations="boxgrid")
    first = pretrain_local_ddp(cfg, 2, start_method="fork")
    assert [s["rank"] for s in first] == [0, 1] and all(s["world_size"] == 2 for s in first)
    assert all(s["steps"] == 3 for s in first)
    assert first[0]["state_sha256"] == first[1]["state_sha256"]  # weights, BN stats and queues identical
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step_0000003" / "train_state.json").read_text())
    assert meta["step"] == 3 and meta["config"]["batch_size"] == 2

    cfg.max_steps, cfg.resume = 5, True
    second = pretrain_local_ddp(cfg, 2, start_method="fork")
    assert all(s["steps"] == 5 and s["steps_this_run"] == 2 for s in second)
    assert second[0]["state_sha256"] == second[1]["state_sha256"] != first[0]["state_sha256"]
    _, card = load_model(tmp_path / "run" / "model.safetensors")
    assert card["steps"] == 5 and card["training"]["batch_size"] == 2
