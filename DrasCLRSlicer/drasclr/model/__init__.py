"""DrasCLR models: the location-conditioned encoder, its heads, and safetensors model files.

Public API::

    from drasclr.model import DrasCLREncoder, CondConv3d, ProjectionHead, save_model, load_model
    enc = DrasCLREncoder()                 # forward(x (B,1,32,32,32), loc (B,3)) -> (B,128)
    feats = enc.forward_features(x, loc)   # 7 stage maps, (B,8,32^3) ... (B,128,1^3)
    save_model(enc, "out/model.safetensors", {"note": "..."}); enc2, card = load_model("out/model.safetensors")
"""

from .checkpoint import load_model, read_card, register_architecture, save_model
from .condconv import CondConv3d, set_condconv_mode
from .encoder import DEFAULT_CHANNELS, PATCH_SIZE, DrasCLREncoder, PlainEncoder
from .heads import ProjectionHead

__all__ = ["CondConv3d", "DEFAULT_CHANNELS", "DrasCLREncoder", "PATCH_SIZE", "PlainEncoder", "ProjectionHead",
           "load_model", "read_card", "register_architecture", "save_model", "set_condconv_mode"]
