"""Which mask or label file belongs to which image, in the images/ + labels/ layouts (NIfTI and PNG).

A label is matched by its path under its folder first (``labels/case01/t1.nii.gz`` for ``images/case01/t1.nii.gz``),
so per-case folders whose files share names never borrow another case's mask. A bare file name is used only where
it names exactly one image and one label (the flat MSD layout, or masks/ kept flat beside class folders). A label
that matches no image, or more than one, is reported with the fix, never guessed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .problems import DataProblem

LABEL_FOLDERS = ("labels", "labelsTr", "masks", "segmentations")
IMAGE_FOLDERS = ("images", "imagesTr")
SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def stem(path: Path) -> str:
    """The file name without its image suffix (both parts of ``.nii.gz``)."""
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def find_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def relative_name(path: Path, folder: Path) -> str:
    """``case01/t1`` for ``folder/case01/t1.nii.gz``: the sub-folders and the stem."""
    return (path.parent.relative_to(folder) / stem(path)).as_posix()


def pair_labels(images: list[Path], image_dir: Path, labels: list[Path], label_dir: Path | None,
                problems: list[DataProblem], what: str = "label") -> dict[Path, Path]:
    """{image: its label file}; labels matching no image (or several) are reported in ``problems``."""
    if label_dir is None or not labels:
        return {}
    by_path = {relative_name(p, label_dir): p for p in labels}
    label_stems, image_stems = Counter(stem(p) for p in labels), Counter(stem(p) for p in images)
    by_stem = {stem(p): p for p in labels if label_stems[stem(p)] == 1}
    pairs = {}
    for image in images:
        label = by_path.get(relative_name(image, image_dir))
        if label is None and image_stems[stem(image)] == 1:
            label = by_stem.get(stem(image))
        if label is not None:
            pairs[image] = label
    used = set(pairs.values())
    for label in sorted(set(labels) - used):
        several = image_stems[stem(label)] > 1
        problems.append(DataProblem(
            str(label), f"{what} without a matching image" + (
                f" ({image_stems[stem(label)]} images are named {stem(label)!r} in different sub-folders)"
                if several else ""),
            f"give the {what} the same sub-folder and file name as its image in {image_dir.name}/"))
    return pairs
