"""One federated round at a site, without Flower: load the global weights, train (plain, FedProx or DP-SGD, as
the coordinator's instruction and the site's own privacy settings say), or evaluate. The ClientApp is a thin
wrapper around these functions, so they are tested directly.

With DP at the site the round first derives the noise, reserves its cost in the privacy ledger (refused, before
anything is trained, past the site's budget), trains with DP-SGD, and returns a function that marks the release
once the weights have been handed over.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..common.diffusion.denoiser import Denoiser
from ..common.diffusion.held_out import held_out_loss
from ..common.diffusion.model import ConditionalDenoiser
from ..common.diffusion.schedules import make_schedule
from ..common.messages import TrainInstruction
from ..common.run_spec import RunSpec
from ..common.data.healthy import healthy_only, healthy_rows
from ..common.specs import RecipeSpec, RuntimeSpec
from ..common.training.distributed import launch, resolve_devices
from ..common.training.on_devices import TrainerBuild
from ..common.training.trainer import Trainer, default_device
from ..privacy.accounting import noise_for_run, raised_to_budget
from ..privacy.dp_sgd import DPStep
from ..privacy.ledger import COUNTED, PrivacyLedger
from ..privacy.units import PATIENT, privacy_units
from .site_data import SiteData, align_to_schema

log = logging.getLogger(__name__)

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RoundOutcome:
    """What a training round produces: the new weights, the scalar metrics that may leave the site, and what to
    call once the weights have left (the DP ledger's release; nothing for a plain round)."""

    weights: Weights
    metrics: dict
    released: Callable[[], None] = lambda: None


def round_seed(seed: int, server_round: int, site_id: str) -> int:
    """A different, reproducible seed for each site and round (Python's hash() is salted per process)."""
    return zlib.crc32(f"{seed}/{server_round}/{site_id}".encode())


def train_round(spec: RunSpec, weights: Weights, site: SiteData, instruction: TrainInstruction, run: str = "",
                runtime: RuntimeSpec = RuntimeSpec(), device: str | None = None) -> RoundOutcome:
    """Train ``instruction.local_steps`` local steps from the global ``weights``."""
    data = _as_trained(align_to_schema(site.train, spec.schema), spec.recipe, site.site_id)
    if data.spatial[-1] != spec.resolution:
        raise ValueError(f"site {site.site_id}: data prepared at {data.spatial[-1]} px, the run trains at "
                         f"{spec.resolution} px; set [data] resolution = {spec.resolution} in site.toml")
    recipe = replace(spec.recipe, seed=round_seed(spec.recipe.seed, instruction.server_round, site.site_id))
    private = site.privacy.enabled
    devices = resolve_devices(runtime.devices) if device is None else []
    devices = devices if len(devices) > 1 else []
    # with several devices this trainer (on the CPU) only plans; each device's process makes its own (ranks)
    trainer = Trainer(spec.schema, spec.model, recipe, replace(runtime, devices=()), "cpu" if devices else device,
                      steps=instruction.local_steps, ema=False, fused=not private)
    trainer.load_weights(weights)
    ranks = TrainerBuild(spec.schema, spec.model, recipe, replace(runtime, devices=()), instruction.local_steps,
                         ema=False, fused=not private) if devices else None
    if private:
        warn_proximal_unused(instruction, site.site_id)
        return _private_round(trainer, data, site, instruction, run, devices, ranks, weights)
    if devices:
        result, trained = launch(devices, _plain_rank, ranks, weights, data, instruction.local_steps,
                                 instruction.proximal_mu)[0]
    else:
        result = trainer.train(data, instruction.local_steps, proximal_mu=instruction.proximal_mu)
        trained = trainer.weights()
    metrics = {"num-examples": len(data), "train-loss": result.loss, "steps": result.steps,
               "seconds": result.seconds, "images-per-second": result.images_per_second,
               "skipped-nonfinite": result.skipped_nonfinite, "trained-parameters": trainer.trained.trained}
    return RoundOutcome(trained, metrics)


def warn_proximal_unused(instruction: TrainInstruction, site_id: str) -> None:
    """FedProx's proximal term is applied in plain rounds only; a DP-SGD round trains without it (FedAvg's local
    objective). Said in the site's log rather than silently."""
    if instruction.proximal_mu > 0:
        log.warning("site %s, round %d: FedProx's proximal term (mu %g) is not applied under DP-SGD; this round "
                    "trains FedAvg's local objective", site_id, instruction.server_round, instruction.proximal_mu)


def _as_trained(data, recipe: RecipeSpec, site_id: str):
    """The examples the run trains on: all, or only the healthy ones (``[train] healthy_only``)."""
    return healthy_only(data, recipe.healthy_classes, f"site {site_id}") if recipe.healthy_only else data


def _plain_rank(rank: int, device, build: TrainerBuild, weights: Weights, data, steps: int, proximal_mu: float):
    """One device's process of a data-parallel plain round (common/training/distributed.py)."""
    trainer = build.make(device)
    trainer.load_weights(weights)
    result = trainer.train(data, steps, proximal_mu=proximal_mu)
    return (result, trainer.weights()) if rank == 0 else None


def _private_rank(rank: int, device, build: TrainerBuild, weights: Weights, data, privacy, noise: float,
                  history: list, steps: int):
    """One device's process of a data-parallel DP round: Opacus' distributed step, noise added by rank 0."""
    trainer = build.make(device)
    trainer.load_weights(weights)
    result = DPStep(trainer, privacy, data, noise, history).train(steps)
    return (result, trainer.weights()) if rank == 0 else None


def _private_round(trainer: Trainer, data, site: SiteData, instruction: TrainInstruction, run: str,
                   devices: list[str], ranks: TrainerBuild | None, weights: Weights) -> RoundOutcome:
    """DP-SGD whose noise keeps the whole run (rounds x local steps) within the site's target epsilon; the ledger
    refuses (BudgetExceeded) a round that would take the site's total past its budget."""
    units = privacy_units(data, site.privacy, trainer.recipe.batch_size)
    target = site.privacy.target_epsilon * denoiser_share(site, run)
    ledger, reservation, noise, delta = reserve_round(site, units, instruction, run, target,
                                                      trainer.trained.describe())
    steps = instruction.local_steps
    try:
        if devices:  # the ledger is written here, once; the devices' processes only train
            result, trained = launch(devices, _private_rank, ranks, weights, data, site.privacy, noise,
                                     list(reservation.history_before), steps)[0]
        else:
            result = DPStep(trainer, site.privacy, data, noise, list(reservation.history_before)).train(steps)
            trained = trainer.weights()
    except BaseException as error:
        ledger.cancel(reservation, f"training failed before release: {error!r}")
        raise
    metrics = private_metrics(site, instruction, result, reservation, units, noise, delta, len(data))
    return RoundOutcome(trained, {**metrics, "trained-parameters": trainer.trained.trained},
                        lambda: ledger.released(reservation))


def denoiser_share(site: SiteData, run: str) -> float:
    """The part of the site's target epsilon a denoiser run targets: all of it, or what stage 1 of the same run
    (``[federation] stage = "both"``) left, when this site trained its autoencoder with DP."""
    stage_one = stage_one_run(run)
    spent = PrivacyLedger(site.ledger_path, site.privacy.accountant).entries() if site.ledger_path else []
    if any(entry["run"] == stage_one for entry in spent):
        return 1.0 - site.privacy.autoencoder_share
    return 1.0


def stage_one_run(run: str) -> str:
    """The ledger's name for stage 1 of run ``run`` (so both stages of one run are shown apart)."""
    return f"{run}/autoencoder"


def reserve_round(site: SiteData, units, instruction: TrainInstruction, run: str, target_epsilon: float,
                  trained: str):
    """(ledger, reservation, noise multiplier, delta) of a DP round whose noise keeps the run's rounds x local steps
    within ``target_epsilon``, raised where the run's remaining rounds, composed with everything the site has spent
    (other runs, an interrupted attempt of this one), would pass its budget: the ledger then does not refuse the run
    half way. A run keeps its noise from round to round while it fits. BudgetExceeded (nothing trained) past the
    site's budget, over all its runs."""
    privacy = site.privacy
    if site.ledger_path is None:
        raise ValueError(f"site {site.site_id}: privacy is enabled but no ledger path is set")
    delta = privacy.delta_for(units.count)
    ledger = PrivacyLedger(site.ledger_path, privacy.accountant)
    alone = noise_for_run(target_epsilon, delta, units.sample_rate, instruction.rounds * instruction.local_steps,
                          privacy.accountant)
    counted = [e for e in ledger.entries() if e["status"] in COUNTED]  # one read: the site's history and this run's
    own = [e["noise_multiplier"] for e in counted if e["run"] == run]
    history = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in counted]
    remaining = (instruction.rounds - instruction.server_round + 1) * instruction.local_steps
    noise = raised_to_budget(max([alone] + own[-1:]), history, privacy.budget, delta, units.sample_rate,
                             remaining, privacy.accountant)
    weak = privacy.weak_delta(units.count, "patients" if units.kind == PATIENT else "examples")
    if weak and not own:
        log.warning("site %s, run %s: %s", site.site_id, run, weak)
    if noise > alone and not own:
        log.warning("site %s, run %s: noise multiplier raised from %.3f to %.3f so that this run's remaining rounds, "
                    "composed with everything the site has spent, stay within its budget of epsilon %g",
                    site.site_id, run, alone, noise, privacy.budget)
    reservation = ledger.reserve(run, instruction.server_round, instruction.local_steps, units.sample_rate, noise,
                                 delta, privacy.budget, unit=units.kind, trained=trained)
    return ledger, reservation, noise, delta


