"""SecAgg+ on the real deployment engine (SuperLink and 3 SuperNodes on 127.0.0.1, TLS and node authentication),
with clipping at the sites and the noise at the server (distributed DP), on a latent run: the denoiser on the
latents of a stored autoencoder, whose file every message carries over TLS to the site workers. (Stage 1 runs the
same loop on another network: tests/simulations/test_latent_federation.py trains both stages.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiff.client.audit import AuditLog
from meddiff.client.site_paths import audit_path, site_state_dir
from meddiff.common.checkpoint import file_sha256, load_checkpoint
from meddiff.common.data.phantom import SCHEMA as PHANTOM_SCHEMA
from meddiff.common.latent.autoencoder import AutoencoderFile, build_autoencoder
from meddiff.server.deployment import submit_run
from meddiff.server.run_store import RunStore
from tests.common.latent.test_latent import TINY_AE
from tests.deployment.loopback import Federation


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_secure_latent_round_with_distributed_dp_completes_on_the_deployment_engine(tmp_path):
    autoencoder = tmp_path / "autoencoder.pt"
    torch.manual_seed(0)
    AutoencoderFile(TINY_AE, PHANTOM_SCHEMA, 16, 0.7, build_autoencoder(TINY_AE).state_dict()).save(autoencoder)
    federation = Federation(tmp_path, ["site-a", "site-b", "site-c"])
    with federation.group:
        federation.start()
        config = federation.config("run", rounds=1, steps=3, extra="\n".join([
            "secure_aggregation = true", 'central_dp = "client-clipping"', "dp_population = 3",
            "dp_clipping_norm = 0.05", "dp_noise_multiplier = 0.5", "deliver_final = false",
            f'autoencoder = "{autoencoder}"']))
        result = submit_run(federation.home, config, resume=False, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:]
    store = RunStore(tmp_path / "run")
    registry, metrics = store.registry(), store.metrics()
    assert [e["round"] for e in registry] == [1] and registry[0]["aggregated"]
    assert len(metrics[0]["train"]) == 3 and not metrics[0]["rejected"]
    assert registry[0]["central_dp"]["clipping"] == "site" and registry[0]["central_dp"]["releases"] == 1
    state, meta = load_checkpoint(registry[0]["path"])
    assert all(np.isfinite(v.numpy()).all() for v in state["model"].values())
    assert meta["latent"]["sha256"] == file_sha256(autoencoder) and "autoencoder" in state
    for site in federation.sites:  # every site went through the four SecAgg+ stages: four audited train replies
        # the site's guard let SecAgg+'s protocol record out and audited it: the masked vector is what left
        audit = AuditLog(audit_path(site_state_dir(federation.site_config(site))))
        assert audit.verify().ok
        sent = [r for r in audit.records() if r["event"] == "sent" and r["message_type"] == "train"]
        assert len(sent) == 4 and not [r for r in audit.records() if r["event"] == "refused"]
        assert any(name.startswith("secaggplus_configs/") for r in sent for name in r["arrays"])
