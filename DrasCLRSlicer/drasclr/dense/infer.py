"""Dense subtype inference: overlapping 32³ patches over the lung at 1 mm, Gaussian blending, back to the input grid.

Only patches that touch the lung are visited. Every patch gets its anatomical location (the normalised atlas
location of the patch, as in pretraining) from a *locator*: a function ``(N, 3)`` LPS patch centres -> ``(N, 3)``
in [-1, 1]. Batches are sized to free memory on CUDA, run in mixed precision there, and halve on out-of-memory.

On CPU the model runs as its fused inference twin (:mod:`drasclr.dense.fused`: same answers, about 2x less work
per patch), and batches go to one worker thread per torch thread, each running its operators single-threaded:
no OpenMP barriers between the small 3-D operators, which on a 2-core machine shared with other jobs cost more
than they gain. ``DRASCLR_DENSE_PATH=reference`` runs the unfused model the old way (one batch at a time, 16
patches, OpenMP threads), for comparison.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..anatomy.atlas import PATCH
from ..core import labels, memory
from ..core.errors import InputError
from ..core.image import CTImage, bounding_box, box_sums, resample_isotropic, resample_to
from ..core.intensity import normalise_hu
from ..core.progress import progress
from .fused import fast_path_enabled, fuse_for_inference
from .locate import mirror_left_right

log = logging.getLogger(__name__)
Locator = Callable[[np.ndarray], np.ndarray]


@dataclass
class LungVolume:
    """The lung region of a CT at isotropic spacing: ``ct`` (HU) and ``lungs`` (0/1 uint8) on one 1 mm grid."""

    ct: CTImage
    lungs: CTImage


def lung_volume(ct: CTImage, lungs: CTImage, spacing_mm: float = 1.0, margin_mm: float = 8.0) -> LungVolume:
    """Crop ``ct`` to the lung bounding box (+ margin) and resample it to ``spacing_mm`` isotropic."""
    found = bounding_box(lungs.array)
    if found is None:
        raise ValueError("empty lung mask")
    margin = np.ceil(margin_mm / np.asarray(ct.spacing_zyx)).astype(int)
    lo = np.array([s.start for s in found]) - margin
    hi = np.array([s.stop for s in found]) + margin
    sub_ct = ct.crop(lo, hi)
    sub_lung = lungs.crop(lo, hi).with_array((lungs.crop(lo, hi).array > 0).astype(np.uint8))
    iso_ct = resample_isotropic(sub_ct.with_array(sub_ct.array.astype(np.int16)), spacing_mm, default=-1024)
    iso_lung = resample_to(sub_lung, iso_ct)
    return LungVolume(iso_ct, iso_lung)


def plan_patches(lung: np.ndarray, stride: int = 16, patch: int = PATCH, min_share: float = 0.0) -> np.ndarray:
    """Corners ``(N, 3)`` (zyx voxel index) of patches on a ``stride`` grid that touch the lung.

    The grid covers the whole volume; the last patch along each axis is shifted to end at the border.
    ``min_share``: patches whose box holds less than this share of lung are left out where the other patches
    cover every lung voxel they hold (a lung tip grazing a corner is seen by its neighbours)."""
    starts = []
    for n in lung.shape:
        s = list(range(0, max(n - patch, 0) + 1, stride))
        if s[-1] != max(n - patch, 0):
            s.append(max(n - patch, 0))
        starts.append(s)
    # a patch touches the lung when its box holds a lung voxel
    count = box_sums(lung > 0, starts, patch).ravel()
    corners = np.array(np.meshgrid(*starts, indexing="ij")).reshape(3, -1).T
    corners, count = corners[count > 0], count[count > 0]
    sparse = count < min_share * patch ** 3
    if not sparse.any():
        return corners
    covered = np.zeros(lung.shape, bool)
    for z, y, x in corners[~sparse]:
        covered[z:z + patch, y:y + patch, x:x + patch] = True
    needed = np.array([bool((lung[z:z + patch, y:y + patch, x:x + patch] > 0)[
        ~covered[z:z + patch, y:y + patch, x:x + patch]].any()) for z, y, x in corners[sparse]])
    keep = ~sparse
    keep[np.flatnonzero(sparse)[needed]] = True
    return corners[keep]


def extract_patches(volume: np.ndarray, corners: np.ndarray, patch: int = PATCH, fill: float = -1024) -> np.ndarray:
    """``(N, patch, patch, patch)`` blocks at ``corners`` (zyx, may lie partly outside), padded with ``fill``."""
    return PaddedVolume(volume, fill, patch).cut(corners)


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _batch_size(device: torch.device, requested: int | None, workers: int = 1) -> int:
    if requested:
        return requested
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # about 40 MB of activations per 32³ patch in mixed precision (measured), keep half the memory free
        return int(max(8, min(1024, free * 0.5 // (40 * 2**20))))
    # one batch per worker thread at a time: 8 patches keep a worker's 32³ maps near its core's cache
    return 8 if workers > 1 else 16


MAX_WORKERS = 16
MAX_JOB = 256  # patches per job at most (a GPU's batch; the job's maps are held on the host)


@dataclass(frozen=True)
class Runner:
    """How patches run: ``fn`` (the fused model on CPU, else the model) and ``workers`` threads (1: in turn)."""

    fn: Callable
    workers: int = 1


def runner_for(model: torch.nn.Module, device: torch.device, fused_fn: Callable | None = None) -> Runner:
    """The fast path on CPU (fused model, one worker per torch thread) unless ``DRASCLR_DENSE_PATH=reference`` or
    the model cannot be fused; ``model`` itself otherwise (and always on CUDA)."""
    if device.type == "cpu" and fast_path_enabled():
        fused = fuse_for_inference(model)
        if fused is not None:
            # one worker per torch thread (OMP_NUM_THREADS, --threads), at most MAX_WORKERS (~100 MB each)
            workers = max(1, min(MAX_WORKERS, torch.get_num_threads()))
            return Runner(fused if fused_fn is None else fused_fn(fused), workers)
    return Runner(model)


@contextlib.contextmanager
def _single_threaded_ops(workers: int) -> Iterator[None]:
    """With several workers, torch runs each operator on one thread (restored afterwards)."""
    if workers <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _forward(fn, x: np.ndarray, loc: np.ndarray, device: torch.device) -> list[np.ndarray]:
    """One batch through ``fn``; on CUDA out-of-memory it is split in halves (recursively) instead of failing."""
    xb = torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)
    lb = torch.from_numpy(np.ascontiguousarray(loc)).float().to(device)
    try:
        with torch.no_grad(), _autocast(device):
            return [fn(xb, lb).float().cpu().numpy()]
    except torch.OutOfMemoryError:
        if len(x) == 1:
            raise
        del xb, lb
        torch.cuda.empty_cache()
        half = len(x) // 2
        log.warning("out of GPU memory: batch of %d split in two", len(x))
        return _forward(fn, x[:half], loc[:half], device) + _forward(fn, x[half:], loc[half:], device)


def run_batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: np.ndarray, loc: np.ndarray,
                device: torch.device, batch_size: int | None = None, desc: str = "", workers: int = 1) -> np.ndarray:
    """Apply ``fn(x, loc)`` over the first axis in batches (sized to free memory, split on out-of-memory);
    ``workers`` > 1: that many threads take batches, each running torch operators single-threaded."""
    bs = _batch_size(device, batch_size, workers)
    starts = range(0, len(x), bs)
    outs = []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(starts) > 1:
            stack.enter_context(_single_threaded_ops(workers))
            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="drasclr-patches"))
            batches = pool.map(lambda s: _forward(fn, x[s:s + bs], loc[s:s + bs], device), starts)
        else:
            batches = (_forward(fn, x[s:s + bs], loc[s:s + bs], device) for s in starts)
        for out in progress(batches, total=len(starts), desc=desc) if desc else batches:
            outs += out
    return np.concatenate(outs) if outs else np.zeros((0,))


def gaussian_weight(patch: int = PATCH, sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weight of a cubic patch, float32: MONAI's ``compute_importance_map(mode="gaussian")`` computed the
    same way (a test checks it is identical) without importing MONAI (about 0.7 s of every analysis)."""
    x = torch.arange(-(patch - 1) / 2.0, (patch - 1) / 2.0 + 1, dtype=torch.float)
    g = torch.exp(x ** 2 / (-2 * (patch * sigma_scale) ** 2))
    w = g.unsqueeze(-1) * g[None]
    w = w.unsqueeze(-1) * g[(None,) * 2]
    return torch.clamp_(w, min=max(torch.min(w).item(), 1e-3)).numpy().astype(np.float32)


