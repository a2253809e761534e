"""Each GPU fast path gives the plain path's numbers: checked on CPU where the path runs there, on CUDA otherwise.

Tolerances: fp32 paths (SDPA attention, channels-last, compiled) agree to 1e-4 absolute on outputs of order 1;
bf16 autocast agrees to 3 % relative L2 error on the network output (bf16 keeps 8 bits of mantissa).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import pytest
import torch

from meddiff.common.data.training_set import load_training_set
from meddiff.common.diffusion.fast_paths import (CompiledWithFallback, FastPaths, GraphedNetwork, apply_layout,
                                                 set_flash_attention, switch_on)
from meddiff.common.diffusion.generate import Conditioning, Denoiser, sample
from meddiff.common.diffusion.model import ConditionalDenoiser
from meddiff.common.specs import ModelSpec, RecipeSpec, RuntimeSpec
from meddiff.common.training.plain_step import PlainStep
from meddiff.common.training.trainer import Trainer
from meddiff.common.diffusion.schedules import make_schedule

TINY = ModelSpec(channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs exist only there)")


@pytest.fixture(scope="module")
def data():
    return load_training_set("phantom", resolution=16, phantom_n=12).tensors


def _inputs(schema, batch=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = schema.num_channels
    x = torch.randn(batch, c, size, size, generator=g)
    given = torch.zeros(batch, c, dtype=torch.bool)
    given[:, 0] = True
    return x, torch.rand(batch, generator=g) * 999, torch.randn(batch, c, size, size, generator=g), given


def _model(schema, seed=0):
    """A network with every weight non-zero (MONAI zero-initialises the output layers: a fresh network outputs 0,
    which every path would reproduce trivially)."""
    torch.manual_seed(seed)
    model = ConditionalDenoiser(schema, TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_switches_are_on_for_cuda_only_when_auto():
    assert switch_on("auto", "cuda") and not switch_on("auto", "cpu")
    assert switch_on("on", "cpu") and not switch_on("off", "cuda")
    with pytest.raises(ValueError, match="auto"):
        FastPaths(compile="yes")
    with pytest.raises(ValueError, match="must be one of"):
        RuntimeSpec(channels_last="fast")


def test_sdpa_attention_and_channels_last_give_the_plain_outputs(data):
    model = _model(data.schema)
    inputs = _inputs(data.schema)
    with torch.no_grad():
        plain = model(*inputs)
        assert set_flash_attention(model, True) >= 1
        flash = model(*inputs)
        apply_layout(model, 2, flash_attention=True, channels_last=True)
        assert model.unet.conv_in.conv.weight.is_contiguous(memory_format=torch.channels_last)
        both = model(*inputs)
    assert plain.abs().mean() > 0.01
    assert torch.allclose(plain, flash, atol=1e-5) and torch.allclose(plain, both, atol=1e-4)


def test_bf16_autocast_stays_within_three_percent_of_fp32(data):
    model = _model(data.schema)
    inputs = _inputs(data.schema)
    with torch.no_grad():
        fp32 = model(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(*inputs).float()
    relative = (bf16 - fp32).norm() / fp32.norm()
    assert 0 < relative < 0.03


def test_compiled_network_gives_the_eager_outputs(data):
    model = _model(data.schema)
    inputs = _inputs(data.schema)
    compiled = CompiledWithFallback(model, backend="aot_eager")  # dynamo + AOT autograd, no C++ build
    with torch.no_grad():
        assert torch.allclose(compiled(*inputs), model(*inputs), atol=1e-5)
    assert compiled.failed is None


def test_a_compiler_failure_falls_back_to_eager_and_says_so(data, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler on this machine")

    model = _model(data.schema)
    inputs = _inputs(data.schema)
    compiled = CompiledWithFallback(model, backend=broken_backend)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = compiled(*inputs)
    assert torch.allclose(out, model(*inputs)) and "no compiler on this machine" in compiled.failed
    assert "continue eagerly" in caplog.text


def test_trainer_with_every_fast_path_on_follows_the_plain_trainer(data):
    recipe = RecipeSpec(batch_size=6, warmup_steps=1, seed=1)
    runtime = RuntimeSpec(flash_attention="off", channels_last="off", compile="off")
    plain = Trainer(data.schema, TINY, recipe, runtime, "cpu", steps=4)
    fast = Trainer(data.schema, TINY, recipe, replace(runtime, flash_attention="on", channels_last="on", compile="on"),
                   "cpu", steps=4)
    fast.compiled = CompiledWithFallback(fast.model, backend="aot_eager")
    for trainer, network in ((plain, None), (fast, fast.compiled)):  # one gradient, same batch and draws
        step = PlainStep(trainer)
        step.loss(step.batch(data), network).backward()
    for (name, p), q in zip(plain.model.named_parameters(), fast.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6), name
    initial = {k: v.clone() for k, v in plain.weights().items()}
    a, b = plain.train(data), fast.train(data)
    assert fast.compiled.failed is None and abs(a.loss - b.loss) < 1e-4
    moved = torch.cat([(p - initial[k]).flatten() for k, p in plain.weights().items()]).norm()
    apart = torch.cat([(p - q).flatten() for p, q in zip(plain.weights().values(), fast.weights().values())]).norm()
    assert apart < 0.05 * moved  # Adam amplifies rounding on near-zero gradients; the two runs still coincide


def test_the_foreach_ema_is_the_warmed_up_exponential_average(data):
    trainer = Trainer(data.schema, TINY, RecipeSpec(batch_size=4, ema_decay=0.9), device="cpu", steps=3)
    ema = {k: v.clone() for k, v in trainer.ema_weights().items()}
    for n in range(3):
        trainer.train(data, steps=1)
        d = min(0.9, (1 + n) / (10 + n))
        ema = {k: d * ema[k] + (1 - d) * w for k, w in trainer.weights().items()}
    for k, v in trainer.ema_weights().items():
        assert torch.allclose(v, ema[k], atol=1e-6), k


def _graph_vs_eager(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    from meddiff.common.data.phantom import SCHEMA
    model = _model(SCHEMA).to(device)
    schedule = make_schedule("ddpm")
    conditioning = Conditioning.nothing((4, SCHEMA.num_channels, 16, 16), device)
    runs = []
    for graphs in ("off", "on"):
        g = torch.Generator(device).manual_seed(0)
        runs.append(sample(Denoiser(model, schedule), conditioning, sampler="ddim", steps=8, generator=g,
                           precision="fp32",
                           fast_paths=FastPaths(cuda_graphs=graphs, compile="off")))
    return runs[0], runs[1]


@cuda
def test_cuda_graph_sampling_equals_eager_sampling_given_the_same_noise():
    eager, graphed = _graph_vs_eager("cuda")
    assert torch.allclose(eager, graphed, atol=1e-5)


@cuda
def test_a_graph_replays_new_inputs_not_the_captured_ones():
    calls = []
    graphed = GraphedNetwork(lambda x, t, nothing: calls.append(1) or x * 2 + t[:, None])
    x = torch.ones(2, 3, device="cuda")
    t = torch.zeros(2, device="cuda")
    assert torch.equal(graphed(x, t, None), x * 2)
    y = torch.full((2, 3), 5.0, device="cuda")
    assert torch.equal(graphed(y, t + 1, None), y * 2 + 1)
    assert len(calls) == GraphedNetwork.WARMUP_CALLS + 1  # later calls replay, never re-run Python


@cuda
def test_graphs_are_kept_per_model_and_shape():
    from meddiff.common.data.phantom import SCHEMA
    model = _model(SCHEMA).cuda()
    denoiser = Denoiser(model, make_schedule("ddpm"))
    for batch in (4, 4, 2):
        sample(denoiser, Conditioning.nothing((batch, SCHEMA.num_channels, 16, 16), "cuda"), steps=3,
               generator=torch.Generator("cuda").manual_seed(0), fast_paths=FastPaths(compile="off"))
    assert len(denoiser.graphs) == 2


def test_cuda_graphs_on_a_cpu_is_refused():
    with pytest.raises(ValueError, match="CUDA"):
        FastPaths(cuda_graphs="on").resolved("cpu")


@cuda
def test_the_trainer_trains_and_samples_on_cuda_with_the_default_fast_paths(data, tmp_path):
    trainer = Trainer(data.schema, TINY, RecipeSpec(batch_size=6, warmup_steps=2), device="cuda", steps=30)
    result = trainer.train(data, checkpoint_path=tmp_path / "model.pt")
    assert result.steps == 30 and result.skipped_nonfinite == 0 and math.isfinite(result.loss)
    resumed = Trainer.resume(tmp_path / "model.pt", "cuda")
    assert resumed.step == 30 and resumed.generator.device.type == "cuda"
    conditioning = Conditioning.nothing((4,) + tuple(data.images.shape[1:]), "cuda")
    images = sample(Denoiser(trainer.ema.module, trainer.schedule), conditioning, steps=5,
                    generator=torch.Generator("cuda").manual_seed(0))
    assert images.shape == conditioning.condition.shape and torch.isfinite(images).all()
