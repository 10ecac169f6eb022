"""The one place where LPS (engine, ITK, DICOM) and RAS (Slicer/MRML) meet. Pure numpy, no slicer import.

An engine :class:`~drasclr.core.image.CTImage` maps a voxel index ``(i, j, k)`` to the LPS point
``origin + direction @ diag(spacing) @ (i, j, k)``. Slicer's volume nodes map it to RAS. RAS and LPS differ by
the sign of the first two axes, so::

    IJKToRAS = FLIP @ IJKToLPS,   FLIP = diag(-1, -1, 1, 1)

which, split the way a volume node stores it, is: the same spacing, RAS origin = ``FLIP3 @ origin`` and RAS
directions = ``FLIP3 @ direction`` (columns are the i, j, k axes). Negating a float is exact, so the conversion
is lossless both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drasclr.core.image import index_to_physical

FLIP3 = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS for points and directions (its own inverse)
FLIP4 = np.diag([-1.0, -1.0, 1.0, 1.0])  # the same for homogeneous 4x4 matrices


@dataclass(frozen=True)
class RASGeometry:
    """A volume node's geometry as MRML stores it: spacing (i, j, k), RAS origin, 3x3 RAS directions
    (column c = direction of index axis c)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    directions: np.ndarray

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` to RAS millimetres."""
        return index_to_physical(self.directions, self.spacing, self.origin)


def lps_to_ras_points(points: np.ndarray) -> np.ndarray:
    """``(N, 3)`` LPS points -> ``(N, 3)`` RAS points (and back: the map is its own inverse)."""
    return np.atleast_2d(np.asarray(points, dtype=float)) @ FLIP3


ras_to_lps_points = lps_to_ras_points


def ras_geometry(spacing, origin_lps, direction_lps) -> RASGeometry:
    """ITK/engine geometry (LPS) -> the RAS geometry a volume node stores."""
    return RASGeometry(
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(v) for v in FLIP3 @ np.asarray(origin_lps, dtype=float)),
        directions=FLIP3 @ np.asarray(direction_lps, dtype=float).reshape(3, 3),
    )


def lps_geometry(geometry: RASGeometry) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """RAS geometry of a volume node -> ``(spacing, origin, direction)`` in ITK/engine LPS convention."""
    return (
        tuple(float(s) for s in geometry.spacing),
        tuple(float(v) for v in FLIP3 @ np.asarray(geometry.origin, dtype=float)),
        FLIP3 @ np.asarray(geometry.directions, dtype=float),
    )


def ijk_to_ras_matrix(ijk_to_lps: np.ndarray) -> np.ndarray:
    """4x4 IJK-to-LPS (``CTImage.ijk_to_lps``) -> 4x4 IJK-to-RAS."""
    return FLIP4 @ np.asarray(ijk_to_lps, dtype=float)
