"""Training the subtype segmenter: full labels, a labelled subset (few-shot), or an annotator's corrections.

Patches of 32³ at 1 mm are drawn class-balanced from labelled voxels. Unlabelled voxels (value ``IGNORE``) do
not count. Augmentation: a global HU shift and noise, and a left-right mirror of half the patches with their
location code mirrored too (so a mirrored patch is what the other lung would show at that place).
Loss: cross-entropy + soft Dice over the subtypes present. Freeze options: ``head`` (decoder only),
``last`` (decoder + the last encoder stages), ``all`` (everything, encoder at a tenth of the learning rate).
Validation on a fixed set of held-out patches; early stopping on macro Dice over CLE/PSE/PLE.

Distillation (``teacher`` + ``distill`` in (0, 1]): the loss becomes ``(1 - distill) * hard + distill * KL``, the
KL divergence of the model's voxel probabilities from a fixed teacher's on the same augmented patch (the teacher
runs in eval mode, without gradients). With ``distill=1`` the labels only choose which patches are drawn and
score validation: the model learns to copy the teacher (a lighter architecture keeping the teacher's answers).

Under torchrun (``WORLD_SIZE`` > 1, process group joined by the caller) the model is wrapped in DDP: every rank
draws its own patches (batch per rank, gradients averaged), rank 0 validates and its score, stop and time
decisions are broadcast so all ranks take the same steps and keep the same best state. On CUDA the forward pass
runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core import distributed as D
from ..core import labels
from ..core.image import CTImage, resample_to
from ..core.intensity import normalise_hu
from .checkpoint import TrainingPaused, load_state, restore_state, save_state
from .infer import PATCH, Locator, extract_patches, lung_volume
from .locate import mirror_left_right
from .scores import confusion_matrix, dice_from_confusion

log = logging.getLogger(__name__)
IGNORE = 255
FREEZE = ("head", "last", "all")
DISEASE = (labels.CLE, labels.PSE, labels.PLE)


@dataclass
class TrainCase:
    """One case on its 1 mm lung grid: ``ct`` HU (Z, Y, X) int16, ``target`` labels with ``IGNORE`` where
    unlabelled, ``grid`` (the 1 mm CTImage, for locations), ``locator``, and per-class voxel samples."""

    ct: np.ndarray
    target: np.ndarray
    grid: CTImage
    locator: Locator
    focus: np.ndarray | None = None  # voxels to sample most (corrections), flat indices
    weight: float = 1.0  # how often the sampler picks this case among those holding a class (phantoms: 1)
    by_class: dict[int, np.ndarray] = field(default_factory=dict)


def prepare_case(ct: CTImage, subtypes: CTImage, lungs: CTImage, locator: Locator,
                 labelled: np.ndarray | None = None, focus: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, per_class: int = 20000) -> TrainCase:
    """Resample a case to its 1 mm lung grid. ``labelled``/``focus``: boolean masks on ``ct``'s grid."""
    rng = rng or np.random.default_rng(0)
    vol = lung_volume(ct, lungs)
    sub = resample_to(subtypes, vol.ct).array
    target = np.where(vol.lungs.array > 0, sub, IGNORE).astype(np.uint8)
    if labelled is not None:
        lab = resample_to(ct.with_array(labelled.astype(np.uint8)), vol.ct).array > 0
        target[~lab] = IGNORE
    case = TrainCase(vol.ct.array.astype(np.int16), target, vol.ct, locator)
    if focus is not None:
        f = resample_to(ct.with_array(focus.astype(np.uint8)), vol.ct).array > 0
        idx = np.flatnonzero(f & (target != IGNORE))
        case.focus = rng.choice(idx, min(len(idx), per_class), replace=False) if len(idx) else None
    for c in range(1, labels.NUM_CLASSES):
        idx = np.flatnonzero(target == c)
        if len(idx):
            case.by_class[c] = rng.choice(idx, min(len(idx), per_class), replace=False)
    return case


