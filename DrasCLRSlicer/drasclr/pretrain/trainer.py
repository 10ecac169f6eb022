"""Pretraining loop: one process or many (torchrun, DDP), CPU (gloo) or GPU (NCCL, bf16 autocast).

    from drasclr.pretrain import PretrainConfig, pretrain
    pretrain(PretrainConfig(data="phantoms/", out="runs/p1", max_steps=200, batch_size=16))
    pretrain(PretrainConfig(data="phantoms/", out="runs/v1", method="voco", max_steps=200, batch_size=2))

Methods (``method``): ``drasclr`` (the location-conditioned MoCo of :mod:`.objective`, on the patch cache),
``voco`` (:mod:`.voco`) and ``volfusion`` (:mod:`.volfusion`), both on the volume cache (:mod:`.volumes`). They
share this loop (DDP, autocast, checkpoints, resume, progress) and export the same encoder class.

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

from ..core import distributed as D
from ..core.architecture import PRETRAIN_METHODS
from ..core.device import pick_device
from ..core.errors import InputError
from ..core.progress import progress
from ..model import DEFAULT_CHANNELS, DrasCLREncoder, PlainEncoder, save_model
from ..model.train_state import find_latest, read_checkpoint, restore, save_checkpoint
from .augment import HALF_RANGE, HU_MAX, HU_MIN, PatchAugment
from .data import PatchCache, PatchPairs, build_patch_cache, default_scheme, find_cases, is_cache
from .objective import DrasCLRObjective
from .sampler import LocationBatchSampler, SampleBatchSampler
from .volumes import VolumeCache, build_volume_cache, is_volume_cache

log = logging.getLogger("drasclr.pretrain")
METHODS = PRETRAIN_METHODS


@dataclass
class PretrainConfig:
    data: str                                  # phantom cohort, folder of CTs, or a built patch/volume cache
    out: str                                   # run folder (checkpoints/, model.safetensors, cache/ by default)
    cache: str | None = None                   # where the patch (volume) cache lives (default OUT/cache, OUT/volumes)
    method: str = "drasclr"                    # drasclr | voco | volfusion
    locations: str = "auto"                    # auto | atlas | boxgrid
    max_locations: int = 1000                  # boxgrid: raise the lung threshold until at most this many
    epochs: int = 20
    max_steps: int | None = None               # stop after this many steps (overrides epochs)
    batch_size: int = 32                       # per process: patches (drasclr), regions (voco), fused crops
    max_minutes: float | None = None           # also stop (and save) after this much training time
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
    voco_grid: int = 3                         # voco: grid^3 base crops (classes) per region
    voco_crops: int = 4                        # voco: random crops per region
    voco_reg_weight: float = 1.0               # voco: weight of the base-crop regulariser
    fusion_crop: int = 64                      # volfusion: fused crop side (voxels at 1 mm)
    fusion_classes: int = 4                    # volfusion: K coefficient classes {0, 1/(K-1), ..., 1}
    fusion_block_min: int = 8                  # volfusion: block side range
    fusion_block_max: int = 32
    fusion_max_blocks: int = 10

    def arch(self, n_locations: int) -> dict:
        a = {"method": self.method, "channels": list(self.channels), "num_experts": self.num_experts,
             "no_location": self.no_location, "dim": self.dim, "queue_size": self.queue_size,
             "n_locations": n_locations}
        if self.method == "voco":
            a.update(voco_grid=self.voco_grid)
        elif self.method == "volfusion":
            a.update(fusion_classes=self.fusion_classes)
        return a


def prepare_cache(cfg: PretrainConfig, info: D.DistInfo) -> PatchCache:
    """Open the patch cache, building it first (on rank 0, others wait) when it does not exist."""
    data = Path(cfg.data)
    if is_volume_cache(data):
        raise InputError(f"{data} is a volume cache (for --method voco/volfusion); --method drasclr needs the "
                         f"cohort or a patch cache")
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


def prepare_volumes(cfg: PretrainConfig, info: D.DistInfo) -> VolumeCache:
    """Open the volume cache (VoCo, volume fusion), building it first on rank 0 when it does not exist."""
    data = Path(cfg.data)
    if is_volume_cache(data):
        return VolumeCache(data)
    if is_cache(data):
        raise InputError(f"{data} is a patch cache; --method {cfg.method} needs whole volumes: give the cohort "
                         f"(or a volume cache)")
    target = Path(cfg.cache) if cfg.cache else Path(cfg.out) / "volumes"
    if not is_volume_cache(target):
        cases = find_cases(data)
        if info.is_main:
            log.info("building volume cache for %d cases in %s", len(cases), target)
            build_volume_cache(cases, target, seed=cfg.seed)
        D.barrier()
    return VolumeCache(target)


@dataclass
class Pretext:
    """What one pretraining method needs: its objective, data set and batch sampler, the number of atlas locations
    (0 for whole-volume methods), the card entries describing locations and pretext, and the subjects' cache."""

    objective: torch.nn.Module
    dataset: object
    sampler: object
    n_locations: int
    locations: dict
    pretext: dict
    cache: object


