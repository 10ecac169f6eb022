"""Dense subtype prediction: patch planning, blending back to the CT grid, model files, training freezes."""

import numpy as np
import pytest
import torch

from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.versions import next_version_dir
from drasclr.dense import predict
from drasclr.dense.infer import extract_patches, lung_volume, plan_patches
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import load_segmenter, save_segmenter
from drasclr.dense.train import fixed_patches, prepare_case, set_freeze, train_segmenter
from synthetic import synthetic_chest

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def tiny_model():
    torch.manual_seed(0)
    return SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4))


def box_locator(points):
    return np.clip(np.asarray(points) / 150.0, -1, 1).astype(np.float32)


def test_planned_patches_cover_every_lung_voxel():
    lung = np.zeros((70, 50, 90), np.uint8)
    lung[5:60, 10:45, 3:80] = 1
    lung[0, 0, 0] = 1  # a corner voxel
    corners = plan_patches(lung, stride=24)
    covered = np.zeros_like(lung)
    for z, y, x in corners:
        covered[z:z + 32, y:y + 32, x:x + 32] = 1
        assert lung[z:z + 32, y:y + 32, x:x + 32].any()  # only patches that touch the lung
    assert covered[lung > 0].all()


def test_patches_with_little_lung_are_left_out_only_where_others_cover_it():
    lung = np.zeros((70, 50, 90), np.uint8)
    lung[5:60, 10:45, 3:60] = 1
    lung[30, 20, 85:87] = 1  # a sliver only the last column of patches sees
    every = plan_patches(lung, stride=24)
    fewer = plan_patches(lung, stride=24, min_share=0.05)
    assert len(fewer) < len(every) and set(map(tuple, fewer)) <= set(map(tuple, every))
    covered = np.zeros(lung.shape, bool)
    for z, y, x in fewer:
        covered[z:z + 32, y:y + 32, x:x + 32] = True
    assert covered[lung > 0].all()  # every lung voxel is still in a patch, the sliver's included
    dropped = set(map(tuple, every)) - set(map(tuple, fewer))
    assert all(lung[z:z + 32, y:y + 32, x:x + 32].mean() < 0.05 for z, y, x in dropped)


def test_extract_patches_pads_outside_volume():
    vol = np.arange(40 ** 3, dtype=np.int32).reshape(40, 40, 40)
    p = extract_patches(vol, np.array([[-5, 0, 20]]), fill=-7)[0]
    assert p.shape == (32, 32, 32)
    assert (p[:5] == -7).all()
    assert np.array_equal(p[5:, :, :20], vol[:27, :32, 20:40])
    assert (p[:, :, 20:] == -7).all()


def test_prediction_is_on_the_ct_grid_and_fills_exactly_the_lung():
    ct, truth = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    lungs = ct.with_array(truth)
    pred = predict(ct, lungs, tiny_model(), "cpu", locator=box_locator, tta=False, stride=32, batch_size=32)
    sub = pred.subtypes
    assert sub.same_grid(ct) and sub.array.dtype == np.uint8
    # the probabilities come with their own 1 mm grid, which covers the lung
    grid = pred.probabilities.grid
    assert grid.spacing == (1.0, 1.0, 1.0) and pred.probabilities.array.shape == (5, *grid.array.shape)
    assert pred.lungs.same_grid(grid) and pred.probabilities.disagreement is None
    inside = pred.lungs.array > 0
    assert np.allclose(pred.probabilities.array[:, inside].sum(axis=0), 1.0, atol=1e-4)
    assert np.array_equal(sub.array > 0, truth > 0)
    assert set(np.unique(sub.array[truth > 0])) <= {1, 2, 3, 4}


