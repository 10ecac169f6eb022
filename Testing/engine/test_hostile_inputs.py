"""Hostile inputs to ``drasclr analyze``: broken files, DICOM folders, lobe files, options and output paths.

Every case: exit 2, exactly one ``error:`` line (other stderr lines only ``progress:``/``info:``/``warning:``),
no output folder, nothing hidden left beside it. Inputs are made here from small arrays; the CLI runs in this
process (fast), so refusals happen before any model or analysis work. Catalogue: docs/hostile_inputs.md.
"""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_writer import write_dicom_series
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct, write_image
from hostile import (
    abdomen,
    header_only_mha,
    leftovers,
    patched_mha,
    patched_nifti,
    refused,
    run,
    small_chest,
    truncated,
    write_chest,
)

NO_MODEL = ("--no-model", "--quiet")


# --- files: integrity, geometry, memory, values -------------------------------------------------------------------
def _file_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = write_chest(tmp / "good.nii.gz")
    raw = write_chest(tmp / "good.nii", compress=False)
    sitk.WriteImage(small_chest().to_sitk(), str(tmp / "good.mha"), useCompression=False)
    sitk.WriteImage(small_chest().to_sitk(), str(tmp / "goodz.mha"), useCompression=True)
    sitk.WriteImage(small_chest().to_sitk(), str(tmp / "good.nrrd"), useCompression=True)
    (tmp / "notes.nrrd").write_text("hello")
    (tmp / "empty.nii.gz").write_bytes(b"")
    corrupt = bytearray(good.read_bytes())
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 64] = os.urandom(64)
    (tmp / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkInt16), str(tmp / "flat.nii.gz"))
    sitk.WriteImage(sitk.Image([16, 16, 16, 4], sitk.sitkInt16), str(tmp / "fourd.nii.gz"))
    sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkVectorInt16, 3), str(tmp / "rgb.nii.gz"))
    write_image(CTImage(np.random.default_rng(0).integers(0, 1200, (16, 32, 32)).astype(np.int16)), tmp / "mr.nii.gz")
    a = small_chest().array.astype(np.float32)
    nan, inf = a.copy(), a.copy()
    nan[10, 30, 30] = np.nan
    inf[5, 20, 20] = np.inf
    write_image(small_chest().with_array(nan), tmp / "nan.mha")
    write_image(small_chest().with_array(inf), tmp / "inf.nrrd")
    big = patched_nifti(tmp / "declares_1024.nii", {42: ("<3h", (1024, 1024, 1024)), 80: ("<3f", (0.5, 0.5, 0.5))})
    big.write_bytes(big.read_bytes()[:4096])
    return {
        "missing file": (tmp / "nope.nii.gz", "not found"),
        "truncated nii.gz": (truncated(good, tmp / "trunc.nii.gz"), "truncated"),
        "truncated nii.gz at 90 %": (truncated(good, tmp / "trunc90.nii.gz", 0.9), "truncated"),
        "truncated raw nii": (truncated(raw, tmp / "trunc.nii", 0.6), "truncated"),
        "truncated mha": (truncated(tmp / "good.mha", tmp / "trunc.mha"), "cannot read"),
        "truncated compressed mha": (truncated(tmp / "goodz.mha", tmp / "truncz.mha"), "cannot read"),
        "truncated nrrd": (truncated(tmp / "good.nrrd", tmp / "trunc.nrrd"), "cannot read"),
        "corrupt gzip stream": (tmp / "corrupt.nii.gz", "corrupt"),
        "empty file": (tmp / "empty.nii.gz", "cannot read"),
        "text named .nrrd": (tmp / "notes.nrrd", "cannot read"),
        "2-D image": (tmp / "flat.nii.gz", "2-D"),
        "4-D image": (tmp / "fourd.nii.gz", "4-D"),
        "vector voxels": (tmp / "rgb.nii.gz", "components"),
        "MR-like values": (tmp / "mr.nii.gz", "Hounsfield"),
        "NaN voxel": (tmp / "nan.mha", "NaN"),
        "Inf voxel": (tmp / "inf.nrrd", "infinite"),
        "zero pixdim nifti": (patched_nifti(tmp / "zero.nii.gz", {80: ("<f", (0.0,))}, compress=True), "spacing"),
        "negative pixdim nifti": (patched_nifti(tmp / "neg.nii", {84: ("<f", (-2.0,))}), "spacing"),
        "NaN pixdim nifti": (patched_nifti(tmp / "nanpix.nii", {88: ("<f", (float("nan"),))}), "spacing"),
        "zero spacing mha": (patched_mha(tmp / "zero.mha", "ElementSpacing = 4 4 6", "ElementSpacing = 0 4 6"),
                             "spacing"),
        "20 mm voxels": (patched_mha(tmp / "coarse.mha", "ElementSpacing = 4 4 6", "ElementSpacing = 20 20 20"),
                         "outside"),
        "0.01 mm voxels": (patched_mha(tmp / "fine.mha", "ElementSpacing = 4 4 6",
                                       "ElementSpacing = 0.01 0.01 0.01"), "outside"),
        "sheared direction mha": (patched_mha(tmp / "shear.mha", "TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                              "TransformMatrix = 1 0 0 0.5 1 0 0 0 1"), "orthonormal"),
        "scaled direction mha": (patched_mha(tmp / "scaled.mha", "TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                             "TransformMatrix = 2 0 0 0 1 0 0 0 1"), "orthonormal"),
        "sheared sform nifti": (patched_nifti(tmp / "shear.nii.gz", {254: ("<h", (2,)), 284: ("<f", (2.0,))},
                                              compress=True), "shear"),
        "header of 4096^3 voxels": (header_only_mha(tmp / "huge.mha"), "memory"),
        "header spanning 4 m": (header_only_mha(tmp / "long.mha", (512, 512, 400), (0.7, 0.7, 10.0)), "spans"),
        "4 KB file declaring 1024^3": (big, "truncated|memory"),
        "abdomen with gas pockets": (write_image(abdomen(), tmp / "abdomen.nii.gz"), "no lungs"),
        "abdomen with mottled gas": (write_image(abdomen(pure_gas=False), tmp / "abdomen2.nii.gz"), "no lungs"),
        "air only": (write_image(CTImage(np.full((16, 32, 32), -1000, np.int16)), tmp / "air.nii.gz"), "Hounsfield"),
    }


def test_bad_files_are_refused_before_any_work(tmp_path, capsys):
    cases = _file_cases(tmp_path)
    assert len(cases) >= 30
    for name, (path, match) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "_")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        refused(capsys, ["analyze", path, "-o", out, *NO_MODEL], out, match)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / (1024 if sys.platform != "darwin"
                                                                                     else 2**20)
        assert grown_mb < 600, f"{name}: {grown_mb:.0f} MB allocated before refusing"
    assert not (tmp_path / "out").exists()


def test_lung_plausibility_keeps_real_looking_chests(tmp_path):
    """The checks that refuse gas pockets accept the small synthetic chest (and real CTs: test_lungs)."""
    from drasclr.anatomy.lungs import segment_lungs

    lungs = segment_lungs(small_chest())
    assert set(np.unique(lungs.array)) == {0, 1, 2}


def test_truncated_nifti_would_have_been_read_as_zeros_by_itk(tmp_path):
    """Why the integrity check exists: ITK itself reads the truncated file without complaint."""
    t = truncated(write_chest(tmp_path / "a.nii.gz"), tmp_path / "t.nii.gz")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(t)))
    assert (arr == 0).mean() > 0.3
    with pytest.raises(Exception, match="truncated"):
        read_ct(t)


@pytest.mark.parametrize("module", ["isal", "gzip"])
def test_gzip_stream_check_refuses_truncated_and_corrupt_streams_with_either_decompressor(tmp_path, monkeypatch,
                                                                                             module):
    """The integrity pass uses ISA-L's gzip when installed and the standard library's otherwise (Slicer's Python
    without isal): the same verdicts either way."""
    from drasclr.core import input_files
    from drasclr.core.errors import InputError

    if module == "isal":
        igzip = pytest.importorskip("isal.igzip")
        monkeypatch.setattr(input_files, "_gzip_module", igzip)
    else:
        monkeypatch.setattr(input_files, "_gzip_module", gzip)
    good = write_chest(tmp_path / "good.nii.gz")
    head, total = input_files._gzip_stream(good)
    assert head[:4] == (348).to_bytes(4, "little") and total == len(gzip.decompress(good.read_bytes()))
    assert read_ct(good).array.size > 0
    with pytest.raises(InputError, match="truncated"):
        read_ct(truncated(good, tmp_path / "t.nii.gz"))
    bad = bytearray(good.read_bytes())
    bad[len(bad) // 2: len(bad) // 2 + 64] = os.urandom(64)
    (tmp_path / "c.nii.gz").write_bytes(bytes(bad))
    with pytest.raises(InputError, match="corrupt|truncated"):
        input_files._gzip_stream(tmp_path / "c.nii.gz")


# --- DICOM folders ------------------------------------------------------------------------------------------------
def _dicom_cases(tmp: Path) -> dict[str, tuple[list, str]]:
    ct = small_chest()
    def series(name, **kw):
        write_dicom_series(ct, tmp / name, **kw)
        return tmp / name
    gap = series("gap")
    for k in range(8, 16):
        (gap / f"slice_{k:04d}.dcm").unlink()
    corrupt = series("corrupt")
    (corrupt / "slice_0010.dcm").write_bytes(b"hello" * 100)
    trunc = series("trunc")
    truncated(trunc / "slice_0010.dcm", trunc / "slice_0010.dcm", 0.7)
    dup = series("dup")
    shutil.copy(dup / "slice_0004.dcm", dup / "copy_of_4.dcm")
    uneven = series("uneven")
    for k in range(1, 24, 3):  # every third slice gone: steps 6 and 12 mm alternate
        (uneven / f"slice_{k:04d}.dcm").unlink()
    two = tmp / "two"
    write_dicom_series(ct, two / "s1")
    write_dicom_series(ct, two / "s2")
    (tmp / "emptydicom").mkdir()
    return {
        "empty folder": ([tmp / "emptydicom"], "no DICOM"),
        "8 missing slices": ([gap], "missing slice"),
        "corrupt slice": ([corrupt], "slice_0010.dcm"),
        "truncated slice": ([trunc], "slice_0010.dcm"),
        "duplicate slice": ([dup], "same position"),
        "uneven spacing": ([uneven], "unevenly"),
        "two series of equal size": ([two], "--series"),
        "unknown --series": ([series("named"), "--series", "1.2.3.4"], "not in"),
        "MR modality": ([series("mr", modality="MR")], "modality"),
        "localizer only": ([_localizer(tmp / "loc")], "volumetric"),
    }


def _localizer(folder: Path) -> Path:
    write_dicom_series(CTImage(small_chest().array[:2]), folder)
    return folder


def test_bad_dicom_folders_are_refused(tmp_path, capsys):
    for name, (args, match) in _dicom_cases(tmp_path).items():
        out = tmp_path / "out" / name.replace(" ", "_")
        refused(capsys, ["analyze", *args, "-o", out, *NO_MODEL], out, match)


def test_uneven_dicom_series_is_resampled_when_the_user_insists(tmp_path):
    ct = small_chest()
    write_dicom_series(ct, tmp_path / "gap")
    for k in range(8, 12):
        (tmp_path / "gap" / f"slice_{k:04d}.dcm").unlink()
    got = read_ct(tmp_path / "gap", allow_uneven=True)
    assert got.array.shape == ct.array.shape and np.allclose(got.spacing, ct.spacing)
    np.testing.assert_allclose(got.origin, ct.origin, atol=1e-3)
    keep = [k for k in range(24) if not 8 <= k < 12]
    np.testing.assert_array_equal(got.array[keep], ct.array[keep])  # acquired slices are kept exactly
    # the missing slices are interpolated between slices 7 and 12 (linear along the normal)
    for k in range(8, 12):
        w = (k - 7) / 5
        want = np.round(ct.array[7] * (1 - w) + ct.array[12] * w)
        assert np.abs(got.array[k].astype(float) - want).max() <= 1


# --- lobe files ---------------------------------------------------------------------------------------------------
def test_bad_lobe_files_are_refused(tmp_path, capsys):
    ct = small_chest()
    write_image(ct, tmp_path / "ct.nii.gz")
    shifted = CTImage(np.ones(ct.array.shape, np.uint8), ct.spacing, (5000.0, 5000.0, 5000.0), ct.direction)
    write_image(shifted, tmp_path / "elsewhere.nii.gz")
    write_image(ct.with_array(np.full(ct.array.shape, 77, np.uint8)), tmp_path / "values77.nii.gz")
    outside = np.zeros(ct.array.shape, np.uint8)
    outside[:, :4, :4] = 3  # inside the CT's box, but nowhere near the lungs
    write_image(ct.with_array(outside), tmp_path / "corner.nii.gz")
    noisy = np.random.default_rng(0).integers(1, 6, ct.array.shape).astype(np.uint8)  # incompressible
    good_lobes = write_image(ct.with_array(noisy), tmp_path / "lobes.nii.gz")
    truncated(good_lobes, tmp_path / "trunc_lobes.nii.gz")
    cases = {
        "missing lobe file": ("nope.nii.gz", "not found"),
        "lobes elsewhere in space": ("elsewhere.nii.gz", "overlap"),
        "unknown lobe values": ("values77.nii.gz", "77"),
        "lobes not touching the lungs": ("corner.nii.gz", "covers only"),
        "truncated lobe file": ("trunc_lobes.nii.gz", "truncated"),
    }
    for name, (lobes, match) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "_")
        refused(capsys, ["analyze", tmp_path / "ct.nii.gz", "-o", out, "--lobes", tmp_path / lobes, *NO_MODEL],
                out, match)


# --- options ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["--batch-size", "-5"], "batch-size"),
    (["--batch-size", "0"], "batch-size"),
    (["--batch-size", "two"], "invalid int"),
    (["--device", "tpu"], "device"),
    (["--lobes-convention", "xyz"], "lobes-convention"),
    (["--no-such-option"], "unrecognized"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_options_are_refused(tmp_path, capsys, args, match):
    write_chest(tmp_path / "ct.nii.gz")
    out = tmp_path / "o"
    refused(capsys, ["analyze", tmp_path / "ct.nii.gz", "-o", out, *args], out, match)


# --- output locations ---------------------------------------------------------------------------------------------
def test_bad_output_locations_are_refused_before_the_analysis(tmp_path, capsys):
    ct = write_chest(tmp_path / "ct.nii.gz")
    (tmp_path / "afile").write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases = {
        "output is a file": (tmp_path / "afile", "not a folder"),
        "output under a file": (tmp_path / "afile" / "sub" / "out", "is a file"),
        "existing non-empty folder": (full, "--overwrite"),
    }
    if os.path.exists("/dev/null"):
        cases["output /dev/null"] = (Path("/dev/null"), "not a folder")
    for out, match in cases.values():
        refused(capsys, ["analyze", ct, "-o", out, *NO_MODEL], None, match)
    assert (tmp_path / "afile").read_text() == "x" and (full / "keep.txt").read_text() == "mine"
    assert leftovers(tmp_path) == [] and not [p for p in Path("/dev").iterdir() if p.name.startswith(".null.tmp-")]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_parent_is_refused(tmp_path, capsys):
    ct = write_chest(tmp_path / "ct.nii.gz")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        refused(capsys, ["analyze", ct, "-o", ro / "out", *NO_MODEL], ro / "out", "not writable")
    finally:
        ro.chmod(0o700)


def test_output_locked_by_another_run_is_refused(tmp_path, capsys):
    import subprocess

    ct = write_chest(tmp_path / "ct.nii.gz")
    out = tmp_path / "res"
    code = (f"import fcntl, os, sys, time; fd = os.open({str(tmp_path / '.res.lock')!r}, os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(capsys, "analyze", ct, "-o", out, *NO_MODEL)
        assert code == 2 and "another drasclr run" in err and not out.exists(), err
    finally:
        holder.kill()
        holder.wait()


def test_overwrite_replaces_a_results_folder_without_merging(tmp_path, capsys):
    ct = write_chest(tmp_path / "ct.nii.gz")
    out = tmp_path / "res"
    out.mkdir()
    (out / "old_extra.txt").write_text("from an earlier run")
    code, _, err = run(capsys, "analyze", ct, "-o", out, "--overwrite", *NO_MODEL)
    assert code == 0, err
    assert (out / "stats.csv").exists() and not (out / "old_extra.txt").exists()
    assert leftovers(tmp_path) == []


def test_gzip_check_reads_the_whole_stream(tmp_path):
    """A .nii.gz whose last bytes (gzip CRC and length) are cut is truncated, even though every voxel may be
    present: the stream is incomplete."""
    good = write_chest(tmp_path / "a.nii.gz")
    data = good.read_bytes()
    (tmp_path / "b.nii.gz").write_bytes(data[:-4])
    with pytest.raises(Exception, match="truncated|corrupt"):
        read_ct(tmp_path / "b.nii.gz")
    assert gzip.decompress(data)  # the intact file is fine
    assert struct.calcsize("<h") == 2


def test_final_move_that_fails_cleans_up(tmp_path):
    """Another program creates the destination while we stage: the move is refused, our temporary folder is
    removed and the other program's files are untouched."""
    from drasclr.core.errors import InputError
    from drasclr.core.outputs import claimed_output, staged_dir

    target = tmp_path / "deep" / "er" / "out"
    with pytest.raises(InputError, match="appeared"):
        with staged_dir(target) as tmp:
            (tmp / "ours.txt").write_text("new")
            target.mkdir(parents=True)
            (target / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"] and leftovers(target.parent) == []
    # a failure inside a claimed output removes the folders created for it
    with pytest.raises(RuntimeError):
        with claimed_output(tmp_path / "a" / "b" / "out"), staged_dir(tmp_path / "a" / "b" / "out") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("disk on fire")
    assert not (tmp_path / "a").exists()


def test_memory_estimate_of_an_analysis_applies_to_the_ct_not_to_the_atlas_or_labelmaps(monkeypatch):
    """Under memory pressure the CT to analyse is refused up front, but reading the 2 mm atlas (4 M voxels)
    inside an analysis is not refused as if it were a second CT to analyse (it was, on a busy machine)."""
    from drasclr.anatomy.atlas import ATLAS_FILE
    from drasclr.core.errors import InputError
    from drasclr.core.io import read_image

    monkeypatch.setenv("DRASCLR_MAX_MEMORY_GB", "0.4")
    with pytest.raises(InputError, match="memory"):
        read_ct(ATLAS_FILE)  # read as a CT to analyse: the analysis estimate (> 0.5 GiB) does not fit
    assert read_image(ATLAS_FILE).array.size > 3_000_000  # held as a labelmap: about 12 MB, fits
    monkeypatch.setenv("DRASCLR_MAX_MEMORY_GB", "0.005")
    with pytest.raises(InputError, match="memory"):
        read_image(ATLAS_FILE)  # a labelmap that does not fit either is still refused before reading
