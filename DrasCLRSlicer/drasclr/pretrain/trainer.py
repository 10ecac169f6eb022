"""DrasCLR pretraining loop: one process or many (torchrun, DDP), CPU (gloo) or GPU (NCCL, bf16 autocast).

    from drasclr.pretrain import PretrainConfig, pretrain
    pretrain(PretrainConfig(data="phantoms/", out="runs/p1", max_steps=200, batch_size=16))

Each step: one location across ``batch_size`` subjects per process; SGD (lr 0.01, momentum 0.9, wd 1e-4) with a
cosine schedule; a log line every ``log_every`` steps; a checkpoint every ``save_every`` steps and at the end;
``resume=True`` continues from ``OUT/checkpoints/latest`` with the same step counter, schedule and data order.
The final encoder is exported as ``OUT/model.safetensors`` + ``OUT/model.json`` (queues are not in it).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..device import pick_device
from ..errors import InputError
from ..model import DEFAULT_CHANNELS, DrasCLREncoder, PlainEncoder, save_model
from ..progress import progress
from . import distributed as D
from .augment import HALF_RANGE, HU_MAX, HU_MIN, PatchAugment
from .checkpoint import find_latest, read_checkpoint, restore, save_checkpoint
from .data import PatchCache, PatchPairs, build_patch_cache, default_scheme, find_cases, is_cache
from .objective import DrasCLRObjective
from .sampler import LocationBatchSampler

log = logging.getLogger("drasclr.pretrain")


@dataclass
class PretrainConfig:
    data: str                                  # phantom cohort, folder of CTs, or a built patch cache
    out: str                                   # run folder (checkpoints/, model.safetensors, cache/ by default)
    cache: str | None = None                   # where the patch cache lives (default OUT/cache)
    locations: str = "auto"                    # auto | atlas | boxgrid
    max_locations: int = 1000                  # boxgrid: raise the lung threshold until at most this many
    epochs: int = 20
    max_steps: int | None = None               # stop after this many steps (overrides epochs)
    batch_size: int = 32                       # per process
    lr: float = 0.01
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    queue_size: int = 4096                     # K, per location
    moco_momentum: float = 0.999               # m
    temperature: float = 0.2                   # T
    beta: float = 1.0                          # weight of the neighbouring loss
    k_neighbours: int = 2
    dim: int = 128                             # projection output
    channels: list[int] = field(default_factory=lambda: list(DEFAULT_CHANNELS))
    num_experts: int = 8
    no_location: bool = False                  # ablation: plain convolutions, no location conditioning
    augment_strength: float = 1.0
    workers: int = 2
    threads: int | None = None                 # torch CPU threads of the training process (None: torch default)
    device: str = "auto"
    amp: bool = True                           # bf16 autocast on CUDA (ignored on CPU)
    bn: str = "shuffle"                        # shuffle (MoCo shuffle-BN) | sync (SyncBatchNorm, CUDA only)
    save_every: int = 500
    log_every: int = 20
    keep: int = 3
    tensorboard: bool = False
    seed: int = 0
    resume: bool | str = False                 # True: OUT/checkpoints/latest; or a checkpoint folder

    def arch(self, n_locations: int) -> dict:
        return {"channels": list(self.channels), "num_experts": self.num_experts, "no_location": self.no_location,
                "dim": self.dim, "queue_size": self.queue_size, "n_locations": n_locations}


def prepare_cache(cfg: PretrainConfig, info: D.DistInfo) -> PatchCache:
    """Open the patch cache, building it first (on rank 0, others wait) when it does not exist."""
    data = Path(cfg.data)
    if is_cache(data):
        return PatchCache(data)
    target = Path(cfg.cache) if cfg.cache else Path(cfg.out) / "cache"
    if not is_cache(target):
        cases = find_cases(data)  # every rank checks the input, so all fail the same way
        if info.is_main:
            log.info("building patch cache for %d cases in %s", len(cases), target)
            build_patch_cache(cases, target, default_scheme(cfg.locations), cfg.max_locations)
        D.barrier()
    return PatchCache(target)


class _Cosine:
    """Cosine factor of the learning rate at global step ``offset + s`` (``s`` counts this run's steps)."""

    def __init__(self, total: int, offset: int = 0):
        self.total, self.offset = total, offset

    def __call__(self, s: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(s + self.offset, self.total) / max(self.total, 1)))


