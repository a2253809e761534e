"""Data-parallel training (common/training/distributed.py) with 2 real CPU processes on gloo: plain steps equal one
process on the whole batch; DP-SGD clips each example on its rank and adds the noise once, at sigma * C."""

from __future__ import annotations

import pytest
import torch

from meddiff.common.config import PrivacyConfig
from meddiff.common.data.training_set import load_training_set
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.common.training.distributed import Ranks, current_ranks, launch
from meddiff.common.training.trainer import Trainer
from meddiff.privacy.dp_sgd import DPStep

SMALL = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)
RECIPE = RecipeSpec(batch_size=4, seed=3, learning_rate=1e-3, warmup_steps=1)
CLIP = 1e-2


def _data():
    return load_training_set("phantom", phantom_n=16, resolution=16).tensors


def _plain(rank: int, device: torch.device, steps: int) -> dict:
    torch.set_num_threads(1)
    data = _data()
    trainer = Trainer(data.schema, SMALL, RECIPE, device=device, steps=steps)
    first = trainer.train(data, 1)
    gradient = torch.cat([p.grad.flatten() for p in trainer.model.parameters()])  # step 1's (averaged) gradient
    rest = trainer.train(data, steps - 1)
    return {"weights": trainer.weights(), "ema": trainer.ema_weights(), "gradient": gradient,
            "loss": (first.loss + rest.loss * (steps - 1)) / steps, "ranks": current_ranks()}


def test_two_processes_take_the_steps_one_process_takes_on_the_whole_batch():
    ranks = launch(["cpu", "cpu"], _plain, 3)
    alone = _plain(0, torch.device("cpu"), 3)
    assert [r["ranks"] for r in ranks] == [Ranks(0, 2), Ranks(1, 2)] and alone["ranks"] is None
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in alone["weights"])  # in sync
    # the gradient of the whole batch, up to the order of float sums
    torch.testing.assert_close(ranks[0]["gradient"], alone["gradient"], atol=1e-7, rtol=1e-4)
    start = Trainer(_data().schema, SMALL, RECIPE, device="cpu").weights()
    for kind in ("weights", "ema"):  # then the same updates: Adam's first steps are about lr * sign(gradient), so
        # an entry whose gradient rounds to the other sign of 0 moves the other way; the whole update agrees
        together = torch.cat([(ranks[0][kind][k] - v).flatten() for k, v in start.items()])
        one = torch.cat([(alone[kind][k] - v).flatten() for k, v in start.items()])
        assert float(one.norm()) > 0 and float((together - one).norm() / one.norm()) < 1e-2
    assert ranks[0]["loss"] == pytest.approx(alone["loss"], rel=1e-4) == ranks[1]["loss"]


def test_a_batch_that_does_not_divide_among_the_processes_is_refused_by_name():
    with pytest.raises(ValueError, match="batch_size 6 does not divide among 4 processes"):
        Ranks(1, 4).shard(6)


def _private(rank: int, device: torch.device, noises: tuple[float, ...]) -> list[dict]:
    return [_private_step(rank, device, noise) for noise in noises]


def _private_step(rank: int, device: torch.device, noise: float) -> dict:
    """One DP step on a fixed batch (this rank's half of 8 examples): the per-example gradients and the step's
    final gradient (clipped, summed over ranks, noised, divided by the expected batch)."""
    torch.set_num_threads(1)
    data = _data()
    privacy = PrivacyConfig(enabled=True, max_grad_norm=CLIP, unit="example", noise_multiplicity=1)
    trainer = Trainer(data.schema, SMALL, RECIPE, device=device, ema=False, fused=False)
    step = DPStep(trainer, privacy, data, noise)
    part = data.subset(torch.arange(8)[current_ranks().shard(8)])
    step.per_example_gradients(part.images, part.available, part.labels)
    params = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    samples = torch.cat([p.grad_sample.detach().flatten(1) for _, p in params], dim=1)
    torch.manual_seed(100 + rank)
    step.optimizer.step()
    grad = torch.cat([p.grad.detach().flatten() for _, p in params])
    return {"samples": samples, "grad": grad, "expected_batch": step.optimizer.expected_batch_size,
            "sample_rate": step.sample_rate}


