"""Start a model from another model's weights, matching channels and classes by name.

A federation may start from a model pretrained on public data whose channel schema differs from the run's (a
public chest X-ray model has one channel "image"; a run may add a mask). Only three tensors depend on the
schema: the first convolution's input planes ([x_t, condition, availability] per channel), the last
convolution's output rows (one per channel) and the class embedding (one row per class, then the null class).
Channels both schemas name are copied; channels the run adds keep the run's fresh initialisation (untrained);
channels the run lacks are dropped. Every other tensor must have the same shape in both: a different network is
refused, never silently reshaped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schema import ChannelSchema

INPUT_CONV = "unet.conv_in.conv.weight"  # (hidden, 3 C, *kernel): planes [x_t | condition | availability]
OUTPUT_CONV = ("unet.out.2.conv.weight", "unet.out.2.conv.bias")  # (C, ...) and (C,)
CLASS_EMBEDDING = "unet.class_embedding.weight"  # (classes + 1, dim): the null class last


@dataclass(frozen=True)
class Transfer:
    """The run's starting weights and what came from where."""

    weights: dict[str, torch.Tensor]
    kept_channels: tuple[str, ...]
    added_channels: tuple[str, ...]  # untrained: the starting model never saw them
    dropped_channels: tuple[str, ...]
    kept_classes: tuple[str, ...]

    def describe(self) -> str:
        parts = [f"channels kept {list(self.kept_channels)}"]
        if self.added_channels:
            parts.append(f"added untrained {list(self.added_channels)}")
        if self.dropped_channels:
            parts.append(f"dropped {list(self.dropped_channels)}")
        if self.kept_classes:
            parts.append(f"classes kept {list(self.kept_classes)}")
        return "; ".join(parts)


def transfer_weights(source: dict[str, torch.Tensor], source_schema: ChannelSchema,
                     fresh: dict[str, torch.Tensor], schema: ChannelSchema) -> Transfer:
    """``fresh`` (the run's own initialisation) with every tensor the ``source`` model can give. Raises ValueError
    naming the first tensor whose shape differs for another reason than the schema."""
    mapping = {c: source_schema.index(c) for c in schema.channels if c in source_schema.channels}
    weights = {name: tensor.clone() for name, tensor in fresh.items()}
    schema_tensors = {INPUT_CONV, *OUTPUT_CONV, CLASS_EMBEDDING}
    for name, tensor in fresh.items():
        if name in schema_tensors:
            continue
        if name not in source or source[name].shape != tensor.shape:
            found = tuple(source[name].shape) if name in source else "missing"
            raise ValueError(f"the starting model's network differs: {name} is {found} there and "
                             f"{tuple(tensor.shape)} in the run")
        weights[name] = source[name].detach().clone().to(tensor.dtype)
    c_source, c_run = source_schema.num_channels, schema.num_channels
    for target, origin in ((schema.index(c), i) for c, i in mapping.items()):
        for block in range(3):
            weights[INPUT_CONV][:, block * c_run + target] = source[INPUT_CONV][:, block * c_source + origin]
        for name in OUTPUT_CONV:
            weights[name][target] = source[name][origin]
    kept_classes = _transfer_classes(source, source_schema, weights, schema)
    return Transfer(weights, tuple(mapping), tuple(c for c in schema.channels if c not in mapping),
                    tuple(c for c in source_schema.channels if c not in schema.channels), kept_classes)


def _transfer_classes(source: dict[str, torch.Tensor], source_schema: ChannelSchema, weights: dict[str, torch.Tensor],
                      schema: ChannelSchema) -> tuple[str, ...]:
    """Copy the class embedding rows of classes both name, and the null class (unconditional generation)."""
    if CLASS_EMBEDDING not in weights or CLASS_EMBEDDING not in source:
        return ()
    kept = tuple(c for c in schema.class_names if c in source_schema.class_names)
    for name in kept:
        weights[CLASS_EMBEDDING][schema.class_names.index(name)] = \
            source[CLASS_EMBEDDING][source_schema.class_names.index(name)]
    weights[CLASS_EMBEDDING][schema.num_classes] = source[CLASS_EMBEDDING][source_schema.num_classes]
    return kept
