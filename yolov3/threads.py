"""How many threads inference uses when other processes share the CPU, and how its idle threads wait.

torch runs every op's parallel region on a fixed team of OpenMP threads, one per core by default, and an op ends
only when its slowest thread does. Between regions an idle libgomp thread spins (~300k iterations) before it sleeps.
On 2 cores beside a busy process, one of our two threads keeps losing its core to it, and its sibling spins through
the wait, taking CPU from the very threads it waits for. Measured with benchmarks/bench_load.py (yolov3-tiny at
416 px, 2026-12-01, docs/speed.md): ~25 ms per image idle; beside one busy core 430 ms with torch's defaults, and
the plain fused model (few large ops, no Winograd) just as slow (496 ms) — so spinning, not the Winograd path's many
small ops, is the cause. Two remedies, both on in detect.py and val.py:

* ``OMP_WAIT_POLICY=PASSIVE`` (set by the scripts before torch loads, unless the user set it): idle threads sleep at
  once. Idle it costs nothing measurable (26.8 against 26.7 ms).
* ``--threads auto``: :class:`ThreadGovernor` measures the other processes' load from ``/proc/stat`` (all CPU time
  on the cores this process may use, minus this process's own) and sets ``torch.set_num_threads`` to
  ``cores - round(load)``, at least 1, so no thread of ours waits for a descheduled sibling; it re-measures about
  once a second while images stream, so a load that starts or stops later is followed. Where ``/proc/stat`` does
  not exist (not Linux), the 1-minute load average stands in. ``OMP_NUM_THREADS``, when set, is the most threads
  auto uses (the tests set it to 1).

Together, beside 1, 2 and 3 busy cores: 35, 55 and 82 ms (1.2-2.9x idle) where torch's defaults took 430, 134 and
127 ms; a single-threaded program given its fair share would slow (load + 1) / cores = 1.0, 1.5 and 2.0x.
Not handled: a cgroup CPU quota (a container limited to less than its visible cores); pass ``--threads N`` there.
"""

import argparse
import os
import time
from typing import Callable, Iterable, Optional, Set, Tuple, Union

import torch

RECHECK_S = 1.0  # how often a streaming run re-measures the load
FIRST_SAMPLE_S = 0.05  # the first measurement, before any image: long enough for a few scheduler ticks


