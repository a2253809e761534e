"""The stages of a run (``[federation] stage``): the denoiser alone (pixel space, or on the latents of a stored
autoencoder), stage 1 alone (the autoencoder), or both in one run: stage 1 into RUN_DIR/autoencoder, then stage 2
on its final file, named by its SHA-256 like any stored autoencoder. Both stages run on the same engines, strategy,
validation, central DP and SecAgg+ settings; each checkpoints every round and resumes on its own."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from flwr.serverapp import Grid

from ..common.latent.autoencoder import load_autoencoder
from ..common.latent.stage import AutoencoderStage
from ..common.run_spec import RunSpec
from .federation import run_federation
from .progress import progress_log
from .run_store import RunStore
from .settings import FederationSettings

log = logging.getLogger(__name__)
STAGE_ONE_FOLDER = "autoencoder"


def stage_one_settings(settings: FederationSettings, stage: AutoencoderStage) -> FederationSettings:
    """Stage 1's rounds and local steps; nothing delivered (stage 2's model carries the autoencoder), and always
    evaluated after the last round (the latent scale comes from it)."""
    return replace(settings, rounds=stage.rounds, local_steps=stage.local_steps, deliver_final=False, deliver_every=0,
                   initial_model="", autoencoder="", early_stopping_patience=0, evaluate=True,
                   evaluate_every=settings.evaluate_every if settings.evaluate else stage.rounds)


def run_stages(grid: Grid, spec: RunSpec, settings: FederationSettings, stage: AutoencoderStage,
               run_dir: str | Path, resume: bool = False, run_id: str = "") -> RunStore:
    """Run the stages ``settings.stage`` names; returns the store of the last stage run."""
    if settings.stage == "denoiser":
        return run_federation(grid, spec, settings, run_dir, resume, run_id)
    both = settings.stage == "both"
    first_dir = Path(run_dir) / STAGE_ONE_FOLDER if both else Path(run_dir)
    progress_log.info(f"stage 1: the autoencoder, {stage.rounds} rounds of {stage.local_steps} local steps")
    first = run_federation(grid, spec.stage_one(stage), stage_one_settings(settings, stage), first_dir, resume,
                           f"{run_id}-autoencoder" if run_id and both else run_id)
    if not both:
        return first
    registry = first.registry()
    if not registry or registry[-1]["round"] != stage.rounds:
        stopped = first.stopped()
        log.error("stage 1 ended after round %s of %d; stage 2 is not started (%s)",
                  registry[-1]["round"] if registry else 0, stage.rounds,
                  f"{stopped['why']}: raise dp_max_epsilon or run fewer stage-1 rounds" if stopped
                  else "resume the run to finish stage 1")
        return first
    autoencoder = load_autoencoder(registry[-1]["path"])
    progress_log.info(f"stage 2: the denoiser on the latents of {Path(registry[-1]['path']).name} "
                      f"(sha256 {autoencoder.sha256[:16]}..., scale {autoencoder.scale:.4g})")
    return run_federation(grid, spec.with_autoencoder(autoencoder, str(registry[-1]["path"])), settings, run_dir,
                          resume, run_id)
