"""Small helpers shared by the command lines: atomic writes, run folders, seeding, device selection."""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

import numpy as np
import torch


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp creates 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash leaves either the old file or the new one, never half of one (checkpoints, results, weights).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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
    from yolov3.config import ConfigError

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
    """Every RNG a training step touches, so a resumed run continues the same random sequence."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a run may resume on a machine with fewer GPUs (or move from CPU to GPU): restore what exists here
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def user_errors() -> tuple:
    """Exception classes that describe a user's mistake (bad file, key or value): printed as one line, no traceback.

    Collected from the modules that define them, so a command line can catch them all in one place.
    """
    import importlib

    classes = [FileNotFoundError]
    for module_name, class_names in (("yolov3.config", ("ConfigError",)), ("yolov3.cfgparse", ("CfgError",)),
                                     ("yolov3.weights", ("WeightsError",)), ("yolov3.data", ("DataError",))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        classes += [getattr(module, name) for name in class_names if hasattr(module, name)]
    return tuple(classes)
