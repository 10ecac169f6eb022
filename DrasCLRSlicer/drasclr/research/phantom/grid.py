"""The voxel grid of one phantom case: output grid (what is written) and the fine grid it is simulated on.

Physical frame = LPS millimetres with the body axis through x = y = 0: +x patient left, +y posterior, +z superior.
Arrays are ``[z, y, x]``; z index increasing = superior, y index increasing = posterior, x index increasing = left.
The fine grid has the same x/y samples and ``k`` sub-slices per output slice (slice-thickness partial volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.image import CTImage


@dataclass(frozen=True)
class Grid:
    nx: int
    ny: int
    nz: int
    spacing: float  # in-plane mm
    thickness: float  # slice thickness = slice spacing, mm
    k: int  # fine sub-slices per output slice
    y_shift: float = 0.0  # body centre's offset from the FOV centre along y (mm)
    z_top: float = 0.0  # z (mm) of the top edge of the top slice

    @property
    def x(self) -> np.ndarray:
        return ((np.arange(self.nx) - (self.nx - 1) / 2.0) * self.spacing).astype(np.float32)

    @property
    def y(self) -> np.ndarray:
        return ((np.arange(self.ny) - (self.ny - 1) / 2.0) * self.spacing + self.y_shift).astype(np.float32)

    @property
    def z(self) -> np.ndarray:
        """Output slice centres, increasing (superior)."""
        bottom = self.z_top - self.nz * self.thickness
        return (bottom + (np.arange(self.nz) + 0.5) * self.thickness).astype(np.float32)

    @property
    def dz_fine(self) -> float:
        return self.thickness / self.k

    @property
    def zf(self) -> np.ndarray:
        """Fine sub-slice centres, increasing; output slice s averages fine slices ``s*k .. s*k+k-1``."""
        bottom = self.z_top - self.nz * self.thickness
        return (bottom + (np.arange(self.nz * self.k) + 0.5) * self.dz_fine).astype(np.float32)

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        return (self.nz * self.k, self.ny, self.nx)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz, self.ny, self.nx)

    def fine_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.zf, self.y, self.x)

    def fine_spacing_zyx(self) -> np.ndarray:
        return np.array([self.dz_fine, self.spacing, self.spacing])

    def image(self, array: np.ndarray) -> CTImage:
        """Wrap an output-grid array ``(nz, ny, nx)`` with this grid's LPS geometry (identity direction)."""
        origin = (float(self.x[0]), float(self.y[0]), float(self.z[0]))
        return CTImage(array, (self.spacing, self.spacing, self.thickness), origin, np.eye(3))