def _setup(cfg: PretrainConfig, info: D.DistInfo) -> Pretext:
    """The method's objective, data and sampler (see :class:`Pretext`)."""
    from .voco import VoCoObjective, VoCoSamples
    from .volfusion import FusionSamples, VolFusionObjective

    enc_cfg = {"channels": list(cfg.channels), "num_experts": cfg.num_experts}
    enc_cls = PlainEncoder if cfg.no_location else DrasCLREncoder
    if cfg.method == "drasclr":
        cache = prepare_cache(cfg, info)
        if cache.n_subjects < 2 * info.world_size:
            raise InputError(f"pretraining needs at least {2 * info.world_size} subjects, the cache has "
                             f"{cache.n_subjects}")
        objective = DrasCLRObjective(cache.n_locations, enc_cfg, cfg.dim, cfg.queue_size, cfg.moco_momentum,
                                     cfg.temperature, cfg.beta, shuffle_bn=cfg.bn == "shuffle",
                                     encoder_cls=enc_cls)
        sampler = LocationBatchSampler(cache.n_subjects, cache.n_locations, cfg.batch_size, info.rank,
                                       info.world_size, cfg.seed)
        dataset = PatchPairs(cache, cfg.k_neighbours, PatchAugment(strength=cfg.augment_strength))
        locations = {"n": cache.n_locations, "scheme": cache.index.get("scheme"),
                     "codes": "cache locations.npy, (z, y, x) in [-1, 1]"}
        pretext = {"location_input": "atlas location of the patch" if not cfg.no_location else "none"}
        return Pretext(objective, dataset, sampler, cache.n_locations, locations, pretext, cache)
    vols = prepare_volumes(cfg, info)
    if vols.n_subjects < 2:
        raise InputError(f"--method {cfg.method} needs at least 2 subjects, the cache has {vols.n_subjects}")
    if cfg.method == "volfusion" and cfg.fusion_crop < 64 and cfg.batch_size < 2:
        raise InputError("--method volfusion with --fusion-crop 32 needs --batch-size 2 or more (BatchNorm on the "
                         "encoder's 1^3 map)")
    sampler = SampleBatchSampler(vols.n_subjects, cfg.batch_size, info.rank, info.world_size)
    locations = {"n": 0, "scheme": None, "codes": "none (whole-volume pretext task)"}
    if cfg.method == "voco":
        objective = VoCoObjective(enc_cfg, cfg.dim, cfg.moco_momentum, cfg.voco_reg_weight, encoder_cls=enc_cls)
        dataset = VoCoSamples(vols, cfg.voco_grid, cfg.voco_crops, seed=cfg.seed)
        pretext = {"grid": cfg.voco_grid, "base_crops": cfg.voco_grid ** 3, "random_crops": cfg.voco_crops,
                   "crop": 32, "reg_weight": cfg.voco_reg_weight, "teacher_momentum": cfg.moco_momentum,
                   "location_input": "zeros (the crop position is the answer of the task)"}
    else:
        objective = VolFusionObjective(enc_cfg, cfg.fusion_classes, enc_cls.architecture)
        dataset = FusionSamples(vols, cfg.fusion_crop, cfg.fusion_classes, cfg.fusion_block_min,
                                cfg.fusion_block_max, cfg.fusion_max_blocks, seed=cfg.seed)
        pretext = {"crop": cfg.fusion_crop, "classes": cfg.fusion_classes,
                   "coefficients": [round(c / (cfg.fusion_classes - 1), 4) for c in range(cfg.fusion_classes)],
                   "block_sides": [cfg.fusion_block_min, cfg.fusion_block_max], "max_blocks": cfg.fusion_max_blocks,
                   "backbone": "SubtypeSegmenter U-Net (this encoder + the dense decoder), K outputs",
                   "location_input": "crop centre in the lung box, [-1, 1]"}
    return Pretext(objective, dataset, sampler, 0, locations, pretext, vols)


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

        ds = get_worker_info().dataset
        if hasattr(ds, "augment"):
            ds.augment.set_seed(self.base + 31 * worker_id)


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
    if cfg.method not in METHODS:
        raise InputError(f"unknown pretraining method {cfg.method!r} (choose from {', '.join(METHODS)})")
    px = _setup(cfg, info)
    sampler, dataset = px.sampler, px.dataset
    arch = cfg.arch(px.n_locations)
    objective, opt, step = _optimiser(cfg, px.objective.to(device), arch, device)
    steps_per_epoch = len(sampler)
    total = cfg.max_steps if cfg.max_steps else cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _Cosine(total, step))
    model = _ddp(objective, device) if info.distributed else objective
    card = _encoder_card(cfg, px)
    cfg_json = dict(dataclasses.asdict(cfg), **arch)
    if info.is_main:
        _announce(cfg, px, objective, info, total, steps_per_epoch)
    train_log = _TrainLog(cfg, info, sampler.global_batch, out)
    amp = cfg.amp and device.type == "cuda"
    t_start, step0 = time.perf_counter(), step
    deadline = cfg.max_minutes * 60.0 if cfg.max_minutes else None
    objective.train()
    while step < total:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, skip)
        seed_base = cfg.seed * 7919 + epoch * 100_003 + info.rank * 1009 + skip
        if hasattr(dataset, "augment"):
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
            train_log.add(stats)
            if deadline is not None and _time_is_up(time.perf_counter() - t_start, deadline, device):
                total = step  # every rank agrees (rank 0's clock decides): log, save and leave at this step
            if step % cfg.log_every == 0 or step == total:
                train_log.flush(step, total, epoch, sched.get_last_lr()[0])
            if step % cfg.save_every == 0 or step == total:
                _save(objective, opt, step, epoch, cfg_json, card, train_log.last, out, info, cfg.keep)
            if step >= total:
                break
    elapsed = time.perf_counter() - t_start
    summary = {"steps": step, "steps_this_run": step - step0, "seconds": elapsed,
               "patches_per_s": (step - step0) * sampler.global_batch / max(elapsed, 1e-9), "last": train_log.last,
               "model": str(out / "model.safetensors"), "world_size": info.world_size, "rank": info.rank,
               "state_sha256": D.state_digest(objective)}
    if info.is_main:
        final_card = dict(card, metrics={k: round(v, 5) for k, v in train_log.last.items()}, steps=step)
        save_model(objective.encoder_q, out / "model.safetensors", final_card)
        log.info("done: %d steps, %.1f %s/s; wrote %s", step, summary["patches_per_s"],
                 "patches" if cfg.method == "drasclr" else "samples", summary["model"])
    train_log.close()
    D.barrier()
    return summary


