"""NumPy .npz archives -> examples.

Two layouts: MedMNIST (``{split}_images`` (N, H, W[, 3]) or (N, D, H, W), ``{split}_labels`` (N, 1); colour images
become the channels red, green, blue, or their luminance with ``[data] colour = "grey"``) and a
channel layout (one (N, H, W) array per channel, e.g. ``t1pre``, ``t2``, ``mask``, with optional ``study``,
``patient`` and ``labels``), as in the PGBM slice archive.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..schema import ChannelSchema, Example, colour_channel_names
from .files import require_path
from .masks import to_labels
from .problems import DataError, DataProblem, LoadedData

ID_KEYS = ("study", "patient", "patient_ids", "labels", "label", "class_names", "channels")
SPLITS = ("train", "val", "test")


def _open(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(path, f"not a readable .npz archive ({type(e).__name__}: {e})",
                        "re-create it with numpy.savez") from None


LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def _colour_rows(image: np.ndarray, colour: str) -> dict[str, np.ndarray]:
    """One MedMNIST image as channel arrays: (H, W[, 3]) -> image, or red/green/blue, or its luminance."""
    if image.ndim == 3 and image.shape[-1] == 3:
        if colour == "rgb":
            return dict(zip(colour_channel_names(), np.moveaxis(image, -1, 0)))
        return {"image": image.astype(np.float32) @ LUMA}
    return {"image": image}


def _medmnist(path: Path, arrays: dict, config: DataConfig) -> tuple[list[tuple], tuple[str, ...]]:
    splits = SPLITS if config.npz_split == "all" else (config.npz_split,)
    rows = []
    channels: tuple[str, ...] = ("image",)
    for split in splits:
        if f"{split}_images" not in arrays:
            raise DataError(path, f"no '{split}_images' array (keys: {sorted(arrays)})",
                            "set [data] npz_split to one of the splits present, or 'all'")
        images = arrays[f"{split}_images"]
        labels = arrays.get(f"{split}_labels")
        if images.ndim == 4 and images.shape[-1] == 3 and config.colour == "rgb":  # colour MedMNIST stays colour
            channels = colour_channel_names()
        if labels is not None and len(labels) != len(images):
            raise DataError(path, f"'{split}_labels' has {len(labels)} rows for {len(images)} images",
                            "re-create the archive with one label per image")
        for i, image in enumerate(images):
            label = None if labels is None else int(np.asarray(labels[i]).reshape(-1)[0])
            rows.append((_colour_rows(image, config.colour), label, f"{split}-{i:05d}", f"{split}-{i:05d}"))
    return rows, channels


def _channel_layout(path: Path, arrays: dict, config: DataConfig) -> tuple[list[tuple], tuple[str, ...]]:
    channels = config.channels or tuple(k for k in arrays if k not in ID_KEYS and arrays[k].ndim in (3, 4))
    missing = [c for c in channels if c not in arrays]
    if not channels or missing:
        raise DataError(path, f"expected image arrays {list(missing or ['<channel>'])} not found (keys: {sorted(arrays)})",
                        "use MedMNIST keys (train_images, train_labels, ...) or one (N, H, W) array per channel "
                        "named as in [data] channels")
    n = len(arrays[channels[0]])
    bad = [c for c in channels if len(arrays[c]) != n]
    if bad:
        raise DataError(path, f"arrays {bad} do not have {n} rows like '{channels[0]}'", "give every channel N rows")
    study = arrays.get("study", np.asarray([f"{path.stem}-{i:05d}" for i in range(n)]))
    patient = arrays.get("patient", arrays.get("patient_ids", np.asarray([str(s).split("/")[0] for s in study])))
    labels = arrays.get("labels", arrays.get("label"))
    rows = []
    for i in range(n):
        label = None if labels is None else int(np.asarray(labels[i]).reshape(-1)[0])
        rows.append(({c: arrays[c][i] for c in channels}, label, str(patient[i]), str(study[i])))
    return rows, tuple(channels)


def load_npz(path: str | Path, config: DataConfig) -> LoadedData:
    path = require_path(path, "npz file")
    if path.is_dir():
        raise DataError(path, "is a folder, an .npz file was expected", "give the path of the .npz file")
    arrays = _open(path)
    if any(k.endswith("_images") for k in arrays):
        rows, channels = _medmnist(path, arrays, config)
    else:
        rows, channels = _channel_layout(path, arrays, config)
    class_names = config.class_names or tuple(str(c) for c in arrays.get("class_names", ()))
    if not class_names and any(r[1] is not None for r in rows):
        class_names = tuple(f"class{k}" for k in range(max(r[1] for r in rows if r[1] is not None) + 1))
    schema = ChannelSchema(channels, class_names, max(1, len(config.mask_values)))
    problems: list[DataProblem] = []
    examples = []
    for index, (values, label, patient, study) in enumerate(rows):
        first = np.asarray(values[channels[0]])
        image = np.zeros((schema.num_channels, *first.shape), dtype=np.float32)
        for c, name in enumerate(channels):
            array = np.asarray(values[name], dtype=np.float32)
            image[c] = to_labels(array, config.mask_values) if schema.is_mask(name) else array
        if not np.isfinite(image).all():
            problems.append(DataProblem(f"{path}[{index}]", "example contains NaN or infinite values",
                                        "fix the array in the archive"))
            continue
        examples.append(Example(image=image, available=np.ones(schema.num_channels, dtype=bool), label=label,
                                patient=patient, study=study, source=f"{path}[{index}]"))
    if not examples:
        raise DataError(path, "no usable example in the archive", "see the problems listed")
    if schema.mask_indices:
        top = max(int(e.image[list(schema.mask_indices)].max()) for e in examples)
        schema = ChannelSchema(schema.channels, schema.class_names, max(1, len(config.mask_values) or top))
    return LoadedData(schema, examples, problems, str(path), "npz", patient_ids=_patient_id_source(arrays))


def _patient_id_source(arrays: dict) -> str:
    """Where the archive's patient ids come from ("" for MedMNIST-style archives, which have none)."""
    for key in ("patient", "patient_ids"):
        if key in arrays:
            return f"the archive's '{key}' array"
    return "the archive's 'study' array (the part before '/')" if "study" in arrays else ""
