"""The reference classifier cip-lh: features, stored parameters, decisions on synthetic windows, CT maps, and its
cross-validated accuracy on the real expert-labelled patches (skipped when ../shared is absent)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import ndimage as ndi

from drasclr.anatomy.lungs import segment_lung_slices, segment_lungs
from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.reference.features import HistogramSpec, patch_features, window_counts
from drasclr.reference.knn import LocalHistogramKNN
from drasclr.reference.predict import predict_subtypes, window_pixels
from drasclr.reference.store import PACKAGE_DIR, is_reference_model, load_reference
from drasclr.reference.validate import cross_validate
from realdata import REAL_DIR
from reference_synthetic import chest_slice, window

PATCHES = REAL_DIR.parent / "real_labels" / "cip_emphysema_patches" / "patches.npz"


@pytest.fixture(scope="module")
def shipped():
    return load_reference("cip-lh")


def test_window_counts_equal_a_plain_histogram_of_the_cropped_window():
    rng = np.random.default_rng(1)
    img = rng.integers(-1100, 200, (40, 50)).astype(np.int16)
    spec = HistogramSpec()
    centres = np.array([[20, 25], [0, 0], [39, 49], [5, 30]])
    counts, dense = window_counts(img, centres, 9, spec)
    padded = np.pad(img.astype(float), 4, constant_values=-1000)
    edges = spec.lo_hu + spec.bin_hu * np.arange(spec.n_bins + 1)
    for (y, x), c, d in zip(centres, counts, dense):
        win = padded[y:y + 9, x:x + 9].ravel()
        ref = np.histogram(np.clip(win, spec.lo_hu, edges[-1]), bins=edges)[0]
        ref[-1] -= (win >= edges[-1]).sum()  # np.histogram puts the right edge in the last bin
        assert np.array_equal(c[: spec.n_bins], ref)
        assert c[spec.n_bins] == (win >= edges[-1]).sum()
        assert d == pytest.approx((win >= spec.dense_hu).mean())


def test_stored_parameters_load_without_pickle_and_carry_the_licence(shipped):
    clf, card, folder = shipped
    assert folder == PACKAGE_DIR and is_reference_model("cip-lh") and is_reference_model(folder)
    with np.load(folder / "references.npz", allow_pickle=False) as data:
        assert set(data.files) == {"counts", "labels"}
        assert data["counts"].dtype == np.uint16 and data["counts"].shape == (1337, clf.spec.dim)
        assert set(np.unique(data["labels"])) == {1, 2, 3, 4}
    assert card["kind"] == "reference-local-histogram-knn" and card["decision"]["k"] == 5
    assert card["metrics"]["cv5_balanced_accuracy"] >= 0.8
    text = (folder / card["licence_file"]).read_text()
    assert "obtained under license from The Brigham and Women's Hospital" in text
    assert "Chest Imaging Platform Contribution and Software License Agreement" in text


def test_a_changed_reference_file_is_refused(shipped, tmp_path):
    folder = tmp_path / "lh"
    shutil.copytree(PACKAGE_DIR, folder)
    with np.load(folder / "references.npz") as d:
        counts, labs = d["counts"].copy(), d["labels"].copy()
    labs[:10] = 4
    np.savez_compressed(folder / "references.npz", counts=counts, labels=labs)
    with pytest.raises(InputError, match="sha256"):
        load_reference(folder)
    card = json.loads((folder / "model.json").read_text())
    card.pop("sha256")
    (folder / "model.json").write_text(json.dumps(card))
    load_reference(folder)  # without a digest it loads (a hand-built folder)
    (folder / "model.json").write_text(json.dumps({**card, "architecture": "SubtypeSegmenter"}))
    with pytest.raises(InputError, match="architecture"):
        load_reference(folder)


@pytest.mark.parametrize("kind,expected", [("normal", labels.NORMAL), ("ple", labels.PLE), ("cle", labels.CLE),
                                           ("pse", labels.PSE), ("normal+wall", labels.NORMAL)])
def test_synthetic_windows_get_their_subtype(shipped, kind, expected):
    clf, _, _ = shipped
    rng = np.random.default_rng(7)
    wins = np.stack([window(rng, kind) for _ in range(12)])
    feats, dense = patch_features(wins, clf.spec)
    pred = clf.predict(feats, dense)
    assert (pred == expected).mean() >= 0.9, pred


def test_paraseptal_rule_and_its_emphysema_check():
    spec = HistogramSpec(lung_only=True)
    rng = np.random.default_rng(3)
    kinds = ["normal", "cle", "ple"]
    wins = np.stack([window(rng, k) for k in kinds for _ in range(10)])
    y = np.repeat([labels.NORMAL, labels.CLE, labels.PLE], 10)
    feats, _ = patch_features(wins, spec)
    queries = np.stack([window(rng, "cle") for _ in range(5)] + [window(rng, "normal") for _ in range(5)])
    qf, _ = patch_features(queries, spec)
    qf[:, spec.n_bins] = 0.0  # the references hold no wall: the vote reads the lung part
    high = np.full(10, 0.4, np.float32)
    ruled = LocalHistogramKNN(spec, feats, y, pse_dense_frac=0.28).predict(qf, high)
    assert list(ruled) == [labels.PSE] * 5 + [labels.NORMAL] * 5  # emphysema at the wall -> PSE; normal stays
    off = LocalHistogramKNN(spec, feats, y, pse_dense_frac=None).predict(qf, high)
    assert list(off) == [labels.CLE] * 5 + [labels.NORMAL] * 5


def test_window_side_follows_the_pixel_size():
    assert window_pixels(20.15, 0.65) == 31
    assert window_pixels(20.15, 0.703125) == 29
    assert window_pixels(20.15, 1.3) == 15
    assert window_pixels(20.15, 8.0) == 5


@pytest.mark.parametrize("pixel_mm", [0.6, 0.8])
def test_map_on_a_synthetic_ct_follows_each_lung(shipped, pixel_mm):
    clf, _, _ = shipped
    ct, truth = chest_slice(seed=2, pixel_mm=pixel_mm, n_slices=3, slice_mm=1.0)
    lungs = ct.with_array(truth)
    sub = predict_subtypes(ct, lungs, clf, show_progress=False).array
    assert np.array_equal(sub > 0, truth > 0)  # every lung voxel labelled, nothing outside
    # windows that reach the chest wall see pleura: emphysema there is paraseptal by the rule, so judge the
    # subtype on lung farther than half a window from the wall
    half_mm = clf.window_mm / 2
    deep = np.stack([ndi.distance_transform_edt(t > 0) * pixel_mm > half_mm + 2 for t in truth])
    left, right = sub[deep & (truth == labels.LEFT_LUNG)], sub[deep & (truth == labels.RIGHT_LUNG)]
    assert left.size > 1000 and right.size > 1000
    assert (left == labels.PLE).mean() > 0.9, np.bincount(left)
    assert (right == labels.NORMAL).mean() > 0.9, np.bincount(right)
    whole_left = sub[truth == labels.LEFT_LUNG]
    assert np.isin(whole_left, (labels.PLE, labels.PSE)).mean() > 0.95  # dark lung: PLE inside, PSE at the wall
    assert (sub[truth == labels.RIGHT_LUNG] == labels.NORMAL).mean() > 0.9  # normal lung stays normal at the wall


def test_single_slice_lung_mask_matches_the_truth():
    ct, truth = chest_slice(seed=4)
    with pytest.raises(InputError, match="no lungs"):
        segment_lungs(ct)  # one slice is no lung-sized volume
    lab = segment_lung_slices(ct).array
    for value in (labels.RIGHT_LUNG, labels.LEFT_LUNG):
        a, b = lab == value, truth == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95


def test_single_slice_lung_mask_agrees_with_the_3d_mask_on_a_real_ct(real_ct_dir):
    from drasclr.core.io import read_ct

    ct = read_ct(real_ct_dir / "lidc_idri_0001.nii.gz")
    z = 66
    full = segment_lungs(ct).array[z]
    one = segment_lung_slices(ct.crop((z, 0, 0), (z + 1, *ct.array.shape[1:]))).array[0]
    assert 2 * ((one > 0) & (full > 0)).sum() / ((one > 0).sum() + (full > 0).sum()) > 0.98
    assert (one == full)[(one > 0) | (full > 0)].mean() > 0.98  # left and right named alike


def test_cross_validated_accuracy_on_the_real_patches():
    if not PATCHES.exists():
        pytest.skip(f"real patches not found: {PATCHES}")
    _, card, _ = load_reference()
    with np.load(PATCHES, allow_pickle=False) as d:
        patches, subtypes, cip_class = d["patches"], d["subtype"], d["cip_class"]
    dec = card["decision"]
    cv = cross_validate(patches, subtypes, HistogramSpec.from_dict(card["spec"]), k=dec["k"],
                        pse_dense_frac=dec["pse_dense_frac"], strata=cip_class,
                        pse_needs_emphysema=dec["pse_needs_emphysema"])
    assert cv["n"] == 1337
    assert cv["balanced_accuracy"] >= 0.8, cv["recall"]
    assert min(cv["recall"].values()) >= 0.7, cv["recall"]
    assert cv["balanced_accuracy"] == pytest.approx(card["metrics"]["cv5_balanced_accuracy"], abs=1e-3)
    # a classifier that ignores the histograms cannot pass: shuffled labels fall to chance
    shuffled = cross_validate(patches, np.random.default_rng(0).permutation(subtypes),
                              HistogramSpec.from_dict(card["spec"]), k=dec["k"])
    assert shuffled["balanced_accuracy"] < 0.4


def test_a_single_slice_is_refused_by_the_3d_model_path_but_densitometry_runs():
    from drasclr.analysis.analyze import analyze
    from drasclr.analysis.loaded_model import LoadedModel

    ct, truth = chest_slice(seed=9, size=256)
    with pytest.raises(InputError, match="cip-lh"):
        analyze(ct, model=LoadedModel(object(), {}, None, "cpu"))  # any 3-D model: refused before it is used
    result = analyze(ct)  # densitometry only works on one slice
    assert result.region_kind == "lungs" and result.subtypes is None
    assert [r["region"] for r in result.rows] == ["left_lung", "right_lung", "whole_lung"]
    assert result.rows[2]["volume_ml"] == pytest.approx((truth > 0).sum() * ct.voxel_volume_ml, rel=0.02)


def test_the_build_script_rebuilds_the_shipped_parameters(tmp_path):
    if not PATCHES.exists():
        pytest.skip(f"real patches not found: {PATCHES}")
    import subprocess
    import sys

    root = PACKAGE_DIR.parents[4]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "build_cip_lh.py"), "--patches",
                           str(PATCHES.parent), "-o", str(tmp_path / "lh")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("references.npz", "model.json", "LICENSE.txt"):
        assert (tmp_path / "lh" / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), name


def test_map_on_a_real_ct_slab(shipped, real_ct_dir):
    """30 slices of LIDC-IDRI-0001 (no emphysema truth; lung median -874 HU, LAA-950 2.6 %): every lung voxel gets
    a subtype, nothing outside; the scan reads mostly normal and almost no panlobular emphysema."""
    from drasclr.core.io import read_ct

    clf, _, _ = shipped
    ct = read_ct(real_ct_dir / "lidc_idri_0001.nii.gz")
    lungs = segment_lungs(ct)
    slab, slab_lungs = ct.crop((50, 0, 0), (80, 512, 512)), lungs.crop((50, 0, 0), (80, 512, 512))
    sub = predict_subtypes(slab, slab_lungs, clf, show_progress=False).array
    assert np.array_equal(sub > 0, slab_lungs.array > 0)
    frac = np.bincount(sub[sub > 0], minlength=5)[1:] / (sub > 0).sum()
    assert frac[0] == frac.max() and frac[0] > 0.45, frac
    assert frac[3] < 0.02, frac
