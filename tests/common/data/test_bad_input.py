"""Broken input of every kind a hospital export contains: a clear reason per file, and the rest still loads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from meddiff.common.config import ConfigError
from meddiff.common.site_config import load_site_config
from meddiff.common.data.loader import load_dataset
from meddiff.common.data.problems import DataError
from tests.conftest import shared


def _copy_series(tmp_path, count=4):
    """A few real T2 slices of the PGBM study as a valid series to put bad files beside."""
    folder = tmp_path / "archive" / "t2"
    folder.mkdir(parents=True)
    for f in sorted(shared("pgbm/dicom/PGBM-001_1992-04-02").glob("*T2reg*/*.dcm"))[:count]:
        shutil.copy(f, folder / f.name)
    return folder


def _reason(data, name):
    found = [p for p in data.problems if p.path.endswith(name)]
    assert found, f"{name} was not reported; problems: {[str(p) for p in data.problems]}"
    return found[0].reason


def _valid_t2_still_loads(data):
    assert len(data.examples) == 1
    assert data.examples[0].image.shape[1] == 4  # the four valid slices
    assert data.examples[0].available[data.schema.index("t2")]


@pytest.mark.realdata
def test_truncated_dicom(tmp_path):
    series = _copy_series(tmp_path)
    raw = (series / os.listdir(series)[0]).read_bytes()
    (series / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    data = load_dataset(tmp_path / "archive")
    reason = _reason(data, "truncated.dcm")
    assert "cannot be decoded" in reason or "damaged" in reason
    _valid_t2_still_loads(data)


@pytest.mark.realdata
def test_random_bytes_named_dcm(tmp_path):
    _copy_series(tmp_path)
    (tmp_path / "archive" / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    data = load_dataset(tmp_path / "archive")
    assert "not a DICOM file" in _reason(data, "noise.dcm")
    _valid_t2_still_loads(data)


@pytest.mark.realdata
def test_dicom_without_pixel_data(tmp_path):
    series = _copy_series(tmp_path)
    ds = pydicom.dcmread(shared("dicom/693_UNCI.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "archive" / "report.dcm")
    data = load_dataset(tmp_path / "archive")
    assert "without pixel data" in _reason(data, "report.dcm")
    _valid_t2_still_loads(data)
    assert series.exists()


@pytest.mark.realdata
def test_mixed_geometry_in_one_series(tmp_path):
    series = _copy_series(tmp_path)
    t2 = pydicom.dcmread(next(series.iterdir()))
    odd = pydicom.dcmread(shared("dicom/693_UNCI.dcm"))  # 512x512 CT slice put into the T2 series
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription", "PatientID"):
        setattr(odd, keyword, getattr(t2, keyword))
    odd.save_as(series / "odd_size.dcm")
    data = load_dataset(tmp_path / "archive")
    assert "mixed geometry" in _reason(data, "odd_size.dcm")
    _valid_t2_still_loads(data)


@pytest.mark.realdata
def test_duplicate_slice_position(tmp_path):
    series = _copy_series(tmp_path)
    first = sorted(series.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(series / "zz_duplicate.dcm")
    data = load_dataset(tmp_path / "archive")
    assert "duplicate slice position" in _reason(data, "zz_duplicate.dcm")
    _valid_t2_still_loads(data)


@pytest.mark.realdata
def test_nan_nifti_and_wrong_shape_label(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz"):
        shutil.copy(shared(f"hippocampus/images/{name}"), images / name)
        shutil.copy(shared(f"hippocampus/labels/{name}"), labels / name)
    bad = np.full((8, 8, 8), np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(bad, np.eye(4)), images / "nan_case.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), labels / "hippocampus_003.nii.gz")
    data = load_dataset(tmp_path)
    assert "NaN" in _reason(data, "nan_case.nii.gz")
    assert "differs from image shape" in _reason(data, "labels/hippocampus_003.nii.gz")
    assert len(data.examples) == 2
    by_name = {e.source.split("/")[-1]: e for e in data.examples}
    assert by_name["hippocampus_001.nii.gz"].available.all()
    assert not by_name["hippocampus_003.nii.gz"].available[1]  # image kept, wrong label not used


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist") as missing:
        load_dataset(tmp_path / "no_such_folder")
    assert "no_such_folder" in str(missing.value) and "Fix:" in str(missing.value)


@pytest.mark.realdata
def test_png_mask_of_wrong_size_and_corrupt_png(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("JPCLN001.png", "JPCLN002.png"):
        shutil.copy(shared(f"jsrt/images/{name}"), tmp_path / "images" / name)
        shutil.copy(shared(f"jsrt/masks/{name}"), tmp_path / "masks" / name)
    Image.new("L", (100, 80)).save(tmp_path / "masks" / "JPCLN002.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    data = load_dataset(tmp_path, _jsrt_config())
    assert "mask size 100x80 differs" in _reason(data, "masks/JPCLN002.png")
    assert "cannot read image" in _reason(data, "broken.png")
    by_name = {e.source.split("/")[-1]: e for e in data.examples}
    assert set(by_name) == {"JPCLN001.png", "JPCLN002.png"}
    assert by_name["JPCLN001.png"].available.all() and not by_name["JPCLN002.png"].available[1]


def _jsrt_config():
    from meddiff.common.config import DataConfig
    return DataConfig(mask_values=(150, 200, 250))


def test_npz_without_expected_keys(tmp_path):
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((3, 4)), meta=np.zeros(3))
    with pytest.raises(DataError, match="not found") as error:
        load_dataset(tmp_path / "wrong.npz")
    assert "wrong.npz" in str(error.value) and "train_images" in str(error.value)
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(tmp_path / "corrupt.npz")


def test_wrong_config_key_and_value(tmp_path):
    (tmp_path / "site.toml").write_text('[data]\nresolutoin = 64\n')
    with pytest.raises(ConfigError, match="resolutoin"):
        load_site_config(tmp_path / "site.toml")
    (tmp_path / "site.toml").write_text('[data]\nformat = "dcm"\n')
    with pytest.raises(ConfigError, match="format"):
        load_site_config(tmp_path / "site.toml")
    (tmp_path / "site.toml").write_text('[data]\nresolution = "big"\n')
    with pytest.raises(ConfigError, match="must be a number"):
        load_site_config(tmp_path / "site.toml")


@pytest.mark.realdata
def test_unreadable_file_is_reported_and_the_rest_loads(tmp_path_factory):
    """Permissions only bind non-root users: as root the check runs in a child process as 'nobody'."""
    import tempfile

    base = tempfile.mkdtemp(prefix="meddiff-perm-")  # world-traversable, unlike pytest's 0700 tmp folders
    try:
        os.chmod(base, 0o755)
        root = __import__("pathlib").Path(base)
        series = _copy_series(root)
        locked = series / "locked.dcm"
        shutil.copy(next(series.iterdir()), locked)
        locked.chmod(0)
        code = ("from meddiff.common.data.loader import load_dataset;"
                f"d = load_dataset({str(root / 'archive')!r}, log_problems=False);"
                "print(len(d.examples), d.examples[0].image.shape[1]);"
                "print('\\n'.join(str(p) for p in d.problems))")
        command = [sys.executable, "-c", code]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root and setpriv is absent: cannot drop privileges to test permissions")
            probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                    "-c", "import meddiff"], capture_output=True, cwd=base, timeout=60)
            if probe.returncode != 0:
                pytest.skip("the virtualenv or checkout is not readable by user 'nobody'; cannot test permissions")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=base, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "1 4"
        assert "locked.dcm: cannot read file (permission denied)" in result.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
