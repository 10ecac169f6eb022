"""VoCo and volume-fusion pretext tasks: their targets on hand-checked geometry, training under two gloo processes,
resume, the method recorded in the model card, and the errors for mixed-up methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drasclr.cli import main as cli_main
from drasclr.cli.finetune import load_pretrained_encoder
from drasclr.core.errors import InputError
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.model import PlainEncoder, load_model, save_model
from drasclr.pretrain.augment import normalise_hu
from drasclr.pretrain.toy import write_toy_cohort
from drasclr.pretrain.trainer import PretrainConfig, pretrain, pretrain_local_ddp
from drasclr.pretrain.voco import (
    VoCoObjective,
    VoCoSamples,
    base_corners,
    overlap_fractions,
    prediction_loss,
    random_corners,
    regulariser,
)
from drasclr.pretrain.volfusion import FusionSamples, dice_ce, fuse, fusion_classes
from drasclr.pretrain.volumes import VOLUME_FORMAT, VOLUME_VERSION, VolumeCache

TINY = dict(channels=[2, 2, 4, 4, 8, 8, 8], num_experts=2, dim=8)


# --- VoCo geometry and loss -------------------------------------------------------------------------------------


def test_voco_overlap_fractions_hand_computed():
    bases = base_corners(2, 4)  # 8 cubes of side 4 tiling an 8^3 region, z slowest
    assert bases.tolist()[:3] == [[0, 0, 0], [0, 0, 4], [0, 4, 0]]
    # crop [1,5) x [2,6) x [3,7): per-axis overlaps z (3, 1), y (2, 2), x (1, 3)
    got = overlap_fractions(np.array([[1, 2, 3]]), bases, 4)[0]
    expected = np.array([3 * 2 * 1, 3 * 2 * 3, 3 * 2 * 1, 3 * 2 * 3, 1 * 2 * 1, 1 * 2 * 3, 1 * 2 * 1, 1 * 2 * 3]) / 64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    # a crop sticking out of the region: its labels sum to the share inside ([-2, 2) along z: half)
    assert overlap_fractions(np.array([[-2, 0, 0]]), bases, 4).sum() == pytest.approx(0.5)


def test_voco_random_crops_inside_the_grid_have_labels_summing_to_one():
    rng = np.random.default_rng(0)
    corners = random_corners(3, 32, 200, rng)
    assert corners.min() >= 0 and corners.max() <= 64
    lab = overlap_fractions(corners, base_corners(3, 32), 32)
    assert lab.shape == (200, 27) and (lab >= 0).all()
    np.testing.assert_allclose(lab.sum(1), 1.0, atol=1e-6)
    on_base = overlap_fractions(base_corners(3, 32), base_corners(3, 32), 32)  # a base crop is its own class
    np.testing.assert_array_equal(on_base, np.eye(27, dtype=np.float32))


def test_voco_losses():
    lab = torch.tensor([[0.25, 0.75, 0.0]])
    assert prediction_loss(lab, lab).item() == pytest.approx(0.0, abs=1e-5)
    assert prediction_loss(torch.zeros(1, 3), lab).item() > 0.1
    eye = torch.eye(3)[None]
    assert regulariser(eye).item() == pytest.approx(0.0)
    same = torch.nn.functional.normalize(torch.ones(1, 3, 4), dim=-1)
    assert regulariser(same).item() == pytest.approx(1.0)
    obj = VoCoObjective({"channels": TINY["channels"], "num_experts": 2}, dim=8)
    batch = {"base": torch.randn(2, 8, 1, 32, 32, 32), "crops": torch.randn(2, 3, 1, 32, 32, 32),
             "labels": torch.rand(2, 3, 8)}
    loss, stats = obj(batch)
    loss.backward()
    assert torch.isfinite(loss) and set(stats) >= {"loss_pred", "loss_reg", "acc_position"}
    assert all(p.grad is None for p in obj.key_parameters())  # the teacher only follows by EMA
    assert obj.encoder_q.stages[0].conv.weight.grad is not None


# --- a hand-made volume cache -----------------------------------------------------------------------------------


def _constant_cache(folder, values=(-1000, 0), shape=(96, 96, 96)):
    """Two cases of constant HU; the "lung" is the central 32^3, so 64^3 crops centred on it stay inside."""
    folder.mkdir()
    centre = np.zeros(shape, bool)
    centre[32:64, 32:64, 32:64] = True
    for i, v in enumerate(values):
        np.save(folder / f"ct_{i:03d}.npy", np.full(shape, v, np.int16))
        np.save(folder / f"lung_points_{i:03d}.npy", np.argwhere(centre)[::97].astype(np.int32))
    index = {"format": VOLUME_FORMAT, "version": VOLUME_VERSION, "subjects": ["a", "b"], "shapes": [list(shape)] * 2,
             "lung_box": [[0, 0, 0, *shape]] * 2, "n_subjects": 2}
    (folder / "index.json").write_text(json.dumps(index))
    return VolumeCache(folder)


def test_volume_fusion_labels_match_the_fused_coefficients(tmp_path):
    rng = np.random.default_rng(1)
    cls = fusion_classes(32, rng, 4, 8, 16, 10)
    assert cls.dtype == np.uint8 and set(np.unique(cls)) <= {0, 1, 2, 3} and (cls > 0).any()
    fg, bg = rng.normal(size=(32,) * 3).astype(np.float32), rng.normal(size=(32,) * 3).astype(np.float32)
    fused = fuse(fg, bg, cls, 4)
    alpha = np.array([0, 1 / 3, 2 / 3, 1], np.float32)[cls]
    np.testing.assert_allclose(fused, (1 - alpha) * bg + alpha * fg, atol=1e-6)
    np.testing.assert_array_equal(fused[cls == 0], bg[cls == 0])  # class 0: untouched background

    cache = _constant_cache(tmp_path / "vols")
    ds = FusionSamples(cache, crop=32, n_classes=4, block_min=4, block_max=16, seed=3)
    level = {0: normalise_hu(np.full(1, -1000.0)).item(), 1: normalise_hu(np.full(1, 0.0)).item()}
    for g in range(4):
        item = ds[g]
        assert item["image"].shape == (1, 32, 32, 32) and item["target"].shape == (32, 32, 32)
        bg_v, fg_v = level[int(item["subject"])], level[1 - int(item["subject"])]
        a = item["target"].float() / 3
        torch.testing.assert_close(item["image"][0], (1 - a) * bg_v + a * fg_v, atol=1e-5, rtol=0)
        assert ds[g]["target"].equal(item["target"])  # a draw depends only on (seed, g)
    # the fusion U-Net (segmenter + K outputs) takes the default 64^3 crops too
    from drasclr.pretrain.volfusion import VolFusionObjective

    vf = VolFusionObjective({"channels": TINY["channels"], "num_experts": 2}, n_classes=4)
    out = vf.net(torch.randn(2, 1, 64, 64, 64), torch.zeros(2, 3))
    assert out.shape == (2, 4, 64, 64, 64)
    logits = torch.nn.functional.one_hot(item["target"], 4).movedim(-1, 0)[None].float() * 50
    assert dice_ce(logits, item["target"][None]).item() < 1e-3


def test_voco_samples_cut_base_crops_from_one_region(tmp_path):
    cache = _constant_cache(tmp_path / "vols")
    item = VoCoSamples(cache, grid=2, crops=3, seed=0)[5]
    assert item["base"].shape == (8, 1, 32, 32, 32) and item["crops"].shape == (3, 1, 32, 32, 32)
    np.testing.assert_allclose(item["labels"].sum(1).numpy(), 1.0, atol=1e-6)
    # constant volumes, regions inside them: all crops hold the one value of the drawn case
    value = normalise_hu(np.full(1, (-1000.0, 0.0)[int(item["subject"])])).item()
    assert torch.all(item["base"] == value) and torch.all(item["crops"] == value)


# --- training: two gloo processes, resume, model card, errors ------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_cohort(tmp_path_factory.mktemp("toy"), n=4, seed=5)


def _cfg(toy, out, method, **kw):
    base = dict(data=str(toy), out=str(out), cache=str(out.parent / "volumes"), method=method, batch_size=1,
                max_steps=1, save_every=1, log_every=1, workers=0, threads=1, device="cpu", voco_grid=2,
                voco_crops=2, fusion_crop=32, fusion_block_min=4, fusion_block_max=16, **TINY)
    base.update(kw)
    return PretrainConfig(**base)


@pytest.mark.parametrize("method", ["voco", "volfusion"])
def test_two_process_training_resume_and_card(toy, tmp_path, method):
    cfg = _cfg(toy, tmp_path / "run", method, batch_size=1 if method == "voco" else 2)
    first = pretrain_local_ddp(cfg, 2, start_method="fork")
    assert [s["steps"] for s in first] == [1, 1] and all(s["world_size"] == 2 for s in first)
    assert first[0]["state_sha256"] == first[1]["state_sha256"]  # the ranks end identical
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step_0000001" / "train_state.json").read_text())
    assert meta["config"]["method"] == method
    cfg.max_steps, cfg.resume = 2, True
    second = pretrain_local_ddp(cfg, 2, start_method="fork")
    assert all(s["steps"] == 2 and s["steps_this_run"] == 1 for s in second)
    assert second[0]["state_sha256"] == second[1]["state_sha256"] != first[0]["state_sha256"]
    enc, card = load_model(tmp_path / "run" / "model.safetensors")
    assert card["method"] == method and card["steps"] == 2 and card["architecture"] == "DrasCLREncoder"
    assert card["pretext"]["location_input"].startswith("zeros" if method == "voco" else "crop centre")
    # the pretrained encoder loads straight into the subtype segmenter
    seg = SubtypeSegmenter(encoder={"channels": TINY["channels"], "num_experts": 2, "in_channels": 1})
    seg.encoder.load_state_dict(enc.state_dict())


def test_resume_with_another_method_is_refused(toy, tmp_path):
    out = tmp_path / "run"
    pretrain(_cfg(toy, out, "volfusion", batch_size=2))
    with pytest.raises(InputError, match="pretraining method 'volfusion', not 'voco'"):
        pretrain(_cfg(toy, out, "voco", max_steps=2, resume=True))
    with pytest.raises(InputError, match="volume cache"):  # drasclr cannot train on the volume cache
        pretrain(_cfg(tmp_path / "volumes", tmp_path / "d", "drasclr"))


def test_cli_unknown_method_one_error_line(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["pretrain", str(toy), "-o", str(tmp_path / "o"), "--method", "simclr"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "simclr" in err[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="unknown pretraining method 'simclr'"):
        pretrain(_cfg(toy, tmp_path / "o2", "simclr"))


def test_finetune_encoder_checks_the_model_kind(toy, tmp_path, capsys):
    seg = SubtypeSegmenter(encoder={"channels": TINY["channels"], "num_experts": 2, "in_channels": 1})
    save_model(seg, tmp_path / "seg.safetensors")
    with pytest.raises(InputError, match="SubtypeSegmenter model, not a pretrained encoder"):
        load_pretrained_encoder(tmp_path / "seg.safetensors")
    rc = cli_main(["finetune", "cohort", "--data", str(toy), "-o", str(tmp_path / "m"), "--encoder",
                   str(tmp_path / "seg.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a pretrained encoder" in err[0] and not (tmp_path / "m").exists()
    plain = PlainEncoder(TINY["channels"], 2)
    save_model(plain, tmp_path / "plain.safetensors", {"kind": "drasclr-pretrained-encoder", "method": "drasclr"})
    enc, card = load_pretrained_encoder(tmp_path / "plain.safetensors")
    # the unconditioned (MoCo ablation) encoder gets a segmenter of its own class, saved and reloaded by its card
    seg2 = SubtypeSegmenter(encoder=enc.config(), encoder_arch=enc.architecture)
    seg2.encoder.load_state_dict(enc.state_dict())
    save_model(seg2, tmp_path / "seg2.safetensors")
    back, card2 = load_model(tmp_path / "seg2.safetensors")
    assert card2["config"]["encoder_arch"] == "PlainEncoder" and isinstance(back.encoder, PlainEncoder)
    assert "encoder_arch" not in seg.config()  # older DrasCLREncoder cards stay as they were


def test_max_minutes_stops_and_saves_at_the_step_reached(toy, tmp_path):
    s = pretrain(_cfg(toy, tmp_path / "run", "voco", max_steps=50, max_minutes=1e-6))
    assert s["steps"] == 1  # the time budget ran out after the first step
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000001"
    _, card = load_model(tmp_path / "run" / "model.safetensors")
    assert card["steps"] == 1 and card["method"] == "voco"


def test_cli_pretrain_voco_writes_a_voco_encoder(toy, tmp_path, capsys):
    rc = cli_main(["pretrain", str(toy), "-o", str(tmp_path / "v"), "--method", "voco", "--max-steps", "1",
                   "--batch-size", "1", "--voco-grid", "2", "--voco-crops", "2", "--workers", "0", "--threads", "1",
                   "--channels", "2", "2", "4", "4", "8", "8", "8", "--experts", "2", "--device", "cpu"])
    assert rc == 0 and "(voco, 1 steps" in capsys.readouterr().out
    _, card = load_model(tmp_path / "v" / "model.safetensors")
    assert card["method"] == "voco" and card["pretext"]["base_crops"] == 8
    assert (tmp_path / "v" / "volumes" / "index.json").is_file()  # the volume cache, built once in the run folder
