"""Anisotropic volumes (issue 23, item 4): ``[data] depth`` keeps a 3D study's slices apart from its in-plane size
(24 slices of 64 x 64 stay 24 deep instead of being stretched to 64), from data preparation through training,
the checkpoint, generation, segmentation, the latent path and a federated run's spec."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from meddiff.cli import main
from meddiff.client.site_loading import site_from_node_config
from meddiff.common.config import ConfigError, DataConfig
from meddiff.common.data.transforms import prepare
from meddiff.common.diffusion.loading import load_model
from meddiff.common.latent.autoencoder import load_autoencoder
from meddiff.common.run_spec import RunSpec, latent_run
from meddiff.common.schema import ChannelSchema, Example
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.server.federation_config import load_federation_config

NET_3D = ModelSpec(channels=(8, 16), attention_levels=(False, False), num_head_channels=8, norm_num_groups=8,
                   spatial_dims=3)
SCHEMA = ChannelSchema(("image", "mask"), mask_labels=1)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Four NIfTI studies of 6 slices (4 mm apart) of 24 x 24 px with a box mask, and a site.toml for a 3D
    model at 16 px in-plane and 8 slices."""
    root = tmp_path_factory.mktemp("aniso")
    g = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (root / "data" / folder).mkdir(parents=True)
    for i in range(4):
        label = np.zeros((24, 24, 6), dtype=np.uint8)  # NIfTI x, y, z
        label[8:16, 8:16, 2:5] = 1
        image = (g.random(label.shape) * 0.2 + label).astype(np.float32)
        for folder, array in (("images", image), ("labels", label)):
            nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 4.0, 1.0])), root / "data" / folder / f"case_{i}.nii.gz")
    config = root / "site.toml"
    config.write_text(f'site_id = "site-a"\n[data]\npath = "{root / "data"}"\nslices = false\nresolution = 16\n'
                      'depth = 8\n')
    return root, config


def test_a_volume_is_resized_to_its_depth_and_in_plane_size_and_the_spacing_follows():
    image = np.zeros((2, 6, 24, 24), dtype=np.float32)
    image[0] = np.random.default_rng(1).random((6, 24, 24))
    image[1, 2:5, 8:16, 8:16] = 1
    example = Example(image=image, available=np.ones(2, dtype=bool), spacing=(4.0, 1.0, 1.0))
    ready = prepare([example], SCHEMA, 16, slices=False, depth=8)[0]
    assert ready.image.shape == (2, 8, 16, 16)
    assert ready.spacing == pytest.approx((3.0, 1.5, 1.5))
    assert set(np.unique(ready.image[1])) == {-1.0, 1.0}  # the mask stays a label map (nearest)
    assert prepare([example], SCHEMA, 16, slices=False)[0].image.shape == (2, 16, 16, 16)  # no depth: a cube


@pytest.mark.parametrize("fields, message", [
    ({"depth": -1}, "depth must be 0"),
    ({"depth": 8}, "set slices = false for a 3D model"),
])
def test_a_depth_that_cannot_apply_is_refused_by_name(fields, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**fields)


def test_a_3d_model_trains_generates_and_segments_at_its_depth_in_pixels_and_latents(volumes, tmp_path):
    root, config = volumes
    data = ["--data", str(root / "data"), "--config", str(config)]
    assert main(["train", *data, "--out", str(tmp_path / "p"), "--steps", "1", "--channels", "8,16",
                 "--batch-size", "2"]) == 0
    loaded = load_model(tmp_path / "p" / "model.pt", device="cpu")
    assert loaded.depth == 8 and loaded.spatial_shape == (8, 16, 16)
    assert main(["generate", "--model", str(tmp_path / "p" / "model.pt"), "--out", str(tmp_path / "g"), "--n", "2",
                 "--steps", "2", "--no-audit"]) == 0
    assert np.load(tmp_path / "g" / "samples.npz")["image"].shape == (2, 8, 16, 16)
    assert main(["segment", "--model", str(tmp_path / "p" / "model.pt"), *data, "--out", str(tmp_path / "s"),
                 "--samples", "1", "--steps", "2"]) == 0
    assert np.load(tmp_path / "s" / "segment.npz")["labels"].shape == (4, 8, 16, 16)

    assert main(["train-autoencoder", *data, "--out", str(tmp_path / "ae"), "--steps", "2", "--widths", "8,16",
                 "--batch-size", "2"]) == 0
    assert load_autoencoder(tmp_path / "ae" / "autoencoder.pt").depth == 8
    assert main(["train", *data, "--autoencoder", str(tmp_path / "ae" / "autoencoder.pt"), "--out",
                 str(tmp_path / "m"), "--steps", "1", "--channels", "8,16", "--batch-size", "2"]) == 0
    latent = load_model(tmp_path / "m" / "model.pt", device="cpu", latent_ok=True)
    assert latent.spatial_shape == (8, 16, 16)
    assert main(["segment", "--model", str(tmp_path / "m" / "model.pt"), *data, "--out", str(tmp_path / "s2"),
                 "--samples", "1", "--steps", "2"]) == 0
    assert np.load(tmp_path / "s2" / "segment.npz")["labels"].shape == (4, 8, 16, 16)


