"""Atomic writes and output folders, on the standard library alone (configs, results, checkpoints, weights).

Every file a run leaves for a user is written through :func:`atomic_write`: a temporary file beside the target,
fsync, rename. A crash leaves the old file or the new one, never half of one; a failed write is an
:class:`OutputError` naming the path and the likely reason (disk full, read-only file system, permissions).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

TMP_SUFFIX = ".tmp"  # atomic_write's temporaries: .<name>.<random>.tmp beside the target
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what a dataset folder's images may be


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