class _WorkerSeed:
    """DataLoader worker_init_fn: a different augmentation stream per worker, rank, epoch and resume point."""

    def __init__(self, base: int):
        self.base = base

    def __call__(self, worker_id: int) -> None:
        from torch.utils.data import get_worker_info

        get_worker_info().dataset.augment.set_seed(self.base + 31 * worker_id)


def _average_buffers(module: torch.nn.Module) -> None:
    """Average BatchNorm running statistics over ranks (they differ under shuffle-BN) before saving."""
    for name, b in module.named_buffers():
        if b.is_floating_point() and not name.startswith("queue"):
            D.all_reduce_mean_(b)


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining. Returns a summary dict (steps, final loss, throughput, paths)."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = D.init_distributed(pick_device(cfg.device))
    try:
        return _pretrain(cfg, info)
    finally:
        D.cleanup()
        torch.set_num_threads(threads)


def _pretrain(cfg: PretrainConfig, info: D.DistInfo) -> dict:
    device = info.device
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    cache = prepare_cache(cfg, info)
    if cache.n_subjects < 2 * info.world_size:
        raise InputError(f"pretraining needs at least {2 * info.world_size} subjects, the cache has "
                         f"{cache.n_subjects}")
    arch = cfg.arch(cache.n_locations)
    enc_cfg = {"channels": list(cfg.channels), "num_experts": cfg.num_experts}
    objective = DrasCLRObjective(cache.n_locations, enc_cfg, cfg.dim, cfg.queue_size, cfg.moco_momentum,
                                 cfg.temperature, cfg.beta, shuffle_bn=cfg.bn == "shuffle",
                                 encoder_cls=PlainEncoder if cfg.no_location else DrasCLREncoder).to(device)
    if cfg.bn == "sync":
        if device.type != "cuda":
            raise InputError("--bn sync needs CUDA GPUs (SyncBatchNorm); use --bn shuffle on CPU")
        objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(objective)
    opt = torch.optim.SGD(objective.query_parameters(), lr=cfg.lr, momentum=cfg.sgd_momentum,
                          weight_decay=cfg.weight_decay)
    sampler = LocationBatchSampler(cache.n_subjects, cache.n_locations, cfg.batch_size, info.rank,
                                   info.world_size, cfg.seed)
    steps_per_epoch = len(sampler)
    total = cfg.max_steps if cfg.max_steps else cfg.epochs * steps_per_epoch
    step = 0
    if cfg.resume:
        ck = find_latest(out / "checkpoints") if cfg.resume is True else Path(cfg.resume)
        if ck is None:
            raise InputError(f"nothing to resume: no checkpoint in {out / 'checkpoints'}")
        meta, tensors = read_checkpoint(ck, arch)
        restore(objective, opt, {k: v.to(device) for k, v in tensors.items()})
        step = int(meta["step"])
        log.info("resumed from %s at step %d", ck, step)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _Cosine(total, step))
    model = objective
    if info.distributed:
        model = _ddp(objective, device)
    dataset = PatchPairs(cache, cfg.k_neighbours, PatchAugment(strength=cfg.augment_strength))
    writer = None
    if cfg.tensorboard and info.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
        writer = SummaryWriter(str(out / "tensorboard"))
    card = {"kind": "drasclr-pretrained-encoder", "location_conditioned": not cfg.no_location,
            "preprocessing": {"patch": 32, "spacing_mm": 1.0, "clip_hu": [HU_MIN, HU_MAX],
                              "scale": f"(clip(hu) + 1024) / {HALF_RANGE} - 1"},
            "locations": {"n": cache.n_locations, "scheme": cache.index.get("scheme"),
                          "codes": "cache locations.npy, (z, y, x) in [-1, 1]"},
            "training_data": {"subjects": cache.n_subjects, "cache": str(cache.folder)},
            "training": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("data", "out", "cache")}}
    cfg_json = dict(dataclasses.asdict(cfg), **arch)
    if info.is_main:
        gb = objective.queue_bytes() / 2 ** 20
        log.info("pretrain: %d subjects x %d locations, %d process(es) on %s, batch %d/process, %d steps "
                 "(%d per epoch), queues %d x %d x %d = %.1f MiB per process", cache.n_subjects,
                 cache.n_locations, info.world_size, device, sampler.batch, total, steps_per_epoch,
                 cache.n_locations, cfg.queue_size, cfg.dim, gb)
    amp = cfg.amp and device.type == "cuda"
    stats_sum: dict[str, float] = {}
    n_stats, t_last, last = 0, time.perf_counter(), {}
    t_start, step0 = time.perf_counter(), step
    objective.train()
    while step < total:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, skip)
        seed_base = cfg.seed * 7919 + epoch * 100_003 + info.rank * 1009 + skip
        dataset.augment.set_seed(seed_base)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            worker_init_fn=_WorkerSeed(seed_base),
                            pin_memory=device.type == "cuda", persistent_workers=False)
        n_left = min(len(sampler), total - step)
        items = progress(loader, total=n_left, desc=f"pretrain epoch {epoch + 1}") if info.is_main else loader
        for batch in items:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss, stats = model(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + float(v)
            n_stats += 1
            if step % cfg.log_every == 0 or step == total:
                now = time.perf_counter()
                last = {k: v / n_stats for k, v in stats_sum.items()}
                rate = n_stats * sampler.global_batch / max(now - t_last, 1e-9)
                if info.is_main:
                    log.info("step %d/%d epoch %d loss %.4f (local %.4f, neighbour %.4f) acc %.2f lr %.5f "
                             "%.1f patches/s", step, total, epoch + 1, last["loss"], last["loss_local"],
                             last.get("loss_neighbour", float("nan")), last["acc_local"],
                             sched.get_last_lr()[0], rate)
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"train/{k}", v, step)
                        writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
                        writer.add_scalar("train/patches_per_s", rate, step)
                stats_sum, n_stats, t_last = {}, 0, now
            if step % cfg.save_every == 0 or step == total:
                _save(objective, opt, step, epoch, cfg_json, card, last, out, info, cfg.keep)
            if step >= total:
                break
    elapsed = time.perf_counter() - t_start
    summary = {"steps": step, "steps_this_run": step - step0, "seconds": elapsed,
               "patches_per_s": (step - step0) * sampler.global_batch / max(elapsed, 1e-9), "last": last,
               "model": str(out / "model.safetensors"), "world_size": info.world_size, "rank": info.rank,
               "state_sha256": _state_digest(objective)}
    if info.is_main:
        final_card = dict(card, metrics={k: round(v, 5) for k, v in last.items()}, steps=step)
        save_model(objective.encoder_q, out / "model.safetensors", final_card)
        log.info("done: %d steps, %.1f patches/s; wrote %s", step, summary["patches_per_s"], summary["model"])
        if writer is not None:
            writer.close()
    D.barrier()
    return summary


