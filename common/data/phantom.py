"""A deterministic digital brain phantom: the built-in data set for the demo and for fast tests.

Anatomy (scalp, skull, CSF with ventricles, a folded grey-matter ribbon, white matter) is drawn on a randomly
and smoothly deformed grid; MR-like contrasts (t1, t2, flair) and a CT-like one (HU) come from per-tissue
values; an optional lesion comes with its mask and makes the example's class "lesion". Each virtual site has
its own scanner: intensity scale, smooth bias field and noise level, as real multi-site data does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..schema import ChannelSchema, Example
from .problems import LoadedData

CHANNELS = ("t1", "t2", "flair", "ct", "mask")
CLASS_NAMES = ("healthy", "lesion")
SCHEMA = ChannelSchema(CHANNELS, CLASS_NAMES, mask_labels=1)

BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, LESION = range(7)
# Per-tissue values in the order above: MR in arbitrary units, CT in Hounsfield units.
TISSUE_VALUES = {
    "t1": (0.0, 0.75, 0.10, 0.15, 0.55, 0.80, 0.35),
    "t2": (0.0, 0.55, 0.05, 1.00, 0.65, 0.45, 0.90),
    "flair": (0.0, 0.60, 0.05, 0.10, 0.60, 0.45, 1.00),
    "ct": (-1000.0, -50.0, 1200.0, 8.0, 38.0, 28.0, 55.0),
}


@dataclass(frozen=True)
class ScannerEffect:
    """One site's scanner: MR intensity scale, bias-field strength, relative MR noise, CT noise in HU."""

    intensity_scale: float = 1.0
    bias_strength: float = 0.0
    noise_std: float = 0.01
    ct_noise_hu: float = 5.0


def site_scanner(site: int, seed: int = 0) -> ScannerEffect:
    """A different but fixed scanner for each site (site 0 of seed 0 is close to ideal)."""
    rng = np.random.default_rng([seed, site, 7919])
    if site == 0:
        return ScannerEffect(1.0, 0.05, 0.01, 5.0)
    return ScannerEffect(float(rng.uniform(0.7, 1.4)), float(rng.uniform(0.05, 0.35)),
                         float(rng.uniform(0.01, 0.06)), float(rng.uniform(4.0, 20.0)))


def smooth_field(rng: np.random.Generator, grid: np.ndarray, frequency: float = 2.0, terms: int = 6) -> np.ndarray:
    """A smooth random field in about [-1, 1] over a coordinate grid (ndim, *shape): random Fourier features."""
    ndim = grid.shape[0]
    field = np.zeros(grid.shape[1:], dtype=np.float64)
    for _ in range(terms):
        w = rng.normal(0.0, frequency, size=ndim)
        field += np.cos(np.tensordot(w, grid, axes=1) + rng.uniform(0, 2 * np.pi))
    return field / np.sqrt(terms / 2)


def anatomy(rng: np.random.Generator, size: int, ndim: int, lesion: bool) -> np.ndarray:
    """Tissue label map of shape (size,)*ndim."""
    axes = [np.linspace(-1.0, 1.0, size)] * ndim
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # (ndim, *shape); last axis = columns (x)
    warped = grid + 0.05 * np.stack([smooth_field(rng, grid, 1.5) for _ in range(ndim)])
    radii = np.array([0.82, 0.95, 0.8][-ndim:]) * rng.uniform(0.92, 1.05, size=ndim)
    radii[-1] *= 0.9  # heads are longer front-to-back than wide
    r = np.sqrt(sum((warped[i] / radii[i]) ** 2 for i in range(ndim)))
    folds = 0.035 * smooth_field(rng, grid, 9.0, terms=10)
    tissue = np.full(r.shape, BACKGROUND, dtype=np.int8)
    tissue[r < 1.0] = SCALP
    tissue[r < 0.93] = SKULL
    tissue[r < 0.87] = CSF
    tissue[r < 0.84 + folds] = GREY
    tissue[r < 0.70 + 1.5 * folds] = WHITE
    for side in (-1.0, 1.0):  # lateral ventricles
        centre = np.zeros(ndim)
        centre[-1], centre[-2] = side * 0.13 * rng.uniform(0.8, 1.2), -0.05
        shape = np.array([0.25, 0.2, 0.07][-ndim:]) * rng.uniform(0.8, 1.25)
        v = sum(((warped[i] - centre[i]) / shape[i]) ** 2 for i in range(ndim))
        tissue[v < 1.0] = CSF
    if lesion:
        for _ in range(100):  # bounded search for a centre inside the brain, away from the ventricles
            centre = rng.uniform(-0.55, 0.55, size=ndim)
            index = tuple(int(round((c + 1) / 2 * (size - 1))) for c in centre)
            if tissue[index] in (GREY, WHITE):
                break
        radius = rng.uniform(0.08, 0.2)
        d = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(ndim)))
        irregular = radius * (1.0 + 0.3 * smooth_field(rng, grid, 5.0))
        tissue[(d < irregular) & np.isin(tissue, (GREY, WHITE, CSF))] = LESION
    return tissue


