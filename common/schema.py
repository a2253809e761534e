"""The channel schema: which image and mask channels a data set may have, and its class names.

Every example in meddiff, whatever file format it came from, is a tensor over the schema's channels with a
per-channel availability flag, so that a site missing some contrasts still fits the one global model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MASK_PREFIX = "mask"
COLOURS = ("red", "green", "blue")


def colour_channel_names(channel: str = "image") -> tuple[str, str, str]:
    """The three channels a colour image becomes: red, green, blue (or <channel>_red ... for a named channel)."""
    return COLOURS if channel == "image" else tuple(f"{channel}_{c}" for c in COLOURS)


@dataclass(frozen=True)
class ChannelSchema:
    """Channels of a data set, in model order, and its optional class names.

    A channel whose name starts with ``mask`` holds an integer label map (0 = background); every other
    channel is an intensity image.
    """

    channels: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    mask_labels: int = 1  # largest label value in mask channels (1 for binary masks)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("a channel schema needs at least one channel, e.g. channels = ['t1', 'mask']")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channel names must be unique, got {list(self.channels)}")
        if self.mask_labels < 1:
            raise ValueError(f"mask_labels must be >= 1, got {self.mask_labels}")

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def is_mask(self, channel: str) -> bool:
        return channel.startswith(MASK_PREFIX)

    @property
    def mask_indices(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.channels) if self.is_mask(c))

    @property
    def image_indices(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.channels) if not self.is_mask(c))

    @property
    def colour_groups(self) -> tuple[tuple[int, int, int], ...]:
        """Indices (red, green, blue) of every colour image in the schema (channels named as
        :func:`colour_channel_names` names them)."""
        groups = []
        for c, name in enumerate(self.channels):
            base = "image" if name == "red" else name[:-4] if name.endswith("_red") else None
            if base is not None and all(n in self.channels for n in colour_channel_names(base)):
                groups.append(tuple(self.channels.index(n) for n in colour_channel_names(base)))
        return tuple(groups)

    @property
    def is_colour(self) -> bool:
        return bool(self.colour_groups)

    def index(self, channel: str) -> int:
        try:
            return self.channels.index(channel)
        except ValueError:
            raise KeyError(f"channel {channel!r} is not in the schema {list(self.channels)}") from None

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "class_names": list(self.class_names),
                "mask_labels": self.mask_labels}

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelSchema":
        return cls(tuple(d["channels"]), tuple(d.get("class_names", ())), int(d.get("mask_labels", 1)))


@dataclass
class Example:
    """One training example in a schema.

    image: (C, H, W) or (C, D, H, W) float32; channels that are not available hold zeros.
    available: (C,) bool, True where the site really has that channel for this example.
    label: class index into the schema's class names, or None when unlabelled.
    patient / study: identifiers used to split data (never split one patient across train and test).
    source: the file or folder it came from, for error messages and audits.
    spacing: voxel size in mm for the spatial axes, when known.
    """

    image: np.ndarray
    available: np.ndarray
    label: int | None = None
    patient: str = ""
    study: str = ""
    source: str = ""
    spacing: tuple[float, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim not in (3, 4):
            raise ValueError(f"{self.source}: image must be (C, H, W) or (C, D, H, W), got shape {self.image.shape}")
        if self.available.shape != (self.image.shape[0],):
            raise ValueError(f"{self.source}: availability flags {self.available.shape} do not match "
                             f"{self.image.shape[0]} channels")
        if not self.patient:
            self.patient = self.study

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def is_3d(self) -> bool:
        return self.image.ndim == 4


def empty_example_array(schema: ChannelSchema, spatial_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Zero image and all-False availability for a schema: loaders fill in the channels they find."""
    return (np.zeros((schema.num_channels, *spatial_shape), dtype=np.float32),
            np.zeros(schema.num_channels, dtype=bool))
