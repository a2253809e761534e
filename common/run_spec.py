"""What every site must agree on to train one model: schema, resolution, network and diffusion, recipe.

The coordinator sends it with every training message (JSON strings in the ConfigRecord, under the keys of
common/messages.py), so a site never trains a model it was not asked for, and the checkpoint of every round
records it. It carries no site's hardware switches (``RuntimeSpec``): each site keeps its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from . import messages
from .diffusion.loading import model_meta
from .diffusion.model import ConditionalDenoiser
from .schema import ChannelSchema
from .specs import ModelSpec, RecipeSpec, spec_from_dict
from .wire import layout_of, trained_mask


@dataclass(frozen=True)
class RunSpec:
    schema: ChannelSchema
    resolution: int
    model: ModelSpec = ModelSpec()
    recipe: RecipeSpec = RecipeSpec()
    data_source: str = "federated"

    def to_config(self) -> dict[str, str | int]:
        """Flat str/int values, as a Flower ConfigRecord holds them."""
        return {messages.SCHEMA: json.dumps(self.schema.to_dict()), messages.RESOLUTION: self.resolution,
                messages.MODEL_SPEC: json.dumps(asdict(self.model)), messages.RECIPE: json.dumps(asdict(self.recipe)),
                messages.DATA_SOURCE: self.data_source}

    @classmethod
    def from_config(cls, config) -> "RunSpec":
        """The spec of a message, strictly: a key of another version of meddiff is refused by name."""
        where = "the coordinator's run spec"
        return cls(ChannelSchema.from_dict(json.loads(config[messages.SCHEMA])), int(config[messages.RESOLUTION]),
                   spec_from_dict(ModelSpec, json.loads(config[messages.MODEL_SPEC]), where),
                   spec_from_dict(RecipeSpec, json.loads(config[messages.RECIPE]), where),
                   str(config[messages.DATA_SOURCE]))

    def model_meta(self) -> dict:
        """Checkpoint metadata in the format ``load_model`` reads."""
        return model_meta(self.schema, self.model, self.recipe, self.resolution, data={"source": self.data_source})

    def weight_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of the model's weights, in state-dict order (see ``common.wire``)."""
        return layout_of(ConditionalDenoiser(self.schema, self.model).state_dict())

    def trained_mask(self, layout: list[tuple[str, tuple[int, ...]]] | None = None):
        """Where in the packed vector a run that trains a part of the network ([train] trainable) changes
        anything: what a site's reply carries (common/wire.py). None when every parameter trains. ``layout``:
        the weight layout when the caller has it already (making it builds the network)."""
        if self.recipe.trainable == "all":
            return None
        from .training.trainable import is_trained

        return trained_mask(layout or self.weight_layout(), lambda name: is_trained(name, self.recipe.trainable))