def test_model_files_round_trip_and_are_never_overwritten(tmp_path):
    model = tiny_model().eval()
    folder = save_segmenter(model, tmp_path / "mine-v1", {"name": "mine"})
    loaded, card, where = load_segmenter(folder)
    assert where == folder and card["version"] if "version" in card else True
    x, loc = torch.randn(2, 1, 32, 32, 32), torch.zeros(2, 3)
    with torch.no_grad():
        assert torch.allclose(model(x, loc), loaded(x, loc), atol=2e-2)  # float16 storage
    with pytest.raises(InputError, match="never overwritten"):
        save_segmenter(model, folder, {})
    assert next_version_dir(folder) == tmp_path / "mine-v2"
    (tmp_path / "mine-v2").mkdir()
    assert next_version_dir(folder) == tmp_path / "mine-v3"


def test_model_with_other_classes_or_pickle_is_refused(tmp_path):
    import json

    folder = save_segmenter(tiny_model(), tmp_path / "m-v1", {})
    card_file = folder / "model.json"
    card = json.loads(card_file.read_text())
    card["classes"] = {"0": "outside", "1": "normal", "2": "nodule"}
    card_file.write_text(json.dumps(card))
    with pytest.raises(InputError, match="classes"):
        load_segmenter(folder)
    (tmp_path / "evil").mkdir()
    torch.save({"x": torch.zeros(1)}, tmp_path / "evil" / "model.safetensors")
    with pytest.raises(InputError):
        load_segmenter(tmp_path / "evil")


