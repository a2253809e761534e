"""Folders of PNG/JPEG images (+ a masks/ folder, + optional class sub-folders) -> (C, H, W) examples.

Layouts: ``ROOT/images/*.png`` with ``ROOT/masks/*.png`` matched by file name, or ``ROOT/images/<class>/*.png``
(one sub-folder per class), or images directly in ROOT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..config import DataConfig
from ..schema import ChannelSchema, Example
from .files import require_path, walk_files
from .masks import to_labels
from .nifti import IMAGE_FOLDERS, LABEL_FOLDERS, find_folder, stem
from .problems import DataError, DataProblem, LoadedData

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def read_grey(path: Path) -> np.ndarray:
    """(H, W) float32 grey values; colour is converted to luminance, 16-bit values are kept."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(image, dtype=np.float32)
        return np.asarray(image.convert("L"), dtype=np.float32)


def load_png(root: str | Path, config: DataConfig) -> LoadedData:
    """Images with optional masks; a mask of the wrong size or unreadable is reported and the image kept."""
    root = require_path(root)
    problems: list[DataProblem] = []
    image_dir = find_folder(root, IMAGE_FOLDERS) or root
    mask_dir = find_folder(root, LABEL_FOLDERS)
    images = [p for p in walk_files(image_dir, problems) if p.suffix.lower() in SUFFIXES
              and (mask_dir is None or mask_dir not in p.parents)]
    if not images:
        raise DataError(image_dir, "no PNG/JPEG image found",
                        "point meddiff at a folder with images/ (and masks/) holding .png or .jpg files")
    class_dirs = sorted({p.parent.name for p in images if p.parent != image_dir})
    class_names = config.class_names or tuple(class_dirs)
    masks = {stem(p): p for p in walk_files(mask_dir, problems) if p.suffix.lower() in SUFFIXES} if mask_dir else {}
    channels = config.channels or (("image", "mask") if mask_dir else ("image",))
    schema = ChannelSchema(tuple(channels), tuple(class_names), max(1, len(config.mask_values)))
    image_stems = {stem(p) for p in images}
    for name, path in sorted(masks.items()):
        if name not in image_stems:
            problems.append(DataProblem(str(path), "mask without a matching image", "add the image or remove the mask"))
    examples = []
    image_index = schema.image_indices[0]
    for path in images:
        try:
            grey = read_grey(path)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            problems.append(DataProblem(str(path), f"cannot read image ({type(e).__name__}: {e})",
                                        "re-export the image as PNG"))
            continue
        image = np.zeros((schema.num_channels, *grey.shape), dtype=np.float32)
        available = np.zeros(schema.num_channels, dtype=bool)
        image[image_index], available[image_index] = grey, True
        mask_path = masks.get(stem(path))
        if mask_path is not None and schema.mask_indices:
            try:
                mask = read_grey(mask_path)
                if mask.shape != grey.shape:
                    raise ValueError(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                                     f"{grey.shape[1]}x{grey.shape[0]}")
                image[schema.mask_indices[0]] = to_labels(mask, config.mask_values, binary_default=True)
                available[schema.mask_indices[0]] = True
            except (UnidentifiedImageError, OSError, ValueError) as e:
                problems.append(DataProblem(str(mask_path), f"mask not used ({e}); image loaded without mask",
                                            "save the mask at the image's size"))
        label = None
        if path.parent != image_dir and path.parent.name in class_names:
            label = class_names.index(path.parent.name)
        examples.append(Example(image=image, available=available, label=label, patient=stem(path),
                                study=stem(path), source=str(path)))
    if not examples:
        raise DataError(image_dir, f"none of the {len(images)} image(s) could be read", "see the problems listed")
    return LoadedData(schema, examples, problems, str(root), "png")
