"""Checkpoints: atomic, loadable without unpickling arbitrary objects, and clear about broken files."""

from __future__ import annotations


import pytest
import torch

from meddiff.common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class Payload:
    """An arbitrary object: unpickling it would run code of the sender's choosing."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7},
                           {"schema": {"channels": ["t1"]}, "note": "ok"})
    state, meta = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.arange(6.0).reshape(2, 3)) and state["step"] == 7
    assert meta == {"schema": {"channels": ["t1"]}, "note": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_a_file_with_an_arbitrary_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "meddiff-checkpoint", "version": 1, "meta_json": "{}", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_truncated_or_foreign_files_name_the_file(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:  # a valid torch file that is not ours
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="model.pt"):
        load_checkpoint(path)


def test_truncating_a_real_checkpoint_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", {"model": {"w": torch.randn(1000)}}, {})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="m.pt"):
        load_checkpoint(path)


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
