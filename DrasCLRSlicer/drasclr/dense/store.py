"""Versioned model files for the subtype segmenter: ``<root>/<name>-v<N>/model.safetensors`` + ``model.json``.

A model is never overwritten: fine-tuning writes ``<name>-v<N+1>`` beside its parent (or into a user folder
when the parent's folder is read-only, such as the bundled demo model inside an installed package).
Weights are stored in float16 (half the size; loaded back as float32).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from ..core import labels
from ..core.errors import InputError
from ..core.versions import DEMO_MODEL, default_model, resolve_model
from ..model import load_model, read_card, save_model
from .infer import card_class_weights
from .segmenter import SubtypeSegmenter


def lineage(card: dict, folder: Path) -> dict:
    """Card keys recording that a new model descends from the model ``card`` in ``folder``."""
    return {"parent": {"folder": folder.name, "sha256": card.get("sha256")},
            "lineage": [*card.get("lineage", []), folder.name]}


def save_segmenter(model: SubtypeSegmenter, folder: Path, card: dict) -> Path:
    """Write a new model folder (refused when it exists: models are never overwritten)."""
    folder = Path(folder)
    if folder.exists():
        raise InputError(f"model folder {folder} exists already; models are never overwritten")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    half = copy.deepcopy(model).cpu().half()
    card = {"classes": {str(k): v for k, v in {0: "outside", **labels.SUBTYPES}.items()},
            "preprocessing": {"spacing_mm": 1.0, "patch": 32, "clip_hu": [-1024, 240], "scale": "[-1, 1]",
                              "location": "drasclr.coords.atlas_coordinates_points(patch centre)"},
            "weights_dtype": "float16", **card}
    save_model(half, tmp / "model.safetensors", card)
    os.replace(tmp, folder)
    return folder


def load_segmenter(path: str | os.PathLike | None = None, device="cpu") -> tuple[SubtypeSegmenter, dict, Path]:
    """Load a subtype model (folder or file); checks architecture and classes. Returns (model, card, folder)."""
    path = resolve_model(path) if path else default_model()
    if not path.exists():
        hint = " (the bundled demo model is built by `make demo-model`)" if path == DEMO_MODEL else ""
        raise InputError(f"model not found: {path}{hint}")
    card = read_card(path)
    classes = card.get("classes", {})
    want = {str(k): v for k, v in {0: "outside", **labels.SUBTYPES}.items()}
    if card.get("architecture") == SubtypeSegmenter.architecture and classes != want:
        raise InputError(f"{path}: model classes {classes} do not match this drasclr's subtypes {want}")
    card_class_weights(card)  # malformed decision weights: refused before the weights are read
    model, card = load_model(path, map_location=device, expect=SubtypeSegmenter)
    model.float()
    folder = path if path.is_dir() else path.parent
    return model, card, folder
