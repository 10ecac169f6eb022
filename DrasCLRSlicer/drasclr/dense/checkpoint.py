"""Resumable state of a subtype-model training run (``drasclr finetune cohort --resume``): safetensors + JSON,
never pickles, written all-or-nothing, so a long CPU run can stop (planned pause, SIGTERM, a session that ends) and
continue later exactly where it was: same step counter, schedule, best state, and the same random streams (a
resumed single-process run on CPU takes the same steps as an uninterrupted one).

``DIR/step_0001200/``::

    state.safetensors   model.*, best.* (best validated weights), optim.*, torch_rng.<rank>
    state.json          step, elapsed seconds, best score, patience counter, history, scheduler, learning rates,
                        numpy generator state per rank, the run's fingerprint, sha256 of state.safetensors

``DIR/latest`` names the newest complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.errors import InputError
from ..model.checkpoint import sha256_file
from ..model.train_state import _load_optimizer, _optimizer_tensors, checkpoint_folder, find_latest, step_name

FORMAT = "drasclr-dense-train-state"
VERSION = 1


class TrainingPaused(Exception):
    """Training stopped at a planned pause (``pause_after_seconds``) after writing a checkpoint."""

    def __init__(self, step: int, steps: int, checkpoint: Path):
        super().__init__(f"paused at step {step} of {steps}; checkpoint {checkpoint}")
        self.step, self.steps, self.checkpoint = step, steps, checkpoint


def save_state(folder: Path, *, step: int, model, opt, sched, best_state: dict | None, meta: dict,
               rng_states: list[dict], torch_rngs: list[torch.Tensor], keep: int = 2) -> Path:
    """Write ``folder/step_XXXXXXX`` through a temporary folder and point ``folder/latest`` at it; keep the newest
    ``keep`` checkpoints."""
    with checkpoint_folder(folder, step, keep) as tmp:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
        tensors.update(_optimizer_tensors(opt))
        tensors.update({f"torch_rng.{r}": t for r, t in enumerate(torch_rngs)})
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": FORMAT})
        doc = {"format": FORMAT, "version": VERSION, "step": step, **meta, "scheduler": sched.state_dict(),
               "group_lr": [g["lr"] for g in opt.param_groups], "numpy_rng": rng_states,
               "has_best": best_state is not None, "sha256": sha256_file(tmp / "state.safetensors")}
        (tmp / "state.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return Path(folder) / step_name(step)


def load_state(folder: Path, fingerprint: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(state.json, tensors)`` of the newest checkpoint in ``folder``; ``InputError`` when there is none, when
    it is damaged, or when it belongs to another run (a different fingerprint: cases, recipe, world size)."""
    ck = find_latest(folder)
    if ck is None:
        raise InputError(f"nothing to resume: no checkpoint in {folder}")
    meta_p, state_p = ck / "state.json", ck / "state.safetensors"
    try:
        meta = json.loads(meta_p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_p}: unreadable ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{ck}: not a {FORMAT} version {VERSION} checkpoint")
    old = meta.get("fingerprint", {})
    diff = sorted(k for k in set(old) | set(fingerprint) if json.dumps(old.get(k)) != json.dumps(fingerprint.get(k)))
    if diff:
        shown = "; ".join(f"{k}: checkpoint {_short(old.get(k))} vs now {_short(fingerprint.get(k))}" for k in diff)
        raise InputError(f"{ck}: checkpoint is from another run ({shown}); resume with the same data and options, "
                         f"or start over with a new checkpoint folder")
    if not state_p.is_file() or sha256_file(state_p) != meta.get("sha256"):
        raise InputError(f"{state_p}: missing or does not match state.json (corrupted checkpoint)")
    try:
        return meta, load_file(str(state_p))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{state_p}: unreadable ({exc})") from None


def restore_state(meta: dict, tensors: dict[str, torch.Tensor], model, opt, sched) -> dict | None:
    """Put the checkpoint's weights, optimizer, schedule and learning rates back; returns the best state."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimizer(opt, tensors)
    sched.load_state_dict(meta["scheduler"])
    for g, lr in zip(opt.param_groups, meta["group_lr"]):
        g["lr"] = lr
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return best if meta.get("has_best") else None


def _short(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."
