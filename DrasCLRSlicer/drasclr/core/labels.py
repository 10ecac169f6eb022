"""Label values shared with tools, tests and the Slicer module (the contract in docs/contracts.md). uint8 everywhere."""

from __future__ import annotations

# Emphysema subtypes (subtypes.nii.gz)
OUTSIDE, NORMAL, CLE, PSE, PLE = 0, 1, 2, 3, 4
SUBTYPES = {NORMAL: "normal", CLE: "cle", PSE: "pse", PLE: "ple"}
NUM_CLASSES = 5  # including 0 (outside lung)

# Lung masks (lungmask R231 convention): 1 right lung, 2 left lung
RIGHT_LUNG, LEFT_LUNG = 1, 2

# Lobes (lungmask LTRCLobes numbering)
LOBES = {1: "left_upper_lobe", 2: "left_lower_lobe", 3: "right_upper_lobe", 4: "right_middle_lobe",
         5: "right_lower_lobe"}
LEFT_LOBES, RIGHT_LOBES = (1, 2), (3, 4, 5)

# Zones when no lobes are known: thirds of each lung's volume along the cranio-caudal axis
ZONES = {11: "left_upper_zone", 12: "left_middle_zone", 13: "left_lower_zone",
         14: "right_upper_zone", 15: "right_middle_zone", 16: "right_lower_zone"}
LEFT_ZONES, RIGHT_ZONES = (11, 12, 13), (14, 15, 16)

REGION_NAMES = {**LOBES, **ZONES}