def sample_batch(cases: list[TrainCase], n: int, rng: np.random.Generator, jitter: int = 8,
                 focus_fraction: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` class-balanced patches: HU ``(n, 32, 32, 32)``, targets ``(n, 32, 32, 32)``, locations ``(n, 3)``.

    Balanced over the cohort: a class is drawn uniformly among those labelled anywhere, then a case holding it
    (in proportion to the cases' ``weight``), then a voxel of it (so a rare subtype present in few cases still
    centres a quarter of the patches). Cases with ``focus`` voxels (corrections) centre ``focus_fraction`` of their
    draws on them."""
    xs, ys, locs = [], [], []
    holders = {c: [i for i, k in enumerate(cases) if c in k.by_class] for c in range(1, labels.NUM_CLASSES)}
    classes = [c for c, h in holders.items() if h]
    odds = {c: _case_odds([cases[i].weight for i in holders[c]]) for c in classes}
    for _ in range(n):
        c = classes[rng.integers(len(classes))]
        pick = rng.integers(len(holders[c])) if odds[c] is None else rng.choice(len(holders[c]), p=odds[c])
        case = cases[holders[c][pick]]
        if case.focus is not None and rng.random() < focus_fraction:
            flat = case.focus[rng.integers(len(case.focus))]
        else:
            flat = case.by_class[c][rng.integers(len(case.by_class[c]))]
        centre = np.array(np.unravel_index(flat, case.target.shape))
        corner = centre - PATCH // 2 + rng.integers(-jitter, jitter + 1, 3)
        xs.append(extract_patches(case.ct, corner[None])[0])
        ys.append(extract_patches(case.target, corner[None], fill=IGNORE)[0])
        locs.append(case.locator(case.grid.zyx_to_lps(corner + PATCH / 2.0))[0])
    return np.stack(xs), np.stack(ys), np.asarray(locs, np.float32)


def _case_odds(weights: list[float]) -> np.ndarray | None:
    """Probabilities of drawing each case from its sampling weights; None when uniform (the phantom cohorts: a
    plain integer draw, so their patch streams stay what they were)."""
    w = np.asarray(weights, np.float64)
    return None if np.all(w == 1.0) else w / w.sum()


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Light intensity augmentation on HU patches ``(B, 32, 32, 32)``: a global HU shift and noise."""
    b = x.shape[0]
    shift = torch.from_numpy(rng.normal(0, 10, (b, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy((rng.random((b, 1, 1, 1)) < 0.25).astype(np.float32) * rng.uniform(0, 20))
    return x.float() + shift + noise * torch.randn_like(x.float())


def mirror_augment(x: np.ndarray, y: np.ndarray, loc: np.ndarray, rng: np.random.Generator):
    """Mirror about half of the patches left-right (last axis), targets alike, and their locations with them."""
    flip = rng.random(len(x)) < 0.5
    if flip.any():
        x, y, loc = x.copy(), y.copy(), loc.copy()
        x[flip], y[flip] = x[flip][..., ::-1], y[flip][..., ::-1]
        loc[flip] = mirror_left_right(loc[flip])
    return x, y, loc


CLASS_WEIGHTS = (1.0, 1.0, 3.0, 3.0, 3.0)  # emphysema voxels are rare inside a patch: weigh them up


def loss_fn(logits: torch.Tensor, target: torch.Tensor, class_weights=CLASS_WEIGHTS) -> torch.Tensor:
    """Weighted cross-entropy + soft Dice (classes 1–4 present in the batch), ignoring ``IGNORE`` voxels."""
    weight = torch.tensor(class_weights[: logits.shape[1]], device=logits.device, dtype=logits.dtype)
    ce = F.cross_entropy(logits, target.long(), weight=weight, ignore_index=IGNORE)
    valid = (target != IGNORE)
    if not valid.any():
        return ce
    prob = torch.softmax(logits, 1)
    t = torch.where(valid, target, 0).long()
    onehot = F.one_hot(t, logits.shape[1]).permute(0, 4, 1, 2, 3).float() * valid[:, None]
    prob = prob * valid[:, None]
    dims = (0, 2, 3, 4)
    inter, denom = (prob * onehot).sum(dims), prob.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims)[1:] > 0
    dice = (2 * inter[1:] + 1) / (denom[1:] + 1)
    return ce + (1 - dice[present]).mean() if present.any() else ce


def set_freeze(model, freeze: str, lr: float, encoder_lr_scale: float = 0.1) -> list[dict]:
    """Parameter groups for the optimiser after freezing per ``freeze`` (head / last / all); with ``all`` the
    encoder learns at ``lr * encoder_lr_scale`` (lower for a pretrained encoder, 1 for a random one)."""
    if freeze not in FREEZE:
        raise ValueError(f"freeze must be one of {FREEZE}")
    enc = model.encoder
    decoder = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    for p in enc.parameters():
        p.requires_grad_(freeze != "head")
    groups = [{"params": decoder, "lr": lr}]
    if freeze == "last":
        trainable = list(enc.stages[4:].parameters())
        for p in enc.stages[:4].parameters():
            p.requires_grad_(False)
        groups.append({"params": trainable, "lr": lr})
    elif freeze == "all":
        groups.append({"params": list(enc.parameters()), "lr": lr * encoder_lr_scale})
    return groups


def _train_mode(model, freeze: str) -> None:
    model.train()
    if freeze == "head":
        model.encoder.eval()  # frozen BatchNorm statistics
    elif freeze == "last":
        for s in model.encoder.stages[:4]:
            s.eval()


def macro_disease_dice(d: dict[int, float]) -> float:
    vals = [d[c] for c in DISEASE if not np.isnan(d[c])]
    return float(np.mean(vals)) if vals else float("nan")


@torch.no_grad()
def evaluate_patches(model, x: np.ndarray, y: np.ndarray, loc: np.ndarray, device, batch: int = 16) -> dict:
    """Confusion matrix, per-class Dice and macro disease Dice of ``model`` on fixed patches (inside lung,
    predicting among the subtypes 1–4)."""
    model.eval()
    cm = np.zeros((labels.NUM_CLASSES,) * 2, np.int64)
    for i in range(0, len(x), batch):
        xb = normalise_hu(torch.from_numpy(x[i:i + batch]))[:, None].to(device)
        lb = torch.from_numpy(loc[i:i + batch]).to(device)
        logits = model(xb, lb)
        pred = logits[:, 1:].argmax(1).cpu().numpy().astype(np.int64) + 1
        yb = y[i:i + batch]
        ok = yb != IGNORE
        cm += confusion_matrix(pred[ok], yb[ok].astype(np.int64))
    dice = dice_from_confusion(cm)
    return {"confusion": cm.tolist(), "dice": {labels.SUBTYPES[c]: v for c, v in dice.items()},
            "macro_dice_disease": macro_disease_dice(dice),
            "accuracy": float(np.trace(cm) / max(cm.sum(), 1))}


def train_segmenter(model, train: list[TrainCase], val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    *, steps: int = 500, batch_size: int = 8, lr: float = 1e-3, freeze: str = "all",
                    max_seconds: float | None = None, device: torch.device | str = "cpu", seed: int = 0,
                    eval_every: int = 50, patience: int = 6, focus_fraction: float = 0.7,
                    log_every: int = 25, encoder_lr_scale: float = 0.1, amp: bool = True,
                    mirror: bool = True, loss_weights: tuple[float, ...] = CLASS_WEIGHTS,
                    checkpoints: Path | None = None, save_every: int = 0, resume: bool = False,
                    pause_after_seconds: float | None = None, fingerprint: dict | None = None,
                    teacher: torch.nn.Module | None = None, distill: float = 0.0) -> dict:
    """Train in place; keeps the best validation state (early stopping). Returns a history dict. Distributed (see
    the module doc): ``train`` is this rank's share of the cases, ``batch_size`` is per rank, ``val`` is used on
    rank 0 only (other ranks may pass None). Resumable (:mod:`drasclr.dense.checkpoint`): with ``checkpoints`` a
    folder, the whole training state is written there every ``save_every`` steps and when training ends;
    ``resume`` continues from its newest checkpoint (same ``fingerprint`` and options); ``pause_after_seconds`` (of
    this process) writes a checkpoint and raises :class:`TrainingPaused`, to spread a long run over sessions."""
    device = torch.device(device)
    world, rank = D.world_size(), D.rank()
    rng = np.random.default_rng(seed + 7919 * rank)  # rank 0 draws exactly what a single process draws
    torch.manual_seed(seed)
    model.to(device)
    net = _ddp(model, device) if world > 1 else model
    opt = torch.optim.AdamW(set_freeze(model, freeze, lr, encoder_lr_scale), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    amp_dtype = training_amp_dtype(device) if amp else None
    has_val = D.broadcast_float(val is not None, device) > 0  # the broadcasts are no-ops in one process
    best, best_state, bad, history = -1.0, None, 0, []
    fingerprint = {**(fingerprint or {}), "steps": steps, "batch_size": batch_size, "lr": lr, "freeze": freeze,
                   "seed": seed, "world_size": world, "encoder_lr_scale": encoder_lr_scale, "mirror": mirror,
                   "loss_weights": list(loss_weights), "focus_fraction": focus_fraction, "eval_every": eval_every,
                   "patience": patience, "has_val": bool(has_val), **({"distill": distill} if teacher else {})}
    if teacher is not None and not 0 < distill <= 1:
        raise ValueError(f"distill must be in (0, 1] with a teacher, got {distill}")
    soft = _teacher_fn(teacher, device) if teacher is not None else None
    start, carried, finished, sessions = 1, 0.0, False, 1
    if resume:
        meta, best_state = _resume(Path(checkpoints), fingerprint, model, opt, sched, rng, steps)
        best, bad, history, finished = meta["best"], meta["bad"], meta["history"], meta["finished"]
        start, carried, sessions = meta["step"] + 1, meta["elapsed"], meta["sessions"] + 1

    def save(step: int, done: bool) -> Path | None:
        rngs, trngs = D.gather_objects(rng.bit_generator.state), D.gather_objects(torch.get_rng_state())
        if rank != 0:
            return None
        facts = {"elapsed": time.perf_counter() - t0, "best": best, "bad": bad, "history": history,
                 "finished": done, "sessions": sessions, "fingerprint": fingerprint}
        return save_state(Path(checkpoints), step=step, model=model, opt=opt, sched=sched, best_state=best_state,
                          meta=facts, rng_states=rngs, torch_rngs=trngs)

    t0, session0 = time.perf_counter() - carried, time.perf_counter()
    step = start - 1
    for step in range(start, steps + 1 if not finished else start):
        _train_mode(model, freeze)
        batch = sample_batch(train, batch_size, rng, focus_fraction=focus_fraction)
        loss = _step(net, batch, rng, mirror, device, amp_dtype, loss_weights, opt, soft, distill)
        sched.step()
        elapsed = time.perf_counter() - t0
        if step % log_every == 0 and rank == 0:
            log.info("progress: train %d/%d loss %.4f (%.0f s)", step, steps, loss.item(), elapsed)
        last = _agreed(step == steps or (max_seconds is not None and elapsed >= max_seconds), max_seconds, device)
        if has_val and (step % eval_every == 0 or last):
            score = _validation_score(model, val, device, step)
            history.append({"step": step, "loss": float(loss.item()), "val": score, "seconds": elapsed})
            if score > best:
                best, bad = score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if patience and bad >= patience and step >= steps // 2:  # never stop in the first half of the schedule
                    if rank == 0:
                        log.info("early stopping at step %d", step)
                    break
        if last:
            break
        pause = _agreed(pause_after_seconds is not None and time.perf_counter() - session0 >= pause_after_seconds,
                        pause_after_seconds, device)
        if checkpoints is not None and (pause or (save_every and step % save_every == 0)):
            where = save(step, False)
            if pause:
                raise TrainingPaused(step, steps, where or Path(checkpoints))
    if checkpoints is not None and step >= start:  # the end state too: a crash after training resumes here
        save(step, True)
    _finish(model, best_state)
    return {"steps": step, "seconds": time.perf_counter() - t0, "best_val": best, "history": history,
            "sessions": sessions, "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None}


def _agreed(flag: bool, clock, device) -> bool:
    """A decision taken on a clock (``clock`` not None): rank 0's decides for every rank."""
    return D.broadcast_float(flag, device) > 0 if clock is not None else bool(flag)


def _resume(folder: Path, fingerprint: dict, model, opt, sched, rng, steps: int):
    """Restore the newest checkpoint in ``folder`` (model, optimiser, schedule, this rank's random states) ->
    (its facts, the best state so far)."""
    rank = D.rank()
    meta, tensors = load_state(folder, fingerprint)
    best_state = restore_state(meta, tensors, model, opt, sched)
    rng.bit_generator.state = meta["numpy_rng"][rank]
    torch.set_rng_state(tensors[f"torch_rng.{rank}"])
    if rank == 0:
        log.info("resumed at step %d of %d (%.0f s trained before)", meta["step"], steps, meta["elapsed"])
    return meta, best_state


def _finish(model, best_state: dict | None) -> None:
    """The best validation state, the same on every rank (BatchNorm running statistics drift apart in the last
    steps: every rank takes rank 0's), in eval mode."""
    if best_state is not None:
        model.load_state_dict(best_state)
    if D.world_size() > 1:
        with torch.no_grad():
            for t in model.state_dict().values():
                D.broadcast_(t, 0)
    model.eval()


def _teacher_fn(teacher: torch.nn.Module, device):
    """The teacher's logits function: its fused inference twin on CPU (same answers, half the work), else itself,
    in eval mode and without gradients."""
    from .fused import fuse_for_inference

    teacher = teacher.to(device).eval().requires_grad_(False)
    fused = fuse_for_inference(teacher) if device.type == "cpu" else None
    fn = fused if fused is not None else teacher
    return lambda x, loc: fn(x, loc).float()


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of KL(teacher || model) between the two voxel class distributions."""
    return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_logits, 1), log_target=True,
                    reduction="none").sum(1).mean()


def _step(net, batch, rng, mirror: bool, device, amp_dtype, loss_weights, opt, soft=None,
          distill: float = 0.0) -> torch.Tensor:
    """One optimisation step on a sampled batch ``(x, y, loc)`` (mirrored at random, augmented); returns the loss.
    ``soft``: the teacher's logits function (distillation, weight ``distill``)."""
    x, y, loc = batch
    if mirror:
        x, y, loc = mirror_augment(x, y, loc, rng)
    xb = normalise_hu(augment(torch.from_numpy(x), rng))[:, None].to(device)
    lb = torch.from_numpy(loc).to(device)
    with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
        logits = net(xb, lb)
    hard = loss_fn(logits.float(), torch.from_numpy(y).to(device), loss_weights) if distill < 1 else 0.0
    if soft is not None:
        with torch.no_grad():
            target = soft(xb, lb)
        loss = (1 - distill) * hard + distill * distill_loss(logits.float(), target)
    else:
        loss = hard
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _validation_score(model, val, device, step: int) -> float:
    """Rank 0's validation score (macro disease Dice, else accuracy), shared with every rank."""
    score = float("nan")
    if D.rank() == 0:
        m = evaluate_patches(model, *val, device)
        score = m["macro_dice_disease"] if not np.isnan(m["macro_dice_disease"]) else m["accuracy"]
        log.info("validation at step %d: macro disease Dice %.3f, accuracy %.3f", step, m["macro_dice_disease"],
                 m["accuracy"])
    return D.broadcast_float(score, device)


def training_amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a CUDA GPU that supports it (no loss scaling needed); full precision elsewhere."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def _ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def fixed_patches(cases: list[TrainCase], n: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed validation set of ``n`` class-balanced patches."""
    return sample_batch(cases, n, np.random.default_rng(seed), jitter=0, focus_fraction=0.0)
