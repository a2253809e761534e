"""Every task's settings and the names its options take: the one light module the command line imports to build
its parser (the task modules import torch and MONAI; `meddiff --help` should not wait for them)."""

from __future__ import annotations

from dataclasses import dataclass

from .settings_checks import check_sampling

NOISE_MODELS = ("gaussian", "rician", "poisson")  # tasks/noise.py: the noise each model of a degraded scan adds
ACCELERATIONS = (2, 4, 6, 8)  # reconstruction: k-space undersampling factors the task command offers


DENOISE_SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class DenoiseSettings:
    noise_model: str = "gaussian"
    level: float | None = None  # noise std in [0, 1] units; None: estimate it per image
    sampler: str = "ddim"  # or "ddpm" (ancestral, averaged over `samples`)
    steps: int = 20
    samples: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_sampling("denoising", self.sampler, DENOISE_SAMPLERS, steps=self.steps, samples=self.samples,
                       batch_size=self.batch_size)
        if self.level is not None and self.level <= 0:
            raise ValueError(f"noise level must be > 0, got {self.level}")


SEGMENT_SAMPLERS = ("ddim", "ddpm", "dpm++2m")


@dataclass(frozen=True)
class SegmentSettings:
    samples: int = 8  # ensemble size
    sampler: str = "ddim"
    steps: int = 25
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_sampling("segmentation", self.sampler, SEGMENT_SAMPLERS, samples=self.samples, steps=self.steps,
                       batch_size=self.batch_size)


FACTORS = (2, 4, 8)
SR_SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class SuperResolveSettings:
    factor: int = 2
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.85  # DDIM eta: some fresh noise each step lets the projection's high frequencies settle
    noise_level: float = 0.0  # std of the noise in y in model units; > 0 turns on joint denoising
    samples: int = 1  # posterior samples averaged (towards the posterior mean: higher PSNR, less texture)
    start_t: float = 1.0  # < 1: start from the bicubic image noised to this time (SDEdit-style), not pure noise
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.factor not in FACTORS:
            raise ValueError(f"factor must be 2, 4 or 8, got {self.factor}")
        check_sampling("super-resolution", self.sampler, SR_SAMPLERS, steps=self.steps, samples=self.samples,
                       batch_size=self.batch_size)
        if not 0.0 < self.start_t <= 1.0:
            raise ValueError(f"start_t must be in (0, 1], got {self.start_t}")
        if self.noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {self.noise_level}")


TRANSLATE_SAMPLERS = ("ddim", "ddpm", "dpm++2m")


@dataclass(frozen=True)
class TranslateSettings:
    samples: int = 4  # K draws averaged
    sampler: str = "ddim"
    steps: int = 25
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_sampling("translation", self.sampler, TRANSLATE_SAMPLERS, samples=self.samples, steps=self.steps,
                       batch_size=self.batch_size)


MASK_KINDS = ("random", "equispaced")
RECONSTRUCT_SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class ReconstructSettings:
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.85
    samples: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_sampling("reconstruction", self.sampler, RECONSTRUCT_SAMPLERS, steps=self.steps, samples=self.samples,
                       batch_size=self.batch_size)


METHODS = ("anoddpm", "multi-depth", "pddpm", "counterfactual")
# which differences from the healthy reconstruction count: both signs, or only where the image is brighter (lesions
# hyperintense on FLAIR / T2 / contrast-enhanced T1, as Baur et al. 2021 score them) or darker than healthy
RESIDUALS = ("absolute", "brighter", "darker")


@dataclass(frozen=True)
class AnomalySettings:
    method: str = "anoddpm"
    depth: float = 0.5  # t*: the fraction of the diffusion the image is noised to (AnoDDPM, pDDPM) or encoded to
    depths: tuple[float, ...] = (0.25, 0.5, 0.75)  # multi-depth: the depths whose maps are averaged
    steps: int = 30  # sampler steps from the depth down to 0
    guidance: float = 3.0  # classifier-free guidance towards the healthy class (class-conditional models)
    healthy_class: str = "healthy"
    repeats: int = 1  # AnoDDPM, multi-depth, pDDPM: noise draws per image (per depth), their errors averaged
    patches: int = 2  # pDDPM: patches per side (patches**2 reconstructions per image)
    top_fraction: float = 0.01  # image score: mean of the map's highest pixels
    smoothing: int = 3  # mean filter width for the map (1 = none)
    median: int = 1  # median filter width for the map, before the mean filter (1 = none)
    foreground_level: float = 0.05  # pixels darker than this ([0, 1] units) are background, never scored (0 = off)
    residual: str = "absolute"  # RESIDUALS: which sign of (image - healthy) is scored
    channels: tuple[str, ...] = ()  # the image channels whose errors are scored (empty: every one an example has)
    batch_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {self.residual!r}")
        if self.method not in METHODS:
            raise ValueError(f"anomaly method must be one of {METHODS}, got {self.method!r}")
        if not all(0.0 < d <= 1.0 for d in (self.depth, *self.depths)) or not self.depths:
            raise ValueError(f"depth and depths must be in (0, 1], got {self.depth} and {list(self.depths)}")
        check_sampling("anomaly detection", None, (), steps=self.steps, repeats=self.repeats,
                       batch_size=self.batch_size)
        for name in ("smoothing", "median"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be an odd width >= 1, got {getattr(self, name)}")
        if self.patches < 1:
            raise ValueError(f"patches must be >= 1 per side, got {self.patches}")
        if not 0.0 <= self.foreground_level < 1.0:
            raise ValueError(f"foreground level must be in [0, 1), got {self.foreground_level}")

    def scored_depths(self) -> tuple[float, ...]:
        return self.depths if self.method == "multi-depth" else (self.depth,)