def test_a_grid_the_network_cannot_halve_is_refused_before_training(volumes, tmp_path, capsys):
    root, config = volumes
    odd = tmp_path / "site.toml"
    odd.write_text(config.read_text().replace("depth = 8", "depth = 6"))
    capsys.readouterr()
    assert main(["train", "--data", str(root / "data"), "--config", str(odd), "--out", str(tmp_path / "p"),
                 "--steps", "1", "--channels", "8,16,16", "--batch-size", "2"]) == 2
    assert "6 x 16 x 16 do not divide by 4" in capsys.readouterr().err


def test_a_federated_run_sends_its_depth_and_each_site_prepares_its_volumes_at_it(volumes, tmp_path):
    root, config = volumes
    spec = RunSpec(SCHEMA, 16, NET_3D, RecipeSpec(batch_size=2), depth=8)
    received = RunSpec.from_config(spec.to_config())
    assert received == spec and received.data_depth == 8
    open_site = tmp_path / "site.toml"  # a site that leaves the size to the run
    open_site.write_text(config.read_text().replace("resolution = 16\ndepth = 8\n", ""))
    site = site_from_node_config({"site-config": str(open_site)}, received)
    assert site.train.spatial == (8, 16, 16)
    with pytest.raises(ValueError, match="depth = 8, but the coordinator's run trains at depth = 12"):
        site_from_node_config({"site-config": str(config)}, RunSpec(SCHEMA, 16, NET_3D, depth=12))


def test_a_latent_run_takes_its_depth_from_the_autoencoder_and_refuses_another(volumes, tmp_path):
    root, config = volumes
    assert main(["train-autoencoder", "--data", str(root / "data"), "--config", str(config), "--out",
                 str(tmp_path / "ae"), "--steps", "1", "--widths", "8,16", "--batch-size", "2"]) == 0
    autoencoder = str(tmp_path / "ae" / "autoencoder.pt")
    spec = latent_run(RunSpec(SCHEMA, 16, NET_3D, depth=8), autoencoder, "federation.toml")
    assert (spec.resolution, spec.depth, spec.data_resolution, spec.data_depth) == (8, 4, 16, 8)
    assert RunSpec.from_config(spec.message_config()).data_depth == 8
    with pytest.raises(ConfigError, match="trained at depth 8, the run's \\[schema\\] depth is cubic"):
        latent_run(RunSpec(SCHEMA, 16, NET_3D), autoencoder, "federation.toml")


def test_a_federation_toml_gives_depth_to_3d_runs_only(tmp_path):
    path = tmp_path / "federation.toml"
    path.write_text('[schema]\nchannels = ["image", "mask"]\nresolution = 16\ndepth = 8\n[model]\nspatial_dims = 3\n')
    assert load_federation_config(path).spec.depth == 8
    path.write_text('[schema]\nchannels = ["image", "mask"]\nresolution = 16\ndepth = 8\n')
    with pytest.raises(ConfigError, match="depth = 8 is the slices of 3D volumes"):
        load_federation_config(path)
    assert json.loads(json.dumps(RunSpec(SCHEMA, 16).to_config())).get("depth") is None  # cubic runs: as before


def test_the_depth_suggested_keeps_few_slices_apart_and_leaves_cubes_alone():
    from meddiff.common.plan import suggested_depth

    assert suggested_depth(24, 64) == 32 and suggested_depth(6, 32) == 16  # a multiple of 16 the networks halve
    assert suggested_depth(24, 32) == 0 and suggested_depth(40, 32) == 0 and suggested_depth(0, 64) == 0


def test_site_check_and_plan_give_a_3d_run_the_depth_of_its_volumes(volumes, tmp_path, capsys):
    root, _ = volumes
    assert main(["site", "check", str(root / "data"), "--json", str(tmp_path / "fp.json")]) == 0
    fingerprint = json.loads((tmp_path / "fp.json").read_text())
    assert fingerprint["median_slices"] == 6 and "median 6 slices" in capsys.readouterr().out
    assert main(["plan", "--data", str(root / "data"), "--volumes", "--out", str(tmp_path / "plan.toml")]) == 0
    spec = load_federation_config(tmp_path / "plan.toml").spec
    assert (spec.model.spatial_dims, spec.resolution, spec.depth) == (3, 32, 16)
