"""The CPU fast path of dense inference (drasclr.dense.fused + worker threads) gives the old path's answers."""

import numpy as np
import pytest
import torch

from drasclr.anatomy.lungs import segment_lungs
from drasclr.core.io import read_ct
from drasclr.dense import predict
from drasclr.dense.fused import ENV, fuse_for_inference
from drasclr.dense.infer import card_class_weights, run_batched, runner_for
from drasclr.dense.locate import locator_for
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import DEMO_MODEL, load_segmenter
from drasclr.research.phantom.cohort import demo_paths
from realdata import real_ct_path

TINY = {"channels": [4, 4, 6, 8, 8, 8, 8], "num_experts": 3, "in_channels": 1}


def tiny_model(encoder_arch="DrasCLREncoder", full_res_kernel=3):
    """A small segmenter whose BatchNorms and InstanceNorms are not the identity (as after training)."""
    torch.manual_seed(0)
    model = SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 6, 4, 4), encoder_arch=encoder_arch,
                             full_res_kernel=full_res_kernel)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm3d, torch.nn.InstanceNorm3d)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                if m.running_mean is not None:
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("arch,kernel", [("DrasCLREncoder", 3), ("PlainEncoder", 3), ("DrasCLREncoder", 1)])
@pytest.mark.parametrize("same_location", [False, True])
def test_fused_model_computes_the_model(arch, kernel, same_location):
    model = tiny_model(arch, kernel)
    fused = fuse_for_inference(model)
    assert fused is not None
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 1, 32, 32, 32, generator=g) * 2 - 1
    loc = torch.rand(5, 3, generator=g) * 2 - 1
    if same_location:
        loc[:] = loc[:1]
    with torch.no_grad():
        want, want_embed = model(x, loc), model.embed(x, loc)
    got = fused(x, loc)
    assert got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    assert torch.allclose(fused.embed(x, loc), want_embed, atol=1e-4, rtol=1e-4)
    # the original model is untouched: still trainable, BatchNorm still there
    assert all(p.requires_grad for p in model.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())


def test_a_wrong_fold_is_caught():
    """The comparison above can fail: a fused twin of another model's weights does not pass it."""
    model = tiny_model()
    other = tiny_model()
    with torch.no_grad():
        other.encoder.stages[0].bn.running_mean += 0.5
    x, loc = torch.rand(2, 1, 32, 32, 32) * 2 - 1, torch.rand(2, 3) * 2 - 1
    with torch.no_grad():
        assert (fuse_for_inference(other)(x, loc) - model(x, loc)).abs().max() > 1e-3


def test_only_known_models_are_fused(monkeypatch):
    assert fuse_for_inference(torch.nn.Conv3d(1, 1, 3)) is None
    model = tiny_model()
    cpu = torch.device("cpu")
    assert runner_for(model, cpu).fn is not model
    monkeypatch.setenv(ENV, "reference")
    run = runner_for(model, cpu)
    assert run.fn is model and run.workers == 1


def test_worker_threads_give_the_same_batches_and_restore_threads():
    x = np.random.default_rng(0).normal(size=(37, 4)).astype(np.float32)
    loc = np.arange(37 * 3, dtype=np.float32).reshape(37, 3)
    before = torch.get_num_threads()
    seen = []

    def fn(xb, lb):
        seen.append(torch.get_num_threads())
        return xb * 2 + lb[:, :1]

    one = run_batched(fn, x, loc, torch.device("cpu"), batch_size=5)
    two = run_batched(fn, x, loc, torch.device("cpu"), batch_size=5, workers=2)
    assert np.array_equal(one, two) and np.allclose(one, x * 2 + loc[:, :1])
    assert torch.get_num_threads() == before and seen[-1] == 1


def _compare_paths(monkeypatch, ct, lungs, locator, **kw):
    """``predict`` with the old path (one thread, the quickest way to run it on a shared machine) and with the
    fast path (two worker threads) on the bundled demo model."""
    model, card, _ = load_segmenter(DEMO_MODEL, "cpu")
    out = {}
    threads = torch.get_num_threads()
    try:
        for path, n in (("reference", 1), ("fast", 2)):
            torch.set_num_threads(n)
            monkeypatch.setenv(ENV, path)
            out[path] = predict(ct, lungs, model, "cpu", locator=locator, tta=True,
                                class_weights=card_class_weights(card), **kw)
    finally:
        torch.set_num_threads(threads)
    return out["reference"], out["fast"]


def _assert_same_answers(ref, fast, lungs):
    lung_1mm = ref.lungs.array > 0
    p_ref, p_fast = ref.probabilities.array[:, lung_1mm], fast.probabilities.array[:, lung_1mm]
    assert np.abs(p_ref - p_fast).max() < 1e-3
    d_ref, d_fast = ref.probabilities.disagreement[lung_1mm], fast.probabilities.disagreement[lung_1mm]
    assert np.abs(d_ref - d_fast).max() < 1e-3
    inside = lungs.array > 0
    same = (ref.subtypes.array[inside] == fast.subtypes.array[inside]).mean()
    assert same >= 0.999, same
    assert (fast.subtypes.array[~inside] == 0).all()
    # the answer is not trivially one class
    assert len(np.unique(ref.subtypes.array[inside])) >= 2


def test_fast_path_matches_the_old_path_on_the_demo_ct(monkeypatch):
    ct = read_ct(demo_paths()["ct"])
    lungs = segment_lungs(ct)
    locator, _ = locator_for(lungs)
    ref, fast = _compare_paths(monkeypatch, ct, lungs, locator, stride=32)
    _assert_same_answers(ref, fast, lungs)


def test_fast_path_matches_the_old_path_on_a_real_ct_crop(monkeypatch):
    ct = read_ct(real_ct_path("lidc_idri_0001"))
    lungs = segment_lungs(ct)
    locator, _ = locator_for(lungs)  # locations from the whole lung, predictions on a 50 mm slab of it
    z = np.argwhere(lungs.array > 0)[:, 0]
    mid = (z.min() + z.max()) // 2
    lo, hi = np.array([mid - 10, 0, 0]), np.array([mid + 10, *ct.array.shape[1:]])
    ref, fast = _compare_paths(monkeypatch, ct.crop(lo, hi), lungs.crop(lo, hi), locator)
    _assert_same_answers(ref, fast, lungs.crop(lo, hi))


def test_blending_does_not_depend_on_the_worker_threads():
    """Worker threads run the batches (plain pass, mirrored pass of the unsure patches, weighting); the main thread
    adds their results in patch order: one worker or two, the very same probabilities and disagreement."""
    ct = read_ct(demo_paths()["ct"])
    lungs = segment_lungs(ct)
    locator, _ = locator_for(lungs)
    model, card, _ = load_segmenter(DEMO_MODEL, "cpu")
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(predict(ct, lungs, model, "cpu", locator=locator, tta=True, stride=32, batch_size=3,
                               class_weights=card_class_weights(card)))
    finally:
        torch.set_num_threads(threads)
    one, two = (o.probabilities for o in out)
    assert one.array.max() > 0.5 and np.array_equal(one.array, two.array)
    assert np.array_equal(one.disagreement, two.disagreement) and one.disagreement.max() > 0
    assert np.array_equal(out[0].subtypes.array, out[1].subtypes.array)
