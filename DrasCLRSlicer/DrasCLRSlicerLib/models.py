"""Model versions the panel offers: the bundled demo model, the reference classifier ``cip-lh`` (trained on real
expert labels; it cannot be fine-tuned), imported models and fine-tuned versions.

Same layout as the engine's store (``drasclr.core.versions``, shared, torch-free): a model is a folder ``<name>-v<N>``
holding ``model.safetensors`` and its JSON card ``model.json`` (``name``, ``version``, ``sha256`` of the weights;
a fine-tuned version also has ``parent`` and ``lineage``). Bundled models sit in ``drasclr/data/models``,
imported and fine-tuned ones in the user folder (``$DRASCLR_MODELS`` or ``~/.drasclr/models``), where
fine-tuning writes ``<name>-v<N+1>`` and never overwrites. *Revert* makes an older version the active one
(``<user folder>/<name>.active``); nothing is deleted.

Only JSON is read here (no torch import), so the panel can list models before torch is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from drasclr.core.versions import PACKAGE_MODELS, default_model, split_version, user_models_dir


@dataclass(frozen=True)
class ModelEntry:
    name: str  # the model family (folder name without -v<N>)
    number: int  # N of -v<N>
    path: Path  # the model folder
    source: str  # "bundled", "imported" or "fine-tuned"

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        return f"{self.version} ({self.source})"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _card(folder: Path) -> dict | None:
    """The card of a model folder: weights (``model.safetensors``) or, for the reference classifier ``cip-lh``,
    reference histograms (``references.npz``) beside ``model.json``."""
    card = folder / "model.json"
    if not (card.is_file() and any((folder / f).is_file() for f in ("model.safetensors", "references.npz"))):
        return None
    try:
        return json.loads(card.read_text())
    except ValueError:
        return None


def _entries(root: Path, bundled: bool) -> list[ModelEntry]:
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        card = _card(folder)
        if card is None:
            continue
        name, n = split_version(folder.name)
        source = "bundled" if bundled else ("fine-tuned" if card.get("parent") else "imported")
        out.append(ModelEntry(name, n, folder, source))
    return out


class ModelStore:
    """Bundled models plus the user folder's imported and fine-tuned versions."""

    def __init__(self, user_root: str | Path | None = None, bundled_root: str | Path = PACKAGE_MODELS):
        self.user_root = Path(user_root) if user_root is not None else user_models_dir()
        self.bundled_root = Path(bundled_root)

    def all(self) -> list[ModelEntry]:
        """Every version, grouped by model name, oldest first within a name."""
        entries = _entries(self.bundled_root, True) + _entries(self.user_root, False)
        return sorted(entries, key=lambda e: (e.name, e.number, e.source != "bundled"))

    def versions(self, name: str) -> list[ModelEntry]:
        return [e for e in self.all() if e.name == name]

    def find(self, path: str | Path) -> ModelEntry | None:
        path = Path(path)
        return next((e for e in self.all() if e.path == path), None)

    def active(self, name: str) -> ModelEntry | None:
        """The version chosen with :meth:`revert`, else the newest one."""
        versions = self.versions(name)
        marker = self.user_root / f"{name}.active"
        if marker.is_file():
            wanted = marker.read_text().strip()
            chosen = next((e for e in versions if e.version == wanted), None)
            if chosen is not None:
                return chosen
        return versions[-1] if versions else None

    def default(self) -> ModelEntry | None:
        """What a shell selects before the user chooses: the active version of the engine's default model's family
        (``drasclr analyze`` without ``--model``), else of the last family listed."""
        entries = self.all()
        if not entries:
            return None
        engine = default_model().resolve()
        family = next((e.name for e in entries if e.path.resolve() == engine), entries[-1].name)
        return self.active(family)

    def revert(self, name: str, version: str) -> ModelEntry:
        """Make ``version`` (a folder name such as ``demo-v1``) the active version of ``name``."""
        entry = next((e for e in self.versions(name) if e.version == version), None)
        if entry is None:
            raise KeyError(f"model {name} has no version {version}")
        self.user_root.mkdir(parents=True, exist_ok=True)
        (self.user_root / f"{name}.active").write_text(version + "\n")
        return entry

    def import_model(self, source: str | Path) -> ModelEntry:
        """Copy a model folder (``model.safetensors`` + ``model.json``), or a ``NAME.safetensors`` file with
        ``NAME.json`` beside it, into the user folder as ``<name>-v<N>`` (a new N when that one is taken).
        The card's sha256 must match the weights. The imported version becomes the active one."""
        source = Path(source)
        weights = source / "model.safetensors" if source.is_dir() else source
        card_file = weights.with_suffix(".json")
        if weights.suffix != ".safetensors" or not weights.is_file():
            raise ValueError(f"{source}: expected a model folder or a .safetensors file")
        if not card_file.is_file():
            raise FileNotFoundError(f"model card {card_file.name} missing beside {weights.name}")
        card = json.loads(card_file.read_text())
        if card.get("sha256") != sha256(weights):
            raise ValueError(f"{weights.name}: sha256 does not match its card (file changed or corrupted)")
        stem = source.name if source.is_dir() else weights.stem
        name, n = split_version(stem)
        name = str(card.get("name") or name)
        taken = {e.number for e in self.versions(name)}
        n = n if n and n not in taken else max(taken | {0}) + 1
        dest = self.user_root / f"{name}-v{n}"
        tmp = self.user_root / f".{dest.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            shutil.copyfile(weights, tmp / "model.safetensors")
            card = {**card, "weights": "model.safetensors"}
            (tmp / "model.json").write_text(json.dumps(card, indent=2))
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.revert(name, dest.name)
        return next(e for e in self.versions(name) if e.path == dest)
