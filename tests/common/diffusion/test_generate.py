"""Sampling from the conditional model: guidance arithmetic, given channels kept, the x0 clip."""

from __future__ import annotations

from dataclasses import replace

import torch

from meddiff.common.data.phantom import SCHEMA
from meddiff.common.diffusion.generate import Conditioning, Denoiser, sample
from meddiff.common.diffusion.guidance import Clipped, bind
from meddiff.common.diffusion.model import ConditionalDenoiser
from meddiff.common.specs import ModelSpec
from meddiff.common.diffusion.schedules import DiscreteVP

TINY = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)


def _model(config: ModelSpec = TINY) -> ConditionalDenoiser:
    torch.manual_seed(0)
    model = ConditionalDenoiser(SCHEMA, config).eval()
    for p in model.parameters():  # MONAI zero-initialises the output convs; make the class matter
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.05)
    return model


def _conditioning(batch=3, size=8, labels=None) -> Conditioning:
    return Conditioning(torch.zeros(batch, SCHEMA.num_channels, size, size),
                        torch.zeros(batch, SCHEMA.num_channels, dtype=torch.bool), labels)


def _eps(denoiser, x, t):
    """The noise estimate a bound denoiser's x0 implies."""
    a, s = denoiser.denoiser.coefficients(t, x)
    return (x - a * denoiser(x, t)) / s


@torch.no_grad()
def test_guidance_scale_mixes_the_class_and_null_predictions():
    denoiser = Denoiser(_model(), DiscreteVP.linear())
    x, t = torch.randn(3, 5, 8, 8), torch.full((3,), 0.5)
    labels = torch.tensor([0, 1, 1])
    raw = {w: _eps(bind(denoiser, _conditioning(labels=labels), w), x, t) for w in (0.0, 1.0, 3.0)}
    null = _eps(bind(denoiser, _conditioning(labels=None), 1.0), x, t)
    assert torch.allclose(raw[0.0], null, atol=1e-5)  # w = 0 ignores the class
    assert not torch.allclose(raw[1.0], null, atol=1e-3)
    assert torch.allclose(raw[3.0], null + 3.0 * (raw[1.0] - null), atol=1e-4)


@torch.no_grad()
def test_the_clip_keeps_the_denoised_estimate_in_the_data_range():
    # an eps-predicting network: its x0 estimate at high noise is far outside [-1, 1] unless clipped
    denoiser = Denoiser(_model(replace(TINY, prediction="eps")), DiscreteVP.linear())
    x, t = 5 * torch.randn(2, 5, 8, 8), torch.full((2,), 0.98)
    x0 = Clipped(bind(denoiser, _conditioning(2)))(x, t)
    assert x0.abs().max() <= 1.0 + 1e-3
    unclipped = bind(denoiser, _conditioning(2))(x, t)
    assert unclipped.abs().max() > 2.0


def test_given_channels_come_back_unchanged_and_samples_stay_in_range():
    denoiser = Denoiser(_model(), DiscreteVP.linear())
    conditioning = _conditioning(2)
    t1 = SCHEMA.index("t1")
    condition = conditioning.condition.clone()
    condition[:, t1] = torch.linspace(-1, 1, 64).reshape(8, 8)
    given = conditioning.given.clone()
    given[:, t1] = True
    out = sample(denoiser, Conditioning(condition, given), sampler="ddim", steps=4,
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == condition.shape
    assert torch.equal(out[:, t1], condition[:, t1])
    assert out.abs().max() <= 1.0
    again = sample(denoiser, Conditioning(condition, given), sampler="ddim", steps=4,
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the same seed gives the same samples
