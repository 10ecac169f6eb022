"""Self-supervised pretraining: DrasCLR (patch cache, location-aware sampler, MoCo objective), VoCo and volume
fusion (volume cache), one DDP trainer.

Public API::

    from drasclr.pretrain import PretrainConfig, pretrain            # the training run (also `drasclr pretrain`)
    pretrain(PretrainConfig(data=..., out=..., method="voco"))       # METHODS = ("drasclr", "voco", "volfusion")
    from drasclr.pretrain import VolumeCache, build_volume_cache, VoCoObjective, VolFusionObjective
    from drasclr.pretrain import build_patch_cache, find_cases, PatchCache, encode_cache
    from drasclr.pretrain import LocationBatchSampler, PatchPairs, DrasCLRObjective, PatchAugment, normalise_hu
"""

from .augment import PatchAugment, normalise_hu
from .data import Case, PatchCache, PatchPairs, build_patch_cache, encode_cache, find_cases
from .objective import DrasCLRObjective
from .sampler import LocationBatchSampler
from .trainer import METHODS, PretrainConfig, pretrain
from .voco import VoCoObjective
from .volfusion import VolFusionObjective
from .volumes import VolumeCache, build_volume_cache

__all__ = ["METHODS", "Case", "DrasCLRObjective", "LocationBatchSampler", "PatchAugment", "PatchCache", "PatchPairs",
           "PretrainConfig", "VoCoObjective", "VolFusionObjective", "VolumeCache", "build_patch_cache",
           "build_volume_cache", "encode_cache", "find_cases", "normalise_hu", "pretrain"]