def _ddp(objective: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP without per-step buffer broadcasts (queues are kept identical by construction; BN stats under
    shuffle-BN are rank-local and averaged at checkpoints); buffers are synced once at the start."""
    import inspect

    ddp = torch.nn.parallel.DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return ddp(objective, device_ids=ids, forward_sync_buffers=False)
    return ddp(objective, device_ids=ids, broadcast_buffers=False)


def _save(objective, opt, step, epoch, cfg_json, card, last, out, info, keep):
    _average_buffers(objective)
    if info.is_main:
        save_checkpoint(out / "checkpoints", objective, opt, step, epoch, cfg_json,
                        dict(card, metrics={k: round(v, 5) for k, v in last.items()}), keep=keep)
    D.barrier()


def _state_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (to compare ranks)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _spawned(rank: int, cfg: PretrainConfig, world: int, port: int, results) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s")
    results[rank] = pretrain(cfg)


def pretrain_local_ddp(cfg: PretrainConfig, nprocs: int, start_method: str = "spawn") -> list[dict]:
    """Run ``pretrain`` in ``nprocs`` local processes (the same as ``torchrun --nproc_per_node nprocs``, for
    tests and machines without torchrun). Returns each rank's summary. ``start_method="fork"`` starts faster
    (no re-import) and is safe on CPU with ``cfg.threads=1``."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port from the OS
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_spawned, args=(cfg, nprocs, port, results), nprocs=nprocs, join=True,
                           start_method=start_method)
        return [dict(results[r]) for r in range(nprocs)]
