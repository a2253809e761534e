"""The one conditional model of the federation (UMM-CSGM idea, see DESIGN.md).

MONAI's DiffusionModelUNet sees ``[x_t (C), condition values (C), condition availability (C)]`` and predicts
the noise of all C channels; an optional class label (with a null class for classifier-free guidance) enters
through MONAI's class embedding. Which channels are given clean and which are generated is decided per call,
so generation, translation, segmentation and the restoration tasks are all calls of this one network.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from ..schema import ChannelSchema
from ..specs import ModelSpec
from .parametrization import Parametrization


class ConditionalDenoiser(nn.Module):
    """The network output for all schema channels given x_t, the clean condition channels and a class label.

    ``forward`` is the raw network: its x_t is already scaled and its output is in the configured
    parametrisation (``self.parametrization`` converts both; see parametrization.py).
    """

    def __init__(self, schema: ChannelSchema, spec: ModelSpec = ModelSpec()) -> None:
        super().__init__()
        self.schema, self.spec = schema, spec
        c = schema.num_channels
        self.null_class = schema.num_classes  # index of the "no class given" embedding
        self.parametrization = Parametrization(spec.prediction, spec.sigma_data)
        self.unet = DiffusionModelUNet(
            spatial_dims=spec.spatial_dims, in_channels=3 * c, out_channels=c,
            channels=spec.channels, attention_levels=spec.attention_levels,
            num_res_blocks=spec.num_res_blocks, num_head_channels=spec.num_head_channels,
            norm_num_groups=spec.norm_num_groups,
            num_class_embeds=schema.num_classes + 1 if schema.num_classes else None)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                given: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x_t, condition: (B, C, *spatial); given: (B, C) bool, True where a channel is given clean;
        timesteps: (B,) network times; labels: (B,) class indices, ``null_class`` for none. Returns (B, C, ...)."""
        shape = given.shape + (1,) * (x_t.dim() - 2)
        g = given.to(x_t.dtype).reshape(shape)
        inputs = torch.cat([x_t * (1 - g), condition * g, g.expand_as(x_t)], dim=1)
        if self.schema.num_classes:
            if labels is None:
                labels = torch.full((x_t.shape[0],), self.null_class, dtype=torch.long, device=x_t.device)
            return self.unet(inputs, timesteps=timesteps, class_labels=labels)
        return self.unet(inputs, timesteps=timesteps)

