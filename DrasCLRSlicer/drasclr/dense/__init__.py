"""Dense emphysema-subtype prediction on the DrasCLR encoder: the segmenter, inference, and training."""