@pytest.mark.parametrize("freeze", ["head", "last"])
def test_freeze_options_keep_frozen_weights(freeze):
    ct, truth = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    lungs = ct.with_array(truth)
    sub = ct.with_array(np.where(truth > 0, np.where(ct.array < -860, labels.CLE, labels.NORMAL), 0)
                        .astype(np.uint8))
    case = prepare_case(ct, sub, lungs, box_locator)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_segmenter(model, [case], fixed_patches([case], 2), steps=2, batch_size=2, freeze=freeze, eval_every=2)
    after = model.state_dict()
    frozen = ("encoder.",) if freeze == "head" else tuple(f"encoder.stages.{i}." for i in range(4))
    for k in before:
        if k.startswith(frozen):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_set_freeze_lower_rate_for_encoder_in_all_mode():
    groups = set_freeze(tiny_model(), "all", 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert [g["lr"] for g in set_freeze(tiny_model(), "all", 1e-3, 1.0)] == [1e-3, 1e-3]


def test_lung_volume_is_isotropic_and_keeps_the_lung():
    ct, truth = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    vol = lung_volume(ct, ct.with_array(truth))
    assert vol.ct.spacing == (1.0, 1.0, 1.0)
    ml = (vol.lungs.array > 0).sum() / 1000.0
    truth_ml = (truth > 0).sum() * ct.voxel_volume_ml
    assert abs(ml - truth_ml) / truth_ml < 0.05


def test_out_of_memory_batches_are_split_not_failed():
    from drasclr.dense.infer import run_batched

    seen = []

    def fn(x, loc):
        seen.append(len(x))
        if len(x) > 2:
            raise torch.OutOfMemoryError("simulated")
        return x.flatten(1).sum(1, keepdim=True) + loc[:, :1]

    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    loc = np.ones((7, 3), np.float32)
    out = run_batched(fn, x, loc, torch.device("cpu"), batch_size=5)
    assert np.allclose(out[:, 0], x.sum(1) + 1)
    assert max(n for n in seen if n <= 2) <= 2 and 5 in seen


def test_patches_are_class_balanced_over_the_cohort():
    """A subtype present in one case of many still centres about a quarter of the patches."""
    from drasclr.dense.train import TrainCase, sample_batch

    rng = np.random.default_rng(0)
    shape = (40, 40, 40)

    def case(extra: int | None) -> TrainCase:
        target = np.full(shape, labels.NORMAL, np.uint8)
        if extra is not None:
            target[10:30, 10:30, 10:30] = extra
        c = TrainCase(np.zeros(shape, np.int16), target, None, lambda p: np.zeros((len(p), 3)))
        c.grid = CTImage(np.zeros(shape, np.uint8))  # a 1 mm grid at the origin
        for k in np.unique(target):
            c.by_class[int(k)] = np.flatnonzero(target == k)
        return c

    cases = [case(None) for _ in range(6)] + [case(labels.CLE), case(labels.PSE), case(labels.PLE)]
    _, y, _ = sample_batch(cases, 800, rng, jitter=0)
    centre = y[:, 16, 16, 16]
    for k in (labels.NORMAL, labels.CLE, labels.PSE, labels.PLE):
        assert abs((centre == k).mean() - 0.25) < 0.06, (k, (centre == k).mean())


def test_bundled_demo_model_loads_and_documents_itself():
    from drasclr.core.versions import DEMO_MODEL, default_model
    from drasclr.dense.infer import card_class_weights

    assert default_model() == DEMO_MODEL or "DRASCLR_MODEL" in __import__("os").environ
    size = sum(p.stat().st_size for p in DEMO_MODEL.iterdir())
    assert size <= 30 * 2 ** 20  # the limit for a model shipped in the repo
    model, card, _ = load_segmenter(DEMO_MODEL)
    assert isinstance(model, SubtypeSegmenter) and card["weights_dtype"] == "float16"
    assert len(card_class_weights(card)) == 4
    held_out = card["metrics"]["held_out"]  # scripts/record_evaluation.py, from the build's held-out evaluation
    assert 0.75 <= held_out["macro_dice_cle_pse_ple_pooled"] <= 1 and held_out["emphysema_free_cases"] >= 1
    # demo-v10: demo-v5's weights (the same sha256) with the density rule counted on the scan smoothed in-plane
    assert card["inference"]["density_veto"] == {"min_laa950": 0.08, "window_mm": [10.0, 20.0, 20.0],
                                                 "laa_hu": -955.0, "smooth_mm": 0.5}
    assert card["parent"] == {"folder": "demo-v5", "sha256": card["sha256"]}
    assert set(card["metrics"]["real_scans"]["emphysema_on_normal_lungs_pct"]) >= {"lungpetctdx_A0002_8mm_B40f"}


class _Pointwise(torch.nn.Module):
    """Logits from each voxel's own intensity only: mirror-equivariant, blind to location."""

    num_classes = labels.NUM_CLASSES

    def forward(self, x, loc):
        return torch.cat([torch.zeros_like(x), x * 3.0, -x * 3.0, x.sin(), x.cos()], dim=1)


class _LocationOnly(torch.nn.Module):
    """Logits from the location's x code only (the same for every voxel of a patch)."""

    num_classes = labels.NUM_CLASSES

    def forward(self, x, loc):
        lx = loc[:, 2].view(-1, 1, 1, 1, 1).expand_as(x)
        return torch.cat([torch.zeros_like(x), 4.0 * lx, -4.0 * lx, torch.zeros_like(x), torch.zeros_like(x)], 1)


class _HalfSure(torch.nn.Module):
    """Sure normal for patches right of the atlas midline (x code > 0), unsure (and another answer) left of it."""

    num_classes = labels.NUM_CLASSES

    def forward(self, x, loc):
        right = (loc[:, 2] > 0).float().view(-1, 1, 1, 1, 1).expand_as(x)
        return torch.cat([torch.zeros_like(x), 10.0 * right, 0.5 * (1 - right), torch.zeros_like(x),
                          torch.zeros_like(x)], 1)


def test_mirrored_tta_maps_predictions_back_and_mirrors_locations():
    from drasclr.dense.locate import mirror_left_right

    ct, truth = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    lungs = ct.with_array(truth)

    def run(model, locator=box_locator, tta=False):
        return predict(ct, lungs, model, "cpu", locator=locator, tta=tta, stride=24).probabilities

    # a pointwise model gives the same map mirrored or not: the mirrored output is flipped back in place
    plain, both = run(_Pointwise()), run(_Pointwise(), tta=True)
    assert np.allclose(plain.array, both.array, atol=1e-5)
    assert both.disagreement.shape == both.grid.array.shape and both.disagreement.max() < 1e-5
    # a location-only model sees the mirrored codes: TTA is the mean of the two sides' probabilities
    loc_plain = run(_LocationOnly())
    loc_mirror = run(_LocationOnly(), lambda p: mirror_left_right(box_locator(p)))
    loc_tta = run(_LocationOnly(), tta=True)
    assert not np.allclose(loc_plain.array, loc_mirror.array, atol=1e-3)
    assert np.allclose(loc_tta.array, (loc_plain.array + loc_mirror.array) / 2, atol=1e-5)
    # ... and where the two passes differ, the disagreement says so (half the L1 distance of the two vectors)
    inside = loc_tta.grid.array.shape
    assert loc_tta.disagreement.shape == inside and loc_tta.disagreement.max() > 0.1


def test_mirror_augmentation_flips_patch_target_and_location_together():
    from drasclr.dense.locate import mirror_left_right
    from drasclr.dense.train import mirror_augment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 32)).astype(np.float32)
    y = rng.integers(0, 5, size=(16, 32, 32, 32)).astype(np.uint8)
    loc = rng.uniform(-1, 1, size=(16, 3)).astype(np.float32)
    before = x.copy(), y.copy(), loc.copy()
    x2, y2, loc2 = mirror_augment(x, y, loc, np.random.default_rng(1))
    flipped = ~np.isclose(loc2[:, 2], loc[:, 2])
    assert 0 < flipped.sum() < 16 and np.array_equal(loc2[:, :2], loc[:, :2])
    assert np.array_equal(x2[flipped], x[flipped][..., ::-1]) and np.array_equal(y2[flipped], y[flipped][..., ::-1])
    assert np.array_equal(x2[~flipped], x[~flipped]) and np.array_equal(y2[~flipped], y[~flipped])
    assert np.allclose(mirror_left_right(loc2[flipped]), loc[flipped], atol=1e-6)  # an involution
    assert all(np.array_equal(a, b) for a, b in zip(before, (x, y, loc)))  # the inputs are not changed in place


