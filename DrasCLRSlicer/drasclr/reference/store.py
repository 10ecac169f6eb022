"""Stored parameters of the reference classifier: ``<folder>/model.json`` (card) + ``references.npz``.

``references.npz`` holds only derived numbers, never the patches: ``counts`` (M, dim) uint16 raw histogram counts
of the reference windows and ``labels`` (M,) uint8 subtype values; it is read with ``allow_pickle=False``. The
card holds the histogram spec, k, the paraseptal rule, the window's physical size, the cross-validation figures
and the sha256 of ``references.npz``; ``LICENSE.txt`` beside them carries the Chest Imaging Platform notice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import InputError
from ..core.versions import REFERENCE_MODEL, resolve_model
from .features import HistogramSpec, finish

if TYPE_CHECKING:
    from .knn import LocalHistogramKNN

ARCHITECTURE = "LocalHistogramKNN"
KIND = "reference-local-histogram-knn"
PACKAGE_DIR = REFERENCE_MODEL
NAME = REFERENCE_MODEL.name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_reference_model(path: str | os.PathLike | None) -> bool:
    """True for the name ``cip-lh`` or a folder whose card is a local-histogram classifier."""
    if path is None:
        return False
    card = resolve_model(path) / "model.json"
    if not card.is_file():
        return False
    try:
        doc = json.loads(card.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("architecture") == ARCHITECTURE  # any other card: the model loader says


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed ``.npz`` (readable by ``np.load(allow_pickle=False)``) with fixed zip timestamps, so the same
    arrays always give the same bytes and sha256 (a rebuild can be compared with the shipped file)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def save_reference(folder: str | os.PathLike, counts: np.ndarray, labels: np.ndarray, card: dict,
                   licence_text: str | None = None) -> Path:
    """Write a classifier folder (replacing its files atomically one by one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = np.asarray(counts)
    if counts.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError("histogram counts do not fit uint16")
    tmp = folder / f".references.tmp-{os.getpid()}.npz"
    _write_npz(tmp, {"counts": counts.astype(np.uint16), "labels": np.asarray(labels, np.uint8)})
    os.replace(tmp, folder / "references.npz")
    card = {**card, "architecture": ARCHITECTURE, "kind": KIND, "references": "references.npz",
            "sha256": _sha256(folder / "references.npz")}
    if licence_text is not None:
        (folder / "LICENSE.txt").write_text(licence_text)
        card["licence_file"] = "LICENSE.txt"
    tmp_card = folder / f".model.tmp-{os.getpid()}.json"
    tmp_card.write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    os.replace(tmp_card, folder / "model.json")
    return folder


def load_reference(path: str | os.PathLike | None = None) -> tuple[LocalHistogramKNN, dict, Path]:
    """Load a classifier folder (default or name ``cip-lh``: the bundled one). ``InputError`` on a bad folder."""
    folder = PACKAGE_DIR if path is None else resolve_model(path)
    card_file = folder / "model.json"
    if not card_file.is_file():
        raise InputError(f"reference classifier not found: {folder} (no model.json)")
    try:
        card = json.loads(card_file.read_text())
    except ValueError as exc:
        raise InputError(f"{card_file}: not a JSON model card ({exc})") from exc
    if not isinstance(card, dict):
        raise InputError(f"{card_file}: a model card is a JSON object, not a {type(card).__name__}")
    if card.get("architecture") != ARCHITECTURE:
        raise InputError(f"{card_file}: architecture {card.get('architecture')!r} is not {ARCHITECTURE}")
    ref = folder / card.get("references", "references.npz")
    if not ref.is_file():
        raise InputError(f"reference histograms missing: {ref}")
    if card.get("sha256") and _sha256(ref) != card["sha256"]:
        raise InputError(f"{ref}: sha256 does not match the model card (file changed or damaged)")
    try:
        with np.load(ref, allow_pickle=False) as data:
            counts, labels = data["counts"], data["labels"]
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"{ref}: unreadable reference histograms ({exc})") from exc
    from .knn import LocalHistogramKNN  # scikit-learn: imported when the classifier is loaded

    spec = HistogramSpec.from_dict(card["spec"])
    if counts.ndim != 2 or counts.shape[1] != spec.dim or len(labels) != len(counts):
        raise InputError(f"{ref}: histograms {counts.shape} / labels {labels.shape} do not match the card")
    dec = card.get("decision", {})
    clf = LocalHistogramKNN(spec, finish(counts, spec), labels, k=int(dec.get("k", 5)),
                            pse_dense_frac=dec.get("pse_dense_frac"),
                            pse_needs_emphysema=bool(dec.get("pse_needs_emphysema", False)),
                            window_mm=float(card["window_mm"]), pixel_mm=float(card["pixel_mm"]))
    return clf, card, folder
