"""Colour end to end: colour npz, PNG and DICOM keep their colour (or become grey when asked), a model trains and
samples in colour, and every export reads back as colour."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from meddiff.cli import main
from meddiff.common.config import ChannelRule, DataConfig
from meddiff.common.data.dicom import load_dicom
from meddiff.common.data.fingerprint import compute_fingerprint
from meddiff.common.data.loader import load_dataset
from tests.conftest import shared

BACKGROUND, DISC = (0.15, 0.25, 0.85), (0.9, 0.3, 0.1)  # blue background, a red-orange disc


def colour_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8: a blue field with a red disc at a random place, as a colour MedMNIST set holds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), dtype=np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(4, 7)]
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
        images[i] = np.where(inside[..., None], DISC, BACKGROUND) + rng.normal(0, 0.03, (size, size, 3))
    return np.clip(images * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def colour_npz(tmp_path):
    path = tmp_path / "colourmnist.npz"
    np.savez(path, train_images=colour_images(96), train_labels=np.zeros((96, 1), dtype=np.int64))
    return path


def test_a_colour_npz_keeps_three_channels_or_becomes_grey_when_asked(colour_npz):
    data = load_dataset(colour_npz)
    assert data.schema.channels == ("red", "green", "blue") and data.schema.is_colour
    image = data.examples[0].image
    assert image[2].mean() > image[0].mean() + 50  # blue field: the colour survived loading
    assert compute_fingerprint(data).colour == "colour (RGB: red, green, blue)"
    grey = load_dataset(colour_npz, DataConfig(colour="grey"))
    assert grey.schema.channels == ("image",) and not grey.schema.is_colour


def test_a_png_folder_of_photographs_loads_in_colour_with_grey_images_filling_all_three(tmp_path):
    folder = tmp_path / "fundus" / "images"
    folder.mkdir(parents=True)
    for i, image in enumerate(colour_images(3)):
        Image.fromarray(image).save(folder / f"eye{i}.png")
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(folder / "grey.png")
    data = load_dataset(tmp_path / "fundus")
    assert data.schema.channels == ("red", "green", "blue")
    grey = next(e for e in data.examples if e.source.endswith("grey.png"))
    assert grey.available.all() and (grey.image == 90).all()
    colour = next(e for e in data.examples if e.source.endswith("eye0.png"))
    assert colour.image[2].mean() > colour.image[0].mean() + 50
    assert load_dataset(tmp_path / "fundus", DataConfig(colour="grey")).schema.channels == ("image",)


@pytest.mark.realdata
def test_a_colour_ultrasound_dicom_keeps_its_colour():
    config = DataConfig(dicom_rules=(ChannelRule("us", "^US$", "Modality"),))
    data = load_dicom(shared("dicom/US1_UNCI.dcm"), config)
    assert data.schema.channels == ("us_red", "us_green", "us_blue")
    image = data.examples[0].image
    assert image.shape == (3, 1, 480, 640) and not np.array_equal(image[0], image[2])
    raw = pydicom.dcmread(shared("dicom/US1_UNCI.dcm")).pixel_array
    np.testing.assert_array_equal(image[1, 0], raw[..., 1])


def test_site_check_says_the_images_are_colour(colour_npz, capsys):
    assert main(["site", "check", str(colour_npz), "--width", "160"]) == 0
    assert "colour (RGB: red, green, blue)" in capsys.readouterr().out


def test_a_model_trained_on_colour_samples_in_colour_and_exports_colour(colour_npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(colour_npz), "--out", str(run), "--steps", "150", "--batch-size", "16",
                 "--channels", "8,16", "--seed", "0"]) == 0
    out = tmp_path / "synthetic"
    assert main(["generate", "--model", str(run / "model.pt"), "--n", "8", "--steps", "20", "--out", str(out),
                 "--export", "png,dicom,nifti,npz", "--audit-data", str(colour_npz)]) == 0
    samples = np.load(out / "samples.npz")
    red, green, blue = (samples[c] for c in ("red", "green", "blue"))
    assert blue.mean() > red.mean() + 0.3 and blue.mean() > green.mean() + 0.3  # the training set's blue field
    kept = json.loads((out / "generate.json").read_text())["kept"]
    png = sorted((out / "png").rglob("*_colour.png"))
    assert len(png) == kept and Image.open(png[0]).mode == "RGB"
    pixels = np.asarray(Image.open(png[0]))
    assert pixels[..., 2].mean() > pixels[..., 0].mean() + 40
    dicom = pydicom.dcmread(sorted((out / "dicom" / "colour").glob("*.dcm"))[0])
    assert dicom.PhotometricInterpretation == "RGB" and dicom.SamplesPerPixel == 3
    assert dicom.pixel_array.shape == (32, 32, 3)
    nifti = nib.load(sorted((out / "nifti").glob("*_colour.nii.gz"))[0])
    assert nifti.shape == (32, 32, 1, 1, 3) and nifti.header.get_intent()[0] == "vector"
    assert load_dataset(out / "synthetic.npz").schema.is_colour  # the npz export reads back as colour
    assert load_dataset(out / "png").schema.channels == ("red", "green", "blue")
