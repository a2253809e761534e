"""Stage 1 of latent diffusion: MONAI's AutoencoderKL, one network shared by every channel of the schema.

Each schema channel (t1, flair, a mask ...) is encoded on its own as a one-channel image, by the same weights. A
channel's latents then depend on that channel only, so a site without t2 encodes its t1 exactly as a site with
t2 does, and the pixel channel-availability of an example becomes the availability of that channel's latent
channels (codec.py). The file (``meddiff train-autoencoder``) is named by its SHA-256 in every model trained on
its latents.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from monai.networks.nets import AutoencoderKL

from ..checkpoint import CheckpointError, load_checkpoint_bytes, save_checkpoint
from ..config import ConfigError
from ..schema import ChannelSchema
from ..specs import spec_from_dict

KIND = "meddiff-autoencoder"


@dataclass(frozen=True)
class AutoencoderSpec:
    """The network: widths per level (each level after the first halves the size, so (16, 32, 64) maps 128 px to
    32 px), latent channels per schema channel, residual blocks per level. No attention: at these widths it costs
    more than it gives, and the KL term keeps the latents near a unit Gaussian that the scale factor then fits."""

    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 3
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    spatial_dims: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) < 2 or any(c % self.norm_num_groups for c in self.channels):
            raise ConfigError(f"autoencoder widths {list(self.channels)}: give at least two levels, each a multiple "
                              f"of {self.norm_num_groups}")
        if self.latent_channels < 1:
            raise ConfigError(f"autoencoder latent_channels must be >= 1, got {self.latent_channels}")

    @property
    def factor(self) -> int:
        """How many pixels one latent position covers along each axis."""
        return 2 ** (len(self.channels) - 1)


def build_autoencoder(spec: AutoencoderSpec) -> AutoencoderKL:
    return AutoencoderKL(spatial_dims=spec.spatial_dims, in_channels=1, out_channels=1, channels=spec.channels,
                         attention_levels=(False,) * len(spec.channels), latent_channels=spec.latent_channels,
                         num_res_blocks=spec.num_res_blocks, norm_num_groups=spec.norm_num_groups,
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


@dataclass(frozen=True)
class AutoencoderFile:
    """What a stage-1 file holds: the network, the schema and pixel size it was trained on (``depth``: a 3D
    autoencoder's slices, 0 when the volumes were cubes of ``resolution``), and the scale that gives its latents
    the spread the diffusion model expects."""

    spec: AutoencoderSpec
    schema: ChannelSchema
    resolution: int
    scale: float
    weights: dict
    sha256: str = ""
    record: dict | None = None  # how it was trained and how well it reconstructs (train-autoencoder's summary)
    raw: bytes = field(default=b"", repr=False, compare=False)  # the file's bytes, as a federated run sends them
    depth: int = 0

    def meta(self) -> dict:
        return {"kind": KIND, "autoencoder_spec": asdict(self.spec), "schema": self.schema.to_dict(),
                "resolution": self.resolution, "depth": self.depth, "scale": self.scale, "record": self.record or {}}

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, {"autoencoder": self.weights}, self.meta())

    def network(self) -> AutoencoderKL:
        network = build_autoencoder(self.spec)
        network.load_state_dict(self.weights, strict=True)
        return network.eval()


def from_meta(meta: dict, weights: dict, where: str, sha256: str = "") -> AutoencoderFile:
    """An autoencoder from its metadata (its own file's, or the ``latent`` record of a latent model file)."""
    try:
        return AutoencoderFile(spec_from_dict(AutoencoderSpec, meta["autoencoder_spec"], where),
                               ChannelSchema.from_dict(meta["schema"]), int(meta["resolution"]), float(meta["scale"]),
                               weights, sha256 or meta.get("sha256", ""), meta.get("record"),
                               depth=int(meta.get("depth", 0)))
    except (KeyError, TypeError, ValueError, ConfigError) as error:
        raise CheckpointError(f"{where}: the autoencoder description cannot be read ({error})") from None


def load_autoencoder(path: str | Path) -> AutoencoderFile:
    """A stage-1 file written by ``meddiff train-autoencoder``; anything else is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: autoencoder not found; pass the autoencoder.pt written by "
                              "`meddiff train-autoencoder`")
    return autoencoder_from_bytes(path.read_bytes(), str(path))


def autoencoder_from_bytes(raw: bytes, where: str, expected_sha256: str = "") -> AutoencoderFile:
    """The autoencoder of a stage-1 file's bytes (read from disk, or received from the coordinator). With
    ``expected_sha256`` the bytes must hash to it: a site trains only on the latents of the file the run names."""
    sha256 = hashlib.sha256(raw).hexdigest()
    if expected_sha256 and sha256 != expected_sha256:
        raise CheckpointError(f"{where}: the autoencoder received has SHA-256 {sha256[:16]}..., the run names "
                              f"{expected_sha256[:16]}...: it was altered on the way; the round is refused")
    state, meta = load_checkpoint_bytes(raw, where)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{where}: not an autoencoder (kind {meta.get('kind')!r}); pass the autoencoder.pt "
                              "written by `meddiff train-autoencoder`")
    loaded = replace(from_meta(meta, state["autoencoder"], where, sha256), raw=raw)
    try:
        loaded.network()
    except RuntimeError as error:
        raise CheckpointError(f"{where}: weights do not fit the autoencoder the file describes ({error})") from None
    return loaded
