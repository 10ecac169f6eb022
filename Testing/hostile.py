"""Helpers for the hostile-input catalogue (Testing/engine/test_hostile_*.py): run the CLI in-process and
check the contract (exit code, exactly one ``error:`` line, other stderr lines filterable, nothing left behind),
and make broken files from small arrays."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from drasclr.cli import main
from drasclr.core.image import CTImage
from drasclr.core.io import write_image
from synthetic import synthetic_chest

FILTERABLE = ("error:", "progress:", "info:", "warning:")


def run(capsys, *args) -> tuple[int, str, str]:
    """``drasclr ARGS`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary folders, locks and probes drasclr could leave in ``folder``."""
    if not folder.is_dir():
        return []
    return [p.name for p in folder.iterdir()
            if p.name.startswith(".") and any(t in p.name for t in (".tmp-", ".lock", ".old-", "probe"))]


def assert_error(code: int, err: str, match: str, want: int = 2) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code == want, (code, err)
    assert len(errors) == 1, err
    assert all(ln.startswith(FILTERABLE) for ln in lines), err
    assert any(m.lower() in errors[0].lower() for m in match.split("|")), errors[0]  # "a|b": either
    return errors[0]


def refused(capsys, args, out: Path | None, match: str, want: int = 2) -> str:
    """Run, expect a refusal, and check that ``out`` was not created and nothing hidden was left beside it."""
    existed = out is not None and out.exists()
    code, _, err = run(capsys, *args)
    line = assert_error(code, err, match, want)
    if out is not None:
        if not existed:
            assert not out.exists(), f"{out} was created"
        assert leftovers(out.parent) == [], leftovers(out.parent)
    return line


# --- inputs -------------------------------------------------------------------------------------------------------
def small_chest(seed: int = 0) -> CTImage:
    return synthetic_chest(shape=(24, 64, 64), spacing=(4.0, 4.0, 6.0), seed=seed)[0]


def write_chest(path: Path, seed: int = 0, **kw) -> Path:
    write_image(small_chest(seed), path, **kw)
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def patched_nifti(path: Path, edits: dict[int, tuple[str, tuple]], compress: bool = False) -> Path:
    """Write the small chest as uncompressed NIfTI, overwrite header fields (offset -> (struct format, values)),
    and gzip it when ``compress`` (path then ends in .nii.gz)."""
    raw = path.with_name(path.name.replace(".gz", "")) if compress else path
    write_image(small_chest(), raw, compress=False)
    b = bytearray(raw.read_bytes())
    for offset, (fmt, values) in edits.items():
        struct.pack_into(fmt, b, offset, *values)
    if compress:
        path.write_bytes(gzip.compress(bytes(b)))
        raw.unlink()
    else:
        raw.write_bytes(bytes(b))
    return path


def patched_mha(path: Path, old: str, new: str, image: CTImage | None = None) -> Path:
    """Write an uncompressed MHA and replace one header line."""
    img = image if image is not None else small_chest()
    sitk.WriteImage(img.to_sitk(), str(path), useCompression=False)
    data = path.read_bytes()
    assert old.encode() in data, data[:400]
    path.write_bytes(data.replace(old.encode(), new.encode(), 1))
    return path


def header_only_mha(path: Path, size=(4096, 4096, 4096), spacing=(0.3, 0.3, 0.3)) -> Path:
    path.write_text("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                    f"DimSize = {' '.join(map(str, size))}\nElementSpacing = {' '.join(map(str, spacing))}\n"
                    "ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    return path


def abdomen(pure_gas: bool = True) -> CTImage:
    """A soft-tissue body with two large gas pockets (about 250 ml each) and no lungs."""
    rng = np.random.default_rng(1)
    shape = (40, 128, 128)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    a = np.full(shape, -1000.0)
    a[((x - 64) / 58.0) ** 2 + ((y - 64) / 45.0) ** 2 < 1] = 40
    for cx in (40, 88):
        pocket = ((x - cx) / 14.0) ** 2 + ((y - 60) / 12.0) ** 2 + ((z - 20) / 10.0) ** 2 < 1
        a[pocket] = -1000 if pure_gas else rng.choice([-1000.0, -700.0], size=int(pocket.sum()), p=[0.4, 0.6])
    return CTImage((a + rng.normal(0, 15, shape)).round().astype(np.int16), spacing=(2.5, 2.5, 2.5))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
