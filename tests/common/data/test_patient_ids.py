"""Patient ids reach the training tensors where the data names its patients (DICOM PatientID, an npz patient or
study array, NIfTI case folders) and are absent where it does not (MedMNIST), so patient-level DP and held-out
splits never mistake a file name for a patient."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from meddiff.common.config import ChannelRule, DataConfig
from meddiff.common.data.prepared_cache import load_training_set_cached
from meddiff.common.data.training_set import load_training_set
from tests.common.data.dicom_corpus import pgbm_files, write_series
from tests.conftest import shared

T2_ONLY = DataConfig(dicom_rules=(ChannelRule("t2", "T2"),), resolution=16)


@pytest.mark.realdata
def test_dicom_studies_of_one_patient_share_a_patient_number(tmp_path):
    files = pgbm_files("T2")[:3]
    for number, patient in enumerate(("P1", "P1", "P2"), start=1):  # P1 has two studies
        write_series(tmp_path / f"study{number}", files, description="T2", number=number, study=generate_uid(),
                     PatientID=patient)
    training = load_training_set(str(tmp_path), T2_ONLY)
    patients = training.tensors.patients
    assert "PatientID" in training.patient_ids and patients is not None and len(patients) == 9
    assert len(set(patients.tolist())) == 2 and sorted(np.bincount(patients.numpy()).tolist()) == [3, 6]
    cached = load_training_set_cached(str(tmp_path), T2_ONLY, 16, tmp_path / "cache")
    again = load_training_set_cached(str(tmp_path), T2_ONLY, 16, tmp_path / "cache")  # read from the cache
    assert again.tensors.patients.tolist() == cached.tensors.patients.tolist() == patients.tolist()
    assert again.patient_ids == training.patient_ids


@pytest.mark.realdata
def test_an_npz_with_a_study_array_names_patients_and_medmnist_does_not(tmp_path):
    pgbm = load_training_set(str(shared("pgbm/pgbm_t1_t1c_flair_t2_mask_128.npz")), DataConfig(resolution=16))
    assert pgbm.tensors.patients is not None and "study" in pgbm.patient_ids
    medmnist = load_training_set(str(shared("medmnist/pneumoniamnist.npz")), DataConfig(resolution=16))
    assert medmnist.tensors.patients is None and medmnist.patient_ids == ""


def test_nifti_case_folders_are_patients(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    for case, name in (("case01", "t1"), ("case01", "t1-followup"), ("case02", "t1")):
        folder = tmp_path / "images" / case
        folder.mkdir(parents=True, exist_ok=True)
        volume = np.random.default_rng(len(name)).random((16, 16, 4)).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / f"{name}.nii.gz")
    training = load_training_set(str(tmp_path), DataConfig(resolution=16))
    assert training.tensors.patients is not None and len(set(training.tensors.patients.tolist())) == 2


def _nifti(path, value: float) -> None:
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.full((8, 8, 2), value, dtype=np.float32), np.eye(4)), path)


def test_case_folders_with_the_same_file_names_keep_their_own_labels(tmp_path):
    """images/case0N/t1.nii.gz pairs with labels/case0N/t1.nii.gz, never with another case's t1 (a bare file name
    would match both); a label that names several images and sits in no case folder is reported, not guessed."""
    from meddiff.common.data.nifti import load_nifti

    for case, label in (("case01", 1.0), ("case02", 0.0)):
        _nifti(tmp_path / "images" / case / "t1.nii.gz", 1.0)
        _nifti(tmp_path / "labels" / case / "t1.nii.gz", label)
    loaded = load_nifti(tmp_path, DataConfig())
    masks = {e.patient: float(e.image[-1].max()) for e in loaded.examples}
    assert masks == {"case01": 1.0, "case02": 0.0}
    for path in (tmp_path / "labels").rglob("*.nii.gz"):
        path.unlink()
    _nifti(tmp_path / "labels" / "t1.nii.gz", 1.0)  # flat: which t1?
    loaded = load_nifti(tmp_path, DataConfig())
    assert all(not e.available[-1] for e in loaded.examples)
    assert any("2 images are named 't1'" in p.reason and p.path.endswith("t1.nii.gz") for p in loaded.problems)


def test_png_case_folders_name_patients_and_classes(tmp_path):
    from PIL import Image

    from meddiff.common.data.png import load_png

    for klass, case, name in (("normal", "p1", "a"), ("normal", "p1", "b"), ("lesion", "p2", "a"),
                              ("lesion", "p1", "c")):
        for folder, value in (("images", 120), ("masks", 255 if klass == "lesion" else 0)):
            path = tmp_path / folder / klass / case / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    loaded = load_png(tmp_path, DataConfig(case_folders=True))
    assert loaded.schema.class_names == ("lesion", "normal") and loaded.patient_ids
    seen = {(loaded.schema.class_names[e.label], e.patient, e.image[-1].max() > 0) for e in loaded.examples}
    assert seen == {("normal", "p1", False), ("lesion", "p2", True), ("lesion", "p1", True)}
    assert not loaded.problems
    # without case_folders the folder holding an image is its class, and no patients are named
    plain = load_png(tmp_path, DataConfig())
    assert set(plain.schema.class_names) == {"p1", "p2"} and plain.patient_ids == ""
    from meddiff.common.data.suggest import suggest_data_section

    assert "# case_folders = true" in suggest_data_section(tmp_path, DataConfig())
