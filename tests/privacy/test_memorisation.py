"""The memorisation audit flags a synthetic set that contains copies of training images and passes a set of
independent images from the same distribution; the membership AUROC separates a memorising model's losses."""

from __future__ import annotations

import torch

from meddiff.common.data.training_set import load_training_set
from meddiff.privacy.memorisation import audit_near_copies, membership_auroc


def _phantom(seed: int):
    return load_training_set("phantom", phantom_n=48, seed=seed).tensors


def test_copies_of_training_images_are_flagged_and_independent_images_are_not():
    train, holdout, independent = _phantom(0), _phantom(1), _phantom(2)
    generator = torch.Generator().manual_seed(0)
    copies = train.images[:20] + 0.01 * torch.randn(train.images[:20].shape, generator=generator)
    synthetic = torch.cat([copies, independent.images[:40]])
    result = audit_near_copies(synthetic, train, holdout, alpha=0.01)
    assert result.flagged[:20].all()
    assert result.flagged[20:].mean() <= 0.05
    assert 0.3 <= result.fraction_flagged <= 0.4
    clean = audit_near_copies(independent.images, train, holdout, alpha=0.01)
    assert clean.fraction_flagged <= 0.05


def test_membership_auroc_is_high_when_member_losses_are_lower_and_half_when_not():
    generator = torch.Generator().manual_seed(0)
    members, holdout = torch.rand(200, generator=generator), torch.rand(200, generator=generator)
    assert abs(membership_auroc(members, holdout) - 0.5) < 0.08
    assert membership_auroc(members * 0.2, holdout) > 0.9
