"""Pixel conversions on real DICOM files changed the way archives differ: compression, MONOCHROME1, names."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from meddiff.common.config import SERIES_KINDS, ChannelRule, DataConfig
from meddiff.common.data.dicom import load_dicom
from tests.conftest import shared

pytestmark = pytest.mark.realdata  # every test here reads the shared real data

# every file as one grey image channel, whatever its kind: these tests are about decoding pixels
ALL_AS_IMAGE = DataConfig(dicom_rules=(ChannelRule("image", ".*", "Modality", kinds=SERIES_KINDS),), colour="grey")


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(tmp_path, syntax):
    source = shared("dicom/693_UNCI.dcm")
    ds = pydicom.dcmread(source)
    ds.compress(syntax)
    ds.save_as(tmp_path / "compressed.dcm")
    assert pydicom.dcmread(tmp_path / "compressed.dcm").file_meta.TransferSyntaxUID == syntax
    compressed = load_dicom(tmp_path, ALL_AS_IMAGE).examples[0].image
    plain = load_dicom(source, ALL_AS_IMAGE).examples[0].image
    np.testing.assert_array_equal(compressed, plain)


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(shared("dicom/693_UNCI.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    inverted = load_dicom(tmp_path, ALL_AS_IMAGE)
    plain = load_dicom(shared("dicom/693_UNCI.dcm"), ALL_AS_IMAGE).examples[0].image
    np.testing.assert_allclose(inverted.examples[0].image, plain.max() + plain.min() - plain)
    assert any("MONOCHROME1" in str(p) for p in inverted.notes)


def test_slice_order_ignores_shuffled_file_names(tmp_path):
    series = sorted(shared("pgbm/dicom/PGBM-001_1992-04-02").glob("*T2reg*/*.dcm"))
    rng = np.random.default_rng(0)
    for i, index in enumerate(rng.permutation(len(series))):
        shutil.copy(series[index], tmp_path / f"IMG{i:04d}")  # archive exports often have no suffix
    shuffled = load_dicom(tmp_path, DataConfig()).examples[0]
    original = load_dicom(series[0].parent, DataConfig()).examples[0]
    np.testing.assert_array_equal(shuffled.image, original.image)
    assert np.all(np.diff(shuffled.meta["slice_positions"]) > 0)


def test_channel_rules_from_config_choose_the_channels(tmp_path):
    study = shared("pgbm/dicom/PGBM-001_1992-04-02")
    config = DataConfig(channels=("t2", "mask"), dicom_rules=(ChannelRule("t2", "^T2"), ChannelRule("mask", "mask")))
    data = load_dicom(study, config)
    assert data.schema.channels == ("t2", "mask")
    assert data.examples[0].image.shape == (2, 24, 320, 260)
    unused = [p for p in data.skipped if "no channel rule matches" in p.reason]
    assert len(unused) == 3  # T1pre, T1post and FLAIR series are reported as not used


def test_channel_with_other_geometry_is_dropped_with_a_reason(tmp_path):
    study = tmp_path / "study"
    shutil.copytree(shared("pgbm/dicom/PGBM-001_1992-04-02"), study)
    for f in study.glob("*MaskTumor*/*.dcm"):  # mask series shifted 20 mm: no longer on the images' grid
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 20.0]
        ds.save_as(f)
    data = load_dicom(study, DataConfig())
    example = data.examples[0]
    assert not example.available[data.schema.index("mask")]
    assert example.available[[data.schema.index(c) for c in ("t1pre", "t1post", "flair", "t2")]].all()
    reasons = [p.reason for p in data.skipped if "MaskTumor" in p.path]
    assert reasons and "slice positions differ" in reasons[0]
