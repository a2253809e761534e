"""The site's prepared-data cache: same tensors as a fresh load, rebuilt when a file or the config changes,
and a corrupt cache file is ignored rather than trusted."""

from __future__ import annotations

import os
import stat

import numpy as np
import torch
from PIL import Image

from meddiff.common.config import DataConfig
from meddiff.common.data import prepared_cache
from meddiff.common.data.prepared_cache import load_training_set_cached
from meddiff.common.data.training_set import load_training_set


def _png_folder(root, n=4):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "images" / f"case{i}.png")
    return root


def _same(a, b):
    return (torch.equal(a.tensors.images, b.tensors.images) and torch.equal(a.tensors.labels, b.tensors.labels)
            and torch.equal(a.tensors.available, b.tensors.available) and a.resolution == b.resolution)


def test_cache_returns_the_fresh_load_and_is_private(tmp_path):
    data = _png_folder(tmp_path / "archive")
    fresh = load_training_set(str(data), DataConfig(), 32)
    first = load_training_set_cached(str(data), DataConfig(), 32, tmp_path / "cache")
    second = load_training_set_cached(str(data), DataConfig(), 32, tmp_path / "cache")
    assert _same(fresh, first) and _same(fresh, second)
    cache_file = tmp_path / "cache" / "prepared-32px.pt"
    assert stat.S_IMODE(os.stat(cache_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700


def test_changed_file_or_config_rebuilds_and_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    data = _png_folder(tmp_path / "archive")
    cache = tmp_path / "cache"
    before = load_training_set_cached(str(data), DataConfig(), 32, cache)
    key = prepared_cache.cache_key(str(data), DataConfig(), 32)
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(data / "images" / "case0.png")
    assert prepared_cache.cache_key(str(data), DataConfig(), 32) != key
    assert prepared_cache.cache_key(str(data), DataConfig(lower_percentile=1.0), 32) != \
        prepared_cache.cache_key(str(data), DataConfig(), 32)
    after = load_training_set_cached(str(data), DataConfig(), 32, cache)
    assert not _same(before, after) and _same(after, load_training_set(str(data), DataConfig(), 32))

    (cache / "prepared-32px.pt").write_bytes(b"not a checkpoint")
    reloads = []
    real = prepared_cache.load_training_set
    monkeypatch.setattr(prepared_cache, "load_training_set", lambda *a, **k: reloads.append(1) or real(*a, **k))
    rebuilt = load_training_set_cached(str(data), DataConfig(), 32, cache)
    assert reloads == [1] and _same(rebuilt, after)
