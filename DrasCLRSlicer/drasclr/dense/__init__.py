"""Dense emphysema-subtype prediction on the DrasCLR encoder: the segmenter, inference, and training.

The public inference entry is :func:`predict` (one call: CT + lungs + model -> probabilities with their grid and
the subtype map on the CT's grid)."""

from .predict import DensePrediction, ProbabilityMap, predict

__all__ = ["DensePrediction", "ProbabilityMap", "predict"]
