"""NIfTI folders (images/ + labels/, the Medical Segmentation Decathlon layout) -> (C, D, H, W) examples."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from ..config import DataConfig
from ..schema import ChannelSchema, Example
from .files import require_path, walk_files
from .masks import to_labels
from .pairing import IMAGE_FOLDERS, LABEL_FOLDERS, find_folder, pair_labels, stem
from .problems import DataError, DataProblem, LoadedData

log = logging.getLogger(__name__)


def is_nifti(path: Path) -> bool:
    return path.name.endswith(".nii") or path.name.endswith(".nii.gz")


def read_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume in closest-to-RAS orientation as (M, D, H, W) float32 and spacing (D, H, W) in mm.

    M is the number of modalities (4th NIfTI axis), 1 for a plain 3D image; 2D images get D = 1.
    """
    image = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(image.dataobj, dtype=np.float32)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if data.ndim == 2:
        data, zooms = data[:, :, None], (*zooms[:2], 1.0)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise ValueError(f"expected a 2D, 3D or 4D image, got {data.ndim} dimensions {data.shape}")
    # (X, Y, Z, M) -> (M, Z, Y, X): axial slices first, then rows (anterior-posterior), columns (left-right)
    volume = np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0))[:, :, ::-1, :])
    return volume, (zooms[2], zooms[1], zooms[0])


def _schema(config: DataConfig, modalities: int) -> ChannelSchema:
    if config.channels:
        images = [c for c in config.channels if not c.startswith("mask")]
        if len(images) != modalities:
            raise DataError(config.path or "nifti", f"config names {len(images)} image channel(s) {images} but the "
                            f"NIfTI images have {modalities} modalities", "list one channel per modality in [data] channels")
        return ChannelSchema(tuple(config.channels), config.class_names)
    images = ("image",) if modalities == 1 else tuple(f"image{i}" for i in range(modalities))
    return ChannelSchema((*images, "mask"), config.class_names)


def _read_image(path: Path, problems: list[DataProblem]):
    """(volume, spacing) of a NIfTI image, or None with the reason reported (unreadable, NaN)."""
    try:
        volume, spacing = read_volume(path)
    except Exception as e:
        problems.append(DataProblem(str(path), f"cannot read NIfTI image ({type(e).__name__}: {e})",
                                    "re-export the file; check that it is not truncated"))
        return None
    if not np.isfinite(volume).all():
        problems.append(DataProblem(str(path), "image contains NaN or infinite values",
                                    "fix or re-export the file (e.g. replace NaN by 0)"))
        return None
    return volume, spacing


def _read_label(label_path: Path, shape: tuple[int, ...], config: DataConfig, problems: list[DataProblem]):
    """The label map on the image's grid, or None with the reason reported (the image loads without mask)."""
    try:
        label, _ = read_volume(label_path)
        if label.shape[1:] != shape:
            raise ValueError(f"label shape {label.shape[1:]} differs from image shape {shape}")
        if not np.isfinite(label).all():
            raise ValueError("label contains NaN or infinite values")
        return to_labels(label[0], config.mask_values)
    except Exception as e:
        problems.append(DataProblem(str(label_path), f"label not used ({e}); image loaded without mask",
                                    "re-export the label on the image's grid"))
        return None


def _example(path: Path, volume: np.ndarray, spacing, schema: ChannelSchema, label_path: Path | None,
             config: DataConfig, problems: list[DataProblem]) -> Example:
    image = np.zeros((schema.num_channels, *volume.shape[1:]), dtype=np.float32)
    available = np.zeros(schema.num_channels, dtype=bool)
    image[list(schema.image_indices)] = volume
    available[list(schema.image_indices)] = True
    if label_path is not None and schema.mask_indices:
        label = _read_label(label_path, volume.shape[1:], config, problems)
        if label is not None:
            image[schema.mask_indices[0]], available[schema.mask_indices[0]] = label, True
    return Example(image=image, available=available, patient=stem(path), study=stem(path), source=str(path),
                   spacing=spacing)


def _pairs(root: Path, problems: list[DataProblem]) -> tuple[Path, Path | None, list[Path], dict[Path, Path]]:
    """(image folder, label folder, images, {image: label}); labels without an image are reported."""
    image_dir = find_folder(root, IMAGE_FOLDERS) or root
    label_dir = find_folder(root, LABEL_FOLDERS)
    images = [p for p in walk_files(image_dir, problems) if is_nifti(p)]
    if image_dir == root and label_dir is not None:
        images = [p for p in images if label_dir not in p.parents]
    if not images:
        raise DataError(image_dir, "no NIfTI image (.nii or .nii.gz) found",
                        "point meddiff at a folder with images/ (and labels/) holding .nii.gz files")
    labels = [p for p in walk_files(label_dir, problems) if is_nifti(p)] if label_dir else []
    return image_dir, label_dir, images, pair_labels(images, image_dir, labels, label_dir, problems)


def load_nifti(root: str | Path, config: DataConfig) -> LoadedData:
    """Image/label pairs matched by file name; an image without a label loads with its mask unavailable."""
    root = require_path(root)
    problems: list[DataProblem] = []
    image_dir, label_dir, images, labels = _pairs(root, problems)
    schema: ChannelSchema | None = None
    examples: list[Example] = []
    for path in images:
        read = _read_image(path, problems)
        if read is None:
            continue
        volume, spacing = read
        schema = schema or _schema(config, volume.shape[0])
        if volume.shape[0] != len(schema.image_indices):
            problems.append(DataProblem(str(path), f"{volume.shape[0]} modalities, the data set has "
                                        f"{len(schema.image_indices)}", "give every image the same modalities"))
            continue
        if path not in labels and label_dir is not None:
            problems.append(DataProblem(str(path), "image has no label file; loaded without mask", skipped=False))
        example = _example(path, volume, spacing, schema, labels.get(path), config, problems)
        if path.parent != image_dir:  # per-case folders: images/<case>/<file>.nii.gz
            example.patient = str(path.parent.relative_to(image_dir))
        examples.append(example)
    if schema is None:
        raise DataError(image_dir, f"none of the {len(images)} NIfTI image(s) could be read",
                        "see the problems listed for each file")
    top = max([int(e.image[list(schema.mask_indices)].max()) for e in examples if schema.mask_indices] or [1])
    schema = ChannelSchema(schema.channels, schema.class_names, max(1, len(config.mask_values) or top))
    return LoadedData(schema, examples, problems, str(root), "nifti",
                      patient_ids="one patient per volume file, or per case folder under images/")