def private_metrics(site: SiteData, instruction: TrainInstruction, result, reservation, units, noise: float,
                    delta: float, examples: int) -> dict:
    """The scalar metrics of a DP round (the site's epsilon after it, who it protects), and its log line."""
    privacy = site.privacy
    if not math.isclose(result.epsilon, reservation.epsilon_total, rel_tol=1e-9):
        log.warning("accountant epsilon %.6g differs from the reserved %.6g (the reserved, larger one is kept)",
                    result.epsilon, reservation.epsilon_total)
    log.info("site %s round %d: DP-SGD %d steps, noise %.3f, q %.4f; %s epsilon %.3f at delta %.2g (%s)",
             site.site_id, instruction.server_round, result.steps, noise, units.sample_rate, units.describe(),
             reservation.epsilon_total, delta, privacy.accountant.upper())
    return {"num-examples": examples, "train-loss": result.loss, "steps": result.steps, "seconds": result.seconds,
            "images-per-second": result.examples / max(result.seconds, 1e-9), "skipped-nonfinite": 0,
            "epsilon": max(result.epsilon, reservation.epsilon_total), "delta": delta, "noise-multiplier": noise,
            "dp-patient-level": float(units.kind == PATIENT), "dp-units": units.count,
            "dp-accountant-prv": float(privacy.accountant == "prv")}


@torch.no_grad()
def evaluate_round(spec: RunSpec, weights: Weights, site: SiteData, seed: int = 0, device: str | None = None) -> dict:
    """Held-out denoising loss overall and per noise band (t in quarters of [0, 1]), all channels diffused."""
    data = site.holdout if site.holdout is not None and len(site.holdout) else site.train
    data = align_to_schema(data, spec.schema)
    if spec.recipe.healthy_only:  # a healthy-only model is scored on its healthy held-out examples (all, if none)
        rows = healthy_rows(data, spec.recipe.healthy_classes, f"site {site.site_id}")
        data = data.subset(torch.nonzero(rows).squeeze(1)) if bool(rows.any()) else data
    device = torch.device(device) if device else default_device()
    model = ConditionalDenoiser(spec.schema, spec.model)  # no optimizer or EMA: evaluation only reads weights
    model.load_state_dict(weights, strict=True)
    model.to(device)
    losses = held_out_loss(Denoiser(model, make_schedule(spec.model.schedule)), data, spec.model.noise, seed, device)
    return {"num-examples": len(data), "held-out": int(site.holdout is not None), **losses}
