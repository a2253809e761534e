"""A site's own tracker (site.toml [tracking]): the site's rounds, as it computed them, in its own MLflow store
beside site.toml; a broken tracker never costs the round."""

from __future__ import annotations

import math

from meddiff.client.local_runner import LocalRunner
from meddiff.client.site_loading import site_from_node_config
from meddiff.client.site_tracking import RUN_TAG
from meddiff.common.wire import vector_of
from meddiff.server.federation import initial_weights
from tests.client.test_site_worker import SPEC, _config


def test_a_site_with_tracking_on_logs_its_rounds_to_its_own_store(tmp_path):
    from mlflow.tracking import MlflowClient

    config = tmp_path / "site" / "site.toml"
    config.parent.mkdir()
    config.write_text('site_id = "site-t"\n[data]\npath = "phantom"\n[tracking]\nenabled = true\n')
    runner = LocalRunner(site_from_node_config)
    weights = vector_of(initial_weights(SPEC), SPEC.weight_layout())
    node = {"site-config": str(config)}
    results = [runner.train(_config(server_round=r), weights, node, "run-7") for r in (1, 2)]
    evaluation = runner.evaluate(_config(server_round=2), weights, node, "run-7")

    store = f"sqlite:///{config.parent / '.meddiff-site' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("meddiff-site-site-t")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TAG}` = 'run-7'")
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, "train/train-loss")
    assert [h.step for h in history] == [1, 2]
    assert all(math.isclose(h.value, r.metrics["train-loss"], rel_tol=1e-9) for h, r in zip(history, results))
    [held_out] = client.get_metric_history(runs[0].info.run_id, "evaluate/eval-loss")
    assert held_out.step == 2 and math.isclose(held_out.value, evaluation["eval-loss"], rel_tol=1e-9)


def test_a_site_tracker_that_fails_does_not_cost_the_round(tmp_path, caplog):
    config = tmp_path / "site" / "site.toml"
    config.parent.mkdir()
    (tmp_path / "a-file").write_text("not a folder")  # the store's folder cannot be made, even by root
    config.write_text('site_id = "site-t"\n[data]\npath = "phantom"\n[tracking]\nenabled = true\n'
                      f'uri = "sqlite:///{tmp_path / "a-file" / "mlflow.db"}"\n')
    weights = vector_of(initial_weights(SPEC), SPEC.weight_layout())
    result = LocalRunner(site_from_node_config).train(_config(), weights, {"site-config": str(config)}, "run-8")
    assert result.weights is not None and math.isfinite(result.metrics["train-loss"])
    assert any("site tracking of round 1 failed" in r.getMessage() for r in caplog.records)