# patches holding less lung than this share are left out where the others cover their lung voxels: on
# lidc_idri_0001 115 of 748 patches (BENCHMARKS.md, issue 28)
MIN_LUNG_SHARE = 0.02
UNSURE_P = 0.9  # a lung voxel is unsure when its most likely subtype has a probability below this
# test-time augmentation mirrors the patches unsure on more than this share of their lung voxels (the others keep
# their plain pass): on lidc_idri_0001 215 of 633 patches. Against 0.05 (466 patches; session 10), on 20 held-out
# phantoms and the 5 real CTs: macro Dice -0.0015 (worst case -0.004), emphysema % within 0.1 point, 0.1-0.5 % of
# lung voxels relabelled, a fifth less subtype time (BENCHMARKS.md, issue 28; 0.1: -0.0005, 7 % less)
TTA_SELECT = 0.2


def unsure_patches(probs: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Per patch, the share of its lung voxels (``lung`` ``(N, D, H, W)`` non-zero) whose most likely subtype
    (classes 1-4 renormalised) has a probability below :data:`UNSURE_P` in ``probs`` ``(N, C, D, H, W)``."""
    sub = probs[:, 1:]
    top = sub.max(axis=1) / np.maximum(sub.sum(axis=1), 1e-6)
    inside = lung > 0
    return ((top < UNSURE_P) & inside).sum(axis=(1, 2, 3)) / np.maximum(inside.sum(axis=(1, 2, 3)), 1)


def default_stride(device: torch.device) -> int:
    """Patch stride: 16 (half-patch overlap) on GPU; 24 on CPU, where it needs 2.4x fewer patches."""
    return 16 if device.type == "cuda" else 24


def blend_probabilities(model: torch.nn.Module, vol: LungVolume, locator: Locator, device: torch.device,
                        stride: int | None = None, batch_size: int | None = None,
                        tta: bool = False, tta_select: float | None = None,
                        disagreement: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Blended class probabilities ``(C, Z, Y, X)`` float32 on ``vol``'s 1 mm grid (zero where no patch ran), and
    with ``tta`` the blended disagreement ``(Z, Y, X)`` of the plain and mirrored passes (half the L1 distance of
    their probability vectors, 0..1), else None. Internal: callers use :func:`drasclr.dense.predict.predict`.

    ``tta``: test-time augmentation; every patch is also run mirrored left-right with its location code
    mirrored about the atlas midline (what training augments with), and the two probabilities are averaged.
    ``tta_select``: mirror only the patches whose plain pass is unsure (:func:`unsure_patches`) on more than this
    share of their lung voxels (None: every patch); the others keep their plain pass and no disagreement.
    ``disagreement``: False skips the disagreement map (None returned).

    Each batch is one job (:class:`_PatchJob`: cut, plain pass, mirrored pass of its unsure patches, Gaussian
    weighting), run by the worker threads; the main thread only adds the weighted results into the grid, in
    patch order (the same sums, so the same answer, whatever the threads' timing)."""
    lung = vol.lungs.array
    corners = plan_patches(lung, stride or default_stride(device), min_share=MIN_LUNG_SHARE)
    loc = locator(vol.ct.zyx_to_lps(corners + PATCH / 2.0)).astype(np.float32)  # patch centres
    num_classes = getattr(model, "num_classes", labels.NUM_CLASSES)
    padded = [n + PATCH for n in lung.shape]
    # every patch is added into these at its place: huge pages (drasclr.core.memory)
    acc = memory.zeros((num_classes, *padded), np.float32)
    wsum = memory.zeros(padded, np.float32)
    dis = memory.zeros(padded, np.float32) if tta and disagreement else None
    run = runner_for(model.to(device).eval(), device)
    job = _PatchJob(run.fn, PaddedVolume(vol.ct.array, -1024), PaddedVolume(lung, 0), corners, loc, device,
                    tta, tta_select, dis is not None)
    bs = min(_batch_size(device, batch_size, run.workers), MAX_JOB)  # host memory: 256 patches' maps are 0.2 GB
    starts = range(0, len(corners), bs)
    weight = job.weight
    mirrored = 0
    with contextlib.ExitStack() as stack:
        if run.workers > 1 and len(starts) > 1:
            stack.enter_context(_single_threaded_ops(run.workers))
            pool = stack.enter_context(ThreadPoolExecutor(run.workers, thread_name_prefix="drasclr-patches"))
            results = _ordered(pool, lambda s: job(s, s + bs), starts, ahead=2 * run.workers)
        else:
            results = (job(s, s + bs) for s in starts)
        for s, (probs, gap, n_mirrored) in zip(starts, progress(results, total=len(starts), desc="subtypes")):
            mirrored += n_mirrored
            for n, (z, y, x) in enumerate(corners[s:s + bs]):
                box = (slice(z, z + PATCH), slice(y, y + PATCH), slice(x, x + PATCH))
                acc[(slice(None), *box)] += probs[n]
                wsum[box] += weight
                if dis is not None:
                    dis[box] += gap[n]
    if tta:
        log.info("test-time augmentation: %d of %d patches mirrored", mirrored, len(corners))
    crop = tuple(slice(0, n) for n in lung.shape)
    acc, wsum = acc[(slice(None), *crop)], wsum[crop]
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    if dis is not None:
        dis = dis[crop]
        np.divide(dis, wsum, out=dis, where=wsum > 0)
    return acc, dis


class PaddedVolume:
    """A volume padded once by a patch on every side, so that patches (partly outside, too) are cut as views."""

    def __init__(self, volume: np.ndarray, fill: float, patch: int = PATCH):
        self.patch = patch
        self.shape = np.asarray(volume.shape)
        self.array = np.pad(volume, [(patch, patch)] * 3, constant_values=fill)

    def cut(self, corners: np.ndarray) -> np.ndarray:
        """``(N, patch, patch, patch)`` blocks at ``corners`` (zyx of the unpadded volume)."""
        p = self.patch
        corners = np.clip(np.asarray(corners, int), -p, self.shape) + p
        out = np.empty((len(corners), p, p, p), dtype=self.array.dtype)
        for n, (z, y, x) in enumerate(corners):
            out[n] = self.array[z:z + p, y:y + p, x:x + p]
        return out


@dataclass
class _PatchJob:
    """One batch of patches ``[s, e)`` through the model: probabilities (and the mirrored pass of the unsure
    patches, averaged in), multiplied by the Gaussian blending weight; the disagreement likewise. Returns
    ``(weighted probabilities (B, C, p, p, p), weighted disagreement (B, p, p, p) or None, patches mirrored)``."""

    fn: Callable
    ct: PaddedVolume
    lung: PaddedVolume
    corners: np.ndarray
    loc: np.ndarray
    device: torch.device
    tta: bool
    tta_select: float | None
    disagreement: bool

    def __post_init__(self):
        self.weight = gaussian_weight(PATCH)

    def _probs(self, x: np.ndarray, loc: np.ndarray) -> np.ndarray:
        def step(xb, lb):
            return torch.softmax(self.fn(normalise_hu(xb)[:, None], lb), dim=1)

        out = _forward(step, x, loc, self.device)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def __call__(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        cc, loc = self.corners[s:e], self.loc[s:e]
        x = self.ct.cut(cc)
        probs = self._probs(x, loc)
        gap = np.zeros((len(cc), *probs.shape[2:]), np.float32) if self.disagreement else None
        todo = np.zeros(0, int)
        if self.tta:
            todo = (np.arange(len(cc)) if self.tta_select is None
                    else np.flatnonzero(unsure_patches(probs, self.lung.cut(cc)) > self.tta_select))
        if len(todo):
            flipped = self._probs(np.ascontiguousarray(x[todo][..., ::-1]), mirror_left_right(loc[todo]))[..., ::-1]
            if gap is not None:
                gap[todo] = 0.5 * np.abs(probs[todo] - flipped).sum(axis=1)
            probs[todo] = 0.5 * (probs[todo] + flipped)
        probs *= self.weight
        if gap is not None:
            gap *= self.weight
        return probs, gap, len(todo)


def _ordered(pool: ThreadPoolExecutor, fn: Callable, items, ahead: int) -> Iterator:
    """``pool.map(fn, items)`` with at most ``ahead`` results waiting: memory bounded when the consumer is slow."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def card_class_weights(card: dict | None) -> list[float] | None:
    """The decision weights of classes 1–4 stored in a model card (``inference.class_weights``), or None;
    ``InputError`` when they are not 4 positive numbers."""
    w = ((card or {}).get("inference") or {}).get("class_weights")
    if w is None:
        return None
    try:
        weights = [float(x) for x in w]
    except (TypeError, ValueError):
        weights = []
    if len(weights) != labels.NUM_CLASSES - 1 or not all(x > 0 for x in weights):
        raise InputError(f"model card: inference.class_weights must be {labels.NUM_CLASSES - 1} positive numbers, "
                         f"got {w!r}")
    return weights


def patch_embeddings(model: torch.nn.Module, ct_iso: CTImage, corners_zyx: np.ndarray, locations: np.ndarray,
                     device: torch.device, batch_size: int | None = None) -> np.ndarray:
    """Encoder vectors ``(L, 128)`` of the patches at ``corners_zyx`` (1 mm grid) with their atlas ``locations``."""
    patches = extract_patches(ct_iso.array, corners_zyx)
    run = runner_for(model, device, fused_fn=lambda fused: fused.embed)
    embed = run.fn if run.fn is not model else (getattr(model, "embed", None) or model)

    def step(xb, lb):
        return embed(normalise_hu(xb)[:, None], lb)

    return run_batched(step, patches, locations.astype(np.float32), device, batch_size, desc="embedding",
                       workers=run.workers)


def patient_embedding(model: torch.nn.Module, grid: CTImage, transform, device: torch.device,
                      batch_size: int | None = None) -> np.ndarray:
    """The patient-level vector ``(128,)`` float32: the mean encoder vector over the atlas locations, cut from
    ``grid`` (a 1 mm CT, e.g. ``DensePrediction.probabilities.grid``) where ``transform`` puts each location."""
    from .locate import atlas_patch_corners

    corners, locations = atlas_patch_corners(transform, grid)
    return patch_embeddings(model, grid, corners, locations, device, batch_size).mean(axis=0).astype(np.float32)
