"""Model files: weights in safetensors plus a JSON card beside them. Never a pickle.

A model saved as ``NAME.safetensors`` has its card in ``NAME.json``::

    {"format": "drasclr-model", "format_version": 1, "architecture": "DrasCLREncoder",
     "config": {...constructor arguments...}, "drasclr_version": "0.1.0",
     "weights": "NAME.safetensors", "sha256": "<of the weights file>", ...whatever the caller adds...}

``load_model`` checks the card (format, version, architecture), the weights' sha256 and that every tensor's
name and shape match the architecture, and raises ``InputError`` with one clear sentence otherwise. Both files
are written to temporary names and moved into place, so a crash never leaves a half-written model.

Other model classes (dense heads, classifiers) join with ``register_architecture(cls)``; a class needs a class
attribute ``architecture`` (its name), a ``config()`` method and a constructor taking ``**config``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.errors import InputError

FORMAT = "drasclr-model"
FORMAT_VERSION = 1
_ARCHITECTURES: dict[str, type] = {}
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"}


def register_architecture(cls: type) -> type:
    """Make ``cls`` loadable by ``load_model`` (usable as a class decorator)."""
    _ARCHITECTURES[cls.architecture] = cls
    return cls


def architectures() -> dict[str, type]:
    _register_builtin()
    return dict(_ARCHITECTURES)


def _register_builtin() -> None:
    from .encoder import DrasCLREncoder, PlainEncoder

    for cls in (DrasCLREncoder, PlainEncoder):
        _ARCHITECTURES.setdefault(cls.architecture, cls)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights: str | os.PathLike) -> Path:
    """``NAME.safetensors`` -> ``NAME.json``."""
    return Path(weights).with_suffix(".json")


def _resolve(path: str | os.PathLike) -> Path:
    """A weights file, or a folder holding exactly one ``*.safetensors`` (``model.safetensors`` preferred)."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.safetensors").is_file():
            return p / "model.safetensors"
        found = sorted(p.glob("*.safetensors"))
        if len(found) != 1:
            raise InputError(f"{p}: expected one .safetensors model file in the folder, found {len(found)}")
        return found[0]
    return p


def _looks_pickled(p: Path) -> bool:
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == b"PK\x03\x04"  # pickle protocol >= 2, or torch.save's zip


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def state_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the state dict (safetensors refuses shared or strided tensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model: nn.Module, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write ``model``'s weights to ``path`` (``.safetensors``) and its card to ``path`` with ``.json``.

    ``card`` holds what the caller knows (classes, preprocessing, training data summary, metrics ...); this
    function adds format, version, architecture, config and the sha256 of the weights file. Returns the
    weights path. A DDP/compiled wrapper is unwrapped first.
    """
    from .. import __version__

    _register_builtin()
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    arch = getattr(model, "architecture", None)
    if arch is None or not hasattr(model, "config"):
        raise TypeError(f"{type(model).__name__} needs an `architecture` name and a `config()` method")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"model weights are written as .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "architecture": arch}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state_for_save(model), str(tmp), metadata=meta)
        digest = sha256_file(tmp)
        full = dict(card or {})
        full.update({"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": arch,
                     "config": model.config(), "drasclr_version": __version__, "weights": path.name,
                     "sha256": digest})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _atomic_write_bytes(card_path(path), (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_card(path: str | os.PathLike) -> dict:
    """The JSON card of a model (file or folder), checked for format and version but not loaded."""
    weights = _resolve(path)
    cpath = card_path(weights)
    if not cpath.is_file():
        raise InputError(f"{weights}: model card {cpath.name} is missing (a model is NAME.safetensors + NAME.json)")
    try:
        card = json.loads(cpath.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{cpath}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise InputError(f"{cpath}: not a DrasCLR model card (a JSON {type(card).__name__}, expected an object)")
    if card.get("format") != FORMAT:
        raise InputError(f"{cpath}: not a DrasCLR model card (format {card.get('format')!r})")
    for key, kind in (("config", dict), ("architecture", str), ("sha256", str)):
        if key in card and not isinstance(card[key], kind):
            raise InputError(f"{cpath}: card field {key!r} is a {type(card[key]).__name__}, expected a "
                             f"{kind.__name__}")
    if card.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{cpath}: model format version {card.get('format_version')} is not supported by this "
                         f"drasclr (reads version {FORMAT_VERSION}); use a matching drasclr version")
    return card


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu",
               expect: str | type | None = None) -> tuple[nn.Module, dict]:
    """Load a model saved by ``save_model``: ``(model in eval mode, card)``.

    ``path``: the ``.safetensors`` file or a folder holding it. ``expect``: an architecture name or class the
    caller needs (e.g. ``"DrasCLREncoder"``); anything else is refused. Raises ``InputError`` for a missing,
    pickled, corrupted, foreign or mismatched model.
    """
    _register_builtin()
    p = Path(path)
    if not p.exists():
        raise InputError(f"model not found: {p}")
    weights = _resolve(p)
    if not weights.is_file():
        raise InputError(f"model not found: {weights}")
    if _looks_pickled(weights):
        raise InputError(f"{weights}: pickled checkpoints are not loaded (they can run code); "
                         f"use a .safetensors model with its JSON card")
    card = read_card(weights)
    arch = card.get("architecture")
    if isinstance(expect, type):
        expect = getattr(expect, "architecture", expect.__name__)
    if expect is not None and arch != expect:
        raise InputError(f"{weights}: this is a {arch} model, but a {expect} is needed")
    cls = _ARCHITECTURES.get(arch)
    if cls is None:
        raise InputError(f"{weights}: unknown architecture {arch!r} (known: {', '.join(sorted(_ARCHITECTURES))})")
    if sha256_file(weights) != card.get("sha256"):
        raise InputError(f"{weights}: sha256 does not match the card (file changed or corrupted)")
    expected = _expected_shapes(cls, card.get("config", {}), weights, arch)  # no memory: built on the meta device
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{weights}: unreadable safetensors file ({exc})") from None
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad = sorted(k for k in set(expected) & set(state) if expected[k] != state[k].shape)
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
        if bad:
            parts.append(f"{len(bad)} shape mismatches (e.g. {bad[0]}: {tuple(state[bad[0]].shape)} vs "
                         f"{tuple(expected[bad[0]])})")
        raise InputError(f"{weights}: weights do not fit architecture {arch}: " + "; ".join(parts))
    model = cls(**card.get("config", {}))  # the configuration fits the weights: now it is built for real
    model.load_state_dict(state)
    model.to(map_location).eval()
    return model, card


def _expected_shapes(cls: type, config: dict, weights: Path, arch: str) -> dict[str, torch.Size]:
    """Tensor shapes ``cls(**config)`` would have, from a model built on the meta device (nothing allocated),
    so a configuration that does not match its weights (or asks for an absurd size) is refused before building."""
    try:
        with torch.device("meta"):
            shell = cls(**config)
        return {k: v.shape for k, v in shell.state_dict().items()}
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise InputError(f"{weights}: card config does not fit {arch} ({' '.join(str(exc).split())[:160]})") \
            from None
