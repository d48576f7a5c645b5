"""Keep the memory a training step frees inside the process, instead of handing it back to the kernel each step.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB on 64-bit Linux) with a mapping of its
own and unmaps it on free. A training step's largest tensors are above it (yolov3-tiny's first feature map at 320 px,
batch 16, is 52 MB in bf16, its max-pool indices 52 MB more), so every step maps them again and the kernel
zero-fills each 4 KiB page on first touch. Measured on a 2-core AMD EPYC (AVX-512, bf16; 2026-12-07,
benchmarks/bench_memory.py), one yolov3-tiny bf16 step at 320 px, batch 16: ~123,000 page faults and 0.21 s of
kernel CPU time, 597 ms; with mmap and trimming off, none and 453 ms (docs/speed.md). The price is that memory freed
at the peak stays with the process until it ends (its peak resident size grew 2-7 %: the same blocks are reused step
after step).

:func:`keep_freed_memory` turns glibc's mmap and heap trimming off for this process (and the data-loader workers it
forks); train.py calls it first. ``YOLOV3_MALLOC=default`` leaves malloc as it is. Elsewhere than glibc (macOS,
Windows, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "YOLOV3_MALLOC"
OFF_VALUES = ("default", "off", "0")
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_NEVER_TRIM = 2 ** 31 - 1  # the largest int: free() never gives the top of the heap back

state = "default"  # what this process's malloc does, for environment.json: 'default' or 'kept'


def keep_freed_memory() -> str:
    """Turn glibc's mmap and trimming off (see the module doc); returns and records the resulting ``state``:
    ``'kept'``, or ``'default'`` where ``$YOLOV3_MALLOC`` says so or malloc is not glibc's."""
    global state
    if os.environ.get(ENV, "").strip().lower() in OFF_VALUES or not sys.platform.startswith("linux"):
        return state
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return state
    # both or neither: mmap off alone would still trim the heap's top after a step, and refill it the next
    if mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1:
        state = "kept"
    return state
