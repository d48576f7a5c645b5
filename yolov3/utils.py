"""Small helpers shared by the command lines: atomic writes, run folders, seeding, device selection."""
from __future__ import annotations

import errno
import os
import random
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

import numpy as np
import torch

TMP_SUFFIX = ".tmp"  # atomic_write's temporaries: .<name>.<random>.tmp beside the target


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp creates 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class OutputError(OSError):
    """An output could not be written (disk full, read-only or missing folder); the message names the path."""

    def __init__(self, message: str, errno_value: Optional[int] = None) -> None:
        super().__init__(message)  # one argument: str(error) is the message alone, no "[Errno 28]" prefix
        self.errno = errno_value


def _free_bytes(folder: Union[str, Path]) -> Optional[int]:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return None
    return stats.f_bavail * stats.f_frsize


def describe_write_failure(path: Union[str, Path], exc: BaseException, disk_full: bool = False) -> str:
    """One line for a failed write: the path, the system's reason and the likely fix."""
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    errno_value = getattr(exc, "errno", None)
    hint = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
            errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
            errno.EDQUOT: "the disk quota is exceeded"}.get(errno_value)
    if hint is None and disk_full:
        hint = "the disk is full"
    elif hint is None and "enforce fail" in str(exc):  # torch.save reports a failed write only as a C++ enforce
        hint = "the write failed (is the disk full?)"
    return f"cannot write {path}: {hint or reason}" + (f" ({reason})" if hint and reason != hint else "")


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash leaves either the old file or the new one, never half of one (checkpoints, results, weights).
    A write that fails for lack of space or permission raises :class:`OutputError` naming ``path``; the old file
    is untouched and the temporary file removed.
    """
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise OutputError(describe_write_failure(path.parent, exc), exc.errno) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        # torch.save's failed writes carry no errno: a full disk is told by the free space left (before the
        # temporary file is removed and frees it again)
        free = _free_bytes(path.parent) if isinstance(exc, RuntimeError) else None
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and _is_failed_write(exc)):
            disk_full = free is not None and free < 1 << 20
            raise OutputError(describe_write_failure(path, exc, disk_full), getattr(exc, "errno", None)) from None
        raise


def _is_failed_write(exc: RuntimeError) -> bool:
    """torch.save turns a failed write into RuntimeError('[enforce fail at inline_container.cc] ... file write')."""
    text = str(exc)
    return "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text


def ensure_dir(path: Union[str, Path]) -> Path:
    """``mkdir -p`` that fails with an :class:`OutputError` naming the folder (read-only, no permission...)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_write_failure(path, exc), exc.errno) from None
    return path


def remove_stale_temporaries(folder: Union[str, Path]) -> list:
    """Delete the temporary files that a killed atomic write left in ``folder``; returns their names.

    Only files of the pattern :func:`atomic_write` makes (``.<name>.<random>.tmp``) are touched. Call it when a
    process takes over a folder that no other process writes to (a run folder at start or resume).
    """
    removed = []
    for candidate in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if candidate.is_file():
            try:
                candidate.unlink()
                removed.append(candidate.name)
            except OSError:  # not ours to delete (permissions): leave it
                pass
    return removed


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


def user_errors() -> tuple:
    """Exception classes that describe a user's mistake (bad file, key or value): printed as one line, no traceback.

    Collected from the modules that define them, so a command line can catch them all in one place.
    """
    import importlib

    classes = [FileNotFoundError, OutputError]
    for module_name, class_names in (("yolov3.config", ("ConfigError",)), ("yolov3.cfgparse", ("CfgError",)),
                                     ("yolov3.weights", ("WeightsError",)), ("yolov3.data", ("DataError",)),
                                     ("yolov3.checkpoint", ("RunFolderError",))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        classes += [getattr(module, name) for name in class_names if hasattr(module, name)]
    return tuple(classes)


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
