"""``meddiff train`` then ``meddiff generate`` through the real console entry point, on the phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from meddiff.cli import main
from meddiff.common.grid import HEADER, MIN_TILE

from tests.conftest import TINY_TRAIN_FLAGS as TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "3", *TINY]) == 0
    return out


def test_train_writes_a_resumable_checkpoint_and_a_summary(run_dir):
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["total_steps"] == 3 and summary["data"]["source"] == "phantom"
    assert np.isfinite(summary["loss"])
    assert main(["train", "--data", "phantom", "--out", str(run_dir), "--resume", "--steps", "5",
                 "--resolution", "16", "--phantom-n", "8"]) == 0
    assert json.loads((run_dir / "train.json").read_text())["total_steps"] == 5


def test_an_existing_run_is_never_overwritten(run_dir, capsys):
    before = (run_dir / "model.pt").read_bytes()
    assert main(["train", "--data", "phantom", "--out", str(run_dir), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run_dir / "model.pt").read_bytes() == before


def test_generate_writes_samples_grid_and_report(run_dir, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(run_dir / "model.pt"), "--n", "5", "--steps", "3",
                 "--batch-size", "2", "--out", str(out), "--sampler", "dpm++2m", "--guidance", "2"]) == 0
    samples = np.load(out / "samples.npz")
    assert samples["t1"].shape == (5, 16, 16) and samples["mask"].shape == (5, 16, 16)
    assert samples["labels"].tolist() == [0, 1, 0, 1, 0]
    assert np.abs(samples["t2"]).max() <= 1.0
    report = json.loads((out / "generate.json").read_text())
    assert report["sampler"] == "dpm++2m" and "phantom_check" in report
    width, height = Image.open(out / "grid.png").size  # 5 labelled channel columns, 5 rows (at least 96 px tiles)
    assert 5 * MIN_TILE < width < 5 * (MIN_TILE + 8) + 120 and 5 * MIN_TILE + HEADER <= height


def test_a_given_channel_is_read_from_a_file_and_kept(run_dir, tmp_path):
    picture = (np.tile(np.linspace(0, 255, 40), (40, 1))).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "t1.png")
    out = tmp_path / "given"
    assert main(["generate", "--model", str(run_dir / "model.pt"), "--n", "2", "--steps", "2", "--class", "lesion",
                 "--given", f"t1={tmp_path / 't1.png'}", "--out", str(out)]) == 0
    samples = np.load(out / "samples.npz")
    assert samples["given"].tolist() == [True, False, False, False, False]
    t1 = samples["t1"]
    assert np.array_equal(t1[0], t1[1]) and t1[0, :, 0].mean() < -0.9 and t1[0, :, -1].mean() > 0.9
    assert samples["labels"].tolist() == [1, 1]


@pytest.mark.parametrize("arguments, message", [
    (["--class", "tumour"], "not one of the model's classes"),
    (["--given", "t9=x.png"], "CHANNEL=FILE"),
    (["--given", "t1=/nonexistent/t1.png"], "file not found"),
])
def test_wrong_arguments_say_what_is_wrong(run_dir, tmp_path, capsys, arguments, message):
    code = main(["generate", "--model", str(run_dir / "model.pt"), "--n", "1", "--steps", "1",
                 "--out", str(tmp_path / "x"), *arguments])
    assert code == 2 and message in capsys.readouterr().err


def test_a_missing_model_names_the_path(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_train_on_two_devices_writes_the_checkpoint_one_device_would(tmp_path, capsys):
    """`meddiff train --devices cpu,cpu`: two data-parallel processes (gloo), rank 0's checkpoint; then a resume
    on one device continues it."""
    out = tmp_path / "ddp"
    assert main(["train", "--data", "phantom", "--out", str(out), "--steps", "2", "--devices", "cpu,cpu", *TINY]) == 0
    assert "data-parallel on 2 devices: cpu, cpu (each takes 2 of every batch of 4)" in capsys.readouterr().out
    summary = json.loads((out / "train.json").read_text())
    assert summary["total_steps"] == 2 and np.isfinite(summary["loss"])
    assert main(["train", "--data", "phantom", "--out", str(out), "--resume", "--steps", "3",
                 "--resolution", "16", "--phantom-n", "8"]) == 0
    assert json.loads((out / "train.json").read_text())["total_steps"] == 3
    assert main(["train", "--data", "phantom", "--out", str(tmp_path / "odd"), "--devices", "cpu,cpu,cpu",
                 *TINY]) == 2
    assert "batch size 4 does not divide among 3 devices: pass --batch-size 3" in capsys.readouterr().err
    assert main(["train", "--data", "phantom", "--out", str(tmp_path / "typo"), "--devices", "gpu0,gpu1", *TINY]) == 2
    assert "[runtime] devices must be" in capsys.readouterr().err