def usable_cpus() -> Set[int]:
    """The CPU indices this process may run on (its affinity mask; all CPUs where the OS has no such call)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def read_cpu_ticks(cpus: Iterable[int], stat_path: str = "/proc/stat") -> Optional[Tuple[int, int]]:
    """(busy, total) clock ticks summed over ``cpus`` from ``/proc/stat``'s ``cpuN`` lines; None if unreadable.

    Busy is everything but idle and iowait (user, nice, system, irq, softirq, steal; guest time is already in user).
    """
    wanted = {f"cpu{i}" for i in cpus}
    busy = total = 0
    try:
        with open(stat_path, encoding="ascii") as fh:
            for line in fh:
                fields = line.split()
                if not fields or fields[0] not in wanted:
                    continue
                ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                ticks += [0] * (8 - len(ticks))
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError):
        return None
    return (busy, total) if total else None


def threads_for_load(cpus: int, others_busy: float) -> int:
    """``cpus`` minus the cores other processes keep busy (rounded), at least 1 and at most ``cpus``."""
    return max(1, min(cpus, cpus - int(others_busy + 0.5)))


class ThreadGovernor:
    """Keeps torch's intra-op thread count at the number of cores other processes leave idle.

    ``ThreadGovernor("auto")`` measures at construction (``FIRST_SAMPLE_S`` of sampling) and sets the count;
    call :meth:`update` before each image: at most once per ``recheck_s`` it measures the load over the time since
    the last measurement and resets the count if it changed. ``ThreadGovernor(n)`` fixes n threads once;
    ``ThreadGovernor(None)`` leaves torch as it is. ``threads`` is the count in force, ``changes`` how often it moved.
    The clock, the tick reader and the process-time reader can be replaced (tests).
    """

    def __init__(self, policy: Union[str, int, None] = "auto", recheck_s: float = RECHECK_S,
                 ticks: Optional[Callable[[], Optional[Tuple[int, int]]]] = None,
                 own_cpu_s: Callable[[], float] = time.process_time, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, set_threads: Callable[[int], None] = torch.set_num_threads,
                 cpus: Optional[Set[int]] = None) -> None:
        if policy not in (None, "auto") and not (isinstance(policy, int) and policy >= 1):
            raise ValueError(f"threads must be 'auto', a whole number of at least 1, or None; got {policy!r}")
        self.policy = policy
        self.recheck_s = recheck_s
        self.cpus = cpus if cpus is not None else usable_cpus()
        self.max_threads = min(len(self.cpus), env_thread_limit() or len(self.cpus))
        self._ticks = ticks if ticks is not None else (lambda: read_cpu_ticks(self.cpus))
        self._own = own_cpu_s
        self._clock = clock
        self._set = set_threads
        self.changes = 0
        self.others_busy: Optional[float] = None  # cores' worth of other processes' CPU use at the last measurement
        self.source = "fixed"
        self.threads: Optional[int] = None
        if policy is None:
            return
        if isinstance(policy, int):
            self._apply(policy)
            return
        self._mark()
        if self._last_ticks is None:  # no /proc/stat: the load average, else every core
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
            self.source, self.others_busy = "loadavg", load
            self._apply(self._target(load))
            return
        self.source = "/proc/stat"
        sleep(FIRST_SAMPLE_S)
        self._measure()

    def _target(self, others_busy: float) -> int:
        """The thread count for that load, capped by OMP_NUM_THREADS."""
        return min(self.max_threads, threads_for_load(len(self.cpus), others_busy))

    def _mark(self) -> None:
        self._last_ticks, self._last_own, self._last_time = self._ticks(), self._own(), self._clock()

    def _apply(self, threads: int) -> None:
        if threads != self.threads:
            if self.threads is not None:
                self.changes += 1
            self._set(threads)
            self.threads = threads

    def _measure(self) -> None:
        before, own_before = self._last_ticks, self._last_own
        self._mark()
        now = self._last_ticks
        if before is None or now is None or now[1] <= before[1]:
            return
        busy_fraction = (now[0] - before[0]) / (now[1] - before[1])  # of all usable cores' time
        cores = len(self.cpus)
        elapsed_s = (now[1] - before[1]) / cores / _ticks_per_second()  # each core's ticks add up to the wall time
        own_cores = (self._last_own - own_before) / elapsed_s
        self.others_busy = max(0.0, busy_fraction * cores - own_cores)
        self._apply(self._target(self.others_busy))

    def update(self) -> Optional[int]:
        """Re-measure if ``recheck_s`` has passed (auto only); returns the thread count in force."""
        if self.policy == "auto" and self.source == "/proc/stat" and self._clock() - self._last_time >= self.recheck_s:
            self._measure()
        return self.threads

    def describe(self) -> str:
        """One line for the run's output, e.g. 'threads: auto, 1 of 2 cores (others busy 1.0 cores, /proc/stat)'."""
        if self.policy is None:
            return f"threads: {torch.get_num_threads()} (torch's default)"
        if self.policy != "auto":
            return f"threads: {self.threads} (--threads){wait_policy()}"
        busy = f"others busy {self.others_busy:.1f} cores" if self.others_busy is not None else "load unknown"
        moved = f"; changed {self.changes} time{'s' * (self.changes != 1)} with the load" if self.changes else ""
        return f"threads: auto, {self.threads} of {len(self.cpus)} cores ({busy}, {self.source}){moved}{wait_policy()}"


def wait_policy() -> str:
    """'; idle threads sleep (OMP_WAIT_POLICY=PASSIVE)' or what else the environment says, for describe()."""
    policy = os.environ.get("OMP_WAIT_POLICY", "")
    if policy.upper() == "PASSIVE":
        return "; idle threads sleep (OMP_WAIT_POLICY=PASSIVE)"
    return f"; OMP_WAIT_POLICY={policy}" if policy else "; idle threads spin (OMP_WAIT_POLICY unset)"


def env_thread_limit() -> Optional[int]:
    """``OMP_NUM_THREADS`` as a whole number >= 1, or None when unset or not one."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def parse_threads(text: str) -> Union[str, int]:
    """``--threads`` value: 'auto' or a whole number >= 1 (argparse ``type=``); anything else a one-line error."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number of threads of at least 1, got {text!r}")
    return value
