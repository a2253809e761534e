"""Patient-level DP-SGD: a patient's slices in a step give one contribution clipped to C as a whole, the
accountant counts patients, one slice per patient gives the example-level epsilon, data without patient ids says
it falls back to examples, and the ledger never mixes units."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from opacus.accountants import RDPAccountant

from meddiff.client.round import train_round
from meddiff.client.site_data import SiteData, holdout_split
from meddiff.common.config import PrivacyConfig
from meddiff.common.data.training_set import load_training_set
from meddiff.common.diffusion.model import ConditionalDenoiser
from meddiff.common.messages import TrainInstruction
from meddiff.common.run_spec import RunSpec
from meddiff.common.specs import ModelSpec, RecipeSpec
from meddiff.privacy.dp_sgd import private_trainer
from meddiff.privacy.ledger import PrivacyLedger, UnitMismatch
from meddiff.privacy.units import gather_patients, privacy_units

SMALL = ModelSpec(channels=(16, 32), attention_levels=(False, False), num_head_channels=16, norm_num_groups=8)
CLIP = 0.01


@pytest.fixture(scope="module")
def phantom():
    return load_training_set("phantom", phantom_n=16).tensors


def _with_patients(data, slices: int):
    """The phantom's 16 images as patients of ``slices`` consecutive images each."""
    return replace(data, patients=torch.arange(len(data)) // slices)


def _trainer(data, noise=0.0, unit="patient", k=2, slices_per_patient=4, batch_size=4):
    privacy = PrivacyConfig(enabled=True, max_grad_norm=CLIP, noise_multiplicity=k, unit=unit,
                            slices_per_patient=slices_per_patient)
    return private_trainer(data.schema, SMALL, RecipeSpec(batch_size=batch_size, seed=3), privacy, data, noise,
                           device="cpu")


def _rows(trainer) -> torch.Tensor:
    return torch.cat([p.grad_sample.flatten(1) for p in trainer.model.parameters() if p.requires_grad], dim=1)


def _summed(trainer) -> torch.Tensor:
    return torch.cat([p.summed_grad.flatten() for p in trainer.model.parameters() if p.requires_grad])


def test_each_patients_slices_are_clipped_together_as_one_contribution(phantom):
    data = _with_patients(phantom, 4)
    trainer = _trainer(data)
    rows = torch.arange(8)  # patients 0 and 1, four slices each
    owners = torch.arange(8) // 4
    batch = data.subset(rows)
    trainer.generator.manual_seed(11)  # the same (t, noise) draws in both passes
    trainer.per_example_gradients(batch.images, batch.available, batch.labels)
    per_example = _rows(trainer)
    trainer.generator.manual_seed(11)
    trainer.per_example_gradients(batch.images, batch.available, batch.labels, owners, 2)
    per_patient = _rows(trainer)
    assert per_example.shape[0] == 8 and per_patient.shape[0] == 2  # Opacus sees one row per patient
    expected = torch.stack([per_example[owners == p].mean(0) for p in range(2)])
    assert torch.allclose(per_patient, expected, rtol=1e-4, atol=1e-7)
    norms = expected.norm(dim=1)
    assert (norms > CLIP).all()  # the bound binds
    trainer.optimizer.clip_and_accumulate()
    clipped = expected * (CLIP / norms).clamp(max=1.0)[:, None]
    assert torch.allclose(_summed(trainer), clipped.sum(0), rtol=1e-4, atol=1e-7)
    for patient in range(2):  # a patient alone, all four slices: what the patient adds has norm <= C
        trainer.optimizer.zero_grad(set_to_none=True)
        alone = data.subset(rows[owners == patient])
        trainer.per_example_gradients(alone.images, alone.available, alone.labels, torch.zeros(4, dtype=torch.long),
                                      1)
        trainer.optimizer.clip_and_accumulate()
        assert _summed(trainer).norm() <= CLIP * (1 + 1e-5)


def test_a_sampled_patient_gives_at_most_slices_per_patient_rows(phantom):
    data = _with_patients(phantom, 8)  # two patients of eight slices
    units = privacy_units(data, PrivacyConfig(enabled=True, slices_per_patient=3), batch_size=6)
    assert units.kind == "patient" and units.count == 2 and units.per_step == 2 and units.grouped
    rows, owners = gather_patients(units, torch.tensor([1, 0]), torch.Generator().manual_seed(0))
    assert len(rows) == 6 and owners.tolist() == [0, 0, 0, 1, 1, 1]
    assert (rows[:3] >= 8).all() and (rows[3:] < 8).all()  # patient 1's slices first, then patient 0's


def test_the_accountant_counts_patients(phantom):
    data = _with_patients(phantom, 4)  # 4 patients; batch 4 at 2 slices each: 2 patients per step, q = 1/2
    trainer = _trainer(data, noise=1.0, slices_per_patient=2)
    assert trainer.units.count == 4 and trainer.units.per_step == 2 and trainer.sample_rate == 0.5
    result = trainer.train(3)
    fresh = RDPAccountant()
    for _ in range(3):
        fresh.step(noise_multiplier=1.0, sample_rate=0.5)
    assert trainer.delta == pytest.approx(1 / 40)  # delta 1 / (10 patients)
    assert result.epsilon == pytest.approx(fresh.get_epsilon(1 / 40), rel=1e-9)
    assert result.units.kind == "patient" and result.steps == 3


def test_one_slice_per_patient_gives_the_example_level_epsilon(phantom):
    data = _with_patients(phantom, 1)
    patient, example = _trainer(data, noise=1.0), _trainer(data, noise=1.0, unit="example")
    assert patient.units.kind == "patient" and not patient.units.grouped and example.units.kind == "example"
    assert patient.sample_rate == example.sample_rate and patient.delta == example.delta
    assert patient.train(2).epsilon == pytest.approx(example.train(2).epsilon, rel=1e-12)


def test_data_without_patient_ids_is_protected_per_example_and_says_so(phantom):
    assert phantom.patients is None  # the phantom names no patients
    units = privacy_units(phantom, PrivacyConfig(enabled=True), batch_size=4)
    assert units.kind == "example" and "the data names no patients" in units.describe()


def test_a_private_round_reports_and_records_the_patient_unit(phantom, tmp_path):
    data = _with_patients(phantom, 4)
    spec = RunSpec(data.schema, data.spatial[-1], SMALL, RecipeSpec(batch_size=4, seed=0), "phantom")
    privacy = PrivacyConfig(enabled=True, target_epsilon=8.0, noise_multiplicity=1)
    site = SiteData("north", data, privacy=privacy, ledger_path=tmp_path / "ledger.sqlite")
    weights = ConditionalDenoiser(data.schema, SMALL).state_dict()
    outcome = train_round(spec, weights, site, TrainInstruction(server_round=1, rounds=2, local_steps=2))
    assert outcome.metrics["dp-patient-level"] == 1.0 and outcome.metrics["dp-units"] == 4
    outcome.released()
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    assert ledger.unit() == "patient" and [e["unit"] for e in ledger.entries()] == ["patient"]
    example_site = replace(site, privacy=replace(privacy, unit="example"))
    with pytest.raises(UnitMismatch, match="holds patient-level releases"):
        train_round(spec, weights, example_site, TrainInstruction(server_round=2, rounds=2, local_steps=2))
    assert len(ledger.entries()) == 1  # the refused round wrote nothing


def test_a_ledger_written_before_units_reads_as_example_level(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    ledger = PrivacyLedger(path)
    ledger.reserve("run", 1, 10, 0.1, 1.0, 1e-5, 100.0)
    with sqlite3.connect(path) as db:  # the ledger as the previous version wrote it: no unit column
        db.execute("ALTER TABLE releases DROP COLUMN unit")
    assert PrivacyLedger(path).unit() == "example"
    with pytest.raises(UnitMismatch):
        PrivacyLedger(path).reserve("run", 2, 10, 0.1, 1.0, 1e-5, 100.0, unit="patient")


def test_held_out_patients_are_whole(phantom):
    data = _with_patients(phantom, 4)
    train, held = holdout_split(data, 0.25, seed=1)
    assert len(held) == 4 and len(train) == 12
    assert not set(held.patients.tolist()) & set(train.patients.tolist())


def test_a_site_with_too_few_patients_keeps_the_slice_wise_held_out_split(phantom):
    one = _with_patients(phantom, 16)  # one patient: whole-patient hold-out would leave nothing to train on
    train, held = holdout_split(one, 0.1, seed=1)
    assert held is not None and len(held) == 2 and len(train) == 14
    two = _with_patients(phantom, 8)  # two patients: holding one out would take half the data
    assert len(holdout_split(two, 0.1, seed=1)[1]) == 2
