"""Numeric precision of training: what this machine does natively, and the autocast mode a run uses.

``train.amp`` is one of:

* ``auto``: bfloat16 autocast where the hardware computes it natively — a CPU with AVX512_BF16 or AMX-BF16 (read
  from the CPU's flags at run time), or a CUDA GPU that supports bf16 — and float32 everywhere else. On a CPU without
  native bf16, oneDNN emulates it by converting, which is slower than float32, so ``auto`` never picks it there.
* ``off``: float32.
* ``bf16``: bfloat16 autocast, native or not (to reproduce a run made on a bf16 machine).
* ``fp16``: float16 autocast with a gradient scaler; CUDA only (CPU float16 convolutions are emulated and slow).

Under autocast only the network runs in reduced precision: the loss terms, the optimiser and the EMA stay float32.
Every run records the resolved precision and the CPU it ran on (``environment.json``), so runs made with different
precisions are never compared unknowingly.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from yolov3 import memory

AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # the CPU's name as the OS reports it (lscpu's "Model name")
    cores: int  # logical CPUs this process may use
    isa: str  # the widest vector ISA torch dispatches to here: DEFAULT, AVX2, AVX512, ...
    avx512: bool
    native_bf16: bool  # AVX512_BF16 or AMX-BF16: bf16 matrix products run at (at least) twice the fp32 rate
    amx: bool


def cpu_flags_and_model(cpuinfo_path: str = "/proc/cpuinfo") -> tuple:
    """(set of flags, model name) from /proc/cpuinfo; no flags on systems without it (macOS, Windows)."""
    flags, model = set(), platform.processor() or platform.machine()
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key == "model name" and value.strip():
                    model = value.strip()
                if flags and key == "" and model:  # the first processor's block is enough
                    break
    except OSError:
        pass
    return flags, model


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """The CPU this process runs on, read at run time (never assumed): flags from ``cpuinfo_path`` on Linux."""
    flags, model = cpu_flags_and_model(cpuinfo_path)
    isa = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(model=model, cores=cores, isa=isa, avx512="avx512f" in flags,
                   native_bf16=bool(flags & {"avx512_bf16", "amx_bf16"}), amx="amx_bf16" in flags)


def describe_cpu(info: Optional[CpuInfo] = None) -> str:
    """One line naming the CPU, e.g. 'Intel(R) Xeon(R) Processor, 2 cores, AVX512, native bf16 (AMX)'."""
    info = info or cpu_info()
    bf16 = f"native bf16{' (AMX)' if info.amx else ''}" if info.native_bf16 else "no native bf16"
    return f"{info.model}, {info.cores} cores, {info.isa}, {bf16}"


@dataclass(frozen=True)
class Precision:
    mode: str  # what was asked: auto, off, bf16, fp16
    dtype: Optional[torch.dtype]  # autocast dtype, or None for float32
    scaler: bool  # a GradScaler is needed (fp16)
    reason: str  # why, in a few words

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(mode: str, device: torch.device, info: Optional[CpuInfo] = None,
                      resumed: bool = False) -> Precision:
    """The autocast precision ``train.amp = mode`` means on ``device``; errors name the key and the device.
    ``resumed``: ``mode`` is the precision a resumed run started with, which its reason then says (not 'asked
    for', which would read as the user's choice)."""
    return _resolve(mode, device, info, "the precision the run started with" if resumed else "asked for")


def _resolve(mode: str, device: torch.device, info: Optional[CpuInfo], asked: str) -> Precision:
    if mode not in AMP_MODES:
        raise ValueError(f"'train.amp' must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "off":
        return Precision(mode, None, False, asked)
    if device.type == "cuda":
        if mode == "fp16":
            return Precision(mode, torch.float16, True, asked)
        if mode == "bf16" or torch.cuda.is_bf16_supported():
            return Precision(mode, torch.bfloat16, False, asked if mode == "bf16" else "the GPU has bf16")
        return Precision(mode, torch.float16, True, "the GPU has no bf16: fp16 with a gradient scaler")
    if device.type != "cpu":
        return Precision(mode, None, False, f"no autocast on {device.type}")
    if mode == "fp16":
        raise ValueError("'train.amp' fp16 needs a CUDA device (on a CPU use bf16, or auto)")
    info = info or cpu_info()
    if mode == "bf16":
        if info.native_bf16:
            return Precision(mode, torch.bfloat16, False, asked)
        # a fixed-precision study resumed here runs, but a user should know why each epoch takes so long
        return Precision(mode, torch.bfloat16, False, f"{asked}; WARNING: this CPU has no native bf16, oneDNN "
                         "emulates it: forward and backward run several times slower than in fp32 (11x for "
                         "yolov3-tiny, 416 px, batch 16, on a 2-core AVX2 EPYC)")
    if info.native_bf16:
        return Precision(mode, torch.bfloat16, False, "the CPU has native bf16")
    return Precision(mode, None, False, "the CPU has no native bf16")


def environment_record(device: torch.device, precision: Precision) -> dict:
    """What a run records about where and how it ran (environment.json)."""
    info = cpu_info()
    record = {"cpu": asdict(info), "cpu_line": describe_cpu(info), "device": str(device),
              "precision": precision.name, "amp": precision.mode, "precision_reason": precision.reason,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "python": sys.version.split()[0],
              "platform": platform.platform(), "malloc": memory.state}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def bf16_inference_note(device: torch.device, info: Optional[CpuInfo] = None) -> str:
    """The line detect.py / val.py ``--bf16`` print: whether bf16 is native where the model runs."""
    if device.type != "cpu":
        return f"precision: bf16 autocast on {device}"
    info = info or cpu_info()
    if info.native_bf16:
        return f"precision: bf16 autocast (native on this CPU: {describe_cpu(info)})"
    return (f"warning: --bf16 on a CPU without native bf16 ({describe_cpu(info)}): oneDNN converts to and from float32, "
            "which is slower than float32 here")
