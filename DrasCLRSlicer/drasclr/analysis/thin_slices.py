"""Thin slices analysed as slabs: a sub-millimetre scan's anatomy and subtype map on a grid of about 2 mm slabs,
its densitometry on the native slices, when its slices hold no detail finer than the slab (``--thin-slices auto``,
the default), or always (``slabs``), or never (``native``).

A thin-slice HRCT (0.5-0.9 mm slices, 300-700 of them) holds three to four times the voxels of the same lung at
2-2.5 mm. On the slab grid consecutive slices are averaged into slabs of about :data:`SLAB_MM` (the thicker
reconstruction a scanner would make; slabs ``auto`` chose are sampled at their centre instead: :meth:`Slabs.down`),
and the lung mask, harmonization, registration, lobes, subtype map,
uncertainty and review queue run on the slabs: the time follows the lung's volume, not the slice count. What is
per voxel in the outputs comes back to the native slices: every native slice takes the labels of its slab (the maps
are written on the CT's own grid), a given lobe file keeps its own boundaries, and the contract densitometry
(LAA-950, Perc15, mean HU, volumes) is measured on the native voxels under those masks. The harmonized_*
densitometry and the density rule's voxel counts are the slab grid's.

Averaging costs accuracy where the slices hold real thin-slice detail, measured on held-out thin-slice phantoms
(0.625 mm, 4 + 4 cases never trained or tuned on, demo-v5): pooled macro Dice over CLE/PSE/PLE 0.758 -> 0.737
(version 3) and 0.871 -> 0.850 (version 2) with 2 mm slabs; the averaging smooths the texture the model reads.
It costs nothing where the slices are finer than the detail they hold: a scan reconstructed with overlap (slices
thicker than their spacing) or resampled from thicker slices (lidc_idri_0001 at 533 slices: subtype agreement
0.997 with the native run). ``auto`` tells the two apart by measuring (:func:`z_detail`): the share of the lung's
cranio-caudal detail power above the slab grid's Nyquist frequency; under :data:`Z_DETAIL_LIMIT` the slabs lose
nothing the slices hold, and the scan is analysed on them; otherwise natively. The time and the measurements:
docs/inference_speed.md ("Thin slices as slabs"). Scans with slices of :data:`SLABS_BELOW_MM` or more are always read
natively.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.image import CTImage

MODES = ("auto", "native", "slabs")
SLABS_BELOW_MM = 1.0  # slices at least this thick are analysed as they are
SLAB_MM = 2.0  # the slab thickness aimed at: round(SLAB_MM / slice) slices per slab
# auto: slabs when under this share of the lung's cranio-caudal detail power lies above the slab grid's Nyquist
# frequency. Measured (docs/inference_speed.md): true 0.625 mm phantom slices 0.30-0.42, slices 1.25 mm thick every
# 0.625 mm 0.17-0.23, real scans resampled from 2.5-8 mm to 0.5-0.8 mm slices 0.002-0.022.
Z_DETAIL_LIMIT = 0.05
Z_WINDOW_MM = 15.0  # the cranio-caudal runs the spectrum is measured over
Z_COLUMN_MM = 3.0  # in-plane spacing of the columns measured
PARENCHYMA_HU = (-1024, -500)  # a run is measured where all its voxels lie strictly between these (no vessel, no wall)


@dataclass(frozen=True)
class Slabs:
    """``k`` consecutive native slices (array ``axis``) per slab; ``native``: the CT as read (its grid)."""

    native: CTImage
    axis: int
    k: int
    z_detail: float | None = None  # auto: :func:`z_detail` of the scan (None: slabs asked for)

    @property
    def count(self) -> int:
        """Native slices."""
        return self.native.array.shape[self.axis]

    @property
    def slabs(self) -> int:
        """Slabs (the last one may hold fewer than ``k`` slices)."""
        return -(-self.count // self.k)

    def middle(self, j):
        """The native slice at the centre of slab(s) ``j`` (the last slab's last slice at most)."""
        return np.minimum(np.asarray(j) * self.k + (self.k - 1) // 2, self.count - 1)

    @property
    def slice_mm(self) -> float:
        return self.native.spacing_zyx[self.axis]

    def to_json(self) -> dict:
        """What stats.json records (``analysis_grid``)."""
        measured = {} if self.z_detail is None else {"mode": "auto", "z_detail": self.z_detail,
                                                          "z_detail_limit": Z_DETAIL_LIMIT}
        return {"kind": "slabs", "slices_per_slab": self.k, "native_slice_mm": round(self.slice_mm, 4),
                "slab_mm": round(self.slice_mm * self.k, 4), "native_slices": self.count,
                "slabs": self.slabs, **measured,
                "slab_values": "mean of its slices" if self.z_detail is None else "its centre (middle slice(s))",
                "native": "labels, uncertainty and review units copied from each slice's slab; contract "
                          "densitometry on the native voxels; harmonized_* and the density rule's voxel counts on "
                          "the slabs"}

    # --- down: the slab grid ------------------------------------------------------------------------------
    def grid(self, array: np.ndarray) -> CTImage:
        """``array`` (slab shape) on the slab grid: spacing ``k`` slices along ``axis``, each slab's origin at the
        centre of its first ``k`` native slices."""
        n = self.native
        spacing = list(n.spacing)
        spacing[2 - self.axis] *= self.k
        shift = np.zeros(3)
        shift[self.axis] = (self.k - 1) / 2.0
        origin = n.zyx_to_lps(shift)[0]
        return CTImage(array, tuple(spacing), tuple(origin), n.direction)

    def down(self, image: CTImage | None = None) -> CTImage:
        """Each slab's value (``image``: the native CT by default, or another image on its grid), in ``image``'s
        dtype (integers rounded): the mean of its slices (the last slab holds what is left), or, for slabs ``auto``
        chose (:attr:`z_detail` set: the slices hold no detail finer than the slabs), the value at its centre (its
        middle slice, or the mean of its two middle ones): such a scan is band-limited below the slab grid's Nyquist
        frequency, so sampling it keeps what it holds, where averaging would blur it once more."""
        a = np.moveaxis((image or self.native).array, self.axis, 0)
        out = np.empty((self.slabs, *a.shape[1:]), a.dtype)
        acc = np.empty(a.shape[1:], np.float32)
        centre = self.z_detail is not None
        for j in range(self.slabs):
            if centre:  # middle() and, for an even k, the slice after it
                part = a[int(self.middle(j)):min(j * self.k + self.k // 2, self.count - 1) + 1]
            else:
                part = a[j * self.k:(j + 1) * self.k]
            np.add.reduce(part, axis=0, dtype=np.float32, out=acc)
            acc /= len(part)
            if np.issubdtype(a.dtype, np.integer):
                np.rint(acc, out=acc)
            out[j] = acc
        return self.grid(np.moveaxis(out, 0, self.axis))

    def pick(self, image: CTImage) -> CTImage:
        """A native-grid labelmap (a given lobe file) on the slab grid: each slab takes its middle slice."""
        return self.grid(np.ascontiguousarray(np.take(image.array, self.middle(np.arange(self.slabs)),
                                                      axis=self.axis)))

    # --- up: back to the native slices ----------------------------------------------------------------------
    def up(self, image: CTImage | None) -> CTImage | None:
        """A slab-grid image on the native grid: every native slice takes its slab's values."""
        if image is None:
            return None
        a = np.repeat(image.array, self.k, axis=self.axis)
        a = a[(slice(None),) * self.axis + (slice(0, self.count),)]
        return self.native.with_array(np.ascontiguousarray(a))

    def native_weights(self) -> np.ndarray:
        """Native slices per slab (``k``, the last one what is left)."""
        w = np.full(self.slabs, self.k, np.int64)
        w[-1] = self.count - self.k * (self.slabs - 1)
        return w

    def up_units(self, units: list[dict], slab_labels: CTImage) -> list[dict]:
        """Review units (:func:`drasclr.analysis.review.build_queue` on the slab grid) in native voxels: index
        boxes and centres on the native slices, LPS from them, voxels counted over the native slices (``score``
        scaled alike; fractions unchanged)."""
        from .review import unit_place

        if not units:
            return units
        a = np.moveaxis(slab_labels.array, self.axis, 0)
        w = self.native_weights()
        ranks = len(units)
        # native voxels per unit: each slab's count times its native slices
        per_slab = np.stack([np.bincount(a[j].ravel(), minlength=ranks + 1)[:ranks + 1] for j in range(a.shape[0])])
        native_counts = (per_slab * w[:, None]).sum(0)
        out = []
        for u in units:
            c = np.array(u["centre_zyx"])
            c[self.axis] = self.middle(c[self.axis])
            lo, hi = np.array(u["bbox_zyx"][0]), np.array(u["bbox_zyx"][1])
            lo[self.axis] *= self.k
            hi[self.axis] = min(hi[self.axis] * self.k, self.count)
            n = int(native_counts[u["rank"]])
            v = {**u, **unit_place(self.native, c, lo, hi), "voxels": n,
                 "volume_ml": round(n * self.native.voxel_volume_ml, 3)}
            if u.get("voxels"):
                v["score"] = round(u["score"] * n / u["voxels"], 2)
            out.append(v)
        return out


def z_detail(ct: CTImage, axis: int, k: int) -> float | None:
    """The share of the cranio-caudal detail power of ``ct``'s lung above the Nyquist frequency of slabs of ``k``
    slices: what averaging them would remove. Runs of :data:`Z_WINDOW_MM` along ``axis`` on columns
    :data:`Z_COLUMN_MM` apart in-plane, wherever the whole run is lung parenchyma (or air); each run's mean is taken
    off and it is Hann-windowed; their power spectra are summed (less the white noise of rounding to integer HU), and
    the share of the power above ``1 / (2 k slice)`` is returned. About 0.3-0.4 for true sub-millimetre slices (their
    noise and texture change from slice to slice), near 0 for slices interpolated from thicker ones. None: no run to
    measure."""
    s = float(ct.spacing_zyx[axis])
    run = max(8, 2 * int(round(Z_WINDOW_MM / s / 2)))
    plane = [i for i in range(3) if i != axis]
    steps = [max(1, int(round(Z_COLUMN_MM / ct.spacing_zyx[i]))) for i in plane]
    cols = [slice(None)] * 3
    for i, st in zip(plane, steps):
        cols[i] = slice(st // 2, None, st)
    a = np.moveaxis(ct.array[tuple(cols)], axis, 0)
    a = a.reshape(a.shape[0], -1)
    if a.shape[0] < run:
        return None
    hann = np.hanning(run).astype(np.float32)
    power = np.zeros(run // 2 + 1)
    columns = 0
    lo, hi = PARENCHYMA_HU
    for z0 in range(0, a.shape[0] - run + 1, run // 2):
        w = a[z0:z0 + run]
        inside = ((w > lo) & (w < hi)).all(0)
        if not inside.any():
            continue
        w = w[:, inside].astype(np.float32)
        w -= w.mean(0)
        power += (np.abs(np.fft.rfft(w * hann[:, None], axis=0)) ** 2).sum(1)
        columns += w.shape[1]
    # integer HU: rounding adds white noise of variance 1/12, the same in every frequency bin; taken off, so that a
    # scan interpolated from thick slices (all its fine detail that rounding) is not read as detailed
    if np.issubdtype(ct.array.dtype, np.integer):
        power = np.maximum(power - columns * float((hann ** 2).sum()) / 12.0, 0.0)
    f = np.fft.rfftfreq(run, s)
    band = f > 0  # all the detail the run holds (its mean taken off)
    total = power[band].sum()
    if total <= 0:
        return None
    return round(float(power[band & (f > 1.0 / (2 * k * s))].sum() / total), 4)


def decide(ct: CTImage, mode: str = "auto") -> tuple[Slabs | None, dict | None]:
    """The slabs ``ct`` is analysed on (None: natively), and what stats.json records of a choice ``auto`` measured
    for a native run (None otherwise; a slab run records :meth:`Slabs.to_json`). Natively: ``native``, slices of
    :data:`SLABS_BELOW_MM` or more, too few slices for three slabs, or ``auto`` with detail finer than the slabs."""
    if mode not in MODES:
        raise ValueError(f"thin slices {mode!r}: expected one of {MODES}")
    if mode == "native":
        return None, None
    axis = ct.superior_axis()[0]
    s = ct.spacing_zyx[axis]
    if s >= SLABS_BELOW_MM or s <= 0:
        return None, None
    k = int(np.floor(SLAB_MM / s + 0.5))
    if k < 2 or ct.array.shape[axis] < 3 * k:
        return None, None
    if mode == "slabs":
        return Slabs(ct, axis, k), None
    detail = z_detail(ct, axis, k)
    if detail is not None and detail < Z_DETAIL_LIMIT:
        return Slabs(ct, axis, k, detail), None
    return None, {"kind": "native", "mode": "auto", "z_detail": detail, "z_detail_limit": Z_DETAIL_LIMIT,
                  "native_slice_mm": round(float(s), 4), "slab_mm": round(float(s) * k, 4),
                  "native": "the slices hold detail finer than the slabs (z_detail at or above the limit, or not "
                            "measurable): every stage on the native slices"}


def plan(ct: CTImage, mode: str = "auto") -> Slabs | None:
    """The slabs ``ct`` is analysed on, or None: :func:`decide`'s first answer."""
    return decide(ct, mode)[0]


__all__ = ["MODES", "SLABS_BELOW_MM", "SLAB_MM", "Slabs", "Z_DETAIL_LIMIT", "decide", "plan", "z_detail"]
