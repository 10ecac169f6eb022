"""Training checkpoints: resumable state in safetensors + JSON, never pickles; written all-or-nothing.

``OUT/checkpoints/step_0000500/``::

    model.safetensors + model.json          the query encoder alone (a normal drasclr model, load_model reads it)
    train_state.safetensors                 everything else: both encoders, heads, per-location queues, optimizer
    train_state.json                        step, epoch, config, sha256 of train_state.safetensors

``OUT/checkpoints/latest`` names the newest complete checkpoint folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.errors import InputError
from .checkpoint import _looks_pickled, save_model, sha256_file

STATE_FORMAT = "drasclr-train-state"
STATE_VERSION = 1
# config keys that must match to resume (the architecture and the queues)
ARCH_KEYS = ("channels", "num_experts", "no_location", "dim", "queue_size", "n_locations", "voco_grid",
             "fusion_classes")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                out[f"optim.{i}.{name}"] = v
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(folder: str | os.PathLike, objective: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, epoch: int, config: dict, model_card: dict, keep: int = 3) -> Path:
    """Write ``folder/step_XXXXXXX`` (through a temporary folder) and point ``folder/latest`` at it."""
    with checkpoint_folder(folder, step, keep) as tmp:
        save_model(objective.encoder_q, tmp / "model.safetensors", dict(model_card, step=step))
        tensors = {f"objective.{k}": v.detach().cpu().contiguous().clone() for k, v in objective.state_dict().items()}
        tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in _optimizer_tensors(optimizer).items()})
        save_file(tensors, str(tmp / "train_state.safetensors"), metadata={"format": STATE_FORMAT})
        meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "epoch": epoch, "config": config,
                "sha256": sha256_file(tmp / "train_state.safetensors")}
        (tmp / "train_state.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return Path(folder) / step_name(step)


def step_name(step: int) -> str:
    return f"step_{step:07d}"


@contextlib.contextmanager
def checkpoint_folder(folder: str | os.PathLike, step: int, keep: int):
    """Yield a temporary folder to fill; on success it becomes ``folder/step_XXXXXXX`` (all or nothing),
    ``folder/latest`` names it and only the newest ``keep`` checkpoints stay (``keep`` <= 0: all)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = step_name(step)
    final = folder / name
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = folder / f".latest.tmp-{os.getpid()}"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, folder / "latest")
    old = sorted(p for p in folder.glob("step_*") if p.is_dir())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


def find_latest(folder: str | os.PathLike) -> Path | None:
    """The checkpoint ``folder/latest`` names, or ``None`` when there is none."""
    latest = Path(folder) / "latest"
    if not latest.is_file():
        return None
    p = Path(folder) / latest.read_text().strip()
    return p if p.is_dir() else None


def read_checkpoint(path: str | os.PathLike, config: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(meta, tensors)`` of a checkpoint folder, checked against ``config`` (architecture and queues).

    ``InputError`` for a pickled file, a missing/corrupted state, another format version or architecture.
    """
    p = Path(path)
    if p.is_file():
        if _looks_pickled(p):
            raise InputError(f"{p}: pickled checkpoints are not loaded (they can run code); "
                             f"resume from a drasclr checkpoint folder")
        raise InputError(f"{p}: resume needs a checkpoint folder (OUT/checkpoints/step_...), not a file")
    meta_p, state_p = p / "train_state.json", p / "train_state.safetensors"
    if not meta_p.is_file() or not state_p.is_file():
        raise InputError(f"{p}: not a drasclr training checkpoint (train_state.json/.safetensors missing)")
    try:
        meta = json.loads(meta_p.read_text())
    except ValueError as exc:
        raise InputError(f"{meta_p}: unreadable ({exc})") from None
    if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
        raise InputError(f"{p}: checkpoint format {meta.get('format')} version {meta.get('version')} is not "
                         f"supported (this drasclr writes {STATE_FORMAT} version {STATE_VERSION})")
    old = meta.get("config", {})
    was, now = old.get("method", "drasclr"), config.get("method", "drasclr")  # older checkpoints: drasclr
    if was != now:
        raise InputError(f"{p}: checkpoint is from pretraining method {was!r}, not {now!r} (resume it with "
                         f"--method {was}, or start a new run folder)")
    diff = [k for k in ARCH_KEYS if k in config and json.dumps(old.get(k)) != json.dumps(config.get(k))]
    if diff:
        parts = ", ".join(f"{k}: checkpoint {old.get(k)} vs now {config.get(k)}" for k in diff)
        raise InputError(f"{p}: checkpoint is from another architecture or data ({parts})")
    if sha256_file(state_p) != meta.get("sha256"):
        raise InputError(f"{state_p}: sha256 does not match train_state.json (corrupted checkpoint)")
    try:
        tensors = load_file(str(state_p))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{state_p}: unreadable ({exc})") from None
    return meta, tensors


def restore(objective: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state = {k[len("objective."):]: v for k, v in tensors.items() if k.startswith("objective.")}
    missing, unexpected = objective.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"checkpoint does not fit the model (missing {missing[:2]}, unexpected {unexpected[:2]})")
    _load_optimizer(optimizer, tensors)
