"""Patch cache: every subject's 32^3 patches at every anatomical location, cut once and memory-mapped.

Layout of a cache folder::

    index.json     {"format": "drasclr-patch-cache", "version": 1, "subjects": [...], "scheme": {...},
                    "n_subjects": N, "n_locations": L, "patch": 32, "has_labels": bool}
    patches.npy    (N, L, 32, 32, 32) int16 HU (padded with -1024 outside the CT), opened memory-mapped
    locations.npy  (L, 3) float32 normalised location codes (z, y, x), the encoder's conditioning input
    locations_mm.npy (L, 3) float32 location positions (nearest neighbours)
    corners.npy    (N, L, 3) int64 patch corners in each subject's 1 mm grid (z, y, x)
    label_fractions.npy  (N, L, 5) float32, only with subtype files: share of each subtype value 0..4 in a patch

A folder of input cases is either a phantom cohort (``case_*/ct.nii.gz`` with ``regions.nii.gz`` as the lung
mask and ``subtypes.nii.gz``) or a folder of CT files / DICOM series folders (lungs segmented here).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from ..anatomy.lungs import segment_lungs
from ..core.errors import InputError
from ..core.image import CTImage, resample_isotropic, resample_to
from ..core.io import find_images, read_ct, read_image
from ..core.outputs import staged_dir
from ..core.progress import progress
from .augment import PatchAugment, normalise_hu
from .locations import PATCH, AtlasScheme, BoxGridScheme, atlas_available, nearest_neighbours

CACHE_FORMAT = "drasclr-patch-cache"
CACHE_VERSION = 1
N_SUBTYPE_VALUES = 5  # 0 outside lung, 1 normal, 2 CLE, 3 PSE, 4 PLE


@dataclass(frozen=True)
class Case:
    """One subject: its CT, optionally a lung/region labelmap (> 0 = lung) and a subtype labelmap."""

    name: str
    ct: Path
    lungs: Path | None = None
    subtypes: Path | None = None


def find_cases(folder: str | os.PathLike) -> list[Case]:
    """Cases in a phantom cohort folder or a folder of CTs. ``InputError`` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder not found: {folder}")
    cases = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ct = sub / "ct.nii.gz"
        if ct.is_file():
            lungs, sub_t = sub / "regions.nii.gz", sub / "subtypes.nii.gz"
            cases.append(Case(sub.name, ct, lungs if lungs.is_file() else None, sub_t if sub_t.is_file() else None))
    if not cases:

        for p in find_images(folder):
            name = p.name.split(".")[0] if p.is_file() else p.name
            cases.append(Case(name, p))
    if not cases:
        raise InputError(f"no CT found in {folder} (expected case_*/ct.nii.gz, CT files or DICOM series folders)")
    return cases


