"""Synthetic data as a data set another tool can read: npz (MedMNIST-style), PNG folders, NIfTI and DICOM.

Images are the model's [-1, 1] values; mask channels become integer label maps; a colour image (the schema's red,
green, blue channels) is written as one colour image: RGB PNG, DICOM with PhotometricInterpretation RGB, NIfTI with a
colour axis (x, y, z, t = 1, rgb; intent "vector"). Synthetic DICOM is Secondary
Capture written from scratch: new Study/Series/SOP UIDs, ``ImageType`` DERIVED\\SECONDARY, ``ConversionType``
SYN (synthetic image), ``BurnedInAnnotation`` NO, a "SYNTHETIC - meddiff" series description and patient name.
Nothing is copied from any real file: the exporter never opens one (and a test checks the result against the
source files of the model's data).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, SecondaryCaptureImageStorage, generate_uid

from ..common.data.transforms import mask_values_to_labels
from ..common.schema import ChannelSchema
from ..common.synthetic import SYNTHETIC_MARK

FORMATS = ("npz", "png", "nifti", "dicom")
DICOM_LEVELS = 4095  # 12-bit stored values


def _channel_values(images: np.ndarray, schema: ChannelSchema, c: int) -> np.ndarray:
    """(N, H, W) as uint8 [0, 255] for image channels, or integer labels for mask channels."""
    if schema.is_mask(schema.channels[c]):
        return mask_values_to_labels(images[:, c], schema.mask_labels).astype(np.uint8)
    return np.rint((np.clip(images[:, c], -1, 1) + 1) * 127.5).astype(np.uint8)


def outputs(schema: ChannelSchema) -> list[tuple[str, tuple[int, ...]]]:
    """What is written per sample: (name, channel indices); a colour group is one output of three channels."""
    grouped = {group[0]: group for group in schema.colour_groups}
    members = {i for group in schema.colour_groups for i in group}
    items = []
    for c, channel in enumerate(schema.channels):
        if c in grouped:
            base = channel[:-4] if channel.endswith("_red") else "colour"
            items.append((base, grouped[c]))
        elif c not in members:
            items.append((channel, (c,)))
    return items


def _output_values(images: np.ndarray, schema: ChannelSchema, indices: tuple[int, ...]) -> np.ndarray:
    """(N, H, W) uint8 / labels for one channel, (N, H, W, 3) uint8 for a colour output."""
    planes = [_channel_values(images, schema, c) for c in indices]
    return planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)


def _class_name(schema: ChannelSchema, label: int) -> str:
    return schema.class_names[label] if 0 <= label < len(schema.class_names) else "unlabelled"


def export_npz(images: np.ndarray, labels: np.ndarray, schema: ChannelSchema, out: Path) -> Path:
    """MedMNIST-style: ``<channel>`` (N, H, W) uint8 / labels, and ``labels`` (N, 1)."""
    path = out / "synthetic.npz"
    np.savez_compressed(path, **{c: _channel_values(images, schema, i) for i, c in enumerate(schema.channels)},
                        labels=labels.reshape(-1, 1), channels=np.asarray(schema.channels),
                        class_names=np.asarray(schema.class_names))
    return path


def export_png(images: np.ndarray, labels: np.ndarray, schema: ChannelSchema, out: Path) -> Path:
    """``png/<class>/<index>_<channel>.png``: one folder per class, masks as label values, colour as RGB."""
    folder = out / "png"
    for channel, indices in outputs(schema):
        values = _output_values(images, schema, indices)
        for i, label in enumerate(labels):
            target = folder / _class_name(schema, int(label))
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(values[i]).save(target / f"{i:05d}_{channel}.png")
    return folder


def _nifti_volume(images: np.ndarray, schema: ChannelSchema, channel: str, indices: tuple[int, ...]) -> np.ndarray:
    """(N, x, y, 1[, 1, 3]): NIfTI is (x, y, z[, t, vector]) while our arrays are (row, column)."""
    if schema.is_mask(channel):
        return _channel_values(images, schema, indices[0]).transpose(0, 2, 1)[..., None].astype(np.uint8)
    planes = images[:, list(indices)].transpose(0, 3, 2, 1).astype(np.float32)  # (N, x, y, channels)
    return planes[:, :, :, None, None, :] if len(indices) == 3 else planes[:, :, :, :1]


def export_nifti(images: np.ndarray, labels: np.ndarray, schema: ChannelSchema, out: Path) -> Path:
    """``nifti/<index>_<channel>.nii.gz`` (one slice, 1 mm pixels; colour with a vector axis named RGB) and
    ``nifti/labels.json``."""
    folder = out / "nifti"
    folder.mkdir(parents=True, exist_ok=True)
    for channel, indices in outputs(schema):
        volumes = _nifti_volume(images, schema, channel, indices)
        for i in range(len(images)):
            image = nib.Nifti1Image(np.ascontiguousarray(volumes[i]), np.eye(4))
            if len(indices) == 3:
                image.header.set_intent("vector", name="RGB")
            image.header["descrip"] = SYNTHETIC_MARK.encode()
            nib.save(image, folder / f"{i:05d}_{channel}.nii.gz")
    (folder / "labels.json").write_text(json.dumps(
        {f"{i:05d}": _class_name(schema, int(label)) for i, label in enumerate(labels)}, indent=1))
    return folder


def _synthetic_dataset(pixels: np.ndarray, study: str, series: str, number: int, description: str,
                       now: datetime.datetime) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "SYNTHETIC^MEDDIFF", f"SYNTHETIC-{study[-8:]}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality, ds.ConversionType = "OT", "SYN"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.SeriesDescription = ds.StudyDescription = description
    ds.Manufacturer, ds.SoftwareVersions = "meddiff", "meddiff synthetic export"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "SYNTHETIC", 1, number
    ds.Rows, ds.Columns = pixels.shape[:2]
    if pixels.ndim == 3:  # colour: 8-bit RGB, pixel-interleaved
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint8)).tobytes()
        return ds
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = DICOM_LEVELS // 2, DICOM_LEVELS
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def export_dicom(images: np.ndarray, labels: np.ndarray, schema: ChannelSchema, out: Path, model: str) -> Path:
    """``dicom/<channel>/<index>.dcm``: one synthetic Secondary Capture series per channel (one RGB series per
    colour image), one study per export."""
    folder, study, now = out / "dicom", generate_uid(), datetime.datetime.now()
    for channel, indices in outputs(schema):
        series = generate_uid()
        if schema.is_mask(channel):
            values = mask_values_to_labels(images[:, indices[0]], schema.mask_labels)
        elif len(indices) == 3:
            values = _output_values(images, schema, indices)
        else:
            values = np.rint((np.clip(images[:, indices[0]], -1, 1) + 1) / 2 * DICOM_LEVELS)
        (folder / channel).mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(labels):
            description = f"{SYNTHETIC_MARK} {channel} {_class_name(schema, int(label))} ({Path(model).name})"[:64]
            _synthetic_dataset(values[i], study, series, i + 1, description, now).save_as(
                folder / channel / f"{i:05d}.dcm", enforce_file_format=True)
    return folder


def export(images: np.ndarray, labels: np.ndarray, schema: ChannelSchema, out: str | Path, formats: list[str],
           model: str = "") -> dict[str, str]:
    """Write the requested formats under ``out``; returns {format: path}."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers = {"npz": lambda: export_npz(images, labels, schema, out),
               "png": lambda: export_png(images, labels, schema, out),
               "nifti": lambda: export_nifti(images, labels, schema, out),
               "dicom": lambda: export_dicom(images, labels, schema, out, model)}
    return {name: str(writers[name]()) for name in formats}
