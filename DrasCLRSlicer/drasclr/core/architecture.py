"""Torch-free constants of the network and its pretraining, shared by the model code and the command line (so
``drasclr --help`` lists the choices without importing torch)."""

DEFAULT_CHANNELS = (8, 8, 16, 32, 64, 128, 128)  # the DrasCLR encoder's channels per stage
PATCH_SIZE = 32  # voxels per side of a 1 mm lung patch
PRETRAIN_METHODS = ("drasclr", "voco", "volfusion")
