"""What a run is made of, as typed specs with one source per default.

- ``ModelSpec``: the network and the diffusion it was trained for (schedule, parametrisation, noise). The weights
  mean nothing without it, so every checkpoint carries it.
- ``RecipeSpec``: how every site trains; all sites of a run must agree on it, so the coordinator sends it.
- ``RuntimeSpec``: a site's own hardware switches (precision, attention kernel, memory layout, compilation). They
  change speed, not the model; a site sets them in site.toml ``[runtime]`` and the coordinator never sends them.
- How long to train is not in any of these: ``meddiff train --steps`` for one site, ``[federation] local_steps``
  per round (server/settings.py).

Loaded with ``build_section``: unknown keys, wrong types and keys that moved are refused by name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from .config import ConfigError, build_section
from .diffusion.names import NOISES, SCHEDULE_NAMES, SWITCH_VALUES

PRECISIONS = ("auto", "fp32", "bf16")
DEVICE = re.compile(r"^(all|cpu|cuda(:\d+)?)$")
PREDICTIONS = ("v", "eps")
# keys that moved out of [train] in the redesign: where they are now
MOVED = {"schedule": "[model] schedule", "noise": "[model] noise", "precision": "[runtime] precision (site.toml)",
         "flash_attention": "[runtime] flash_attention (site.toml)", "channels_last": "[runtime] channels_last "
         "(site.toml)", "compile": "[runtime] compile (site.toml)", "checkpoint_every": "[runtime] checkpoint_every",
         "steps": "meddiff train --steps, or [federation] local_steps", "proximal_mu": "[federation] proximal_mu"}


@dataclass(frozen=True)
class ModelSpec:
    """The network (MONAI DiffusionModelUNet sizes) and its diffusion. The default trains at 32-64 px on a 2-core
    CPU; `schedule`: ddpm, ddpm-cosine, vp, subvp, ve; `prediction`: v (EDM preconditioning) or eps; `noise`: the
    diffusion noise, gaussian or simplex (AnoDDPM anomaly detection, 2D)."""

    spatial_dims: int = 2
    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 32
    prediction: str = "v"
    sigma_data: float = 0.5
    schedule: str = "ddpm"
    noise: str = "gaussian"

    def __post_init__(self) -> None:
        for name in ("channels", "attention_levels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _choice("model", "schedule", self.schedule, SCHEDULE_NAMES)
        _choice("model", "noise", self.noise, NOISES)
        _choice("model", "prediction", self.prediction, PREDICTIONS)
        if len(self.channels) != len(self.attention_levels):
            raise ConfigError(f"[model] channels {list(self.channels)} and attention_levels "
                              f"{list(self.attention_levels)} need one entry per level")


TRAINABLE = ("all", "decoder", "norms-attention")  # which parameters a run trains (common/training/trainable.py)


@dataclass(frozen=True)
class RecipeSpec:
    """How a model is trained, step by step: what every site of a federation must agree on."""

    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_condition: float = 0.3  # each available channel is given clean as a condition with this probability
    p_uncond: float = 0.1  # class labels dropped to the null class (classifier-free guidance)
    seed: int = 0
    trainable: str = "all"  # all, decoder or norms-attention (common/training/trainable.py)
    # anomaly models: train only on healthy examples (no mask foreground, or one of healthy_classes), at every site
    # (common/data/healthy.py)
    healthy_only: bool = False
    healthy_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "healthy_classes", tuple(self.healthy_classes))
        if self.healthy_classes and not self.healthy_only:
            raise ConfigError(f"[train] healthy_classes {list(self.healthy_classes)} is set but healthy_only is "
                              "false: set healthy_only = true, or drop healthy_classes")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"[train] trainable must be one of {list(TRAINABLE)}, got {self.trainable!r}")
        if self.batch_size < 1:
            raise ConfigError(f"[train] batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"[train] ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.learning_rate <= 0:
            raise ConfigError(f"[train] learning_rate must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class RuntimeSpec:
    """A site's own hardware switches (site.toml ``[runtime]``): each "auto" (on for CUDA), "on" or "off", and the
    precision auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16. See docs/gpu.md."""

    precision: str = "auto"
    flash_attention: str = "auto"
    channels_last: str = "off"  # measured slower on an H200 for this GroupNorm UNet (benchmarks/gpu.py)
    compile: str = "auto"  # auto: only for calls of at least COMPILE_MIN_STEPS steps (compiling costs ~1 min)
    checkpoint_every: int = 250  # steps between checkpoints of `meddiff train`
    # several devices training one model, data-parallel (common/training/distributed.py): ["all"] = every CUDA
    # device here, or a list such as ["cuda:0", "cuda:1"]; empty = one device (cuda when available, else cpu)
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _choice("runtime", "precision", self.precision, PRECISIONS)
        if isinstance(self.devices, str) or not all(isinstance(d, str) and DEVICE.match(d) for d in self.devices) \
                or ("all" in self.devices and len(self.devices) > 1):
            raise ConfigError(f"[runtime] devices must be [\"all\"] or a list of devices such as [\"cuda:0\", "
                              f"\"cuda:1\"], got {self.devices!r}")
        for name in ("flash_attention", "channels_last", "compile"):
            if getattr(self, name) not in SWITCH_VALUES:
                raise ConfigError(f"[runtime] {name} must be one of {list(SWITCH_VALUES)}, got "
                                  f"{getattr(self, name)!r}")


def _choice(section: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"[{section}] {key} = {value!r} is not one of {list(allowed)}")


def recipe_from_table(table: dict[str, Any], source: str) -> RecipeSpec:
    """A ``[train]`` table; a key that moved elsewhere is refused with its new place."""
    moved = sorted(set(table) & set(MOVED))
    if moved:
        raise ConfigError(f"{source}: [train] {', '.join(moved)}: now {'; '.join(MOVED[k] for k in moved)}")
    return build_section(RecipeSpec, table, "train", source)


def spec_to_dict(spec) -> dict[str, Any]:
    return asdict(spec)


def spec_from_dict(cls, values: dict[str, Any], where: str):
    """A spec from its ``asdict`` form (a checkpoint's or a message's JSON), strictly: unknown keys refused."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} key(s) {unknown}; known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
