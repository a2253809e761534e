"""A stage-1 round's checkpoint (latent diffusion): a stage-1 file that `load_autoencoder` reads, whose latent
scale comes from the sites' held-out latent moments."""

from __future__ import annotations

from ..common.latent.training import scale_for
from ..common.run_spec import RunSpec


def stage_one_checkpoint(spec: RunSpec, weights: dict, evaluation: dict[str, dict], server_round: int,
                         ) -> tuple[dict, dict]:
    """(metadata, state) of a stage-1 round's checkpoint, a stage-1 file that `load_autoencoder` reads: its latent
    scale from the sites' held-out latent moments (pooled by count) when the round was evaluated."""
    moments = [(int(m["latent-values"]), float(m["latent-mean"]), float(m["latent-meansq"]))
               for m in evaluation.values() if "latent-values" in m]
    values = sum(n for n, _, _ in moments)
    mean = sum(n * m for n, m, _ in moments) / max(1, values)
    mean_square = sum(n * q for n, _, q in moments) / max(1, values)
    measured = values > 0
    record = {"federated": True, "round": server_round, "scale_measured": measured, "scale_sites": len(moments)}
    file = spec.autoencoder_file(weights, scale_for(values, mean, mean_square) if measured else 1.0, record)
    return file.meta(), {"autoencoder": weights}
