"""Small helpers shared by the command lines: run folders, seeding, device selection, RNG state, Ctrl-C.

The atomic writes live in :mod:`yolov3.files` (standard library only, so config can use them); they are
re-exported here for the modules and command lines that write results.
"""
from __future__ import annotations

import random
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from yolov3.config import ConfigError
from yolov3.files import (TMP_SUFFIX, OutputError, atomic_write, atomic_write_bytes, atomic_write_text,
                          describe_write_failure, ensure_dir, remove_stale_temporaries)

__all__ = ["TMP_SUFFIX", "OutputError", "atomic_write", "atomic_write_bytes", "atomic_write_text",  # yolov3.files
           "describe_write_failure", "ensure_dir", "remove_stale_temporaries",
           "atomic_torch_save", "increment_path", "seed_everything", "select_device", "save_rng_state",
           "restore_rng_state", "StopRequest"]


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def increment_path(path: Union[str, Path], exist_ok: bool = False) -> Path:
    """runs/train/exp -> runs/train/exp2, exp3 ... unless ``exist_ok`` (then the path itself is reused)."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    stem = re.sub(r"\d+$", "", path.name) or path.name
    n = 2
    while (path.parent / f"{stem}{n}").exists():
        n += 1
    return path.parent / f"{stem}{n}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def select_device(device: str = "") -> torch.device:
    """'' picks CUDA when available else CPU; 'cpu', '0', 'cuda:1' are taken literally.

    A device that does not exist here is a ConfigError naming the --device value (one line, no traceback).
    """
    text = str(device).strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    index_text = text.split(":", 1)[1] if text.startswith("cuda:") else ("0" if text == "cuda" else text)
    if not index_text.isdigit():
        raise ConfigError(f"--device {device!r}: expected '', 'cpu', a GPU index such as 0, or 'cuda:N' "
                          f"(for several GPUs use torchrun, one process per GPU)")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if int(index_text) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{index_text}")


def save_rng_state() -> dict:
    """Every RNG a training step touches, so a resumed run continues the same random sequence.

    Plain Python data and tensors only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``
    (NumPy's state is an ndarray, which that loader refuses: its key is stored as an int64 tensor).
    """
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))  # a loaded checkpoint may turn tuples into lists
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a run may resume on a machine with fewer GPUs (or move from CPU to GPU): restore what exists here
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


class StopRequest:
    """Ctrl-C (SIGINT) as a request to stop at the next safe point instead of an exception at any bytecode.

    An exception raised inside ``backward()`` or the optimiser step would leave gradients or weights half-updated,
    and a checkpoint saved then does not resume exactly. Inside ``with StopRequest() as stop:`` the first SIGINT only
    sets ``stop.requested`` (the loop checks it between batches); a second one raises KeyboardInterrupt at once, for
    a user who cannot wait. The previous handler is restored on exit (or by ``restore()`` after ``install()``).
    Outside the main thread it does nothing (Python delivers signals to the main thread only).
    """

    def __init__(self, message: str = "stopping at the next safe point") -> None:
        self.requested = False
        self.message = message
        self._previous = None

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nCtrl-C: {self.message} (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.restore()
