"""The conditional model and its masked loss: absent channels get no gradient, training lowers the loss."""

from __future__ import annotations

import torch

from meddiff.common.data.phantom import phantom_dataset
from meddiff.common.data.transforms import prepare
from meddiff.common.diffusion.denoiser import Denoiser
from meddiff.common.diffusion.loss import LossConfig
from meddiff.common.diffusion.model import ConditionalDenoiser
from meddiff.common.specs import ModelSpec
from meddiff.common.diffusion.schedules import DiscreteVP

TINY = ModelSpec(channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=16)


def _batch(n=8, size=16):
    data = phantom_dataset(n, size=size, seed=0)
    ready = prepare(data.examples, data.schema, size, slices=False)
    x = torch.stack([torch.from_numpy(e.image) for e in ready])
    labels = torch.tensor([e.label for e in ready])
    return data.schema, x, labels


def test_output_shape_and_class_conditioning():
    schema, x, labels = _batch(4)
    model = ConditionalDenoiser(schema, TINY)
    for p in model.parameters():  # MONAI zero-initialises output convolutions, hiding the embeddings at init
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.05)
    given = torch.zeros(4, schema.num_channels, dtype=torch.bool)
    out = model(x, torch.full((4,), 500.0), x, given, labels)
    assert out.shape == x.shape
    other = model(x, torch.full((4,), 500.0), x, given, torch.full((4,), model.null_class))
    assert not torch.allclose(out, other)  # the class label changes the prediction


def test_a_site_without_t2_sends_no_gradient_through_the_t2_output():
    schema, x, labels = _batch(6)
    t2 = schema.index("t2")
    available = torch.ones(6, schema.num_channels, dtype=torch.bool)
    available[:, t2] = False
    x[:, t2] = 0.0
    model = ConditionalDenoiser(schema, TINY)
    captured = {}

    def keep_output(module, inputs, output):
        output.retain_grad()
        captured["out"] = output

    model.unet.register_forward_hook(keep_output)
    loss = Denoiser(model, DiscreteVP.linear()).loss(x, available, labels, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (6,)
    loss.mean().backward()
    grad = captured["out"].grad
    assert torch.count_nonzero(grad[:, t2]) == 0
    others = [c for c in range(schema.num_channels) if c != t2]
    assert torch.count_nonzero(grad[:, others]) > 0


def test_a_few_hundred_steps_lower_the_loss():
    torch.manual_seed(0)
    schema, x, labels = _batch(16, size=16)
    model = ConditionalDenoiser(schema, TINY)
    schedule = DiscreteVP.linear()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    available = torch.ones(16, schema.num_channels, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)

    def evaluate():
        with torch.no_grad():
            eg = torch.Generator().manual_seed(123)
            return torch.stack([Denoiser(model, schedule).loss(x, available, labels, LossConfig(), eg).mean()
                                for _ in range(8)]).mean().item()

    before = evaluate()
    for _ in range(200):
        loss = Denoiser(model, schedule).loss(x, available, labels, generator=g).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.6 * before, (before, after)