def _optimiser(cfg: PretrainConfig, objective: torch.nn.Module, arch: dict, device: torch.device):
    """``(objective, SGD optimiser, start step)``: SyncBatchNorm when asked, state restored on ``--resume``."""
    if cfg.bn == "sync":
        if device.type != "cuda":
            raise InputError("--bn sync needs CUDA GPUs (SyncBatchNorm); use --bn shuffle on CPU")
        objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(objective)
    opt = torch.optim.SGD(objective.query_parameters(), lr=cfg.lr, momentum=cfg.sgd_momentum,
                          weight_decay=cfg.weight_decay)
    if not cfg.resume:
        return objective, opt, 0
    out = Path(cfg.out)
    ck = find_latest(out / "checkpoints") if cfg.resume is True else Path(cfg.resume)
    if ck is None:
        raise InputError(f"nothing to resume: no checkpoint in {out / 'checkpoints'}")
    meta, tensors = read_checkpoint(ck, arch)
    restore(objective, opt, {k: v.to(device) for k, v in tensors.items()})
    log.info("resumed from %s at step %d", ck, int(meta["step"]))
    return objective, opt, int(meta["step"])


def _encoder_card(cfg: PretrainConfig, px: Pretext) -> dict:
    """The card of the exported encoder (metrics and steps are added when it is written)."""
    return {"kind": "drasclr-pretrained-encoder", "method": cfg.method, "pretext": px.pretext,
            "location_conditioned": not cfg.no_location,
            "preprocessing": {"patch": 32, "spacing_mm": 1.0, "clip_hu": [HU_MIN, HU_MAX],
                              "scale": f"(clip(hu) + 1024) / {HALF_RANGE} - 1"},
            "locations": px.locations,
            "training_data": {"subjects": px.cache.n_subjects, "cache": str(px.cache.folder)},
            "training": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("data", "out", "cache")}}


