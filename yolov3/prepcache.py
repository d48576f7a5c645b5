"""What the CPU fast path measured, kept on disk so that the next process on this machine starts fast.

:mod:`yolov3.fastconv` times a conv's candidate paths (plain, oneDNN, Winograd) at each input shape and keeps the
fastest. That choice depends on the machine, so the file records the machine it was made on: the CPU model, a
digest of its feature flags, the torch version and the oneDNN build. A file made elsewhere (another CPU, a torch
upgrade) is stale: its choices are dropped, measured again and the file replaced. Each choice's key names the conv
(channels, kernel, stride, padding, groups, activation), the input (shape, so the batch too; memory layout; dtype)
and the thread count.

The file is plain JSON, read with ``json.loads`` and checked field by field: it can hold nothing that runs. It is
written atomically (a temporary file renamed over it), so a killed process leaves the previous complete file. A file
that is not valid JSON (corrupt) or not this format (foreign: perhaps a user's own file at that path) is ignored
with a one-line note and never overwritten or deleted; the note says how to get past it.

Where: ``$YOLOV3_PREP_CACHE`` if set (a file path, or ``off`` to neither read nor write one), else
``$XDG_CACHE_HOME/yolov3-focal/prep-cache.json`` (``~/.cache/...`` without XDG_CACHE_HOME). detect.py and val.py
take ``--prep-cache off|clear`` for one run (``clear`` deletes only a file of this format).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from yolov3.precision import cpu_flags_and_model
from yolov3.files import atomic_write_text

FORMAT = "yolov3-focal prep-cache"
VERSION = 1
ENV = "YOLOV3_PREP_CACHE"
MODES = ("use", "off", "clear")  # detect.py / val.py --prep-cache
METHODS = ("plain", "onednn", "winograd2", "winograd4")  # the values a choice may take


def default_path() -> Optional[Path]:
    """The cache file this process uses, or None when ``$YOLOV3_PREP_CACHE`` is ``off``."""
    configured = os.environ.get(ENV, "").strip()
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "yolov3-focal" / "prep-cache.json"


def machine_key(cpuinfo_path: str = "/proc/cpuinfo") -> Dict[str, str]:
    """What a measured choice depends on besides the conv and its input: the CPU and the torch build."""
    flags, model = cpu_flags_and_model(cpuinfo_path)
    onednn = getattr(torch.backends.mkldnn, "version", None)
    return {"cpu": model, "cpu_flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
            "torch": torch.__version__, "onednn": str(onednn()) if callable(onednn) else "unknown"}


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


class PrepCache:
    """The choices of one cache file for this machine (see the module docstring).

    ``get(key)`` returns a stored method name or None; ``put(key, method)`` stores one and rewrites the file. A
    cache whose file was corrupt or foreign keeps working in memory but never writes (``writable`` is False).
    """

    def __init__(self, path: Optional[Path], machine: Optional[Dict[str, str]] = None) -> None:
        self.path = path
        self.machine = machine if machine is not None else machine_key()
        self.choices: Dict[str, str] = {}
        self.writable = path is not None
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        kind, data = read(path)
        if kind == "corrupt":
            self.writable = False
            note(f"{path}: preparation cache ignored and left as it is, not valid JSON ({data}); delete it to have "
                 f"it rewritten, or point {ENV} elsewhere")
            return
        if kind == "foreign":
            self.writable = False
            note(f"{path}: not a yolov3-focal preparation cache (no \"format\": \"{FORMAT}\"), ignored and left "
                 f"as it is; point {ENV} at another file or set it to 'off'")
            return
        stored = data.get("choices")
        if data.get("version") != VERSION or not isinstance(stored, dict):
            note(f"{path}: preparation cache of another version ({data.get('version')!r}), measuring again")
            return
        if data.get("machine") != self.machine:
            other = data.get("machine") if isinstance(data.get("machine"), dict) else {}
            note(f"{path}: preparation cache made on another machine or torch ({other.get('cpu', '?')}, torch "
                 f"{other.get('torch', '?')}), measuring again")
            return
        self.choices = {key: method for key, method in stored.items()
                        if isinstance(key, str) and method in METHODS}

    def get(self, key: str) -> Optional[str]:
        return self.choices.get(key)

    def put(self, key: str, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"prep cache: unknown method {method!r}")
        self.choices[key] = method
        if self.writable:
            self._write()

    def _write(self) -> None:
        text = json.dumps({"format": FORMAT, "version": VERSION, "machine": self.machine,
                           "choices": dict(sorted(self.choices.items()))}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, text + "\n")
        except OSError as exc:  # a read-only home: the process still runs, the next one measures again
            self.writable = False
            note(f"{self.path}: cannot write the preparation cache ({exc.strerror or exc}); continuing without it")


def read(path: Path) -> Tuple[str, Any]:
    """("ours", the parsed file), ("foreign", None) for JSON of another format, ("corrupt", the error's name) for a
    file that cannot be read as JSON: what both loading and clearing decide by."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return "corrupt", type(exc).__name__
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return "ours", data
    return "foreign", None


def clear(path: Optional[Path]) -> bool:
    """Delete the cache file at ``path`` if it is one of ours (never a corrupt or foreign file, which may be a user's
    own); True when something was deleted."""
    if path is None or not path.exists():
        return False
    if read(path)[0] != "ours":
        note(f"{path}: not a readable yolov3-focal preparation cache, not deleted (delete it yourself if it is one)")
        return False
    path.unlink()
    return True
