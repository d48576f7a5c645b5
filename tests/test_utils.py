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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path, umask):
    import os
    import stat

    # the temporary file behind an atomic write is created 0600; the result must be as shared as the user's umask
    # lets any new file be (a run folder others on the machine read, checkpoints a group shares)
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
        atomic_write_text(tmp_path / "atomic.txt", "x")
        atomic_torch_save({"x": 1}, tmp_path / "atomic.pt")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("atomic.txt", "atomic.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


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


def test_stop_request_turns_the_first_sigint_into_a_flag_and_the_second_into_an_interrupt(capsys):
    import os
    import signal

    from yolov3.utils import StopRequest

    before = signal.getsignal(signal.SIGINT)
    with StopRequest("saving") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested  # no exception: the code in progress goes on
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    assert "Ctrl-C: saving (Ctrl-C again to stop at once)" in capsys.readouterr().err


def test_remove_stale_temporaries_touches_only_atomic_write_leftovers(tmp_path):
    from yolov3.utils import remove_stale_temporaries

    for name in (".last.pt.k2j3h4.tmp", ".results.csv.abc.tmp", "notes.tmp", "last.pt", ".hidden"):
        (tmp_path / name).write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == [".last.pt.k2j3h4.tmp", ".results.csv.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "last.pt", "notes.tmp"]


def test_failed_writes_are_output_errors_naming_the_file(tmp_path, monkeypatch):
    import errno
    import os

    from yolov3.utils import OutputError, atomic_write_bytes

    target = tmp_path / "results.csv"
    atomic_write_bytes(target, b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(target, b"new")
    assert str(info.value) == f"cannot write {target}: the disk is full (No space left on device)"
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    (tmp_path / "file.txt").write_text("a file where a folder should be")
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'file.txt'}: "):
        atomic_write_bytes(tmp_path / "file.txt" / "below", b"x")


def test_increment_path_counts_on_from_a_numbered_name_and_device_indices_end_at_the_gpu_count(tmp_path, monkeypatch):
    from yolov3.config import ConfigError
    from yolov3.utils import select_device

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp2") == tmp_path / "exp3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="this machine has 1 GPU"):
        select_device("1")
    assert select_device("0") == torch.device("cuda:0")


def test_torchrun_with_device_cpu_uses_gloo_on_the_cpu_with_a_long_timeout(monkeypatch):
    import datetime

    from yolov3 import distributed

    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    set_device = []
    monkeypatch.setattr(torch.cuda, "set_device", set_device.append)
    groups = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: groups.append(kwargs))
    assert distributed.setup_distributed("cpu") == (1, 1, 2, torch.device("cpu"))
    assert groups == [{"backend": "gloo", "timeout": datetime.timedelta(hours=3)}] and set_device == []