def _announce(cfg: PretrainConfig, px: Pretext, objective, info: D.DistInfo, total: int, per_epoch: int) -> None:
    cache, sampler = px.cache, px.sampler
    if cfg.method == "drasclr":
        log.info("pretrain: %d subjects x %d locations, %d process(es) on %s, batch %d/process, %d steps "
                 "(%d per epoch), queues %d x %d x %d = %.1f MiB per process", cache.n_subjects,
                 cache.n_locations, info.world_size, info.device, sampler.batch, total, per_epoch,
                 cache.n_locations, cfg.queue_size, cfg.dim, objective.queue_bytes() / 2 ** 20)
    else:
        log.info("pretrain %s: %d subjects, %d process(es) on %s, batch %d/process, %d steps (%d per epoch)",
                 cfg.method, cache.n_subjects, info.world_size, info.device, sampler.batch, total, per_epoch)


class _TrainLog:
    """Running means of the loss terms between log lines, the log line itself and (optionally) TensorBoard."""

    def __init__(self, cfg: PretrainConfig, info: D.DistInfo, global_batch: int, out: Path):
        self.method, self.main, self.global_batch = cfg.method, info.is_main, global_batch
        self.sums: dict[str, float] = {}
        self.n, self.t_last, self.last = 0, time.perf_counter(), {}
        self.writer = None
        if cfg.tensorboard and info.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise InputError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def flush(self, step: int, total: int, epoch: int, lr: float) -> None:
        now = time.perf_counter()
        last = self.last = {k: v / self.n for k, v in self.sums.items()}
        rate = self.n * self.global_batch / max(now - self.t_last, 1e-9)
        if self.main and self.method == "drasclr":
            log.info("step %d/%d epoch %d loss %.4f (local %.4f, neighbour %.4f) acc %.2f lr %.5f "
                     "%.1f patches/s", step, total, epoch + 1, last["loss"], last["loss_local"],
                     last.get("loss_neighbour", float("nan")), last["acc_local"], lr, rate)
        elif self.main:
            log.info("step %d/%d epoch %d %s lr %.5f %.2f samples/s", step, total, epoch + 1,
                     " ".join(f"{k} {v:.4f}" for k, v in last.items()), lr, rate)
        if self.writer is not None:
            for k, v in last.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/patches_per_s", rate, step)
        self.sums, self.n, self.t_last = {}, 0, now

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _time_is_up(elapsed: float, limit: float, device: torch.device) -> bool:
    """Rank 0's verdict on the time budget, shared with every rank (so all stop at the same step)."""
    return D.broadcast_float(elapsed >= limit, device) > 0


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
