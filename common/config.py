"""Site configuration as frozen dataclasses loaded from TOML.

A site admin writes as little as possible: everything has a default, and every unknown key or wrong value
is refused with the key's name and what it accepts, so a typo never silently changes what is trained.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

FORMATS = ("auto", "dicom", "nifti", "png", "npz")
SOURCES = ("folder", "dicomweb", "dimse")  # where a site's images come from: its data folder, or its PACS
COLOUR_MODES = ("rgb", "grey")


class ConfigError(ValueError):
    """A configuration value is wrong: the message names the file, the key and the accepted values."""


SERIES_KINDS = ("original", "derived", "localizer", "reformat")
IMAGE_KINDS = ("original",)  # an image channel takes acquired series only, unless its rule says otherwise
MASK_KINDS = ("original", "derived")  # segmentations are derived objects by nature


@dataclass(frozen=True)
class ChannelRule:
    """Maps a DICOM series to a channel when ``pattern`` (a case-insensitive regular expression) is found in
    the series' ``field`` (a DICOM keyword such as SeriesDescription, ProtocolName or Modality).

    kinds: the series kinds the rule accepts (original, derived, localizer, reformat; see
    common/data/dicom_series.py); empty means original for image channels, original and derived for masks.
    """

    channel: str
    pattern: str
    field: str = "SeriesDescription"
    kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(SERIES_KINDS))
        if unknown:
            raise ConfigError(f"[[data.dicom_rules]] kinds {unknown} for channel {self.channel!r}: "
                              f"choose from {list(SERIES_KINDS)}")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ConfigError(f"[[data.dicom_rules]] pattern {self.pattern!r} for channel {self.channel!r} is not "
                              f"a valid regular expression ({e})") from None


# Order matters: the first rule that matches wins, so specific names come before general ones.
DEFAULT_DICOM_RULES: tuple[ChannelRule, ...] = (
    ChannelRule("mask", r"mask|seg|label|roi"),
    ChannelRule("flair", r"flair"),
    ChannelRule("t1post", r"t1.*(post|gd|\+c|contrast|mprage.*gd)"),
    ChannelRule("t1pre", r"t1"),
    ChannelRule("t2", r"t2"),
    ChannelRule("ct", r"^CT$", field="Modality"),
    ChannelRule("xray", r"^(CR|DX)$", field="Modality"),
)


@dataclass(frozen=True)
class DataConfig:
    """Where a site's images are and how to read them.

    channels: schema channel names in model order; empty means "what the format provides".
    colour: "rgb" keeps colour images (PNG, npz, DICOM) as three channels red, green, blue; "grey" converts them
        to luminance.
    mask_values: raw values of mask files mapped to labels 1..K in order (e.g. JSRT [150, 200, 250]);
        empty means masks are already 0/1/2... label maps (PNG masks: any non-zero pixel is label 1).
    resolution: in-plane size (and depth, for 3D) examples are resized to; 0 means the suggested one.
    depth: for a 3D model (``slices = false``), the number of slices volumes are resized to, when it should differ
        from ``resolution`` (anisotropic volumes: 24 slices of 64 x 64 keep their slices at depth 24, not 64);
        0 means the same as ``resolution`` (cubes).
    source: "folder" reads ``path``; "dicomweb" and "dimse" fetch the studies that site.toml's [pacs] query
        matches into the site's PACS cache (client/pacs/) and read them from there as DICOM.
    """

    path: str = ""
    source: str = "folder"
    format: str = "auto"
    channels: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    mask_values: tuple[int, ...] = ()
    resolution: int = 0
    depth: int = 0
    slices: bool = True  # cut 3D volumes into 2D slices for a 2D model
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    npz_split: str = "train"
    dicom_rules: tuple[ChannelRule, ...] = DEFAULT_DICOM_RULES
    check_intensities: bool = True  # drop a DICOM channel whose values are implausible for its name
    colour: str = "rgb"  # colour images: rgb keeps three channels (red, green, blue); grey turns them into luminance
    case_folders: bool = False  # PNG: the folder holding an image names its patient (the one above it, the class)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"[data] source = {self.source!r} is not one of {list(SOURCES)}")
        if self.source != "folder" and self.format not in ("auto", "dicom"):
            raise ConfigError(f"[data] source = {self.source!r} fetches DICOM from the PACS; format = "
                              f"{self.format!r} cannot be read from there (remove it, or set \"dicom\")")
        if self.format not in FORMATS:
            raise ConfigError(f"[data] format = {self.format!r} is not one of {list(FORMATS)}")
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ConfigError("[data] needs 0 <= lower_percentile < upper_percentile <= 100, got "
                              f"{self.lower_percentile}, {self.upper_percentile}")
        if self.colour not in COLOUR_MODES:
            raise ConfigError(f"[data] colour = {self.colour!r} is not one of {list(COLOUR_MODES)}")
        if self.resolution < 0:
            raise ConfigError(f"[data] resolution must be 0 (suggested) or a positive size, got {self.resolution}")
        if self.depth < 0:
            raise ConfigError(f"[data] depth must be 0 (the same as resolution) or a positive number of slices, "
                              f"got {self.depth}")
        if self.depth and self.slices:
            raise ConfigError(f"[data] depth = {self.depth} sizes 3D volumes, but slices = true cuts them into 2D "
                              "slices: set slices = false for a 3D model, or remove depth")


# ghost clipping (per-example gradient norms without per-example gradients: the GPU fast path) cannot
# average K draws before clipping, so it needs noise_multiplicity = 1
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")
PRIVACY_UNITS = ("patient", "example")
WEAK_DELTA = 1e-3  # above it (fewer than 100 protected units), the default delta is flagged as a weak promise


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy at the site (DP-SGD), the ``[privacy]`` table of site.toml.

    The site, not the coordinator, decides: each run is trained to ``target_epsilon`` (the noise multiplier is
    derived from it, the run's planned steps and the sampling rate), and the site's ledger refuses any round
    that would take the total over all runs past ``budget_epsilon`` (0: the same as target_epsilon).
    ``delta`` 0 means 1 / (10 N) for N protected units (patients or examples).

    unit: "patient" (default) protects each patient as a whole where the data names its patients: patients are
    Poisson-sampled and all of a sampled patient's slices in a step give one contribution clipped to
    ``max_grad_norm``; up to ``slices_per_patient`` of them are drawn per step. Data that names no patients (a
    MedMNIST archive, a PNG folder) is protected per example, and says so. "example": each slice/image is the
    unit (a patient with many slices is then protected more weakly than epsilon suggests).

    autoencoder_share: in a latent run that trains its autoencoder too (``[federation] stage = "both"``), stage 1
    targets this fraction of target_epsilon and stage 2 the rest; the ledger composes both (RDP or PRV: the
    total is at most their sum) and lists them apart.
    """

    enabled: bool = False
    target_epsilon: float = 10.0
    delta: float = 0.0
    budget_epsilon: float = 0.0
    max_grad_norm: float = 1.0
    noise_multiplicity: int = 4  # DPDM: K (t, noise) draws per example, averaged before clipping
    grad_sample_mode: str = "hooks"  # the fastest correct one on CPU and GPU, see benchmarks/dp_overhead.py
    accountant: str = "rdp"
    unit: str = "patient"
    slices_per_patient: int = 4
    autoencoder_share: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.autoencoder_share < 1:
            raise ConfigError(f"[privacy] autoencoder_share must be in (0, 1), got {self.autoencoder_share}")
        if self.unit not in PRIVACY_UNITS:
            raise ConfigError(f"[privacy] unit must be one of {list(PRIVACY_UNITS)}, got {self.unit!r}")
        if self.slices_per_patient < 1:
            raise ConfigError(f"[privacy] slices_per_patient must be >= 1, got {self.slices_per_patient}")
        if self.target_epsilon <= 0 or self.budget_epsilon < 0 or not 0 <= self.delta < 1:
            raise ConfigError("[privacy] target_epsilon must be > 0, budget_epsilon >= 0 and delta in [0, 1)")
        if self.max_grad_norm <= 0 or self.noise_multiplicity < 1:
            raise ConfigError("[privacy] max_grad_norm must be > 0 and noise_multiplicity >= 1")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ConfigError(f"[privacy] grad_sample_mode must be one of {list(GRAD_SAMPLE_MODES)}")
        if self.grad_sample_mode == "ghost" and self.noise_multiplicity != 1:
            raise ConfigError("[privacy] grad_sample_mode = \"ghost\" clips each example's gradient from one draw: "
                              f"set noise_multiplicity = 1 (now {self.noise_multiplicity}), or use \"hooks\"")
        if self.accountant not in ("rdp", "prv"):
            raise ConfigError(f"[privacy] accountant must be 'rdp' or 'prv', got {self.accountant!r}")

    @property
    def budget(self) -> float:
        return self.budget_epsilon or self.target_epsilon

    def delta_for(self, units: int) -> float:
        return self.delta or 1.0 / (10 * max(1, units))

    def weak_delta(self, units: int, kind: str = "units") -> str:
        """A warning ("" for none) when the default delta is large because the site protects few units: an
        (epsilon, delta) guarantee may fail outright with probability delta, so 1 / (10 N) for a handful of
        patients is a weak promise, whatever epsilon says."""
        delta = self.delta_for(units)
        if self.delta or delta <= WEAK_DELTA:
            return ""
        return (f"delta {delta:.2g} = 1 / (10 x {units} {kind}) is large: the guarantee may fail outright with "
                f"probability delta. With so few {kind}, DP protects little; set [privacy] delta (for example "
                f"1e-5) in site.toml for a stricter promise at the price of more noise")


