"""Patch cache, location schemes, the location-aware sampler and the training dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from drasclr.core.errors import InputError
from drasclr.pretrain import (
    LocationBatchSampler,
    PatchAugment,
    PatchCache,
    PatchPairs,
    build_patch_cache,
    find_cases,
    normalise_hu,
)
from drasclr.pretrain.data import cut_patch
from drasclr.pretrain.locations import nearest_neighbours
from drasclr.pretrain.toy import write_toy_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_toy_cohort(tmp_path_factory.mktemp("toy"), n=6, seed=1)


@pytest.fixture(scope="module")
def cache(cohort, tmp_path_factory):
    return PatchCache(build_patch_cache(find_cases(cohort), tmp_path_factory.mktemp("c") / "cache"))


def test_cache_holds_the_ct_at_each_corner_with_labels(cohort, cache):
    from drasclr.core.io import read_ct

    n, n_loc = cache.n_subjects, cache.n_locations
    assert n == 6 and n_loc >= 3 and cache.patches.shape == (n, n_loc, 32, 32, 32)
    assert cache.patches.dtype == np.int16 and isinstance(cache.patches, np.memmap)
    corners = np.load(cache.folder / "corners.npy")
    ct = read_ct(cohort / "case_002" / "ct.nii.gz").array  # toy CTs are 1 mm already
    for j in range(n_loc):
        assert np.array_equal(cache.patches[2, j], cut_patch(ct.astype(np.int16), corners[2, j]))
    f = cache.label_fractions()
    assert f.shape == (n, n_loc, 5) and np.allclose(f.sum(-1), 1.0)
    labels = cache.patch_labels()
    assert set(np.unique(labels[2])) <= {1, 4} and (labels[2] == 4).any()  # case 2 is the "ple" toy
    assert (labels[0] == 1).all()  # case 0 is healthy
    assert cache.locations.shape == (n_loc, 3) and np.abs(cache.locations).max() <= 1.0 + 1e-6


def test_cut_patch_pads_outside_the_volume():
    vol = np.arange(4 * 4 * 4, dtype=np.int16).reshape(4, 4, 4)
    p = cut_patch(vol, (-2, 1, 3), size=4)
    assert p[0, 0, 0] == -1024 and p[2, 0, 0] == vol[0, 1, 3] and (p[:, :, 1:] == -1024).all()
    assert (cut_patch(vol, (10, 0, 0), size=4) == -1024).all()


def test_nearest_neighbours_exclude_self():
    pts = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 3], [0, 0, 7]], float)
    assert nearest_neighbours(pts, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]


def test_bad_data_folders_raise_one_clear_error_and_write_nothing(tmp_path, cohort):
    with pytest.raises(InputError, match="no CT found"):
        find_cases(tmp_path)
    with pytest.raises(InputError, match="not found"):
        find_cases(tmp_path / "missing")
    bad = tmp_path / "bad"
    (bad / "case_000").mkdir(parents=True)
    (bad / "case_000" / "ct.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="case_000"):
        build_patch_cache(find_cases(bad), tmp_path / "out1")
    assert not (tmp_path / "out1").exists()
    # a case whose lung mask is empty
    import shutil

    from drasclr.core.image import CTImage
    from drasclr.core.io import read_image, write_image

    nolung = tmp_path / "nolung"
    shutil.copytree(cohort / "case_000", nolung / "case_000")
    shutil.copytree(cohort / "case_001", nolung / "case_001")
    reg = read_image(nolung / "case_001" / "regions.nii.gz")
    write_image(CTImage(np.zeros_like(reg.array), reg.spacing, reg.origin, reg.direction),
                nolung / "case_001" / "regions.nii.gz")
    with pytest.raises(InputError, match="case_001: no lungs"):
        build_patch_cache(find_cases(nolung), tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2*"))


def test_sampler_one_location_per_batch_covering_each_pair_once():
    s = LocationBatchSampler(n_subjects=10, n_locations=7, batch_size=5, seed=3)
    seen = []
    for batch in s:
        locs = {i // 10 for i in batch}
        assert len(locs) == 1 and len(batch) == 5
        seen += batch
    assert sorted(seen) == list(range(70))
    s.set_epoch(1)
    assert [b for b in s] != [b for b in LocationBatchSampler(10, 7, 5, seed=3)]  # reshuffled per epoch
    s.set_epoch(1, skip=4)
    assert len(list(s)) == len(s) == 14 - 4


def test_sampler_ranks_share_the_location_and_split_subjects():
    r0 = list(LocationBatchSampler(9, 5, 2, rank=0, world_size=2, seed=1))
    r1 = list(LocationBatchSampler(9, 5, 2, rank=1, world_size=2, seed=1))
    assert len(r0) == len(r1) == 5 * 2
    for a, b in zip(r0, r1):
        assert {i // 9 for i in a} == {i // 9 for i in b}
        assert not set(a) & set(b)
    small = LocationBatchSampler(3, 2, 32, world_size=1)
    assert small.batch == 3 and len(small) == 2


def test_batch_location_matches_sampler_with_worker_processes(cache):
    """The reference's bug: the location set on the dataset never reached the workers. Here it is in the index."""
    ds = PatchPairs(cache, k_neighbours=2, augment=PatchAugment(strength=0))
    sampler = LocationBatchSampler(cache.n_subjects, cache.n_locations, batch_size=3, seed=5)
    plan = [(loc, subj) for loc, subj in sampler.plan()]
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)
    nbrs = cache.neighbours(2)
    n = 0
    for (loc, subj), batch in zip(plan, loader):
        assert (batch["location"] == loc).all()
        assert torch.equal(batch["subject"], torch.as_tensor(subj[:3]))
        assert torch.allclose(batch["loc"], torch.from_numpy(cache.locations[loc]).expand(3, 3))
        s0 = int(subj[0])
        assert torch.equal(batch["query"][0], normalise_hu(cache.patches[s0, loc])[None])
        assert torch.equal(batch["neighbours"][0, 1], normalise_hu(cache.patches[s0, nbrs[loc, 1]])[None])
        assert torch.allclose(batch["neighbour_loc"][0], torch.from_numpy(cache.locations[nbrs[loc]]))
        n += 1
    assert n == len(plan) > 0


