"""The DrasCLR objective (MoCo, per-location queues, neighbouring loss) and the single-process trainer."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn.functional as F

from drasclr.cli import main as cli_main
from drasclr.core.errors import InputError
from drasclr.model import DrasCLREncoder, load_model
from drasclr.pretrain import DrasCLRObjective, PretrainConfig, pretrain
from drasclr.pretrain.toy import write_toy_cohort

TINY = {"channels": [2, 2, 4, 4, 8, 8, 8], "num_experts": 2}


def _batch(b=4, k=2, loc_index=1):
    loc = torch.tensor([[0.1, -0.3, 0.5]]).expand(b, 3)
    return {"query": torch.randn(b, 1, 32, 32, 32), "key": torch.randn(b, 1, 32, 32, 32), "loc": loc,
            "neighbours": torch.randn(b, k, 1, 32, 32, 32),
            "neighbour_loc": torch.tensor([[0.2, -0.3, 0.5], [0.1, -0.1, 0.5]]).expand(b, k, 3),
            "location": torch.full((b,), loc_index)}


def test_objective_losses_queue_and_momentum():
    torch.manual_seed(0)
    obj = DrasCLRObjective(3, TINY, dim=8, queue_size=6, momentum=0.9, temperature=0.2, beta=1.0)
    q0 = obj.queue.clone()
    kp0 = [p.clone() for p in obj.key_parameters()]
    loss, stats = obj(_batch())
    assert torch.isfinite(loss) and loss.requires_grad
    assert torch.allclose(loss, stats["loss_local"] + stats["loss_neighbour"])
    # keys of location 1 went into queue 1 only (4 keys, ring of 6), as unit vectors
    assert torch.equal(obj.queue[0], q0[0]) and torch.equal(obj.queue[2], q0[2])
    assert not torch.equal(obj.queue[1, :4], q0[1, :4]) and torch.equal(obj.queue[1, 4:], q0[1, 4:])
    assert torch.allclose(obj.queue[1].norm(dim=1), torch.ones(6))
    assert int(obj.queue_ptr[1]) == 4
    obj(_batch())
    assert int(obj.queue_ptr[1]) == 2  # wrapped around
    loss.backward()
    assert obj.encoder_q.stages[0].conv.routing.weight.grad.abs().sum() > 0  # location routing learns
    assert all(p.grad is None for p in obj.key_parameters())
    # key encoder moved towards the query encoder: k = m k + (1 - m) q
    assert not all(torch.equal(a, b) for a, b in zip(kp0, obj.key_parameters()))
    with pytest.raises(ValueError, match="one location"):
        b = _batch()
        b["location"] = torch.tensor([0, 1, 1, 1])
        obj(b)


def test_local_loss_is_infonce_against_the_location_queue():
    torch.manual_seed(1)
    obj = DrasCLRObjective(2, TINY, dim=8, queue_size=5, temperature=0.5, beta=0.0)
    obj.eval()  # fixed BN statistics, so the query can be recomputed
    batch = _batch(loc_index=0)
    negs = obj.queue[0].clone()
    with torch.no_grad():
        loss, stats = obj(batch)
        q = F.normalize(obj.head_q(obj.encoder_q(batch["query"], batch["loc"])), dim=1)
        k = F.normalize(obj.head_k(obj.encoder_k(batch["key"], batch["loc"])), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negs.T], 1) / 0.5
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(loss, expected, atol=1e-5) and "loss_neighbour" not in stats


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_cohort(tmp_path_factory.mktemp("toy"), n=4, seed=2)


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), channels=TINY["channels"], num_experts=2, dim=8, queue_size=8,
                batch_size=2, max_steps=4, save_every=2, log_every=1, workers=0, threads=1, device="cpu",
                locations="boxgrid")
    base.update(kw)
    return PretrainConfig(**base)


def test_pretrain_checkpoints_resume_and_export(toy, tmp_path):
    out = tmp_path / "run"
    s1 = pretrain(_cfg(toy, out))
    assert s1["steps"] == 4 and (out / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert (out / "cache" / "index.json").is_file()
    meta = json.loads((out / "checkpoints" / "step_0000004" / "train_state.json").read_text())
    assert meta["step"] == 4 and meta["config"]["n_locations"] > 0
    s2 = pretrain(_cfg(toy, out, max_steps=6, resume=True))
    assert s2["steps"] == 6 and s2["steps_this_run"] == 2
    enc, card = load_model(out / "model.safetensors", expect=DrasCLREncoder)
    assert card["steps"] == 6 and card["kind"] == "drasclr-pretrained-encoder"
    assert "queue" not in " ".join(enc.state_dict())  # queues stay out of the exported model
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == [f"step_000000{i}" for i in (2, 4, 6)]
    # the resumed state equals the checkpoint it wrote (the step-6 model is the exported one)
    ck, _ = load_model(out / "checkpoints" / "step_0000006")
    assert all(torch.equal(a, b) for a, b in zip(ck.state_dict().values(), enc.state_dict().values()))


def test_resume_refuses_other_architecture_and_pickles(toy, tmp_path):
    out = tmp_path / "run"
    pretrain(_cfg(toy, out, max_steps=2))
    with pytest.raises(InputError, match="another architecture"):
        pretrain(_cfg(toy, out, max_steps=3, resume=True, channels=[2, 2, 4, 4, 8, 8, 16]))
    pt = tmp_path / "old.pt"
    pt.write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(InputError, match="pickled"):
        pretrain(_cfg(toy, out, max_steps=3, resume=str(pt)))
    with pytest.raises(InputError, match="nothing to resume"):
        pretrain(_cfg(out / "cache", tmp_path / "fresh", max_steps=3, resume=True))


def test_cli_pretrain_bad_input_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["pretrain", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no CT found")
    assert not (tmp_path / "o" / "cache").exists()


def test_cli_pretrain_no_location_ablation_runs(toy, tmp_path, capsys):
    rc = cli_main(["pretrain", str(toy), "-o", str(tmp_path / "abl"), "--no-location", "--max-steps", "2",
                   "--batch-size", "2", "--queue-size", "4", "--workers", "0", "--threads", "1",
                   "--channels", "2", "2", "4", "4", "8", "8", "8", "--experts", "2", "--device", "cpu",
                   "--locations", "boxgrid"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    _, card = load_model(tmp_path / "abl" / "model.safetensors")
    assert card["architecture"] == "PlainEncoder" and card["location_conditioned"] is False
