"""NIfTI, PNG and npz loaders on the real shared data sets."""

from __future__ import annotations

import pytest

import numpy as np

from meddiff.common.config import DataConfig
from meddiff.common.data.loader import detect_format, load_dataset
from tests.conftest import shared

pytestmark = pytest.mark.realdata  # every test here reads the shared real data


def test_jsrt_loads_247_images_with_three_structure_masks():
    data = load_dataset(shared("jsrt"), DataConfig(mask_values=(150, 200, 250)))
    assert data.format == "png"
    assert len(data.examples) == 247
    assert data.schema.channels == ("image", "mask")
    assert data.schema.mask_labels == 3
    assert all(e.available.all() and e.image.shape == (2, 224, 224) for e in data.examples)
    labels = np.unique(np.concatenate([np.unique(e.image[1]) for e in data.examples[:20]]))
    assert set(labels) == {0.0, 1.0, 2.0, 3.0}
    assert data.skipped == []


def test_hippocampus_loads_3d_pairs_and_reports_unpaired_files():
    data = load_dataset(shared("hippocampus"))
    assert data.format == "nifti"
    paired = [e for e in data.examples if e.available.all()]
    assert len(paired) == 260
    assert all(e.is_3d for e in data.examples)
    assert data.schema.mask_labels == 2
    example = paired[0]
    assert set(np.unique(example.image[1])) == {0.0, 1.0, 2.0}
    # Labels sit on the hippocampus (homogeneous grey matter): intensity varies far less inside the label
    # than over the crop. A label misaligned by a flip or a shift fails this (measured CV 0.45-0.53).
    for e in paired[:10]:
        inside = e.image[0][e.image[1] > 0]
        assert inside.std() / inside.mean() < 0.75 * e.image[0].std() / e.image[0].mean()
    skipped = {p.path.split("/")[-1] for p in data.skipped}
    assert skipped == {"hippocampus_010.nii.gz", "hippocampus_281.nii.gz"}  # labels without images
    assert any("hippocampus_118" in p.path for p in data.notes)  # image without label


def test_medmnist_npz_loads_with_labels():
    for name, n_train in (("pneumoniamnist", 4690), ("breastmnist", 546)):
        path = shared(f"medmnist/{name}.npz")
        assert detect_format(path) == "npz"
        data = load_dataset(path)
        assert len(data.examples) == n_train
        assert data.schema.num_classes == 2
        assert {e.label for e in data.examples} == {0, 1}
        assert data.examples[0].image.shape == (1, 28, 28)
        test = load_dataset(path, DataConfig(npz_split="test"))
        assert test.examples[0].patient.startswith("test-")


def test_pgbm_slice_archive_keeps_study_and_patient():
    data = load_dataset(shared("pgbm/pgbm_t1_t1c_flair_t2_mask_128.npz"))
    assert data.schema.channels == ("t1pre", "t1post", "flair", "t2", "mask")
    assert len(data.examples) == 165
    assert len({e.study for e in data.examples}) == 7
    assert len({e.patient for e in data.examples}) == 4  # PGBM-001, -003, -006, -008
    assert sum(e.image[4].any() for e in data.examples) == 40  # slices with tumour
