"""DrasCLR self-supervised pretraining: patch cache, location-aware sampler, MoCo objective, DDP trainer.

Public API::

    from drasclr.pretrain import PretrainConfig, pretrain            # the training run (also `drasclr pretrain`)
    from drasclr.pretrain import build_patch_cache, find_cases, PatchCache, encode_cache
    from drasclr.pretrain import LocationBatchSampler, PatchPairs, DrasCLRObjective, PatchAugment, normalise_hu
"""

from .augment import PatchAugment, normalise_hu
from .data import Case, PatchCache, PatchPairs, build_patch_cache, encode_cache, find_cases
from .objective import DrasCLRObjective
from .sampler import LocationBatchSampler
from .trainer import PretrainConfig, pretrain

__all__ = ["Case", "DrasCLRObjective", "LocationBatchSampler", "PatchAugment", "PatchCache", "PatchPairs",
           "PretrainConfig", "build_patch_cache", "encode_cache", "find_cases", "normalise_hu", "pretrain"]
