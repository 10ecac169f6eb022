"""Where models live and how their versions are named — torch-free, so the Slicer panel and the engine share it.

A model is a folder ``<name>-v<N>`` holding ``model.safetensors`` and its JSON card ``model.json``. Bundled models
sit in the package (``drasclr/data/models``); imported and fine-tuned ones in the user folder (``$DRASCLR_MODELS``,
default ``~/.drasclr/models``). A new version is always ``<name>-v<N+1>``, never an existing folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import DATA_DIR

PACKAGE_MODELS = DATA_DIR / "models"
# the default subtype model (``$DRASCLR_MODEL`` overrides it): demo-v10 (session 16) is demo-v5's weights with the
# density rule counted on the scan smoothed in-plane (scripts/build_demo_v10.sh). demo-v5 stays bundled (its rule
# unsmoothed); ``demo-light-v1`` (session 10) gives demo-v5's answers with a lighter decoder in less time, but learns
# an annotator's corrections more slowly: bundled, not the default
DEMO_MODEL = PACKAGE_MODELS / "demo-v10"
# the reference local-histogram classifier (``drasclr.reference``): ``model.json`` + ``references.npz``, no weights
REFERENCE_MODEL = PACKAGE_MODELS / "cip-lh"
# names ``--model`` accepts besides folders and files
MODEL_NAMES = {"cip-lh": REFERENCE_MODEL, "cip-lh-v2": PACKAGE_MODELS / "cip-lh-v2"}
_VERSION = re.compile(r"^(?P<name>.+)-v(?P<n>\d+)$")


def user_models_dir() -> Path:
    """Where imported and fine-tuned models go."""
    return Path(os.environ.get("DRASCLR_MODELS", Path.home() / ".drasclr" / "models"))


def default_model() -> Path:
    """The bundled demo model (or ``$DRASCLR_MODEL`` when set)."""
    env = os.environ.get("DRASCLR_MODEL")
    return Path(env) if env else DEMO_MODEL


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The folder (or file) of a ``--model`` argument: a path that exists, else the name of a bundled model
    (``cip-lh``, ``demo-v10``, ``demo-v5``, ``demo-light-v1`` ...) or of one in the user folder; None for the default
    model."""
    if model is None:
        return default_model()
    text = str(model)
    if text in MODEL_NAMES:
        return MODEL_NAMES[text]
    path = Path(model)
    if not path.exists() and text and os.sep not in text and "/" not in text:
        for root in (PACKAGE_MODELS, user_models_dir()):
            if (root / text / "model.json").is_file():
                return root / text
    return path


def split_version(folder: str | os.PathLike) -> tuple[str, int]:
    """``"demo-v3"`` (a folder or its name) -> ``("demo", 3)``; a name without ``-v<N>`` is version 0."""
    name = Path(folder).name
    m = _VERSION.match(name)
    return (m["name"], int(m["n"])) if m else (name, 0)


def next_version_dir(parent: str | os.PathLike, out_root: str | os.PathLike | None = None) -> Path:
    """The folder for the next version after ``parent`` (a model folder or its weights file), never an existing one;
    beside the parent, or in the user folder when the parent's folder is read-only (an installed package)."""
    parent = Path(parent)
    folder = parent if parent.is_dir() else parent.parent
    name, n = split_version(folder)
    root = Path(out_root) if out_root else folder.parent
    if out_root is None and not os.access(root, os.W_OK):
        root = user_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    taken = {split_version(p)[1] for p in root.glob(f"{name}-v*") if split_version(p)[0] == name}
    return root / f"{name}-v{max(taken | {n}) + 1}"
