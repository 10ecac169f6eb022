"""The pointwise full-resolution decoder stage (``full_res_kernel=1``): built, saved, loaded, exported and made
from a trained 3x3x3 model as its card says."""

import pytest
import torch
from test_dense_fused import tiny_model

from cli_runner import assert_refused, run_cli
from drasclr.bundle.export import inference_config
from drasclr.dense.segmenter import SubtypeSegmenter, pointwise_full_res
from drasclr.dense.store import load_segmenter, save_segmenter
from synthetic import synthetic_cohort


def test_pointwise_stage_is_a_third_of_the_multiply_adds_or_less():
    full, light = SubtypeSegmenter(), SubtypeSegmenter(full_res_kernel=1)
    w3, w1 = full.up[3][0].weight, light.up[3][0].weight
    assert w3.shape[2:] == (3, 3, 3) and w1.shape[2:] == (1, 1, 1) and w3.shape[:2] == w1.shape[:2]
    assert light.config()["full_res_kernel"] == 1 and "full_res_kernel" not in full.config()
    with pytest.raises(ValueError, match="full_res_kernel"):
        SubtypeSegmenter(full_res_kernel=5)


def test_conversion_keeps_every_other_weight_and_the_response_on_smooth_maps():
    model = tiny_model()
    light = pointwise_full_res(model)
    assert light.full_res_kernel == 1 and model.full_res_kernel == 3  # the original is left as it was
    a, b = model.state_dict(), light.state_dict()
    assert set(a) == set(b)
    for k in a:
        if k == "up.3.0.weight":
            assert torch.allclose(b[k][..., 0, 0, 0], a[k].sum(dim=(2, 3, 4)))
        else:
            assert torch.equal(a[k], b[k]), k
    # on an input constant over space (inside the padding's reach) the two stages give the same map
    stage3, stage1 = model.up[3][0], light.up[3][0]
    x = torch.rand(2, stage3.in_channels, 1, 1, 1).expand(-1, -1, 9, 9, 9)
    with torch.no_grad():
        y3, y1 = stage3(x)[..., 1:-1, 1:-1, 1:-1], stage1(x)[..., 1:-1, 1:-1, 1:-1]
    assert torch.allclose(y3, y1, atol=1e-5)
    with pytest.raises(ValueError, match="pointwise already"):
        pointwise_full_res(light)


def test_light_model_round_trips_through_its_card_and_the_bundle_config(tmp_path):
    light = pointwise_full_res(tiny_model())
    save_segmenter(light, tmp_path / "m", {"name": "light", "version": "m"})
    loaded, card, _ = load_segmenter(tmp_path / "m")
    assert loaded.full_res_kernel == 1 and card["config"]["full_res_kernel"] == 1
    x, loc = torch.rand(2, 1, 32, 32, 32) * 2 - 1, torch.rand(2, 3) * 2 - 1
    with torch.no_grad():  # stored in half precision
        assert torch.allclose(loaded(x, loc), light.eval()(x, loc), atol=2e-2)
    assert inference_config(card)["network_def"]["full_res_kernel"] == 1


def test_finetune_from_a_3x3x3_model_into_a_pointwise_one(tmp_path):
    data = synthetic_cohort(tmp_path / "data", 3, seed=20)
    parent = save_segmenter(tiny_model(), tmp_path / "parent", {"name": "t", "version": "parent"})
    out = tmp_path / "light"
    r = run_cli("finetune", "cohort", "--data", str(data), "--val-fraction", "0.34", "--from", str(parent),
                "-o", str(out), "--steps", "2", "--batch-size", "2", "--full-res-kernel", "1", "--no-calibrate",
                "--device", "cpu")
    assert r.returncode == 0, r.stderr
    model, card, _ = load_segmenter(out)
    assert model.full_res_kernel == 1 and card["config"]["full_res_kernel"] == 1
    # a pointwise parent cannot give a 3x3x3 stage back: one clear refusal, no model folder
    bad = tmp_path / "back"
    assert_refused(run_cli("finetune", "cohort", "--data", str(data), "--from", str(out), "-o", str(bad),
                           "--steps", "2", "--full-res-kernel", "3", "--device", "cpu"), bad, "pointwise")


def test_distillation_loss_is_zero_only_for_the_teachers_answer():
    from drasclr.dense.train import distill_loss

    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 4, 4, 4, generator=g)
    assert distill_loss(t.clone(), t).abs() < 1e-6
    assert distill_loss(t + 3.0, t).abs() < 1e-5  # logits shifted per voxel: the same probabilities
    assert distill_loss(torch.randn(2, 5, 4, 4, 4, generator=g), t) > 0.1


def test_distilled_light_model_learns_the_teacher_and_keeps_its_decisions(tmp_path):
    """A pointwise student distilled from a 3x3x3 teacher gets closer to the teacher's probabilities than its
    converted start, and its card keeps the teacher's decision weights and density rule."""
    from drasclr.dense.train import distill_loss

    data = synthetic_cohort(tmp_path / "data", 3, seed=20)
    teacher = tiny_model()
    card = {"name": "t", "version": "teacher", "inference": {"class_weights": [1.0, 0.7, 0.9, 0.5],
                                                           "density_veto": {"min_laa950": 0.15}},
            "validated_spacing_mm": {"in_plane": [0.7, 0.9], "slice": [1.0, 1.25]}}
    tdir = save_segmenter(teacher, tmp_path / "teacher", card)
    out = tmp_path / "student"
    r = run_cli("finetune", "cohort", "--data", str(data), "--val-fraction", "0.34", "--from", str(tdir),
                "--distill-from", str(tdir), "--full-res-kernel", "1", "-o", str(out), "--steps", "30",
                "--batch-size", "4", "--lr", "3e-3", "--no-calibrate", "--device", "cpu",
                env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    student, scard, _ = load_segmenter(out)
    teacher, _, _ = load_segmenter(tdir)
    assert scard["inference"]["class_weights"] == [1.0, 0.7, 0.9, 0.5]
    assert scard["inference"]["inherited_from"] == "teacher" and scard["training"]["distill"] == 1.0
    assert scard["training"]["distilled_from"]["folder"] == "teacher"
    # validated where the teacher was, not over the patches' cohort (which only chose what to copy)
    spacing = scard["validated_spacing_mm"]
    assert spacing["in_plane"] == [0.7, 0.9] and spacing["slice"] == [1.0, 1.25]
    g = torch.Generator().manual_seed(3)
    x, loc = torch.rand(6, 1, 32, 32, 32, generator=g) * 2 - 1, torch.rand(6, 3, generator=g) * 2 - 1
    with torch.no_grad():
        start = pointwise_full_res(teacher)
        before = distill_loss(start.eval()(x, loc), teacher(x, loc))
        after = distill_loss(student(x, loc), teacher(x, loc))
    assert after < before, (float(after), float(before))
