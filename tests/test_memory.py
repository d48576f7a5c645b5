"""yolov3/memory.py: freed memory stays in the process (no page faults when a step allocates the same again), the
environment variable that leaves malloc alone, and the scripts that turn it on in their own process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLIBC = sys.platform.startswith("linux") and "CS_GNU_LIBC_VERSION" in getattr(os, "confstr_names", {}) \
    and os.confstr("CS_GNU_LIBC_VERSION") is not None
glibc_only = pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")

# Allocate and free a 64 MB block (above glibc's largest mmap threshold) four times, touching every page, and print
# the minor page faults of the last three rounds: with mmap on, each round maps fresh zero pages (~16,000 faults of
# 4 KiB); with freed memory kept, the later rounds reuse the first round's pages.
FAULTS = r"""
import ctypes, resource, sys
sys.path.insert(0, sys.argv[1])
from yolov3 import memory
print(memory.keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def run_faults(env_value):
    env = {k: v for k, v in os.environ.items() if k != "YOLOV3_MALLOC"}
    if env_value is not None:
        env["YOLOV3_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", FAULTS, str(ROOT)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    state, faults = run_faults(None)
    assert state == "kept"
    assert faults < 500  # three rounds of 16,384 pages each: none mapped again


@glibc_only
@pytest.mark.parametrize("value", ["default", "OFF", "0"])
def test_the_environment_variable_leaves_malloc_as_it_is(value):
    state, faults = run_faults(value)
    assert state == "default"
    assert faults > 3 * 16_000 * 0.9  # every round maps its 64 MB again


PROBE = r"""
import runpy, sys
sys.path.insert(0, sys.argv[1])
import yolov3.memory
yolov3.memory.keep_freed_memory = lambda: print("KEEP-FREED-MEMORY")
sys.argv = [sys.argv[2], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", ["train.py", "val.py", "detect.py"])
def test_each_command_keeps_freed_memory_in_its_own_process_only(script):
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), str(ROOT / script)], cwd=ROOT, capture_output=True,
                         text=True).stdout
    assert out.startswith("KEEP-FREED-MEMORY\n") and "usage:" in out  # before anything else runs
    # imported (as the tests and the API do), the script leaves the importing process alone
    imported = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import yolov3.memory;"
                               "yolov3.memory.keep_freed_memory = lambda: print('KEEP-FREED-MEMORY'); "
                               f"import {script[:-3]}", str(ROOT)], cwd=ROOT, capture_output=True, text=True).stdout
    assert "KEEP-FREED-MEMORY" not in imported


@pytest.mark.parametrize("state", ["kept", "default"])
def test_the_run_records_what_malloc_does(monkeypatch, state):
    import torch

    from yolov3 import memory
    from yolov3.precision import Precision, environment_record

    monkeypatch.setattr(memory, "state", state)  # read when the run starts, not when the module was imported
    assert environment_record(torch.device("cpu"), Precision("off", None, False, "asked for"))["malloc"] == state
