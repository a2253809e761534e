"""SecAgg+ on the real deployment engine (SuperLink and 3 SuperNodes on 127.0.0.1, TLS and node authentication),
with clipping at the sites and the noise at the server (distributed DP), for both stages of a latent run: the
autoencoder (stage 1), then the denoiser on its latents, whose file every message carries."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.client.audit import AuditLog
from meddiff.client.site_paths import audit_path, site_state_dir
from meddiff.common.checkpoint import load_checkpoint
from meddiff.common.latent.autoencoder import load_autoencoder
from meddiff.server.deployment import submit_run
from meddiff.server.run_store import RunStore
from tests.deployment.loopback import Federation


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_secure_rounds_with_distributed_dp_train_both_latent_stages_on_the_deployment_engine(tmp_path):
    federation = Federation(tmp_path, ["site-a", "site-b", "site-c"])
    with federation.group:
        federation.start()
        config = federation.config("run", rounds=1, steps=3, extra="\n".join([
            "secure_aggregation = true", 'central_dp = "client-clipping"', "dp_population = 3",
            "dp_clipping_norm = 0.05", "dp_noise_multiplier = 0.5", "deliver_final = false", 'stage = "both"']),
                                   tables="[autoencoder]\nwidths = [8, 16]\nlatent_channels = 2\nnorm_num_groups = 8\n"
                                          "rounds = 1\nlocal_steps = 3\nbatch_size = 8\n")
        result = submit_run(federation.home, config, resume=False, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:]
    stage_one = RunStore(tmp_path / "run" / "autoencoder").registry()
    assert [e["round"] for e in stage_one] == [1] and stage_one[0]["aggregated"]
    assert stage_one[0]["central_dp"]["releases"] == 1
    autoencoder = load_autoencoder(stage_one[0]["path"])
    assert autoencoder.record["scale_sites"] == 3  # every site's latent moments made the scale
    store = RunStore(tmp_path / "run")
    registry, metrics = store.registry(), store.metrics()
    assert [e["round"] for e in registry] == [1] and registry[0]["aggregated"]
    assert len(metrics[0]["train"]) == 3 and not metrics[0]["rejected"]
    assert registry[0]["central_dp"]["clipping"] == "site" and registry[0]["central_dp"]["releases"] == 1
    state, meta = load_checkpoint(registry[0]["path"])
    assert all(np.isfinite(v.numpy()).all() for v in state["model"].values())
    assert meta["latent"]["sha256"] == autoencoder.sha256 and "autoencoder" in state
    for site in federation.sites:  # every site went through the four SecAgg+ stages: four audited train replies
        # the site's guard let SecAgg+'s protocol record out and audited it: the masked vector is what left
        audit = AuditLog(audit_path(site_state_dir(federation.site_config(site))))
        assert audit.verify().ok
        sent = [r for r in audit.records() if r["event"] == "sent" and r["message_type"] == "train"]
        assert len(sent) == 8 and not [r for r in audit.records() if r["event"] == "refused"]  # 4 per stage
        assert any(name.startswith("secaggplus_configs/") for r in sent for name in r["arrays"])
