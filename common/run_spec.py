"""What every site must agree on to train one model: schema, network, schedule, resolution, training recipe.

The server sends it with every training message (as JSON strings in the ConfigRecord), so a site never trains
a model it was not asked for, and the checkpoint of every round records it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..client.trainer import TrainConfig
from .diffusion.loading import model_config_from_dict, model_meta
from .diffusion.model import ConditionalDenoiser, ModelConfig
from .schema import ChannelSchema
from .wire import layout_of


@dataclass(frozen=True)
class RunSpec:
    schema: ChannelSchema
    resolution: int
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    data_source: str = "federated"

    def to_config(self) -> dict[str, str | int]:
        """Flat str/int values, as a Flower ConfigRecord holds them."""
        return {"schema": json.dumps(self.schema.to_dict()), "resolution": self.resolution,
                "model-config": json.dumps(asdict(self.model)), "train-config": json.dumps(asdict(self.train)),
                "data-source": self.data_source}

    @classmethod
    def from_config(cls, config) -> "RunSpec":
        return cls(ChannelSchema.from_dict(json.loads(config["schema"])), int(config["resolution"]),
                   model_config_from_dict(json.loads(config["model-config"])),
                   TrainConfig.from_dict(json.loads(config["train-config"])), str(config["data-source"]))

    def model_meta(self) -> dict:
        """Checkpoint metadata in the format ``load_model`` reads."""
        return model_meta(self.schema, self.model, self.train, self.resolution, data={"source": self.data_source})

    def weight_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of the model's weights, in state-dict order (see ``common.wire``)."""
        return layout_of(ConditionalDenoiser(self.schema, self.model).state_dict())
