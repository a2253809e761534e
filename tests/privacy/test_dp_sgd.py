"""DP-SGD at the site is real: per-example clipping bounds each example's contribution, both grad-sample modes
compute the same per-example gradients, and the weights sent carry no Opacus prefix."""

from __future__ import annotations

import pytest
import torch

from meddiff.common.config import PrivacyConfig
from meddiff.common.data.training_set import load_training_set
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.privacy.dp_sgd import private_trainer

SMALL = ModelSpec(channels=(16, 32), attention_levels=(False, False), num_head_channels=16, norm_num_groups=8)


@pytest.fixture(scope="module")
def phantom():
    return load_training_set("phantom", phantom_n=16).tensors


def _trainer(data, mode="hooks", k=2, clip=0.01, noise=0.0):
    privacy = PrivacyConfig(enabled=True, max_grad_norm=clip, noise_multiplicity=k, grad_sample_mode=mode)
    return private_trainer(data.schema, SMALL, RecipeSpec(batch_size=4, seed=3), privacy, data, noise, device="cpu")


def _flat_grad_samples(trainer) -> torch.Tensor:
    return torch.cat([p.grad_sample.flatten(1) for p in trainer.model.parameters() if p.requires_grad], dim=1)


def _summed_grad(trainer) -> torch.Tensor:
    return torch.cat([p.summed_grad.flatten() for p in trainer.model.parameters() if p.requires_grad])


def test_each_examples_contribution_is_clipped_to_the_bound(phantom):
    clip = 0.01
    trainer = _trainer(phantom, clip=clip)
    batch = phantom.subset(torch.arange(4))
    trainer.per_example_gradients(batch.images, batch.available, batch.labels)
    per_example = _flat_grad_samples(trainer)
    norms = per_example.norm(dim=1)
    assert per_example.shape[0] == 4 and (norms > clip).all()  # the bound really binds
    trainer.optimizer.clip_and_accumulate()
    expected = (per_example * (clip / norms).clamp(max=1.0)[:, None]).sum(0)
    assert torch.allclose(_summed_grad(trainer), expected, rtol=1e-4, atol=1e-7)
    for i in range(4):  # one example alone: what it adds to the sum has norm <= C
        trainer.optimizer.zero_grad(set_to_none=True)
        single = phantom.subset(torch.tensor([i]))
        trainer.per_example_gradients(single.images, single.available, single.labels)
        trainer.optimizer.clip_and_accumulate()
        assert _summed_grad(trainer).norm() <= clip * (1 + 1e-5)


def test_hooks_and_functorch_agree_and_average_the_k_draws_before_clipping(phantom):
    batch = phantom.subset(torch.arange(3))
    grads = {}
    for mode in ("hooks", "functorch"):
        trainer = _trainer(phantom, mode=mode, k=3)
        trainer.per_example_gradients(batch.images, batch.available, batch.labels)
        grads[mode] = _flat_grad_samples(trainer)
    assert grads["hooks"].shape[0] == 3  # one gradient per example, not per draw
    assert torch.allclose(grads["hooks"], grads["functorch"], rtol=1e-3, atol=1e-6)
    # the mean per-example gradient is the ordinary gradient of the mean loss over the same draws
    reference = _trainer(phantom, k=3)
    reference.generator.manual_seed(3)
    plain = reference.model
    repeated = [x.repeat_interleave(3, dim=0) for x in (batch.images, batch.available, batch.labels)]
    reference.denoiser.loss(*repeated, reference.loss_config, reference.generator).mean().backward()
    ordinary = torch.cat([p.grad.flatten() for p in plain.parameters() if p.requires_grad])
    assert torch.allclose(grads["hooks"].mean(0), ordinary, rtol=1e-3, atol=1e-6)


def test_training_adds_noise_and_sends_plain_weight_names(phantom):
    quiet, noisy = _trainer(phantom, noise=0.0), _trainer(phantom, noise=1.0)
    start = {k: v.clone() for k, v in quiet.weights().items()}  # weights() aliases the live parameters on CPU
    noisy.load_weights(start)
    results = [t.train(3) for t in (quiet, noisy)]
    assert all(not k.startswith("_module.") for k in noisy.weights()) and list(noisy.weights()) == list(start)
    assert any(not torch.equal(quiet.weights()[k], start[k]) for k in start)
    # same seeds, same Poisson batches and draws: only the Gaussian noise makes the two differ
    assert any(not torch.equal(quiet.weights()[k], noisy.weights()[k]) for k in start)
    assert results[1].steps == 3 and 0 < results[1].epsilon < float("inf")


def test_ghost_clipping_gives_the_clipped_sum_of_the_hooks_mode(phantom):
    """Ghost clipping never forms per-example gradients, yet must add exactly what hooks mode adds: the sum of
    each example's gradient scaled to norm <= C (same seed, same batch, one draw per example)."""
    batch = phantom.subset(torch.arange(4))
    hooks = _trainer(phantom, mode="hooks", k=1)
    hooks.per_example_gradients(batch.images, batch.available, batch.labels)
    assert (_flat_grad_samples(hooks).norm(dim=1) > 0.01).all()  # the bound binds, so clipping matters
    hooks.optimizer.clip_and_accumulate()
    ghost = _trainer(phantom, mode="ghost", k=1)
    losses = ghost.per_example_gradients(batch.images, batch.available, batch.labels)
    assert losses.shape == (4,)
    clipped_sum = torch.cat([p.grad.flatten() for p in ghost.model.parameters() if p.requires_grad])
    assert torch.allclose(clipped_sum, _summed_grad(hooks), rtol=1e-3, atol=1e-6)


def test_ghost_clipping_trains_and_is_refused_with_noise_multiplicity(phantom):
    from meddiff.common.config import ConfigError
    trainer = _trainer(phantom, mode="ghost", k=1, noise=1.0)
    result = trainer.train(steps=3)
    assert result.steps == 3 and result.epsilon > 0 and torch.isfinite(torch.tensor(result.loss))
    with pytest.raises(ConfigError, match="noise_multiplicity = 1"):
        PrivacyConfig(enabled=True, noise_multiplicity=4, grad_sample_mode="ghost")
