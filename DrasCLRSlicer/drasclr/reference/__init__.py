"""The reference classifier ``cip-lh``: local HU histograms of axial windows, kNN against real expert-labelled
patches (after the Chest Imaging Platform's method). Torch-free; reads 3-D CTs, single slices, sparse series."""
