"""Darknet ``.weights`` files: read and write, whole or cut off after the first N layers.

Layout (little-endian): int32 ``major``, ``minor``, ``revision``; then ``seen`` (images seen in training) as int64 when
``major*10 + minor >= 2`` (and both < 1000, as Darknet checks), else int32; then float32 values, for every
``[convolutional]`` layer in cfg order:
  * with batch_normalize: BN beta (bias), gamma (scale), running mean, running variance, conv weights;
  * without: conv bias, conv weights.
Other layers hold no values. The file has no per-layer markers, so the only consistency check possible is the total
count: a file for another cfg or class count is caught by its length, and the error says which length was expected.

``cutoff=N`` (Darknet's ``partial``) means the first N layers, indices 0..N-1: ``darknet53.conv.74`` holds layers
0..73 of ``darknet53.cfg``, which are the first 74 layers of ``yolov3.cfg`` too (all 52 backbone convolutions).

The functions take a :class:`yolov3.model.Darknet` but use only its layer descriptions (``model.cfg.layers``) and
its tensors, never the model's classes: model.py builds on this module, not the other way round.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from yolov3.files import atomic_write_bytes

__all__ = ["WeightsError", "DEFAULT_HEADER", "KNOWN_FLOAT_COUNTS", "read_darknet_header", "count_darknet_floats",
           "load_darknet_weights", "save_darknet_weights", "darknet_weight_tensors", "read_checkpoint",
           "first_non_finite"]

DEFAULT_HEADER = (0, 2, 0, 0)  # major, minor, revision, seen: what Darknet writes today (seen as int64)
# float counts of the official files, to name a file that was meant for another cfg
KNOWN_FLOAT_COUNTS: Dict[int, str] = {
    62_001_757: "yolov3.weights (yolov3.cfg, 80 classes)",
    8_858_734: "yolov3-tiny.weights (yolov3-tiny.cfg, 80 classes)",
    63_052_381: "yolov3-spp.weights (yolov3-spp.cfg, 80 classes)",
    40_620_640: "darknet53.conv.74 (backbone: use cutoff=74)",
}
_CUTOFF_IN_NAME = re.compile(r"\.conv\.(\d+)$")  # Darknet's naming for partial files, e.g. darknet53.conv.74


class WeightsError(ValueError):
    """A ``.weights`` file that does not fit the model (size, header) or a request that cannot be met; names the file."""


def _seen_is_int64(major: int, minor: int) -> bool:
    return (major * 10 + minor) >= 2 and major < 1000 and minor < 1000


def header_size(major: int, minor: int) -> int:
    """Bytes in the header: 3 int32 plus ``seen`` (8 or 4 bytes)."""
    return 12 + (8 if _seen_is_int64(major, minor) else 4)


def read_darknet_header(path: Union[str, Path]) -> Tuple[Tuple[int, int, int, int], int]:
    """((major, minor, revision, seen), header size in bytes) of a ``.weights`` file."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(20)
    if len(head) < 12:
        raise WeightsError(f"{path}: {len(head)} bytes is too short for a Darknet weights header (12-20 bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(head[:12], dtype="<i4"))
    size = header_size(major, minor)
    if len(head) < size:
        raise WeightsError(f"{path}: truncated header: version {major}.{minor} needs {size} header bytes, "
                         f"the file has {len(head)}")
    seen = int(np.frombuffer(head[12:size], dtype="<i8" if size == 20 else "<i4")[0])
    return (major, minor, revision, seen), size


def looks_like_darknet_weights(path: Union[str, Path]) -> bool:
    """True when the file starts with a plausible Darknet header (small version numbers) and the rest is whole
    float32 values: a text file or a renamed PyTorch checkpoint is then told apart from weights that need a cfg."""
    try:
        (major, minor, _revision, _seen), size = read_darknet_header(path)
    except (WeightsError, OSError):
        return False
    body = Path(path).stat().st_size - size
    return 0 <= major < 1000 and 0 <= minor < 1000 and body > 0 and body % 4 == 0


def _check_not_fused(model: nn.Module) -> None:
    if model.is_fused:
        raise WeightsError("the model has been fused (BatchNorm folded into convs); Darknet weights need the unfused "
                         "model: build a fresh Darknet(cfg)")


def _resolve_cutoff(model: nn.Module, cutoff: Optional[int]) -> int:
    num_layers = len(model.module_list)
    if cutoff is None:
        return num_layers
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 1 <= cutoff <= num_layers:
        raise WeightsError(f"cutoff must be a number of layers between 1 and {num_layers} for {model.cfg_name}, "
                         f"got {cutoff!r}")
    return cutoff


def darknet_weight_tensors(model: nn.Module, cutoff: Optional[int] = None) -> List[Tuple[int, List[Tensor]]]:
    """[(layer index, tensors in file order), ...] for the conv layers among the first ``cutoff`` layers.

    The layers are told apart by their cfg blocks (``model.cfg.layers``, one per module of ``model.module_list``):
    a ``[convolutional]`` module has ``conv`` and ``bn`` (None without batch_normalize).
    """
    cutoff = _resolve_cutoff(model, cutoff)
    layers: List[Tuple[int, List[Tensor]]] = []
    for index, (module, block) in enumerate(zip(model.module_list[:cutoff], model.cfg.layers)):
        if block.type != "convolutional":
            continue
        conv, bn = module.conv, module.bn
        if bn is not None:
            tensors = [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
        else:
            tensors = [conv.bias, conv.weight]
        layers.append((index, tensors))
    return layers


def count_darknet_floats(model: nn.Module, cutoff: Optional[int] = None) -> int:
    """How many float32 values follow the header in a ``.weights`` file for this model (first ``cutoff`` layers)."""
    return sum(t.numel() for _, tensors in darknet_weight_tensors(model, cutoff) for t in tensors)


def _count_hints(model: nn.Module, found: int) -> str:
    """Helpful guesses for a float count that does not match: a known official file, or a layer prefix of this cfg."""
    hints = []
    if found in KNOWN_FLOAT_COUNTS:
        hints.append(f"that is the size of the official {KNOWN_FLOAT_COUNTS[found]}")
    running = 0
    for index, tensors in darknet_weight_tensors(model):
        running += sum(t.numel() for t in tensors)
        if running == found:
            hints.append(f"it holds exactly the first {index + 1} layers of {model.cfg_name}: pass cutoff={index + 1}")
            break
        if running > found:
            break
    return ("; " + "; ".join(hints)) if hints else ""


def load_darknet_weights(model: nn.Module, path: Union[str, Path], cutoff: Optional[int] = None
                         ) -> Tuple[int, int, int, int]:
    """Load a Darknet ``.weights`` file into ``model`` in place; returns the header (major, minor, revision, seen).

    ``cutoff=N`` loads layers 0..N-1 only and then accepts a longer file (e.g. a full file used as a backbone).
    Without ``cutoff``, a name ending in ``.conv.N`` (Darknet's partial files) means ``cutoff=N``; otherwise the
    file must hold exactly the values of the whole cfg. The header is kept on ``model.darknet_header`` so that a
    later :func:`save_darknet_weights` writes it back unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Darknet weights not found: {path}")
    _check_not_fused(model)
    if cutoff is None:
        match = _CUTOFF_IN_NAME.search(path.name)
        if match:
            cutoff = int(match.group(1))
    exact = cutoff is None
    cutoff = _resolve_cutoff(model, cutoff)
    header, header_bytes = read_darknet_header(path)
    payload_bytes = path.stat().st_size - header_bytes
    layers = darknet_weight_tensors(model, cutoff)
    expected = sum(t.numel() for _, tensors in layers for t in tensors)
    scope = f"all {len(model.module_list)} layers" if exact else f"layers 0..{cutoff - 1} (cutoff={cutoff})"
    if payload_bytes % 4:
        raise WeightsError(f"{path}: {payload_bytes} bytes after the {header_bytes}-byte header is not a whole number of "
                         f"float32 values; the file is damaged (expected {expected:,} floats for {model.cfg_name})")
    found = payload_bytes // 4
    if found < expected or (exact and found != expected):
        problem = "truncated or meant for another cfg" if found < expected else "too long, or meant for another cfg"
        raise WeightsError(f"{path}: expected {expected:,} floats after the {header_bytes}-byte header for "
                         f"{model.cfg_name} ({scope}, {model.num_classes} classes), found {found:,}: file "
                         f"{problem}{_count_hints(model, found)}")
    values = np.fromfile(path, dtype="<f4", count=expected, offset=header_bytes)
    offset = 0
    with torch.no_grad():
        for _, tensors in layers:
            for tensor in tensors:
                count = tensor.numel()
                chunk = torch.from_numpy(values[offset:offset + count]).view_as(tensor)
                tensor.copy_(chunk)
                offset += count
    model.darknet_header = header
    return header


def save_darknet_weights(model: nn.Module, path: Union[str, Path], cutoff: Optional[int] = None,
                         header: Optional[Tuple[int, int, int, int]] = None) -> None:
    """Write ``model`` (its first ``cutoff`` layers) as a Darknet ``.weights`` file, atomically.

    ``header`` (major, minor, revision, seen) defaults to ``model.darknet_header``: the header of the file it was
    loaded from, or (0, 2, 0, 0) for a fresh model — so load -> save reproduces a file byte for byte.
    """
    _check_not_fused(model)
    path = Path(path)
    major, minor, revision, seen = header if header is not None else model.darknet_header
    parts = [np.array([major, minor, revision], dtype="<i4").tobytes(),
             np.array([seen], dtype="<i8" if _seen_is_int64(major, minor) else "<i4").tobytes()]
    for _, tensors in darknet_weight_tensors(model, cutoff):
        parts += [tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes()
                  for tensor in tensors]
    atomic_write_bytes(path, b"".join(parts))  # all or nothing: a crash never leaves half a weights file


def read_checkpoint(path: Union[str, Path]) -> Any:
    """``torch.load`` a ``.pt`` on the CPU with ``weights_only=True``: tensors and plain data, never code.

    A file that needs more (a pickled class, function or NumPy object: what a malicious file uses to run code) is
    refused with a WeightsError naming the file and what it asked for; nothing in it is executed. A corrupt,
    truncated or foreign file is a WeightsError naming it too.
    """
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = _UNSAFE_GLOBAL.search(str(exc))
        if wanted:
            raise WeightsError(f"{path}: refused: it asks to load the Python object '{wanted.group(1)}', and loading "
                               "Python objects can run code; only tensors and plain data are read (train.py "
                               "checkpoints and state dicts)") from None
        if "Weights only load failed" in str(exc):  # garbage, or a pickle that is not a torch.save of plain data
            raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint of tensors and plain data (nothing "
                               "in it was run)") from None
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint (UnpicklingError: "
                           f"{_first_line(exc)})") from None
    except Exception as exc:  # zip and torch errors all mean the same thing to a user
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: "
                           f"{_first_line(exc)})") from None


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"


def first_non_finite(tensors: Dict[str, Tensor]) -> Optional[str]:
    """Name of the first floating-point tensor holding a NaN or an infinity, or None when all are finite.

    One reduction per tensor (a sum is NaN or infinite when any element is, or when the values overflow, which is
    as unusable): ~20 ms for yolov3's 62 M values on one core, cheap next to writing them.
    """
    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor.sum()):
            return name
    return None
