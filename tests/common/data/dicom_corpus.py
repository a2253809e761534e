"""A corpus of DICOM studies as other hospitals export them, built with pydicom from the shared real files.

The pixels are real (the PGBM study, the pydicom-data CT); what changes is what archives vary in: series
descriptions, ImageType, series and study UIDs, kernels, modalities, files without a suffix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from tests.conftest import shared

PGBM = "pgbm/dicom/PGBM-001_1992-04-02"
PGBM_SERIES = {"T1pre": "*T1prereg*", "T1post": "*T1post*", "FLAIR": "*FLAIRreg*", "T2": "*T2reg*",
               "Mask": "*MaskTumor*"}


def pgbm_files(series: str) -> list[Path]:
    return sorted(shared(PGBM).glob(f"{PGBM_SERIES[series]}/*.dcm"))


def write_series(out: Path, files: list[Path], *, description: str, number: int, study: str | None = None,
                 image_type: list[str] | None = None, pixels=None, suffix: str = ".dcm", **header) -> Path:
    """Copy ``files`` as a new series (new Series/SOP UIDs) into ``out/<description>``; ``pixels(ds, array)`` may
    replace each slice's stored values, ``header`` sets any other keyword."""
    series_uid = generate_uid()
    folder = out / f"{number:03d}-{''.join(c if c.isalnum() else '_' for c in description)}"
    folder.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series_uid, description, number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if study:
            ds.StudyInstanceUID = study
        if image_type is not None:
            ds.ImageType = image_type
        for keyword, value in header.items():
            setattr(ds, keyword, value)
        if pixels is not None:
            values = pixels(ds, ds.pixel_array)
            ds.PixelRepresentation = int(values.min() < 0)
            ds.PixelData = values.astype(np.int16 if values.min() < 0 else np.uint16).tobytes()
        ds.save_as(folder / f"IM{index:04d}{suffix}")
    return folder


def subtraction(post: list[Path], pre: list[Path]):
    """dT1: T1post minus T1pre, slice by slice (signed values, as the real derived series has)."""
    pre_by_position = {round(float(pydicom.dcmread(p).ImagePositionPatient[2]), 2): p for p in pre}

    def pixels(ds, array):
        other = pydicom.dcmread(pre_by_position[round(float(ds.ImagePositionPatient[2]), 2)]).pixel_array
        return (array.astype(np.int32) - other.astype(np.int32)) * 10
    return pixels


def ct_series(out: Path, *, description: str, number: int, slices: int, study: str, stored=None, **header) -> Path:
    """A CT series of ``slices`` slices 5 mm apart, all with the real CT slice's pixels (``stored(hu)`` may
    replace the stored values, given the slice in Hounsfield units)."""
    source = shared("dicom/693_UNCI.dcm")
    folder = out / f"{number:03d}-ct"
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for index in range(slices):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series_uid, number
        ds.SeriesDescription, ds.InstanceNumber = description, index + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [-125.0, -125.0, 10.0 + 5.0 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        if stored is not None:
            values = stored(ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
            ds.PixelRepresentation, ds.PixelData = 0, values.tobytes()
        for keyword, value in header.items():
            setattr(ds, keyword, value)
        ds.save_as(folder / f"CT{index:04d}")  # no suffix, as many PACS exports
    return folder
