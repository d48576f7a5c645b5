"""Atomic writes, run-folder naming, RNG state round trip."""
import random

import numpy as np
import pytest
import torch

from yolov3.utils import (atomic_torch_save, atomic_write_text, increment_path, restore_rng_state, save_rng_state,
                          select_device)


def test_increment_path(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.pt"
    atomic_write_text(target, "old")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"x": Unpicklable()}, target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary left behind


def test_rng_round_trip():
    state = save_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_select_device_errors():
    from yolov3.config import ConfigError

    assert select_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="--device 'tpu': expected"):
        select_device("tpu")
    with pytest.raises(ConfigError, match="use torchrun"):
        select_device("0,1")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            select_device("0")
