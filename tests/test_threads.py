"""yolov3.threads: the thread count under load, from hand-made /proc/stat readings and clocks."""
import argparse
import os

import pytest

from yolov3.threads import ThreadGovernor, parse_threads, read_cpu_ticks, threads_for_load


@pytest.mark.parametrize("cpus, busy, expected", [(2, 0.0, 2), (2, 0.49, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 3.2, 1),
                                                  (4, 1.2, 3), (4, 2.6, 1), (8, 0.0, 8), (1, 0.9, 1)])
def test_threads_for_load(cpus, busy, expected):
    assert threads_for_load(cpus, busy) == expected


def test_read_cpu_ticks_sums_the_usable_cpus(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  30 0 10 200 20 0 0 0 0 0\n"
                    "cpu0 10 1 2 100 5 1 1 0 7 0\n"
                    "cpu1 20 0 8 50 15 0 0 2 0 0\n"
                    "cpu2 1000 0 0 0 0 0 0 0 0 0\n"
                    "intr 12345\n")
    # cpu0: busy 10+1+2+1+1+0 = 15 of 120; cpu1: 20+8+2 = 30 of 95 (guest time is inside user, not added again)
    assert read_cpu_ticks([0, 1], str(stat)) == (45, 215)
    assert read_cpu_ticks([1], str(stat)) == (30, 95)
    assert read_cpu_ticks([5], str(stat)) is None  # no such line
    assert read_cpu_ticks([0], str(tmp_path / "missing")) is None


class FakeMachine:
    """/proc/stat ticks (100 per second per CPU), this process's CPU seconds and a clock, advanced by hand."""

    def __init__(self, cpus=2):
        self.cpus, self.busy, self.total, self.own, self.now = cpus, 0, 0, 0.0, 0.0
        self.set_calls = []

    def run(self, seconds, others_busy_cores, own_cores):
        ticks = round(seconds * 100)
        self.total += ticks * self.cpus
        self.busy += round(ticks * (others_busy_cores + own_cores))
        self.own += seconds * own_cores
        self.now += seconds

    def governor(self, policy="auto", first_busy=0.0):
        return ThreadGovernor(policy, recheck_s=1.0, ticks=lambda: (self.busy, self.total),
                              own_cpu_s=lambda: self.own, clock=lambda: self.now,
                              sleep=lambda s: self.run(s, first_busy, 0.0), set_threads=self.set_calls.append,
                              cpus=set(range(self.cpus)))


def test_governor_follows_the_other_processes_load_and_not_its_own(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the test session's cap of 1
    machine = FakeMachine(cpus=2)
    governor = machine.governor(first_busy=1.0)  # another process holds one core while we start
    assert (governor.threads, governor.others_busy) == (1, pytest.approx(1.0))
    machine.run(0.5, others_busy_cores=1.0, own_cores=1.0)
    assert governor.update() == 1 and machine.set_calls == [1]  # < recheck_s since the last look: not re-measured
    machine.run(0.6, others_busy_cores=0.0, own_cores=1.0)  # the other process ended; we use one core ourselves
    # 1.1 s: our own core-second (1.1) subtracted from all busy time (0.5 + 0.5 + 0.6) leaves 0.5 / 1.1 = .45 cores
    assert governor.update() == 2 and governor.others_busy == pytest.approx(0.5 / 1.1, abs=0.01)
    assert machine.set_calls == [1, 2] and governor.changes == 1
    machine.run(2.0, others_busy_cores=3.0, own_cores=0.5)  # a load of 3 arrives (more than the cores: clipped)
    assert governor.update() == 1 and governor.changes == 2
    assert "auto, 1 of 2 cores" in governor.describe() and "changed 2 times" in governor.describe()


def test_omp_num_threads_caps_auto(monkeypatch):
    machine = FakeMachine(cpus=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert machine.governor(first_busy=0.0).threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not a number: ignored
    assert machine.governor(first_busy=1.0).threads == 3


def test_fixed_and_untouched_policies(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    machine = FakeMachine(cpus=4)
    fixed = machine.governor(policy=3, first_busy=4.0)
    machine.run(5, others_busy_cores=4.0, own_cores=0.0)
    assert fixed.update() == 3 and machine.set_calls == [3] and fixed.describe().startswith("threads: 3 (--threads); ")
    untouched = machine.governor(policy=None)
    assert untouched.update() is None and machine.set_calls == [3]
    machine_idle = FakeMachine(cpus=4)
    assert machine_idle.governor(first_busy=0.0).threads == 4
    with pytest.raises(ValueError, match="threads must be 'auto', a whole number of at least 1, or None; got 0"):
        ThreadGovernor(0)


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("1", 1), ("16", 16)])
def test_parse_threads(text, expected):
    assert parse_threads(text) == expected


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", ""])
def test_parse_threads_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected 'auto' or a whole number of threads of at "
                                                         f"least 1, got {text!r}"):
        parse_threads(text)


def test_wait_policy_line(monkeypatch):
    from yolov3.threads import wait_policy

    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert wait_policy() == "; idle threads sleep (OMP_WAIT_POLICY=PASSIVE)"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert wait_policy() == "; OMP_WAIT_POLICY=ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert wait_policy() == "; idle threads spin (OMP_WAIT_POLICY unset)"


SPY = """
import os, sys
seen = []
class Spy:  # records the environment at the moment anything first imports torch
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Spy())
sys.path.insert(0, {repo!r})
import {script}
print(seen[0])
"""


@pytest.mark.parametrize("script", ["detect", "val"])
def test_scripts_make_idle_threads_sleep_before_torch_loads_unless_told_otherwise(script):
    """libgomp reads OMP_WAIT_POLICY when torch loads it: the scripts must set it before that, and a user's wins."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = SPY.format(repo=str(Path(__file__).resolve().parents[1]), script=script)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = env if given is None else dict(env, OMP_WAIT_POLICY=given)
        out = subprocess.run([sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [expected]


def test_without_proc_stat_the_one_minute_load_average_sets_the_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 3.0, 3.0))
    calls = []
    governor = ThreadGovernor("auto", ticks=lambda: None, cpus={0, 1, 2, 3}, set_threads=calls.append)
    assert (governor.source, governor.others_busy, governor.threads) == ("loadavg", 1.0, 3)


def test_a_thread_cap_limits_auto_without_lowering_the_core_count_it_reports(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert FakeMachine(cpus=4).governor(first_busy=1.0).threads == 2  # 4 cores less 1 busy, capped at 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert FakeMachine(cpus=2).governor(first_busy=0.0).describe().startswith("threads: auto, 1 of 2 cores")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert FakeMachine(cpus=2).governor(first_busy=1.0).describe() == \
        "threads: auto, 1 of 2 cores (others busy 1.0 cores, /proc/stat); idle threads sleep (OMP_WAIT_POLICY=PASSIVE)"
