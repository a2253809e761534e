"""Which of the network's parameters a run trains: all of them, or a part, so that DP fine-tuning of a pretrained
model spreads the same noise over fewer dimensions.

- ``all``: every parameter.
- ``decoder``: the UNet's up-sampling half and output layers.
- ``norms-attention``: every normalisation layer's scale and shift and every attention block.
The schema-dependent layers (the first convolution, the last one and the class embedding) always train: a run
that adds a channel or a class to a pretrained model must be able to learn it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..specs import TRAINABLE
ALWAYS = ("unet.conv_in.", "unet.out.", "unet.class_embedding.")
DECODER = ("unet.up_blocks.", "unet.out.")
NORMS_ATTENTION = (".norm", ".attentions.")


@dataclass(frozen=True)
class TrainedPart:
    choice: str
    trained: int  # parameters trained
    total: int

    def describe(self) -> str:
        if self.choice == "all":
            return f"all {self.total:,} parameters"
        return f"{self.choice}: {self.trained:,} of {self.total:,} parameters ({self.trained / self.total:.0%})"


def is_trained(name: str, choice: str) -> bool:
    """Whether parameter ``name`` (a state-dict key of ConditionalDenoiser) trains under ``choice``."""
    if choice == "all" or name.startswith(ALWAYS):
        return True
    if choice == "decoder":
        return name.startswith(DECODER)
    return any(part in name for part in NORMS_ATTENTION)


def select_trained(model: nn.Module, choice: str) -> TrainedPart:
    """Freeze every parameter ``choice`` does not train (requires_grad False); returns what trains."""
    if choice not in TRAINABLE:
        raise ValueError(f"[train] trainable must be one of {list(TRAINABLE)}, got {choice!r}")
    trained = total = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trained(name, choice))
        total += parameter.numel()
        trained += parameter.numel() if parameter.requires_grad else 0
    return TrainedPart(choice, trained, total)


def trained_part(schema, spec, choice: str) -> TrainedPart:
    """What ``choice`` trains in a model of ``schema`` and ``spec`` (for reports and delivered metadata)."""
    from ..diffusion.model import ConditionalDenoiser

    return select_trained(ConditionalDenoiser(schema, spec), choice)
