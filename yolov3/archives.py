"""Archives from strangers: a bounded download and an extractor that refuses what could escape its folder.

:func:`extract_archive` takes a zip or a tar (plain, gz, bz2, xz) and refuses, by name, any entry that would land
outside the target folder (absolute paths, drive letters, ``..``), any symbolic or hard link, any device or FIFO
and any name listed twice; it counts the bytes it actually inflates, whatever the headers claim, and stops at
``max_bytes`` (a zip bomb is an error, not a full disk) and at ``max_entries``. :func:`download` writes to
``<dest>.part`` and renames only a complete file, bounded by the same ``max_bytes``.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO, Optional, Union

from tqdm import tqdm

DEFAULT_MAX_BYTES = 4 * 1024 ** 3  # bound on an archive and on its extracted bytes when the caller names none
MAX_ENTRIES = 200_000  # bound on the entries of one archive
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive or download was refused or failed; the message names the archive, entry or URL."""


def is_unsafe_relative(name: str) -> bool:
    """Whether a path from an archive or a YAML could point outside its folder (absolute, drive letter, '..')."""
    normalized = name.replace("\\", "/")
    return (normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized) is not None
            or ".." in normalized.split("/"))


def _member_target(dest: Path, name: str, archive: Path) -> Optional[Path]:
    """Where entry ``name`` goes under ``dest``; None for the archive's root itself; ArchiveError when it would land
    outside ``dest``."""
    if is_unsafe_relative(name):
        raise ArchiveError(f"{archive}: entry {name!r} would land outside the target folder (absolute path or '..'); "
                           "refused, nothing extracted is kept")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return None
    target = dest.joinpath(*parts)
    if os.path.commonpath([os.path.realpath(target), os.path.realpath(dest)]) != os.path.realpath(dest):
        raise ArchiveError(f"{archive}: entry {name!r} resolves outside the target folder; refused")
    return target


class _Budget:
    """Counts entries and bytes across one archive and stops at the bounds."""

    def __init__(self, archive: Path, max_bytes: int, max_entries: int) -> None:
        self.archive, self.max_bytes, self.max_entries = archive, max_bytes, max_entries
        self.bytes = self.entries = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise ArchiveError(f"{self.archive}: more than {self.max_entries:,} entries; refused")

    def add(self, count: int, name: str) -> None:
        self.bytes += count
        if self.bytes > self.max_bytes:
            raise ArchiveError(f"{self.archive}: extracting {name!r} passes the bound of {self.max_bytes:,} bytes "
                               "(max_bytes); refused")


def _copy_stream(source: BinaryIO, target: Path, budget: _Budget, name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as out:  # "x": an entry listed twice is not silently written over
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            budget.add(len(chunk), name)  # the bytes actually inflated, whatever the header claims
            out.write(chunk)


def extract_archive(archive: Union[str, Path], dest: Union[str, Path], max_bytes: int = DEFAULT_MAX_BYTES,
                    max_entries: int = MAX_ENTRIES) -> int:
    """Extract a zip or tar archive into ``dest`` (created; must not hold the same names) and return the number of
    files written. Raises :class:`ArchiveError` naming the entry for anything unsafe (see the module docstring)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(archive, max_bytes, max_entries)
    files = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > max_entries:
                    raise ArchiveError(f"{archive}: {len(infos):,} entries, more than {max_entries:,}; refused")
                declared = sum(info.file_size for info in infos)
                if declared > max_bytes:
                    raise ArchiveError(f"{archive}: declares {declared:,} bytes extracted, more than {max_bytes:,} "
                                       "(max_bytes); refused")
                for info in infos:  # the entry count is checked above, before anything is written
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise ArchiveError(f"{archive}: entry {info.filename!r} is a symbolic link; refused")
                    target = _member_target(dest, info.filename, archive)
                    if target is None:
                        continue
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    with zf.open(info) as source:
                        _copy_stream(source, target, budget, info.filename)
                    files += 1
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:  # streamed: a compressed tar is never listed twice
                    budget.entry()
                    if member.issym() or member.islnk():
                        kind = "symbolic" if member.issym() else "hard"
                        raise ArchiveError(f"{archive}: entry {member.name!r} is a {kind} link to "
                                           f"{member.linkname!r}; refused")
                    target = _member_target(dest, member.name, archive)
                    if member.isdir():
                        if target is not None:
                            target.mkdir(parents=True, exist_ok=True)
                        continue
                    if not member.isreg():
                        raise ArchiveError(f"{archive}: entry {member.name!r} is not a file or folder (device or FIFO); "
                                           "refused")
                    if target is None:
                        raise ArchiveError(f"{archive}: a file entry without a name; refused")
                    source = tf.extractfile(member)
                    with source:
                        _copy_stream(source, target, budget, member.name)
                    files += 1
        else:
            raise ArchiveError(f"{archive}: not a zip or tar archive")
    except FileExistsError as exc:
        raise ArchiveError(f"{archive}: entry {exc.filename} appears twice; refused") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:  # ArchiveError is none of these
        raise ArchiveError(f"{archive}: damaged or truncated archive ({exc})") from None
    return files


def download(url: str, dest: Union[str, Path], max_bytes: int, timeout: float = 60.0, hint: str = "") -> Path:
    """Fetch ``url`` into ``dest`` (through ``dest.part``, renamed only when complete) with a progress bar.
    ``hint`` ends the message of a failed download (what to do offline)."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > max_bytes:
                raise ArchiveError(f"{url}: {expected:,} bytes, more than the bound of {max_bytes:,} (max_bytes)")
            received = 0
            with open(part, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True,
                                                desc=f"downloading {url.rsplit('/', 1)[-1]}") as bar:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes:
                        raise ArchiveError(f"{url}: more than the bound of {max_bytes:,} bytes (max_bytes); stopped")
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ArchiveError(f"could not download {url}: {reason}" + (f"; {hint}" if hint else "")) from None
    if expected is not None and received != expected:
        raise ArchiveError(f"{url}: the download stopped at {received:,} of {expected:,} bytes; try again")
    os.replace(part, dest)
    return dest


def sha256_file(path: Union[str, Path]) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
