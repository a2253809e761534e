"""Task commands at a site default to the newest global model the coordinator delivered to its store."""

from __future__ import annotations

import json

from meddiff.cli import main
from meddiff.client.model_store import ModelStore
from meddiff.client.site_paths import models_dir, site_state_dir
from meddiff.common.checkpoint import load_checkpoint


def _deliver(store: ModelStore, model_path, round_: int, final: bool):
    state, meta = load_checkpoint(model_path)
    meta = {k: v for k, v in meta.items() if k not in ("round", "delivery")}
    return store.save(state["model"], state["ema"], meta,
                      {"run": "run-1", "round": round_, "rounds": 2, "final": final, "sites": ["1", "2"]})


def test_task_commands_use_the_newest_delivered_model(tiny_model, tmp_path, capsys):
    config = tmp_path / "site.toml"
    config.write_text('site_id = "a"\n[data]\npath = "phantom"\n')
    store = ModelStore(models_dir(site_state_dir(config)))
    _deliver(store, tiny_model, 1, False)
    newest = _deliver(store, tiny_model, 2, True)
    assert [e["round"] for e in store.entries()] == [1, 2] and store.newest() == newest

    assert main(["generate", "--site-config", str(config), "--n", "2", "--steps", "2", "--out",
                 str(tmp_path / "gen")]) == 0
    assert json.loads((tmp_path / "gen" / "generate.json").read_text())["model"] == str(newest)
    assert main(["denoise", "--config", str(config), "--data", "phantom", "--limit", "2", "--out",
                 str(tmp_path / "dn")]) == 0
    assert json.loads((tmp_path / "dn" / "denoise.json").read_text())["model"] == str(newest)
    assert main(["site", "models", "--config", str(config)]) == 0
    assert "run-1-round-0002.pt" in capsys.readouterr().out


def test_no_model_and_an_empty_store_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "site.toml"
    config.write_text('site_id = "a"\n[data]\npath = "phantom"\n')
    assert main(["segment", "--config", str(config), "--data", "phantom", "--out", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert "holds no model yet" in error and "--model" in error
