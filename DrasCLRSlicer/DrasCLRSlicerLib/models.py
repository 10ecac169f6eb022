"""Model versions the panel offers: the bundled demo model, imported models and fine-tuned versions.

A model is a ``.safetensors`` file with a JSON card beside it (same stem, ``.json``; fields used here:
``name``, ``version``, optional ``sha256`` of the weights and ``parent`` for a fine-tuned version). Imported and
fine-tuned models live in a store folder as ``<root>/<name>/<version>/<file>``; ``<root>/<name>/HISTORY`` lists
versions in the order they were added and ``<root>/<name>/ACTIVE`` names the version in use, so *revert* is
writing an older version there (nothing is deleted). No slicer import.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

ENGINE_DATA = Path(__file__).resolve().parents[1] / "drasclr" / "data"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    path: Path  # the .safetensors file
    source: str  # "bundled", "imported" or "fine-tuned"
    parent: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.source})"


def read_card(weights: Path) -> dict:
    card = weights.with_suffix(".json")
    if not card.exists():
        raise FileNotFoundError(f"model card {card.name} missing beside {weights.name}")
    return json.loads(card.read_text())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(weights: Path, source: str) -> ModelEntry:
    card = read_card(weights)
    parent = card.get("parent")
    if source != "bundled" and parent:
        source = "fine-tuned"
    return ModelEntry(str(card.get("name", weights.stem)), str(card.get("version", "0")), weights, source, parent)


class ModelStore:
    """Imported and fine-tuned model versions under ``root`` (plus the engine's bundled models)."""

    def __init__(self, root: str | Path, bundled_dir: str | Path = ENGINE_DATA):
        self.root = Path(root)
        self.bundled_dir = Path(bundled_dir)

    def bundled(self) -> list[ModelEntry]:
        if not self.bundled_dir.is_dir():
            return []
        return [_entry(w, "bundled") for w in sorted(self.bundled_dir.rglob("*.safetensors"))
                if w.with_suffix(".json").exists()]

    def versions(self, name: str) -> list[ModelEntry]:
        """Stored versions of ``name``, oldest first (by the order they were added)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        entries = [_entry(w, "imported") for w in folder.glob("*/*.safetensors")]
        history = folder / "HISTORY"
        order = history.read_text().split() if history.exists() else []
        return sorted(entries, key=lambda e: (order.index(e.version) if e.version in order else len(order), e.version))

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def active(self, name: str) -> ModelEntry | None:
        versions = self.versions(name)
        marker = self.root / name / "ACTIVE"
        if marker.exists():
            wanted = marker.read_text().strip()
            for e in versions:
                if e.version == wanted:
                    return e
        return versions[-1] if versions else None

    def all(self) -> list[ModelEntry]:
        """What the model selector lists: bundled models, then the active version of each stored model."""
        return self.bundled() + [e for e in (self.active(n) for n in self.names()) if e is not None]

    def import_model(self, weights: str | Path) -> ModelEntry:
        """Copy a ``.safetensors`` + card into the store (checks the card's sha256) and make it active."""
        weights = Path(weights)
        if weights.suffix != ".safetensors":
            raise ValueError(f"{weights.name}: expected a .safetensors file with a .json card beside it")
        card = read_card(weights)
        if card.get("sha256") and card["sha256"] != sha256(weights):
            raise ValueError(f"{weights.name}: sha256 does not match its card")
        entry = _entry(weights, "imported")
        dest = self.root / entry.name / entry.version
        if dest.exists():
            raise FileExistsError(f"model {entry.name} version {entry.version} is already in the store")
        dest.mkdir(parents=True)
        shutil.copy2(weights, dest / weights.name)
        shutil.copy2(weights.with_suffix(".json"), dest / weights.with_suffix(".json").name)
        with open(self.root / entry.name / "HISTORY", "a") as fh:
            fh.write(entry.version + "\n")
        self.revert(entry.name, entry.version)
        return _entry(dest / weights.name, "imported")

    def revert(self, name: str, version: str) -> ModelEntry:
        """Make ``version`` of ``name`` the active one."""
        for e in self.versions(name):
            if e.version == version:
                (self.root / name / "ACTIVE").write_text(version + "\n")
                return e
        raise KeyError(f"model {name} has no version {version}")