def render(tissue: np.ndarray, rng: np.random.Generator, scanner: ScannerEffect) -> dict[str, np.ndarray]:
    """Contrast images (float32) from a tissue map, with texture and the site's scanner effects."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in tissue.shape], indexing="ij"))
    bias = 1.0 + scanner.bias_strength * smooth_field(rng, grid, 1.0, terms=3)
    images = {}
    for name, values in TISSUE_VALUES.items():
        clean = np.asarray(values, dtype=np.float64)[tissue]
        head = tissue != BACKGROUND
        if name == "ct":
            texture = 3.0 * smooth_field(rng, grid, 12.0) * head
            image = clean + texture + rng.normal(0.0, scanner.ct_noise_hu, tissue.shape)
        else:
            texture = 0.03 * smooth_field(rng, grid, 12.0) * head
            signal = (clean + texture) * bias * scanner.intensity_scale
            sigma = scanner.noise_std * scanner.intensity_scale
            # MR magnitude images carry Rician noise: |signal + complex Gaussian|.
            image = np.hypot(signal + rng.normal(0, sigma, tissue.shape), rng.normal(0, sigma, tissue.shape))
        images[name] = image.astype(np.float32)
    images["mask"] = (tissue == LESION).astype(np.float32)
    return images


def phantom_example(index: int, *, size: int = 64, ndim: int = 2, site: int = 0, seed: int = 0,
                    lesion: bool | None = None, scanner: ScannerEffect | None = None) -> Example:
    """Example ``index`` of a site's phantom: (5, size, size) or (5, size, size, size), raw intensities."""
    if ndim not in (2, 3):
        raise ValueError(f"phantom ndim must be 2 or 3, got {ndim}")
    rng = np.random.default_rng([seed, site, index])
    lesion = bool(rng.random() < 0.5) if lesion is None else lesion
    tissue = anatomy(rng, size, ndim, lesion)
    images = render(tissue, rng, scanner or site_scanner(site, seed))
    image = np.stack([images[c] for c in CHANNELS])
    has_lesion = bool(images["mask"].any())
    return Example(image=image, available=np.ones(len(CHANNELS), dtype=bool), label=int(has_lesion),
                   patient=f"phantom-s{site}-{index:05d}", study=f"phantom-s{site}-{index:05d}",
                   source=f"phantom(seed={seed}, site={site}, index={index})",
                   spacing=(1.0,) * ndim, meta={"site": site})


def phantom_dataset(n: int, *, size: int = 64, ndim: int = 2, site: int = 0, seed: int = 0,
                    lesion_fraction: float = 0.5) -> LoadedData:
    """n phantom examples of one virtual site; the same arguments always give the same data."""
    rng = np.random.default_rng([seed, site, 104729])
    lesions = rng.random(n) < lesion_fraction
    examples = [phantom_example(i, size=size, ndim=ndim, site=site, seed=seed, lesion=bool(lesions[i]))
                for i in range(n)]
    return LoadedData(SCHEMA, examples, [], root=f"phantom(seed={seed}, site={site})", format="phantom")
