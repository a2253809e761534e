"""The fixed small CNN that judges synthetic data: train on synthetic, test on real (TSTR).

One recipe for every training set (synthetic or real): same network, epochs, batch size, optimiser and seed,
no augmentation, so the only difference between rows of a TSTR table is the training images. The network's
penultimate features (128-d, after global average pooling) are also what later feature-space metrics use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

Tensor = torch.Tensor


class SmallCNN(nn.Module):
    """Three conv blocks (32, 64, 128 channels; BatchNorm, ReLU, 2x2 max-pool), global average pool, linear."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        blocks, width = [], in_channels
        for out in (32, 64, 128):
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class ClassifierRecipe:
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def train_classifier(images: Tensor, labels: Tensor, num_classes: int,
                     recipe: ClassifierRecipe = ClassifierRecipe()) -> SmallCNN:
    """images: (N, C, H, W) in [-1, 1]; labels: (N,) class indices."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {len(images)} and {len(labels)}")
    return train_classifier_on_validation(images, labels, num_classes, recipe)[0]


def train_classifier_on_validation(images: Tensor, labels: Tensor, num_classes: int,
                                   recipe: ClassifierRecipe = ClassifierRecipe(),
                                   validation: tuple[Tensor, Tensor] | None = None) -> tuple[SmallCNN, int]:
    """(model, epoch): with ``validation`` (images, labels), the epoch whose model has the best validation AUC
    (never the test split: choosing there would inflate the figure and, for synthetic data, break the privacy
    claim); without, the last epoch."""
    torch.manual_seed(recipe.seed)
    model = SmallCNN(images.shape[1], num_classes)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(recipe.seed)
    best, best_state, best_epoch = -1.0, None, recipe.epochs
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for first in range(0, len(images), recipe.batch_size):
            rows = order[first:first + recipe.batch_size]
            if len(rows) < 2:
                continue  # BatchNorm needs two examples
            loss = nn.functional.cross_entropy(model(images[rows].float()), labels[rows].long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if validation is not None and (auc := evaluate(model, *validation)["auc"]) > best:
            best, best_epoch = auc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), best_epoch


@torch.no_grad()
def predict(model: SmallCNN, images: Tensor, batch_size: int = 512) -> Tensor:
    """(N, num_classes) class probabilities."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size].float()).softmax(1) for i in range(0, len(images), batch_size)])


def evaluate(model: SmallCNN, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy and AUC (binary: of the positive class; several classes: one-vs-rest macro average)."""
    probabilities = predict(model, images).numpy()
    truth = labels.numpy()
    accuracy = float((probabilities.argmax(1) == truth).mean())
    if probabilities.shape[1] == 2:
        auc = roc_auc_score(truth, probabilities[:, 1])
    else:
        auc = roc_auc_score(truth, probabilities, multi_class="ovr", labels=np.arange(probabilities.shape[1]))
    return {"accuracy": accuracy, "auc": float(auc), "test_images": int(len(truth))}
