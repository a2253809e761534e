"""``meddiff plan``: the sites' fingerprints become one federation.toml that the coordinator and `train` read."""

from __future__ import annotations

import json

from meddiff.cli import main
from meddiff.server.federation_config import load_federation_config


def test_two_sites_fingerprints_become_one_plan_that_training_reads(tmp_path, capsys):
    for site, size in (("a", 48), ("b", 96)):
        assert main(["phantom", "--out", str(tmp_path / site), "--n", "4", "--size", str(size)]) == 0
        assert main(["site", "check", str(tmp_path / site / "phantom.npz"), "--json",
                     str(tmp_path / f"{site}.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["suggested_resolution"] == 32
    plan = tmp_path / "federation.toml"
    assert main(["plan", "--fingerprint", f"hospital-a={tmp_path / 'a.json'}", "--fingerprint",
                 str(tmp_path / "b.json"), "--out", str(plan), "--run-dir", str(tmp_path / "run")]) == 0
    assert "planned 2 site(s)" in capsys.readouterr().out
    config = load_federation_config(plan)
    assert config.spec.schema.channels == ("t1", "t2", "flair", "ct", "mask")
    assert config.spec.schema.class_names == ("healthy", "lesion") and config.spec.resolution == 32
    assert config.settings.min_sites == 2 and config.spec.recipe.batch_size == 16
    assert main(["plan", "--fingerprint", str(tmp_path / "b.json"), "--out", str(plan)]) == 2  # never overwritten
    out = tmp_path / "trained"
    assert main(["train", "--data", str(tmp_path / "b" / "phantom.npz"), "--plan", str(plan), "--out", str(out),
                 "--steps", "2", "--channels", "8,16"]) == 0
    assert json.loads((out / "train.json").read_text())["total_steps"] == 2
    from meddiff.common.diffusion.loading import load_model
    assert load_model(out / "model.pt", device="cpu").resolution == 32  # the plan's, not the data's 64


def test_a_federation_config_that_sets_a_sites_runtime_or_a_moved_key_is_refused(tmp_path, capsys):
    base = f'run_dir = "{tmp_path}"\n[schema]\nchannels = ["t1"]\n'
    (tmp_path / "runtime.toml").write_text(base + '[runtime]\nprecision = "bf16"\n')
    (tmp_path / "moved.toml").write_text(base + '[train]\nschedule = "vp"\nsteps = 10\n')
    assert main(["coordinator", "start", "--config", str(tmp_path / "runtime.toml"), "--insecure"]) == 2
    assert "[runtime] is each site's own choice (site.toml)" in capsys.readouterr().err
    assert main(["coordinator", "start", "--config", str(tmp_path / "moved.toml"), "--insecure"]) == 2
    err = capsys.readouterr().err
    assert "[train] schedule, steps: now [model] schedule; meddiff train --steps, or [federation] local_steps" in err


def test_the_plan_says_when_every_sites_images_call_for_latent_diffusion(tmp_path, capsys):
    from meddiff.common.plan import suggested_space

    assert suggested_space(256, 2, gpu=False)[:2] == ("latent", 128)
    assert suggested_space(256, 2, gpu=True)[:2] == ("pixel", 256) and suggested_space(16, 3, False)[:2] == (
        "pixel", 16)
    assert main(["phantom", "--out", str(tmp_path / "a"), "--n", "2", "--size", "160"]) == 0
    assert main(["plan", "--data", str(tmp_path / "a" / "phantom.npz"), "--out", str(tmp_path / "plan.toml")]) == 0
    assert "every site's images call for latent diffusion" in capsys.readouterr().out
    assert "# every site's images call for latent diffusion" in (tmp_path / "plan.toml").read_text()
    assert load_federation_config(tmp_path / "plan.toml").spec.resolution == 64  # still a pixel plan