@dataclass(frozen=True)
class SiteTrackingConfig:
    """The site's own experiment tracker, the ``[tracking]`` table of site.toml (client/site_tracking.py): its
    training and held-out losses, images/s and epsilon per round, for the site's eyes only. Off by default.

    uri: "" = a local MLflow store beside site.toml (.meddiff-site/mlflow.db); or the hospital's MLflow server.
    """

    enabled: bool = False
    uri: str = ""


@dataclass(frozen=True)
class TrustConfig:
    """What code the site runs, the ``[trust]`` table of site.toml (checked before any training).

    app_hash: the meddiff code hash the site approved (`meddiff site status` prints the installed one); empty
        = not pinned. same_app_as_coordinator: refuse a coordinator that announces other code than ours.
    initial_models: the SHA-256 of each starting model the site accepts a run from (``"scratch"``: a run that
        starts untrained); empty = not pinned.
    autoencoders: the SHA-256 of each stage-1 autoencoder file the site accepts a latent run on (``"pixel"``: a
        run in pixel space); empty = not pinned.
    """

    app_hash: str = ""
    same_app_as_coordinator: bool = True
    initial_models: tuple[str, ...] = ()
    autoencoders: tuple[str, ...] = ()


def build_section(cls: type, values: dict[str, Any], where: str, source: str) -> Any:
    """Instantiate a frozen dataclass from a TOML table, refusing unknown keys by name."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in [{where}]; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "")
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{source}: [{where}] {name} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{source}: [{where}] {name} must be a number, got {value!r}")
            value = type(default)(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{source}: [{where}] {name} must be a string, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: [{where}] {e}") from None


def data_config_from_dict(table: dict[str, Any], source: str = "<config>") -> DataConfig:
    table = dict(table)
    rules = table.pop("dicom_rules", None)
    config = build_section(DataConfig, table, "data", source)
    if rules is not None:
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            raise ConfigError(f"{source}: [[data.dicom_rules]] must be a list of tables "
                              "with channel, pattern and optionally field")
        parsed = []
        for r in rules:
            if "channel" not in r or "pattern" not in r:
                raise ConfigError(f"{source}: each [[data.dicom_rules]] needs 'channel' and 'pattern', got {r}")
            parsed.append(build_section(ChannelRule, r, "data.dicom_rules", source))
        config = replace(config, dicom_rules=tuple(parsed))
    return config


def read_toml(path: Path, known: set[str], missing: str) -> dict[str, Any]:
    """A config file's top-level tables, refusing unknown ones; ``missing`` says what to do when it is absent."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the path of the .toml file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give the path of a TOML config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) or key(s) {unknown}; known: {sorted(known)}")
    return raw
