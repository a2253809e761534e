"""Experiment tracking (server/tracking.py): a run read back through MLflow's client API holds what metrics.jsonl
holds; the final model is registered with its SHA-256; TensorBoard event files are written beside; a tracker that
cannot be used never stops a run; the UI is screenshotted where Chromium is installed."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meddiff.server.run_store import RunStore
from meddiff.server.tracking import (EXPERIMENT, REGISTERED_MODEL, RUN_TAG, RunTracker, local_uri, privacy_tags,
                                     round_metrics, sha256_of)

ROUND = {"seconds": 2.5, "rejected": [{"node": 9, "reason": "update norm 40 is 12x the median"}],
         "train": {"11": {"num-examples": 30, "train-loss": 0.5, "images-per-second": 80.0, "epsilon": 1.5,
                          "delta": 1e-3, "dp-patient-level": 1.0, "partition-id": 0, "update-norm": 0.25,
                          "time-data": 0.1},
                   "22": {"num-examples": 10, "train-loss": 0.7, "images-per-second": 70.0, "partition-id": 1}},
         "evaluate": {"11": {"eval-loss": 0.4, "partition-id": 0}}}


def test_a_round_becomes_per_site_metrics_and_privacy_tags_that_say_which_dp():
    names = {"11": "site-0", "22": "site-1"}
    flat = round_metrics(ROUND, {"eval_loss": 0.4}, names)
    assert flat["site-0/train-loss"] == 0.5 and flat["site-1/train-loss"] == 0.7
    assert flat["site-0/epsilon"] == 1.5 and flat["site-0/update-norm"] == 0.25 and flat["site-0/eval-loss"] == 0.4
    assert flat["round/rejected"] == 1 and flat["round/sites-aggregated"] == 2 and flat["global/eval-loss"] == 0.4
    assert not any("partition-id" in k or "time-" in k for k in flat)
    tags = privacy_tags(ROUND, names)
    assert tags == {"privacy.site-0": "sample-level DP-SGD at the site: epsilon per patient, delta 0.001, "
                                      "Opacus RDP accountant"}


def assert_tracked_like_metrics_jsonl(run_dir: Path) -> None:
    """Read the run back through MLflow's client API and compare it with metrics.jsonl and the registry."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=local_uri(run_dir), registry_uri=local_uri(run_dir))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TAG}` = '{run_dir.resolve()}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["settings.strategy"] and "settings.rounds" in run.data.params
    store = RunStore(run_dir)
    rounds = store.metrics()
    for node, metrics in rounds[0]["train"].items():
        site = f"site-{int(metrics['partition-id'])}"
        for key in ("train-loss", "images-per-second", "epsilon", "update-norm"):
            if key in metrics:
                history = client.get_metric_history(run.info.run_id, f"{site}/{key}")
                assert [h.step for h in history] == [r["round"] for r in rounds]
                assert all(math.isclose(h.value, r["train"][node][key], rel_tol=1e-9)
                           for h, r in zip(history, rounds))
        if "epsilon" in metrics:
            assert "epsilon per example" in run.data.tags[f"privacy.{site}"]
    final = Path(store.registry()[-1]["path"])
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}' and run_id = '{run.info.run_id}'")
    assert len(versions) == 1 and versions[0].tags["sha256"] == sha256_of(final) == run.data.tags["model.sha256"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/metrics.jsonl", "run/registry.jsonl"} <= artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}  # `meddiff simulate` adds these
    assert "report/report.html" in report and any(p.startswith("report/samples_round") for p in report)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_a_tracker_that_cannot_be_used_does_not_stop_the_run(tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a folder")  # the store's folder cannot be made, even by root
    tracker = RunTracker(tmp_path, f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", {"settings": {"rounds": 1}},
                         "run")
    tracker.log_round(1, ROUND, {"eval_loss": 0.4})
    tracker.finish(None, [])
    assert not tracker.thread.is_alive()
    assert any("experiment tracking" in r.getMessage() and "goes on without it" in r.getMessage()
               for r in caplog.records)


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="Chromium is not installed (apt-get install chromium): the UI screenshot is skipped")
def test_mlflow_ui_shows_the_run_in_headless_chromium(tmp_path):
    """A run logged to an MLflow server (``[federation] tracking_uri``), whose page `mlflow ui` serves; Chromium
    renders it to a docs-ready PNG."""
    from tests.client.orthanc import free_port

    run_dir, port = tmp_path / "run", free_port()
    server = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                           f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import requests

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{server}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        tracker = RunTracker(run_dir, server, {"settings": {"strategy": "fedavg", "rounds": 2}}, "screenshot")
        for r in (1, 2):
            tracker.log_round(r, {**ROUND, "train": {k: {**v, "train-loss": v["train-loss"] / r}
                                                     for k, v in ROUND["train"].items()}}, {"eval_loss": 0.4 / r})
        tracker.finish(None, [])
        assert not tracker.failed and not (run_dir / "mlflow.db").exists()  # to the server, not a local store
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(tracking_uri=server).get_experiment_by_name(EXPERIMENT)
        page = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{tracker.run_id}"
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        headless = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1300",
                    "--virtual-time-budget=20000"]
        dom = subprocess.run([*headless, "--dump-dom", page], capture_output=True, text=True, timeout=120)
        for shown in ("screenshot", "Finished", "privacy.site-0", "global/eval-loss"):  # the run's page: its name,
            assert shown in dom.stdout, shown  # status, the tag saying which DP, its metrics
        shot = tmp_path / "mlflow-ui.png"
        subprocess.run([*headless, f"--screenshot={shot}", page], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert shot.exists() and shot.stat().st_size > 10_000  # docs/images/mlflow-ui.png is one such shot
    finally:
        ui.terminate()
        try:
            ui.wait(20)
        except subprocess.TimeoutExpired:
            ui.kill()
