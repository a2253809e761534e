"""The PGBM split every task benchmark uses: split by patient (never by slice), tumour-free training slices.

Train: patients PGBM-001 and PGBM-003 (4 studies), only slices whose tumour mask is empty (the anomaly detector
must learn healthy anatomy; denoising and super-resolution use the same model). Test: patients PGBM-006 and
PGBM-008 (3 studies), every slice, with its mask. The derived archives are written into the benchmark's own
output folder (never into the repository), in the channel layout `meddiff` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ARCHIVE = "pgbm/pgbm_t1_t1c_flair_t2_mask_128.npz"
CONTRASTS = ("t1pre", "t1post", "flair", "t2")
TRAIN_PATIENTS = ("PGBM-001", "PGBM-003")
TEST_PATIENTS = ("PGBM-006", "PGBM-008")


def write_split(data_root: Path, out: Path) -> tuple[Path, Path]:
    """(train_healthy.npz, test.npz) under ``out``: contrasts as float32 in [0, 1], test also has ``mask``."""
    source = np.load(Path(data_root) / ARCHIVE)
    patient = np.asarray([str(s).split("/")[0] for s in source["study"]])
    tumour = source["mask"].reshape(len(patient), -1).any(axis=1)
    train = np.isin(patient, TRAIN_PATIENTS) & ~tumour
    test = np.isin(patient, TEST_PATIENTS)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "pgbm_train_healthy.npz", out / "pgbm_test.npz"
    for path, rows, keys in ((paths[0], train, CONTRASTS), (paths[1], test, CONTRASTS + ("mask",))):
        arrays = {k: source[k][rows].astype(np.uint8 if k == "mask" else np.float32) for k in keys}
        np.savez_compressed(path, **arrays, study=source["study"][rows])
    return paths


def write_training_with_masks(data_root: Path, out: Path) -> Path:
    """pgbm_train_all.npz under ``out``: every slice of the training patients, contrasts and tumour mask (the
    model for segmentation, translation and reconstruction learns masks too)."""
    source = np.load(Path(data_root) / ARCHIVE)
    patient = np.asarray([str(s).split("/")[0] for s in source["study"]])
    rows = np.isin(patient, TRAIN_PATIENTS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pgbm_train_all.npz"
    arrays = {k: source[k][rows].astype(np.uint8 if k == "mask" else np.float32) for k in CONTRASTS + ("mask",)}
    np.savez_compressed(path, **arrays, study=source["study"][rows])
    return path


def write_training_by_study(data_root: Path, out: Path) -> Path:
    """pgbm_train_by_study.npz under ``out``: every slice of the training patients with masks, each study its own
    ``patient`` unit, so a federated scenario can spread the 4 training studies over 3 sites (the archive has only
    2 training patients; the test patients stay out of every site)."""
    source = np.load(write_training_with_masks(data_root, out))
    path = out / "pgbm_train_by_study.npz"
    np.savez_compressed(path, **{k: source[k] for k in source.files}, patient=source["study"])
    return path


def write_test_mix(data_root: Path, out: Path, n: int) -> Path:
    """pgbm_test_mix_<n>.npz under ``out``: n slices of the test patients, half with tumour and half without,
    evenly spaced through each group (so a small evaluation still has tumours to segment and detect)."""
    source = np.load(Path(data_root) / ARCHIVE)
    patient = np.asarray([str(s).split("/")[0] for s in source["study"]])
    test = np.isin(patient, TEST_PATIENTS)
    tumour = source["mask"].reshape(len(patient), -1).any(axis=1)
    chosen = []
    for group, count in ((np.flatnonzero(test & tumour), n // 2), (np.flatnonzero(test & ~tumour), n - n // 2)):
        count = min(count, len(group))
        chosen.extend(group[np.linspace(0, len(group) - 1, count).round().astype(int)].tolist() if count else [])
    rows = np.asarray(sorted(set(chosen)))
    path = out / f"pgbm_test_mix_{n}.npz"
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: source[k][rows].astype(np.uint8 if k == "mask" else np.float32) for k in CONTRASTS + ("mask",)}
    np.savez_compressed(path, **arrays, study=source["study"][rows])
    return path
