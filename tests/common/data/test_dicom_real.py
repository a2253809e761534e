"""The DICOM path on real files: the PGBM study and the assorted pydicom-data objects."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from meddiff.common.config import SERIES_KINDS, ChannelRule, DataConfig
from meddiff.common.data.dicom import load_dicom
from tests.conftest import shared

pytestmark = pytest.mark.realdata  # every test here reads the shared real data

# every file as one grey image channel, whatever its kind: these tests are about decoding pixels
ALL_AS_IMAGE = DataConfig(dicom_rules=(ChannelRule("image", ".*", "Modality", kinds=SERIES_KINDS),), colour="grey")


@pytest.fixture(scope="module")
def pgbm():
    return load_dicom(shared("pgbm/dicom/PGBM-001_1992-04-02"), DataConfig())


def test_pgbm_study_loads_as_one_study_with_five_channels(pgbm):
    assert len(pgbm.examples) == 1
    study = pgbm.examples[0]
    assert set(pgbm.schema.channels) == {"t1pre", "t1post", "flair", "t2", "mask"}
    assert study.image.shape == (5, 24, 320, 260)
    assert study.available.all()
    assert study.patient == "PGBM-001"
    assert pgbm.skipped == []


def test_pgbm_slices_are_ordered_by_position_not_file_name(pgbm):
    positions = np.asarray(pgbm.examples[0].meta["slice_positions"])
    assert np.all(np.diff(positions) > 0)
    np.testing.assert_allclose(np.diff(positions), 6.5, atol=0.01)
    # File names are not in position order in this export, so sorting by name would be wrong.
    folder = shared("pgbm/dicom/PGBM-001_1992-04-02")
    t2_files = sorted((folder).glob("*T2reg*/*.dcm"))
    by_name = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in t2_files]
    assert by_name != sorted(by_name)
    # and each slice of the volume is the pixel data of the file at that position
    normal = np.cross(*np.asarray(pydicom.dcmread(t2_files[0]).ImageOrientationPatient, float).reshape(2, 3))
    t2 = pgbm.examples[0].image[pgbm.schema.index("t2")]
    for f in t2_files[:5]:
        ds = pydicom.dcmread(f)
        along = float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal))
        k = int(np.argmin(np.abs(positions - along)))
        np.testing.assert_array_equal(t2[k], ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1))
                                      + float(ds.get("RescaleIntercept", 0)))


def test_pgbm_mask_is_aligned_with_the_images(pgbm):
    study = pgbm.examples[0]
    mask = study.image[pgbm.schema.index("mask")]
    flair = study.image[pgbm.schema.index("flair")]
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert 0 < mask.mean() < 0.05
    tumour = mask > 0
    head = flair > np.percentile(flair[flair > 0], 10)
    assert head[tumour].all()  # every tumour voxel lies inside the head on FLAIR
    # and the tumour is FLAIR-hyperintense compared with the rest of the head, as glioblastoma is
    assert flair[tumour].mean() > 1.3 * flair[head & ~tumour].mean()


def test_every_assorted_dicom_file_loads_or_is_reported():
    folder = shared("dicom")
    data = load_dicom(folder, ALL_AS_IMAGE)
    loaded = {e.source: e.image.shape for e in data.examples}
    reported = {p.path for p in data.skipped}
    for f in sorted(folder.glob("*.dcm")):
        assert str(f) in loaded or str(f) in reported, f"{f.name} neither loaded nor reported"
    shapes = {k.split("/")[-1]: v for k, v in loaded.items()}
    assert shapes["emri_small.dcm"] == (1, 10, 64, 64)  # multi-frame MR
    assert shapes["eCT_Supplemental.dcm"] == (1, 2, 512, 512)  # enhanced multi-frame CT
    assert shapes["US1_UNCI.dcm"] == (1, 1, 480, 640)  # RGB ultrasound -> grey
    assert shapes["OBXXXX1A.dcm"] == (1, 1, 600, 800)  # palette colour ultrasound -> grey
    assert shapes["JPEG2000_UNC.dcm"] == (1, 1, 1024, 256)
    notes = " ".join(str(p) for p in data.notes)
    assert "US1_UNCI.dcm: colour (RGB) converted to grey" in notes
    assert "OBXXXX1A.dcm: palette colour converted to grey" in notes


def test_ct_is_in_hounsfield_units():
    data = load_dicom(shared("dicom/693_UNCI.dcm"), ALL_AS_IMAGE)
    ct = data.examples[0].image[0]
    raw = pydicom.dcmread(shared("dicom/693_UNCI.dcm")).pixel_array
    np.testing.assert_array_equal(ct[0], raw.astype(np.float32) - 1024.0)
    assert ct.min() <= -1000  # air