def cut_patch(volume: np.ndarray, corner, size: int = PATCH, fill: float = -1024) -> np.ndarray:
    """The ``size``^3 block at ``corner`` (z, y, x), padded with ``fill`` where it leaves the volume."""
    out = np.full((size,) * 3, fill, dtype=volume.dtype)
    src, dst = [], []
    for c, n in zip(corner, volume.shape):
        a, b = max(int(c), 0), min(int(c) + size, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(c), b - int(c)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _load_case(case: Case) -> tuple[CTImage, CTImage, CTImage | None]:
    """CT at 1 mm (HU, -1024 padded), lung mask and subtypes on that grid."""

    try:
        ct = read_ct(case.ct)
    except InputError as exc:
        raise InputError(f"{case.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 — an unreadable file is the user's problem, reported as such
        raise InputError(f"{case.name}: cannot read {case.ct} ({exc})") from None
    ct1 = resample_isotropic(ct, 1.0, default=-1024.0)
    if case.lungs is not None:
        lungs = resample_to(read_image(case.lungs), ct1, default=0, interpolator=sitk.sitkNearestNeighbor)
    else:
        try:
            lungs = resample_to(segment_lungs(ct), ct1, default=0, interpolator=sitk.sitkNearestNeighbor)
        except InputError as exc:
            raise InputError(f"{case.name}: {exc}") from None
    if not np.any(lungs.array):
        raise InputError(f"{case.name}: no lungs found (empty lung mask)")
    sub = None
    if case.subtypes is not None:
        sub = resample_to(read_image(case.subtypes), ct1, default=0, interpolator=sitk.sitkNearestNeighbor)
    return ct1, lungs, sub


def default_scheme(kind: str = "auto"):
    """``atlas`` when the anatomy modules are installed (``auto``), else ``None`` (box grid on the first case)."""
    if kind == "atlas" or (kind == "auto" and atlas_available()):
        if not atlas_available():
            raise InputError("--locations atlas needs drasclr.anatomy.atlas / registration / coords, not installed")
        return AtlasScheme()
    if kind not in ("auto", "boxgrid"):
        raise InputError(f"unknown location scheme {kind!r} (auto, atlas, boxgrid)")
    return None


def build_patch_cache(cases: list[Case], out: str | os.PathLike, scheme=None, max_locations: int = 1000) -> Path:
    """Cut every case's patches at every location into a new cache folder ``out`` (all-or-nothing).

    ``scheme``: an object with ``locations_normalised``, ``locations_mm`` and ``corners(ct_1mm, lungs_1mm)``
    (see ``drasclr.pretrain.locations``); ``None`` builds a ``BoxGridScheme`` on the first case's lungs (at most
    ``max_locations`` locations).
    Raises ``InputError`` for unreadable cases or cases without lungs (nothing is written then).
    """
    if not cases:
        raise InputError("no cases to cache")
    out = Path(out)
    first = _load_case(cases[0])
    if scheme is None:
        scheme = BoxGridScheme.from_reference(first[1], max_locations=max_locations)
    n, n_loc = len(cases), len(scheme.locations_normalised)
    has_labels = all(c.subtypes is not None for c in cases)
    with staged_dir(out) as tmp:
        patches = np.lib.format.open_memmap(tmp / "patches.npy", mode="w+", dtype=np.int16,
                                            shape=(n, n_loc, PATCH, PATCH, PATCH))
        corners_all = np.zeros((n, n_loc, 3), np.int64)
        fractions = np.zeros((n, n_loc, N_SUBTYPE_VALUES), np.float32) if has_labels else None
        for i, case in enumerate(progress(cases, desc="patch cache")):
            ct1, lungs, sub = first if i == 0 else _load_case(case)
            corners = scheme.corners(ct1, lungs)
            corners_all[i] = corners
            vol = np.clip(ct1.array, -32768, 32767).astype(np.int16)
            for j, c in enumerate(corners):
                patches[i, j] = cut_patch(vol, c)
                if fractions is not None:
                    counts = np.bincount(cut_patch(sub.array.astype(np.int64), c, fill=0).ravel(),
                                         minlength=N_SUBTYPE_VALUES)[:N_SUBTYPE_VALUES]
                    fractions[i, j] = counts / PATCH ** 3
        patches.flush()
        del patches
        np.save(tmp / "locations.npy", scheme.locations_normalised.astype(np.float32))
        np.save(tmp / "locations_mm.npy", np.asarray(scheme.locations_mm, np.float32))
        np.save(tmp / "corners.npy", corners_all)
        if fractions is not None:
            np.save(tmp / "label_fractions.npy", fractions)
        index = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "subjects": [c.name for c in cases],
                 "sources": [str(c.ct) for c in cases], "scheme": scheme.to_json(), "n_subjects": n,
                 "n_locations": n_loc, "patch": PATCH, "has_labels": has_labels}
        (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def read_index(folder: Path, what: str, fmt: str | None = None, version: int | None = None) -> dict:
    """A cache folder's ``index.json``; ``InputError`` naming ``what`` when it is missing, not JSON, or (``fmt``,
    ``version`` given) of another format or version."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: not a readable {what} ({exc})") from None
    if fmt is not None and (index.get("format") != fmt or index.get("version") != version):
        raise InputError(f"{folder}: {what} format {index.get('format')} version {index.get('version')} is not "
                         f"{fmt} version {version} (rebuild it)")
    return index


def is_cache(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "index.json").is_file()


class IndexedCache:
    """What a built cache's ``index.json`` says about its subjects (patch and volume caches)."""

    index: dict

    @property
    def n_subjects(self) -> int:
        return int(self.index["n_subjects"])

    @property
    def subjects(self) -> list[str]:
        return list(self.index["subjects"])


class PatchCache(IndexedCache):
    """A built cache, memory-mapped (opened lazily, so it can be handed to DataLoader workers)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index = read_index(self.folder, "patch cache", CACHE_FORMAT, CACHE_VERSION)
        self.locations = np.load(self.folder / "locations.npy")
        self.locations_mm = np.load(self.folder / "locations_mm.npy")
        self._patches = None

    @property
    def patches(self) -> np.ndarray:
        """``(N, L, 32, 32, 32)`` int16, memory-mapped."""
        if self._patches is None:
            self._patches = np.load(self.folder / "patches.npy", mmap_mode="r")
        return self._patches

    def __getstate__(self):
        return {**self.__dict__, "_patches": None}

    @property
    def n_locations(self) -> int:
        return int(self.index["n_locations"])

    def neighbours(self, k: int) -> np.ndarray:
        """``(L, k)`` the k nearest other locations of each location."""
        return nearest_neighbours(self.locations_mm, k)

    def label_fractions(self) -> np.ndarray | None:
        p = self.folder / "label_fractions.npy"
        return np.load(p) if p.is_file() else None

    def patch_labels(self, threshold: float = 0.05) -> np.ndarray | None:
        """``(N, L)`` patch class: the majority non-normal subtype (2 CLE, 3 PSE, 4 PLE) when its share of the
        patch's lung voxels exceeds ``threshold``, else 1 (normal); 0 when the patch holds no lung."""
        f = self.label_fractions()
        if f is None:
            return None
        lung = f[..., 1:].sum(-1)
        share = f[..., 2:] / np.maximum(lung, 1e-9)[..., None]
        best = share.argmax(-1)
        labels = np.where(share.max(-1) > threshold, best + 2, 1)
        return np.where(lung > 0, labels, 0).astype(np.int64)


class PatchPairs(Dataset):
    """Training samples for the DrasCLR objective. Item ``i`` = (location ``i // N``, subject ``i % N``).

    The location is part of the index (set by ``LocationBatchSampler``), never dataset state, so worker
    processes always cut the batch's own location. Returns a dict of tensors::

        query, key   (1, 32, 32, 32)  two augmented views of the patch
        loc          (3,)             normalised location code
        neighbours   (k, 1, 32, 32, 32) the same subject's patches at the k nearest locations (augmented)
        neighbour_loc (k, 3)
        location, subject  () int64
    """

    def __init__(self, cache: PatchCache, k_neighbours: int = 2, augment: PatchAugment | None = None,
                 neighbour_augment: PatchAugment | None = None):
        self.cache = cache
        self.k = k_neighbours
        self.nbrs = cache.neighbours(k_neighbours) if k_neighbours > 0 else np.zeros((cache.n_locations, 0), int)
        self.augment = augment or PatchAugment()
        self.neighbour_augment = neighbour_augment or self.augment

    def __len__(self) -> int:
        return self.cache.n_subjects * self.cache.n_locations

    def decode(self, i: int) -> tuple[int, int]:
        """index -> (location, subject)."""
        return divmod(int(i), self.cache.n_subjects)

    def __getitem__(self, i: int) -> dict:
        loc, subj = self.decode(i)
        p = self.cache.patches
        patch = np.asarray(p[subj, loc])
        nb = self.nbrs[loc]
        return {
            "query": self.augment(patch),
            "key": self.augment(patch),
            "loc": torch.from_numpy(self.cache.locations[loc]),
            "neighbours": torch.stack([self.neighbour_augment(np.asarray(p[subj, j])) for j in nb])
            if len(nb) else torch.zeros(0, 1, PATCH, PATCH, PATCH),
            "neighbour_loc": torch.from_numpy(self.cache.locations[nb].reshape(-1, 3)),
            "location": torch.tensor(loc),
            "subject": torch.tensor(subj),
        }


def encode_cache(encoder: torch.nn.Module, cache: PatchCache, batch: int = 64, device: str | torch.device = "cpu",
                 subjects=None, locations=None) -> np.ndarray:
    """Frozen representations of the cached patches: ``(N, L, rep_dim)`` float32 over ``subjects`` (default all)
    and ``locations`` (indices, default all).

    Batches hold one location across subjects (the shared-kernel fast path of CondConv3d).
    """
    encoder = encoder.to(device).eval()
    subjects = np.arange(cache.n_subjects) if subjects is None else np.asarray(subjects)
    locations = np.arange(cache.n_locations) if locations is None else np.asarray(locations)
    out = None
    with torch.no_grad():
        for j, loc_j in enumerate(locations):
            loc = torch.from_numpy(cache.locations[loc_j]).to(device)
            for s0 in range(0, len(subjects), batch):
                s = subjects[s0:s0 + batch]
                x = normalise_hu(np.asarray(cache.patches[s, loc_j]))[:, None].to(device)
                h = encoder(x, loc[None].expand(len(s), 3)).float().cpu().numpy()
                if out is None:
                    out = np.zeros((len(subjects), len(locations), h.shape[1]), np.float32)
                out[s0:s0 + len(s), j] = h
    return out
