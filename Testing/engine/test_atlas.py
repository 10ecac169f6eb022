"""The shipped atlas: small, adult-sized, regenerated exactly by its script; the DrasCLR location grid rule."""

from __future__ import annotations

import numpy as np

from drasclr.anatomy.atlas import ATLAS_FILE, PATCH, STRIDE, load_atlas, location_grid
from drasclr.anatomy.atlas.shape import canonical_lobes


def test_atlas_file_small_adult_sized_and_reproducible():
    assert ATLAS_FILE.stat().st_size < 1_000_000
    atlas = load_atlas()
    a = atlas.lobes
    assert set(np.unique(a.array)) == {0, 1, 2, 3, 4, 5}
    idx = np.argwhere(a.array > 0)
    lo, hi = a.index_to_lps(idx.min(0)[::-1]), a.index_to_lps(idx.max(0)[::-1])
    width, depth, height = (hi - lo)[0]
    assert 270 <= width <= 330 and 230 <= height <= 270 and 150 <= depth <= 230
    vol_l = (a.array > 0).sum() * a.voxel_volume_ml / 1000
    assert 4.0 <= vol_l <= 7.0  # adult total lung capacity
    # the right lung (1) is at negative LPS x, the left (2) at positive x
    for v, sign in ((1, -1), (2, 1)):
        x = a.index_to_lps(np.argwhere(atlas.lungs.array == v).mean(0)[::-1])[0, 0]
        assert np.sign(x) == sign
    # the shipped file is exactly what the build script makes
    assert (canonical_lobes(2.0).array == a.array).all()


def test_location_grid_rule_matches_brute_force():
    rng = np.random.default_rng(0)
    mask = np.zeros((120, 110, 130), bool)
    zz, yy, xx = np.mgrid[:120, :110, :130]
    mask[((zz - 60) / 50) ** 2 + ((yy - 55) / 45) ** 2 + ((xx - 65) / 55) ** 2 < 1] = True
    mask ^= rng.random(mask.shape) < 0.05
    for cap in (1000, 20):
        grid, thr = location_grid(mask, max_locations=cap)
        # brute force: every stride position, lung fraction of the 32³ patch
        frac = {}
        for z in range(0, 120 - PATCH + 1, STRIDE):
            for y in range(0, 110 - PATCH + 1, STRIDE):
                for x in range(0, 130 - PATCH + 1, STRIDE):
                    frac[(z, y, x)] = mask[z:z + PATCH, y:y + PATCH, x:x + PATCH].mean()
        t = 0.1
        while sum(f > t + 1e-9 for f in frac.values()) >= cap:
            t += 0.1
        want = sorted(k for k, f in frac.items() if f > t + 1e-9)
        assert sorted(map(tuple, grid.tolist())) == want
        assert abs(thr - round(t, 1)) < 1e-9
    assert thr > 0.1  # the small cap forced the threshold up


def test_load_atlas_grid_and_normalised_locations():
    atlas = load_atlas()
    assert 300 <= len(atlas) < 1000
    assert atlas.grid.shape == (len(atlas), 3) and atlas.grid.dtype == np.int64
    assert (atlas.grid % STRIDE == 0).all()
    assert np.allclose(atlas.centres, atlas.grid + PATCH / 2)
    loc = atlas.locations_normalised
    assert loc.dtype == np.float32 and loc.shape == (len(atlas), 3)
    assert np.allclose(loc.min(0), -1) and np.allclose(loc.max(0), 1)
    # every kept patch holds lung (> threshold) on the 1 mm grid
    g = atlas.grid_image.array > 0
    for z, y, x in atlas.grid[::25]:
        assert g[z:z + PATCH, y:y + PATCH, x:x + PATCH].mean() > atlas.threshold
    assert atlas.grid_image.spacing == (1.0, 1.0, 1.0)
