"""Clinical acquisition variety for the HRCT generators (``PhantomOptions(acquisition="clinical")``, generators 2
and 3): what real chest CTs show and the default phantoms lack (issue 26, docs/acquisition.md).

- Kernels by their modulation transfer function (MTF) and noise power spectrum (NPS), not by a fixed Gaussian:
  ``soft`` (B/STANDARD), ``sharp`` (B50-60) and ``lung`` (L/B70: edge-enhancing, the kernel chest HRCT is most
  often read with). Measured on the real pair Lung-PET-CT-Dx A0001 (same acquisition, 5 mm): the local noise SD
  in uniform soft tissue is 10 HU with kernel B and 62 HU with kernel L; kernel L puts about 10-13 % of normal
  lung below -950 HU. The ``lung`` kernel draws noise of 35-80 HU so the phantoms cover that.
- Noise with a CT noise texture: white noise shaped by ``sqrt(f) * MTF(f)`` in the axial plane (the filtered
  back-projection NPS ``~ f * MTF(f)^2``: no power at zero frequency, a peak at the kernel's mid frequencies), the
  soft kernel's grain coarse, the lung kernel's fine; a low-dose share of cases has 1.4-2x the SD.
- Slices 0.625-5 mm (versions 2 and 3 draw only 0.625-1.25 mm by default).
- A supine antero-posterior density gradient of 20-90 HU across the lung (version 2/3 default: 28 HU).
- Vessels at real density: radii scaled 0.75-0.95 of version 1 (default 0.6), which brings the share of lung
  voxels above -500 HU from about 0.9 % towards the 1.6-3.8 % of real CTs.

Every draw here comes from its own random stream ``SeedSequence(seed, spawn_key=(index, STREAM))``, so the
default phantoms (``acquisition="standard"``) keep their bytes and a clinical case keeps its anatomy and disease.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ACQUISITIONS = ("standard", "clinical")
STREAM = 26  # spawn key of the clinical draws (issue 26)
# fc: 1/sqrt(e) frequency of the Gaussian MTF core (lp/mm); enhance: edge enhancement (1 + e (f/fc)^2);
# noise: SD range in HU (uniform soft tissue); p: share of cases
KERNELS_CLINICAL = {
    "soft": {"fc": (0.26, 0.38), "enhance": (0.0, 0.0), "noise": (8.0, 30.0), "p": 0.4},
    "sharp": {"fc": (0.42, 0.58), "enhance": (0.2, 0.5), "noise": (18.0, 45.0), "p": 0.25},
    "lung": {"fc": (0.65, 0.95), "enhance": (0.6, 1.2), "noise": (35.0, 80.0), "p": 0.35},
}
THICKNESSES = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
THICKNESS_P = (0.15, 0.2, 0.15, 0.1, 0.15, 0.1, 0.15)
LOW_DOSE_P, LOW_DOSE_FACTOR = 0.3, (1.4, 2.0)
GRAVITY_HU = (20.0, 90.0)
VESSEL_SCALE = (0.75, 0.95)
FLOOR = -1024.0
MAX_NOISE = 150.0


@dataclass(frozen=True)
class Acquisition:
    """One case's clinical protocol draw."""

    kernel: str
    fc: float
    enhance: float
    noise_hu: float
    low_dose: bool
    thickness: float
    gravity_hu: float
    vessel_scale: float

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def draw(seed: int, index: int, kernel: str = "mixed", noise: float | None = None) -> Acquisition:
    """The clinical protocol of case ``(seed, index)``; ``kernel`` (soft | sharp | lung) and ``noise`` fix those."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index), STREAM)))
    names = list(KERNELS_CLINICAL)
    k_draw = str(rng.choice(names, p=[KERNELS_CLINICAL[n]["p"] for n in names]))
    u = rng.uniform(size=4)
    low = bool(rng.uniform() < LOW_DOSE_P)
    f_low = float(rng.uniform(*LOW_DOSE_FACTOR))
    t = float(rng.choice(THICKNESSES, p=THICKNESS_P))
    g = float(rng.uniform(*GRAVITY_HU))
    vs = float(rng.uniform(*VESSEL_SCALE))
    k = kernel if kernel in KERNELS_CLINICAL else k_draw
    kp = KERNELS_CLINICAL[k]
    fc = kp["fc"][0] + (kp["fc"][1] - kp["fc"][0]) * u[0]
    enh = kp["enhance"][0] + (kp["enhance"][1] - kp["enhance"][0]) * u[1]
    sd = kp["noise"][0] + (kp["noise"][1] - kp["noise"][0]) * u[2]
    if low:
        sd *= f_low
    sd = float(noise) if noise is not None else min(sd, MAX_NOISE)
    return Acquisition(k, round(float(fc), 4), round(float(enh), 4), round(float(sd), 2), low, t, round(g, 2),
                       round(vs, 4))


def transfer(shape_yx: tuple[int, int], spacing: float, fc: float, enhance: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial rfft2 filters ``(mtf, noise_shape)``: the kernel's MTF and the NPS amplitude ``sqrt(f) * MTF``."""
    fy = np.fft.fftfreq(shape_yx[0], d=spacing)[:, None]
    fx = np.fft.rfftfreq(shape_yx[1], d=spacing)[None, :]
    f = np.hypot(fy, fx)
    x2 = (f / fc) ** 2
    mtf = np.exp(-0.5 * x2) * (1.0 + enhance * x2)
    return mtf.astype(np.float32), (np.sqrt(f) * mtf).astype(np.float32)


def ct_noise(shape: tuple[int, int, int], spacing: float, fc: float, enhance: float, sd: float,
             rng: np.random.Generator) -> np.ndarray:
    """Noise ``(nz, ny, nx)`` float32 with the NPS of a kernel (independent slices), scaled to SD ``sd``."""
    _, shaping = transfer(shape[1:], spacing, fc, enhance)
    out = np.empty(shape, np.float32)
    for z in range(shape[0]):
        w = rng.standard_normal(shape[1:], dtype=np.float32)
        out[z] = np.fft.irfft2(np.fft.rfft2(w) * shaping, s=shape[1:])
    out *= sd / max(float(out[:, ::4, ::4].std()), 1e-6)
    return out


def blur(img: np.ndarray, spacing: float, fc: float, enhance: float) -> np.ndarray:
    """Apply the kernel's MTF slice by slice (in place on a float32 ``(nz, ny, nx)`` array) and return it."""
    mtf, _ = transfer(img.shape[1:], spacing, fc, enhance)
    for z in range(img.shape[0]):
        img[z] = np.fft.irfft2(np.fft.rfft2(img[z] + 1000.0) * mtf, s=img.shape[1:]) - 1000.0
    return img


def acquire(grid, hu_fine: np.ndarray, acq: Acquisition, rng: np.random.Generator,
            air_offset: float = 0.0) -> np.ndarray:
    """Fine-grid true HU -> reconstructed CT ``(nz, ny, nx)`` int16: slice averaging, kernel MTF, kernel NPS."""
    a = hu_fine.reshape(grid.nz, grid.k, grid.ny, grid.nx).mean(1, dtype=np.float32) if grid.k > 1 \
        else hu_fine.astype(np.float32, copy=True)
    img = blur(a, grid.spacing, acq.fc, acq.enhance)
    img += ct_noise(img.shape, grid.spacing, acq.fc, acq.enhance, acq.noise_hu, rng)
    if air_offset:
        img += np.float32(air_offset)
    return np.clip(np.rint(img), FLOOR + air_offset, 3071).astype(np.int16)