def test_model_names_resolve_to_bundled_then_user_models_and_paths_win(tmp_path, monkeypatch):
    from drasclr.core.versions import PACKAGE_MODELS, REFERENCE_MODEL, resolve_model

    monkeypatch.setenv("DRASCLR_MODELS", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    assert resolve_model("cip-lh") == REFERENCE_MODEL
    bundled = sorted(p.name for p in PACKAGE_MODELS.glob("demo-v*") if (p / "model.json").is_file())
    assert bundled and resolve_model(bundled[-1]) == PACKAGE_MODELS / bundled[-1]
    mine = save_segmenter(tiny_model(), tmp_path / "user" / "mine-v2", {"name": "mine", "version": "mine-v2"})
    assert resolve_model("mine-v2") == mine
    assert load_segmenter("mine-v2")[2] == mine
    local = save_segmenter(tiny_model(), tmp_path / bundled[-1], {"name": "x", "version": "x"})
    assert resolve_model(bundled[-1]) == local.relative_to(tmp_path)  # an existing path is never shadowed
    with pytest.raises(InputError, match="model not found"):
        load_segmenter("no-such-model-v9")


def test_blending_weight_is_monais_gaussian_without_importing_monai():
    from monai.data.utils import compute_importance_map

    from drasclr.dense.infer import gaussian_weight

    expected = compute_importance_map((32,) * 3, mode="gaussian", sigma_scale=0.125).numpy().astype(np.float32)
    assert np.array_equal(gaussian_weight(32), expected)


def test_selective_tta_mirrors_only_unsure_patches():
    """Patches whose plain pass is sure keep it; the unsure ones are averaged with their mirrored pass (the
    location-only model is sure on one side of the box and unsure on the other)."""
    from drasclr.dense.infer import unsure_patches

    probs = np.zeros((3, 5, 4, 4, 4), np.float32)
    probs[0, 1] = 1.0  # sure normal
    probs[1, 1], probs[1, 2] = 0.6, 0.4  # unsure everywhere
    probs[2, 1] = 1.0
    probs[2, 2, 0, 0, 0], probs[2, 1, 0, 0, 0] = 0.5, 0.5  # unsure in one voxel only
    lung = np.ones((3, 4, 4, 4), np.uint8)
    lung[2] = 0
    lung[2, 0, 0, :2] = 1  # ... which is half of its lung
    np.testing.assert_allclose(unsure_patches(probs, lung), [0.0, 1.0, 0.5])

    ct, truth = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    lungs = ct.with_array(truth)

    def run(**kw):
        return predict(ct, lungs, _HalfSure(), "cpu", locator=box_locator, stride=24, **kw).probabilities

    every, none = run(tta=True, tta_select=None), run(tta=False)
    chosen = run(tta=True, tta_select=0.05)
    same_as_plain = np.isclose(chosen.array, none.array, atol=1e-5).all(axis=0)
    same_as_every = np.isclose(chosen.array, every.array, atol=1e-5).all(axis=0)
    assert (same_as_every | same_as_plain).mean() > 0.99  # each voxel took one of the two (blends at seams)
    assert (~same_as_plain).mean() > 0.05 and (~same_as_every).mean() > 0.05  # both kinds of patch are there
    assert run(tta=True, tta_select=1.0).disagreement.max() == 0  # nothing mirrored: no disagreement measured


def test_the_analysis_path_leaves_monai_and_scikit_learn_unimported():
    """Every analysis pays for what it imports (MONAI about 0.7 s, scikit-learn about 0.7 s): neither is needed to
    load the default model and run the dense path."""
    import subprocess
    import sys

    probe = ("import sys; from drasclr.analysis import analyze; from drasclr.analysis.loaded_model import "
             "load_for_analysis; from drasclr.core.settings import AnalysisSettings; "
             "from drasclr.dense import predict, uncertainty, density; load_for_analysis(AnalysisSettings()); "
             "print(sorted(m for m in ('monai', 'sklearn') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("flip", [False, True])
def test_probabilities_at_lung_voxels_are_the_resampled_map(flip):
    """ProbabilityMap.at interpolates only at the voxels asked for (torch grid_sample); it gives what resampling the
    whole map onto the target grid (SimpleITK, ProbabilityMap.on) gives there, for any grid geometry."""
    from drasclr.dense.predict import ProbabilityMap

    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.random((5, 30, 28, 26), dtype=np.float32), axis=2), axis=3)
    smooth /= smooth.max()
    direction = np.diag([1.0, -1.0, 1.0]) if flip else np.eye(3)
    grid = CTImage(np.zeros((30, 28, 26), np.int16), (1.0, 1.0, 1.0), (-3.0, 20.0, 5.0), direction)
    dis = smooth[0] * 0.5
    pmap = ProbabilityMap(smooth, grid, dis)
    target = CTImage(np.zeros((17, 40, 33), np.int16), (0.7, 0.6, 1.3), (-1.2, 17.5, 8.1), direction)
    inside = rng.random(target.array.shape) < 0.3
    inside[:2] = inside[-2:] = False
    got = pmap.at(target, inside)
    want = np.stack([pmap.on(target, c)[inside] for c in range(1, 5)])
    assert got.shape == want.shape and want.max() > 0.5
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(pmap.disagreement_at(target, inside),
                               ProbabilityMap(dis[None], grid).on(target, 0)[inside], atol=2e-5)
    assert pmap.at(target, np.zeros(target.array.shape, bool)).shape == (4, 0)
