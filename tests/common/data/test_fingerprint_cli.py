"""`meddiff site check`: the fingerprint table, every problem listed, nothing written into the data folder."""

from __future__ import annotations

import pytest

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from meddiff.common.data.fingerprint import compute_fingerprint
from meddiff.common.data.loader import load_dataset
from meddiff.common.data.phantom import phantom_dataset
from tests.conftest import REPO, shared

MEDDIFF = str(Path(sys.executable).parent / "meddiff")


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _run(*args, cwd=REPO):
    return subprocess.run([MEDDIFF, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.realdata
def test_site_check_prints_the_pgbm_fingerprint_and_writes_nothing(tmp_path):
    study = tmp_path / "data"
    shutil.copytree(shared("pgbm/dicom"), study)
    (study / "PGBM-001_1992-04-02" / "notes.txt").write_text("exported 2024")
    (study / "PGBM-001_1992-04-02" / "garbage.dcm").write_bytes(b"\x00" * 300)
    before = _snapshot(study)
    result = _run("site", "check", str(study), "--width", "140", "--json", str(tmp_path / "fp.json"))
    assert result.returncode == 0, result.stderr
    for word in ("t1pre", "t1post", "flair", "t2", "mask", "24 x 320 x 260", "suggested resolution", "garbage.dcm",
                 "not a DICOM file"):
        assert word in result.stdout, word
    flat = " ".join(result.stdout.replace("│", " ").split())  # one patient: the default delta 0.1 is flagged
    assert "delta 0.1 = 1 / (10 x 1 patients) is large" in flat and "set [privacy] delta" in flat
    assert _snapshot(study) == before
    fingerprint = json.loads((tmp_path / "fp.json").read_text())
    assert fingerprint["studies"] == 1 and fingerprint["slices"] == 24
    assert fingerprint["suggested_resolution"] == 64


def test_site_check_on_a_wrong_path_says_so_and_exits_2(tmp_path):
    result = _run("site", "check", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "nowhere: data folder does not exist" in result.stderr and "Fix:" in result.stderr


def test_fingerprint_counts_and_suggestion():
    data = phantom_dataset(10, size=96, seed=1)
    fp = compute_fingerprint(data)
    assert fp.examples == fp.patients == 10
    assert sum(fp.class_counts.values()) == 10 and set(fp.class_counts) <= {"healthy", "lesion"}
    assert fp.suggested_resolution == 64 and fp.suggested_resolution_gpu == 64
    assert fp.suggested_space == "pixel" and "below 128 px" in fp.space_reason  # 96 px: a pixel model at 64
    large = compute_fingerprint(phantom_dataset(2, size=160, seed=1))
    assert large.suggested_space == "latent" and "latent model at 128 px trains on a 32 px grid" in large.space_reason
    assert (fp.latent_resolution, large.latent_resolution) == (64, 128)  # what train-autoencoder prepares at
    assert [c.name for c in fp.channels] == ["t1", "t2", "flair", "ct", "mask"]
    ct = fp.channels[3]
    assert ct.percentiles[0] < -900 and ct.percentiles[2] > 900


@pytest.mark.realdata
def test_fingerprint_lists_every_skipped_file():
    data = load_dataset(shared("hippocampus"), log_problems=False)
    fp = compute_fingerprint(data)
    assert len(fp.skipped) == 2 and len(fp.notes) == 1
    assert fp.ndim == 3 and fp.suggested_resolution == 32
    assert fp.suggested_space == "latent"  # about 35 px volumes: a 3D pixel model stops at 16^3 on a CPU


def test_phantom_command_writes_a_loadable_data_set(tmp_path):
    result = _run("phantom", "--out", str(tmp_path), "--n", "6", "--size", "32")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "phantom_grid.png").stat().st_size > 1000
    data = load_dataset(tmp_path / "phantom.npz")
    assert data.schema.channels == ("t1", "t2", "flair", "ct", "mask")
    assert len(data.examples) == 6 and all(e.label in (0, 1) for e in data.examples)
    assert os.path.getsize(tmp_path / "phantom.npz") > 0


def test_the_default_delta_is_flagged_only_where_few_units_make_it_large():
    from meddiff.common.config import PrivacyConfig

    assert PrivacyConfig().delta_for(4) == pytest.approx(0.025)
    assert "delta 0.025 = 1 / (10 x 4 patients) is large" in PrivacyConfig().weak_delta(4, "patients")
    assert PrivacyConfig().weak_delta(100) == ""  # 1e-3: at the threshold
    assert PrivacyConfig(delta=1e-5).weak_delta(4) == ""  # a delta the site chose is not second-guessed
