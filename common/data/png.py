"""Folders of PNG/JPEG images (+ a masks/ folder, + optional class sub-folders) -> (C, H, W) examples.

Layouts: ``ROOT/images/*.png`` with ``ROOT/masks/*.png`` (matched by sub-folder and file name, common/data/pairing.py),
or ``ROOT/images/<class>/*.png`` (the folder holding an image names its class), or images directly in ROOT. With
``[data] case_folders = true`` the folder holding an image names its case (patient) instead, and the folder above
it, if any, the class: ``images/<case>/*.png`` or ``images/<class>/<case>/*.png``. Colour photographs (fundus,
dermoscopy, histology) stay colour: three channels red, green, blue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..config import DataConfig
from ..schema import ChannelSchema, Example, colour_channel_names
from .files import require_path, walk_files
from .masks import to_labels
from .pairing import IMAGE_FOLDERS, LABEL_FOLDERS, find_folder, pair_labels, stem
from .problems import DataError, DataProblem, LoadedData

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


GREY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")


def read_grey(path: Path) -> np.ndarray:
    """(H, W) float32 grey values; colour is converted to luminance, 16-bit values are kept."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(image, dtype=np.float32)
        return np.asarray(image.convert("L"), dtype=np.float32)


def read_image(path: Path, keep_colour: bool) -> np.ndarray:
    """(H, W) grey, or (H, W, 3) RGB when ``keep_colour`` and the file really holds colour (not R = G = B)."""
    with Image.open(path) as image:
        image.load()
        if not keep_colour or image.mode in GREY_MODES:
            return read_grey(path)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    return rgb


def _read_all(images: list[Path], keep_colour: bool, problems: list[DataProblem]) -> dict[Path, np.ndarray]:
    read = {}
    for path in images:
        try:
            read[path] = read_image(path, keep_colour)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            problems.append(DataProblem(str(path), f"cannot read image ({type(e).__name__}: {e})",
                                        "re-export the image as PNG"))
    return read


def _read_mask(mask_path: Path, shape: tuple[int, ...], config: DataConfig, problems: list[DataProblem]):
    """The label map for an image, or None with the reason reported (the image is kept without its mask)."""
    try:
        mask = read_grey(mask_path)
        if mask.shape != shape:
            raise ValueError(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                             f"{shape[1]}x{shape[0]}")
        return to_labels(mask, config.mask_values, binary_default=True)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        problems.append(DataProblem(str(mask_path), f"mask not used ({e}); image loaded without mask",
                                    "save the mask at the image's size"))
        return None


def load_png(root: str | Path, config: DataConfig) -> LoadedData:
    """Images with optional masks; a mask of the wrong size or unreadable is reported and the image kept.
    Colour images keep their colour (channels red, green, blue) unless ``[data] colour = "grey"``; in a folder
    that holds colour, grey images fill all three."""
    root = require_path(root)
    problems: list[DataProblem] = []
    image_dir = find_folder(root, IMAGE_FOLDERS) or root
    mask_dir = find_folder(root, LABEL_FOLDERS)
    images = [p for p in walk_files(image_dir, problems) if p.suffix.lower() in SUFFIXES
              and (mask_dir is None or mask_dir not in p.parents)]
    if not images:
        raise DataError(image_dir, "no PNG/JPEG image found",
                        "point meddiff at a folder with images/ (and masks/) holding .png or .jpg files")
    folders = {p: _class_and_case(p.relative_to(image_dir).parts[:-1], config.case_folders) for p in images}
    class_names = config.class_names or tuple(sorted({c for c, _ in folders.values() if c is not None}))
    masks = [p for p in walk_files(mask_dir, problems) if p.suffix.lower() in SUFFIXES] if mask_dir else []
    read = _read_all(images, config.colour == "rgb", problems)
    colour = any(pixels.ndim == 3 for pixels in read.values())
    image_channels = colour_channel_names() if colour else ("image",)
    channels = config.channels or (image_channels + (("mask",) if mask_dir else ()))
    schema = ChannelSchema(tuple(channels), tuple(class_names), max(1, len(config.mask_values)))
    mask_of = pair_labels(images, image_dir, masks, mask_dir, problems, what="mask")
    examples = []
    in_colour = all(c in schema.channels for c in colour_channel_names())
    targets = [schema.index(c) for c in colour_channel_names()] if in_colour else [schema.image_indices[0]]
    for path, pixels in read.items():
        if pixels.ndim == 3 and not in_colour:  # [data] channels asks for one image channel
            pixels = pixels @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        image = np.zeros((schema.num_channels, *pixels.shape[:2]), dtype=np.float32)
        available = np.zeros(schema.num_channels, dtype=bool)
        planes = np.moveaxis(pixels, -1, 0) if pixels.ndim == 3 else [pixels] * len(targets)
        for index, plane in zip(targets, planes):
            image[index], available[index] = plane, True
        mask_path = mask_of.get(path)
        if mask_path is not None and schema.mask_indices:
            labels = _read_mask(mask_path, pixels.shape[:2], config, problems)
            if labels is not None:
                image[schema.mask_indices[0]], available[schema.mask_indices[0]] = labels, True
        folder, case = folders[path]
        label = class_names.index(folder) if folder in class_names else None
        examples.append(Example(image=image, available=available, label=label, patient=case or stem(path),
                                study=case or stem(path), source=str(path)))
    if not examples:
        raise DataError(image_dir, f"none of the {len(images)} image(s) could be read", "see the problems listed")
    return LoadedData(schema, examples, problems, str(root), "png", patient_ids=(
        "one patient per case folder ([data] case_folders: the folder holding each image; an image directly in "
        f"{image_dir.name}/ is its own patient)") if config.case_folders else "")


def _class_and_case(folders: tuple[str, ...], case_folders: bool) -> tuple[str | None, str | None]:
    """(class folder, case folder) of an image from the folders between images/ and the file."""
    if not case_folders:
        return (folders[-1] if folders else None), None
    return (folders[-2] if len(folders) >= 2 else None), (folders[-1] if folders else None)