NOISES = (0.0, 50.0)


@pytest.fixture(scope="module")
def private_steps():
    """Per noise multiplier, each rank's result (one launch for both)."""
    ranks = launch(["cpu", "cpu"], _private, NOISES)
    return {noise: [ranks[0][i], ranks[1][i]] for i, noise in enumerate(NOISES)}


@pytest.mark.parametrize("noise", NOISES)
def test_dp_clips_each_example_on_its_rank_and_adds_the_noise_once(noise, private_steps):
    ranks = private_steps[noise]
    samples = torch.cat([r["samples"] for r in ranks])  # the 8 examples' gradients, before clipping
    factors = (CLIP / (samples.norm(dim=1) + 1e-6)).clamp(max=1.0)
    assert (factors < 1).all()  # every example's gradient was above C: clipping matters here
    global_batch = ranks[0]["expected_batch"] * 2  # Opacus' expected batch is per rank
    assert global_batch == pytest.approx(16 * ranks[0]["sample_rate"])  # what one process would divide by
    clipped_mean = (samples * factors[:, None]).sum(0) / global_batch
    assert torch.equal(ranks[0]["grad"], ranks[1]["grad"])  # one step, the same on both ranks
    residual = ranks[0]["grad"] - clipped_mean
    if noise == 0:
        torch.testing.assert_close(ranks[0]["grad"], clipped_mean, atol=1e-9, rtol=1e-4)
    else:  # sigma * C once (twice would be sqrt(2) larger), divided by the whole batch
        assert float(residual.std()) == pytest.approx(noise * CLIP / global_batch, rel=0.05)


@pytest.mark.slow
def test_a_federated_round_on_two_devices_trains_like_one_and_writes_the_ledger_once(tmp_path):
    from meddiff.client.round import train_round
    from meddiff.client.site_data import SiteData
    from meddiff.common.messages import TrainInstruction
    from meddiff.common.run_spec import RunSpec
    from meddiff.common.specs import RuntimeSpec
    from meddiff.privacy.ledger import PrivacyLedger
    from meddiff.server.federation import initial_weights

    torch.set_num_threads(1)
    data = _data()
    spec = RunSpec(data.schema, 16, SMALL, RECIPE, "phantom")
    start, instruction = initial_weights(spec), TrainInstruction(server_round=1, rounds=2, local_steps=2)
    two = RuntimeSpec(devices=("cpu", "cpu"))
    plain_two = train_round(spec, start, SiteData("s", data), instruction, "run", two)
    plain_one = train_round(spec, start, SiteData("s", data), instruction, "run", RuntimeSpec())
    update = torch.cat([(plain_one.weights[k] - v).flatten() for k, v in start.items()])
    apart = torch.cat([(plain_two.weights[k] - plain_one.weights[k]).flatten() for k in start])
    assert float(update.norm()) > 0 and float(apart.norm() / update.norm()) < 1e-2
    assert plain_two.metrics["train-loss"] == pytest.approx(plain_one.metrics["train-loss"], rel=1e-4)

    privacy = PrivacyConfig(enabled=True, target_epsilon=10.0, unit="example")
    private = [train_round(spec, start, SiteData("s", data, privacy=privacy, ledger_path=tmp_path / f"{n}.sqlite"),
                           instruction, "run", runtime) for n, runtime in (("two", two), ("one", RuntimeSpec()))]
    for outcome in private:
        outcome.released()
    entries = [PrivacyLedger(tmp_path / f"{n}.sqlite").entries() for n in ("two", "one")]
    assert [len(e) for e in entries] == [1, 1] and entries[0][0]["status"] == "released"
    assert private[0].metrics["epsilon"] == pytest.approx(private[1].metrics["epsilon"], rel=1e-9)
    assert private[0].metrics["noise-multiplier"] == private[1].metrics["noise-multiplier"]
    assert any(not torch.equal(private[0].weights[k], start[k]) for k in start)
