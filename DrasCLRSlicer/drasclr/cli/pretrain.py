"""``drasclr pretrain DATA -o OUT [--method drasclr|voco|volfusion] [options]``: self-supervised pretraining.

One process:      drasclr pretrain phantoms/ -o runs/p1 --max-steps 300
Other pretext:    drasclr pretrain phantoms/ -o runs/v1 --method voco --batch-size 2 --max-steps 300
Several (DDP):    torchrun --nproc_per_node 4 -m drasclr pretrain DATA -o OUT
Several nodes:    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
                           --nproc_per_node 8 -m drasclr pretrain DATA -o OUT
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def add_parser(sub):
    from ..core.architecture import DEFAULT_CHANNELS
    from ..core.architecture import PRETRAIN_METHODS as METHODS

    p = sub.add_parser("pretrain", help="self-supervised pretraining: DrasCLR, VoCo or volume fusion (torchrun DDP)",
                       description="Pretrain the encoder. drasclr: location-conditioned local and neighbouring "
                                   "anatomical contrastive losses on a patch cache; voco: volume contrast (predict "
                                   "random crops' overlap with a grid of base crops); volfusion: segment the fusion "
                                   "coefficients of two fused volumes (MIS-FM) with a U-Net on this encoder. DATA: a "
                                   "phantom cohort (case_*/ct.nii.gz), a folder of CTs, or a cache built before. "
                                   "Run under torchrun for DDP.")
    p.add_argument("data", help="phantom cohort, folder of CT files / DICOM series, or a patch / volume cache folder")
    p.add_argument("-o", "--output", required=True, help="run folder (checkpoints, model.safetensors)")
    p.add_argument("--method", default="drasclr", choices=METHODS,
                   help="pretext task (default drasclr); the exported encoder is the same class for all")
    p.add_argument("--cache", default=None,
                   help="patch cache (drasclr, default OUTPUT/cache) or volume cache (voco/volfusion, default "
                        "OUTPUT/volumes) folder; built once")
    p.add_argument("--locations", default="auto", choices=["auto", "atlas", "boxgrid"],
                   help="anatomical locations: atlas registration when available (auto) or lung bounding box grid")
    p.add_argument("--max-locations", type=int, default=1000,
                   help="boxgrid locations: raise the lung-share threshold until at most this many remain")
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    g.add_argument("--batch-size", type=int, default=32,
                   help="per process and step: patches of one location (drasclr), regions (voco), fused crops "
                        "(volfusion)")
    g.add_argument("--max-minutes", type=float, default=None, help="also stop (and save) after this training time")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per training process")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    g.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("objective")
    o.add_argument("--queue-size", type=int, default=4096, help="K negatives per location")
    o.add_argument("--moco-momentum", type=float, default=0.999, help="m of the key encoder")
    o.add_argument("--temperature", type=float, default=0.2, help="T")
    o.add_argument("--beta", type=float, default=1.0, help="weight of the neighbouring loss")
    o.add_argument("--k-neighbours", type=int, default=2)
    o.add_argument("--augment-strength", type=float, default=1.0, help="0 turns augmentation off")
    v = p.add_argument_group("voco / volfusion")
    v.add_argument("--voco-grid", type=int, default=3, help="voco: GRID^3 base crops of 32^3 per region")
    v.add_argument("--voco-crops", type=int, default=4, help="voco: random crops per region")
    v.add_argument("--voco-reg-weight", type=float, default=1.0, help="voco: weight of the base-crop regulariser")
    v.add_argument("--fusion-crop", type=int, default=64, help="volfusion: fused crop side in voxels (1 mm)")
    v.add_argument("--fusion-classes", type=int, default=4, help="volfusion: K coefficient classes")
    v.add_argument("--fusion-blocks", type=int, nargs=2, default=[8, 32], metavar=("MIN", "MAX"),
                   help="volfusion: block side range in voxels")
    m = p.add_argument_group("model")
    m.add_argument("--channels", type=int, nargs=7, default=list(DEFAULT_CHANNELS), metavar="C")
    m.add_argument("--experts", type=int, default=8)
    m.add_argument("--no-location", action="store_true", help="ablation: plain convolutions, no conditioning")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--no-amp", action="store_true", help="no bf16 autocast on GPU")
    r.add_argument("--bn", default="shuffle", choices=["shuffle", "sync"], help="shuffle-BN (any) or SyncBN (GPU)")
    r.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    r.add_argument("--log-every", type=int, default=20, help="log line every N steps")
    r.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    r.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to OUTPUT/tensorboard")
    r.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from OUTPUT/checkpoints/latest (or the given checkpoint folder)")
    r.add_argument("--overwrite", action="store_true",
                   help="delete an existing non-empty run folder (its checkpoints, model and default cache) first")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core.errors import InputError
    from ..core.input_files import check_range

    for name in ("batch_size", "queue_size", "save_every", "log_every", "experts", "voco_grid", "voco_crops"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError("--max-steps must be at least 1")
    if args.fusion_classes < 2:
        raise InputError("--fusion-classes must be at least 2")
    lo, hi = args.fusion_blocks
    if not 1 <= lo <= hi or args.fusion_crop < 32 or args.fusion_crop % 16:
        raise InputError("--fusion-blocks needs 1 <= MIN <= MAX and --fusion-crop a multiple of 16, at least 32")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise InputError("--max-minutes must be positive")
    check_range(args.epochs, "--epochs", lo=1)
    check_range(args.max_minutes, "--max-minutes", lo=0, lo_open=True)
    check_range(args.lr, "--lr", lo=0, hi=10, lo_open=True)
    check_range(args.weight_decay, "--weight-decay", lo=0, hi=1)
    check_range(args.moco_momentum, "--moco-momentum", lo=0, hi=1, hi_open=True)
    check_range(args.temperature, "--temperature", lo=0, hi=10, lo_open=True)
    check_range(args.beta, "--beta", lo=0)
    check_range(args.k_neighbours, "--k-neighbours", lo=1)
    check_range(args.augment_strength, "--augment-strength", lo=0, hi=10)
    check_range(args.voco_reg_weight, "--voco-reg-weight", lo=0)
    check_range(args.max_locations, "--max-locations", lo=1)
    check_range(args.workers, "--workers", lo=0, hi=256)
    check_range(args.threads, "--threads", lo=1, hi=1024)
    check_range(args.keep, "--keep", lo=1)
    check_range(args.seed, "--seed", lo=0)
    if min(args.channels) < 1 or max(args.channels) > 4096:
        raise InputError(f"--channels {' '.join(map(str, args.channels))}: each must be 1-4096")
    check_range(args.experts, "--experts", lo=1, hi=256)
    if not Path(args.data).exists():
        raise InputError(f"data folder not found: {args.data}")
    with _run_folder(args):
        return _pretrain(args, lo, hi)


@contextlib.contextmanager
def _run_folder(args):
    """The run folder: new, resumed (``--resume``) or replaced (``--overwrite``: the old one is set aside and
    removed when the new run succeeds, restored when it fails); held by one run at a time.
    Under torchrun only rank 0 checks, locks and removes (the other ranks write nothing there)."""
    import os

    from ..core.outputs import claimed_output, is_nonempty_dir, set_aside

    if int(os.environ.get("RANK", 0)) != 0:
        yield
        return
    out = Path(args.output)
    with claimed_output(out, overwrite=args.overwrite, resumable=lambda f: bool(args.resume) or _only_caches(f),
                        what="run folder"):
        if not (args.overwrite and not args.resume and is_nonempty_dir(out)):
            yield
            return
        with set_aside(out):  # restored if this run fails
            yield


def _only_caches(folder: Path) -> bool:
    """A run folder holding nothing but the caches an earlier start built (no checkpoint, no model): a fresh start
    may reuse it."""
    from ..core.outputs import is_bookkeeping

    return all(is_bookkeeping(p.name) or (p.is_dir() and p.name in ("cache", "volumes")) for p in folder.iterdir())


def _pretrain(args, lo: int, hi: int) -> int:
    from ..pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=args.data, out=args.output, cache=args.cache, locations=args.locations,
        max_locations=args.max_locations, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        queue_size=args.queue_size, moco_momentum=args.moco_momentum, temperature=args.temperature,
        beta=args.beta, k_neighbours=args.k_neighbours, channels=list(args.channels), num_experts=args.experts,
        no_location=args.no_location, augment_strength=args.augment_strength, workers=args.workers,
        threads=args.threads,
        device=args.device, amp=not args.no_amp, bn=args.bn, save_every=args.save_every, log_every=args.log_every,
        keep=args.keep, tensorboard=args.tensorboard, seed=args.seed, resume=args.resume, method=args.method,
        max_minutes=args.max_minutes, voco_grid=args.voco_grid, voco_crops=args.voco_crops,
        voco_reg_weight=args.voco_reg_weight, fusion_crop=args.fusion_crop, fusion_classes=args.fusion_classes,
        fusion_block_min=lo, fusion_block_max=hi)
    summary = pretrain(cfg)
    if summary.get("world_size", 1) == 1 or summary.get("rank", 0) == 0:
        unit = "patches" if args.method == "drasclr" else "samples"
        print(f"wrote {summary['model']} ({args.method}, {summary['steps']} steps, {summary['patches_per_s']:.1f} "
              f"{unit}/s)")
    return 0