def test_augmentation_is_random_but_seedable():
    patch = np.random.default_rng(0).integers(-1000, 200, (32, 32, 32)).astype(np.int16)
    a, b = PatchAugment(seed=1), PatchAugment(seed=1)
    va, vb = a(patch), b(patch)
    assert va.shape == (1, 32, 32, 32) and torch.equal(va, vb)
    assert not torch.equal(a(patch), va)
    assert float(va.min()) >= -1.6 and float(va.max()) <= 1.6
    assert torch.equal(PatchAugment(strength=0)(patch), normalise_hu(patch)[None])
    assert float(normalise_hu(np.array([-2000, -1024, 240, 3000])).max()) == 1.0


def test_linear_probe_scores_separable_features_and_skips_no_lung():
    from drasclr.pretrain.probe import linear_probe, split_subjects

    rng = np.random.default_rng(0)
    labels = rng.integers(1, 4, (10, 12))
    labels[:, 0] = 0  # patches without lung are left out
    good = np.eye(5)[labels][..., 1:] * 3 + rng.normal(0, 0.3, (10, 12, 4))
    noise = rng.normal(0, 1, (10, 12, 4))
    train, test = split_subjects(10, 0.3, seed=1)
    assert not set(train) & set(test) and len(test) == 3
    r_good, r_noise = linear_probe(good, labels, train, test), linear_probe(noise, labels, train, test)
    assert r_good["macro_f1"] > 0.95 and r_noise["macro_f1"] < 0.6
    assert r_good["n_test"] == 3 * 11 and "normal" in r_good["f1_per_class"]
