"""Synthetic data export: every format reads back to the samples, and synthetic DICOM carries no attribute of
the real files the model was trained on."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from meddiff.cli import main
from meddiff.common.schema import ChannelSchema
from meddiff.tasks.export import DICOM_LEVELS, export
from tests.conftest import shared

SCHEMA = ChannelSchema(("t1", "mask"), ("healthy", "lesion"), mask_labels=2)


def _samples(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(n, 2, 12, 10)).astype(np.float32)
    images[:, 1] = rng.integers(0, 3, size=(n, 12, 10)) - 1.0  # labels 0, 1, 2 as -1, 0, 1
    return images, np.arange(n) % 2


def test_every_format_reads_back_to_the_samples(tmp_path):
    images, labels = _samples()
    paths = export(images, labels, SCHEMA, tmp_path, ["npz", "png", "nifti", "dicom"], "model.pt")
    expected_t1 = np.rint((images[:, 0] + 1) * 127.5)
    expected_mask = np.rint(images[:, 1] + 1)  # mask_labels = 2: [-1, 1] -> 0..2
    with np.load(paths["npz"]) as npz:
        assert np.array_equal(npz["t1"], expected_t1) and np.array_equal(npz["mask"], expected_mask)
        assert npz["labels"].ravel().tolist() == labels.tolist() and list(npz["class_names"]) == ["healthy", "lesion"]
    lesion = sorted((tmp_path / "png" / "lesion").glob("*_t1.png"))
    assert len(lesion) == 3 and np.array_equal(np.asarray(Image.open(lesion[0])), expected_t1[1])
    nifti = nib.load(tmp_path / "nifti" / "00002_t1.nii.gz").get_fdata()
    assert nifti.shape == (10, 12, 1) and np.allclose(nifti[:, :, 0].T, images[2, 0], atol=1e-6)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "nifti" / "00002_mask.nii.gz").dataobj)[:, :, 0].T,
                          expected_mask[2])
    assert json.loads((tmp_path / "nifti" / "labels.json").read_text())["00001"] == "lesion"
    ds = pydicom.dcmread(tmp_path / "dicom" / "t1" / "00003.dcm")
    assert np.array_equal(ds.pixel_array, np.rint((images[3, 0] + 1) / 2 * DICOM_LEVELS))
    assert np.array_equal(pydicom.dcmread(tmp_path / "dicom" / "mask" / "00003.dcm").pixel_array, expected_mask[3])


def test_unknown_format_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="jpeg"):
        export(*_samples(), SCHEMA, tmp_path, ["jpeg"])


# DICOM value representations that can identify a patient, a study, a device or a time
IDENTIFYING_VRS = {"PN", "LO", "SH", "UI", "DA", "TM", "DT", "AS", "AE", "LT", "ST", "UT", "UC"}
STANDARD_CONSTANTS = {"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID"}


def _values(ds: pydicom.Dataset) -> set[tuple[str, str]]:
    found = set()
    for element in ds.iterall():
        if element.VR in IDENTIFYING_VRS and element.value not in (None, ""):
            found.add(str(element.value))
    for element in ds.file_meta:
        if element.VR in IDENTIFYING_VRS:
            found.add(str(element.value))
    return found


@pytest.mark.realdata
@pytest.mark.slow
def test_synthetic_dicom_from_a_model_trained_on_real_dicom_carries_nothing_of_the_source(tmp_path):
    source = tmp_path / "archive" / "t2"
    source.mkdir(parents=True)
    for f in sorted(shared("pgbm/dicom/PGBM-001_1992-04-02").glob("*T2reg*/*.dcm"))[:24]:
        shutil.copy(f, source / f.name)
    tiny = ["--channels", "8,16", "--resolution", "16", "--batch-size", "4"]
    assert main(["train", "--data", str(source.parent), "--out", str(tmp_path / "run"), "--steps", "2", *tiny]) == 0
    assert main(["generate", "--model", str(tmp_path / "run" / "model.pt"), "--n", "4", "--steps", "2",
                 "--out", str(tmp_path / "gen"), "--export", "dicom,npz"]) == 0
    report = json.loads((tmp_path / "gen" / "generate.json").read_text())
    assert report["audit"] is not None  # export ran the memorisation audit against the model's own data
    source_values = set().union(*(_values(pydicom.dcmread(f)) for f in source.iterdir()))
    files = sorted((tmp_path / "gen" / "dicom" / "t2").glob("*.dcm"))
    assert len(files) == report["kept"] > 0
    kept = np.load(tmp_path / "gen" / "synthetic.npz")["t2"]
    sop_uids = set()
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.ConversionType == "SYN"
        assert ds.BurnedInAnnotation == "NO" and ds.SeriesDescription.startswith("SYNTHETIC - meddiff")
        assert str(ds.PatientName) == "SYNTHETIC^MEDDIFF"
        sop_uids.add(ds.SOPInstanceUID)
        copied = {str(e.keyword): str(e.value) for e in [*ds.iterall(), *ds.file_meta]
                  if e.keyword not in STANDARD_CONSTANTS and str(e.value) in source_values}
        assert not copied, f"{path.name} carries values of the source files: {copied}"
        assert np.allclose(ds.pixel_array / DICOM_LEVELS * 255, kept[index], atol=0.51 + 255 / DICOM_LEVELS)
    assert len(sop_uids) == len(files)  # a new SOP Instance UID per file
