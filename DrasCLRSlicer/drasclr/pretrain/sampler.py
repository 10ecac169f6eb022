"""Location-aware batches: every mini-batch holds ONE anatomical location across many subjects.

Dataset index ``i`` means (location ``i // N``, subject ``i % N``) (see ``PatchPairs``), so the location travels
with the index into every DataLoader worker: no dataset state is changed from the training loop (the reference
code's stale-location bug).

Under DDP every rank draws the same location at the same step (the per-location queue and the shuffled
key batch need it) and a disjoint slice of its subjects.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


class _EpochBatches(Sampler[list[int]]):
    """What both samplers share: ``batch`` per rank over ``world`` ranks, and ``set_epoch(epoch, skip)``."""

    batch: int
    world: int

    @property
    def global_batch(self) -> int:
        return self.batch * self.world

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)


class LocationBatchSampler(_EpochBatches):
    """Yields lists of dataset indices, one location per list.

    Each epoch visits every location in a random order; for a location, its subjects are shuffled and cut into
    global batches of ``batch_size * world_size`` (the last, incomplete one is dropped, so every rank gets
    exactly ``batch_size``); rank ``r`` takes slice ``r``. When a location has fewer subjects than a global
    batch, the per-rank batch shrinks to ``n_subjects // world_size``.

    ``set_epoch(e)`` reseeds (call it every epoch, as with DistributedSampler); ``skip`` batches at the start of
    the epoch are left out (resuming mid-epoch).
    """

    def __init__(self, n_subjects: int, n_locations: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True):
        if n_subjects < world_size:
            raise ValueError(f"{n_subjects} subjects cannot be split over {world_size} processes")
        self.n, self.n_loc = int(n_subjects), int(n_locations)
        self.world, self.rank, self.seed, self.shuffle = int(world_size), int(rank), int(seed), shuffle
        self.batch = min(int(batch_size), self.n // self.world)
        self.epoch, self.skip = 0, 0

    def batches_per_location(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return self.n_loc * self.batches_per_location() - self.skip

    def plan(self) -> list[tuple[int, np.ndarray]]:
        """The epoch's global plan: ``(location, subjects of the global batch)`` per step (same on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        locs = rng.permutation(self.n_loc) if self.shuffle else np.arange(self.n_loc)
        out = []
        for loc in locs:
            subj = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
            for b in range(self.batches_per_location()):
                out.append((int(loc), subj[b * self.global_batch:(b + 1) * self.global_batch]))
        if self.shuffle:  # interleave locations so consecutive steps differ, still one location per step
            order = rng.permutation(len(out))
            out = [out[i] for i in order]
        return out

    def __iter__(self):
        for loc, subj in self.plan()[self.skip:]:
            mine = subj[self.rank * self.batch:(self.rank + 1) * self.batch]
            yield [loc * self.n + int(s) for s in mine]


class SampleBatchSampler(_EpochBatches):
    """Batches of global sample numbers for the volume pretext tasks (VoCo, volume fusion), whose datasets draw
    item ``g`` from ``(seed, g)`` alone: step ``s`` of rank ``r`` holds ``g = (s * world + r) * batch + b``.

    The same ``set_epoch(epoch, skip)`` / ``len`` / ``global_batch`` interface as ``LocationBatchSampler``; an
    epoch is ``n_subjects // global_batch`` steps (at least 1), so resuming at any step redraws the same samples.
    """

    def __init__(self, n_subjects: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.batch, self.rank, self.world = int(batch_size), int(rank), int(world_size)
        self.steps_per_epoch = max(1, int(n_subjects) // self.global_batch)
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip

    def __iter__(self):
        for s in range(self.epoch * self.steps_per_epoch + self.skip, (self.epoch + 1) * self.steps_per_epoch):
            first = (s * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))
