"""One image file as a 2D array: what a site admin passes to a task (``--given t1=FILE``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from .dicom_pixels import frames_as_float
from .nifti import is_nifti, read_volume
from .png import SUFFIXES as PNG_SUFFIXES, read_grey
from .problems import DataError


def _fail(path: Path, reason: str, fix: str) -> DataError:
    return DataError(path, reason, fix)


def read_image_file(path: str | Path) -> np.ndarray:
    """(H, W) float32 from a PNG/JPEG/TIFF, a .npy (2D, or 3D: middle slice), NIfTI (middle axial slice) or
    DICOM (middle frame). Raises DataError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found", "pass the path of an image file (.png, .npy, .nii.gz or .dcm)")
    try:
        if path.suffix.lower() in PNG_SUFFIXES:
            image = read_grey(path)
        elif path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False).astype(np.float32)
        elif is_nifti(path):
            volume, _ = read_volume(path)
            image = volume[0]
        else:
            image, _ = frames_as_float(pydicom.dcmread(path))
    except DataError:
        raise
    except Exception as e:  # any reader's failure becomes one clear message about this file
        raise _fail(path, f"cannot read the image ({type(e).__name__}: {e})",
                    "check the file is a valid PNG, .npy, NIfTI or DICOM image") from None
    image = np.squeeze(np.asarray(image, dtype=np.float32))
    if image.ndim == 3:
        image = image[image.shape[0] // 2]
    if image.ndim != 2:
        raise _fail(path, f"expected a 2D image (or a volume), got shape {image.shape}", "pass a single image")
    if not np.isfinite(image).all():
        raise _fail(path, "the image contains NaN or infinite values", "fix or re-export the image")
    return image
