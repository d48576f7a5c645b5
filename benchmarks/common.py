"""Shared machinery of the benchmarks: thread setup, interleaved timing, paired ratios, reports and JSON output.

Methodology (the same for every benchmark, see README.md):
  * every figure compares two code paths measured **in the same process and the same run**, so the machine's speed
    cancels out and only the ratio is read as a result; absolute milliseconds are printed for context only;
  * the paths are timed **interleaved**, never as one block after another, so a slow phase of the machine (another
    process, thermal throttling) hits every path alike; odd rounds run in reverse order (A B C, C B A, A B C ...),
    so no path always runs right after the same other path (cache and allocator state);
  * warmup rounds (allocator, caches, lazy initialisation, JIT) run first and are discarded;
  * the ratio is the **median of the per-round ratios** (round r: t_A[r] / t_B[r]); pairing by round cancels slow
    drift, the median ignores the odd round disturbed by a burst of background work;
  * torch and OpenCV use the same number of threads (``--threads``, default 2).

Import this module first in each benchmark: it puts the repository root on ``sys.path``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the benchmarks import yolov3 and detect.py from the checkout they live in
    sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402  (module-level code above: the sys.path fix)
import torch  # noqa: E402

CFG_DIR = REPO_ROOT / "cfg"
DEFAULT_THREADS = 2  # the reference machine of the speed issue has 2 cores; OpenCV gets the same number


# --------------------------------------------------------------------------------------------------------------------
# Command line and environment
# --------------------------------------------------------------------------------------------------------------------
def base_parser(description: str, repeats: int, warmup: int) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch and OpenCV threads (default {DEFAULT_THREADS})")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"timed rounds; every path runs once per round (default {repeats})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"untimed rounds before the timed ones (default {warmup})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random input (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and 2 rounds: checks that the benchmark runs, the numbers mean nothing")
    return parser


def apply_smoke(parser: argparse.ArgumentParser, args: argparse.Namespace, **smoke_values) -> None:
    """With ``--smoke``, set each option to its smoke value unless the user gave it explicitly (non-default)."""
    if not args.smoke:
        return
    for key, value in smoke_values.items():
        if getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)


def resolve_cfg(name: str) -> Path:
    """A cfg given as a path, or a name looked up in cfg/; exits with a message when neither exists."""
    path = Path(name)
    if not path.is_file():
        path = CFG_DIR / name
    if not path.is_file():
        raise SystemExit(f"error: cfg {name} not found (looked in the working directory and {CFG_DIR})")
    return path


def setup_threads(threads: int) -> None:
    """Pin torch (intra- and inter-op) and OpenCV to ``threads`` threads."""
    if threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed before the first parallel work; then the intra-op setting is what counts
        pass
    cv2.setNumThreads(threads)


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(threads: int) -> dict:
    """What the numbers depend on: versions, CPU, threads, and how busy the machine was."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "load_average_1m_at_start": None if load is None else round(load[0], 2),
        "git_commit": _git_commit(),
    }


def warn_if_busy(threads: int) -> None:
    """Print a warning when other processes already keep the cores busy: the ratios survive, absolute ms do not."""
    if not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: 1-minute load average is {load:.1f} before starting (threads={threads}, "
              f"cpus={os.cpu_count()}): other work shares the machine; ratios are paired per round, "
              f"absolute times will be inflated", file=sys.stderr)


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelfTimed:
    """Returned by a case that times itself, because part of its call must not count (e.g. draining a queue)."""

    seconds: float


def interleaved_times(cases: Mapping[str, Callable[[], object]], repeats: int, warmup: int,
                      collect_garbage: bool = True) -> Dict[str, np.ndarray]:
    """Time every case once per round, rounds interleaved; odd rounds reversed (A B C, C B A, A B C, ...).

    Args:
        cases: name -> callable taking no argument; its result is discarded unless it is a :class:`SelfTimed`,
            whose seconds then replace the measured time.
        repeats: timed rounds.
        warmup: untimed rounds run first, interleaved the same way.
        collect_garbage: run ``gc.collect()`` (untimed) before each call, so one case's garbage is not collected
            on another case's clock.

    Returns:
        name -> ``(repeats,)`` seconds, entry ``r`` measured in round ``r``.
    """
    if repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {repeats}")
    times = {name: np.zeros(repeats) for name in cases}
    order = list(cases.items())
    for round_index in range(-warmup, repeats):
        for name, call in (order if round_index % 2 == 0 else order[::-1]):
            if collect_garbage:
                gc.collect()
            start = time.perf_counter()
            result = call()
            elapsed = time.perf_counter() - start
            if isinstance(result, SelfTimed):
                elapsed = result.seconds
            if round_index >= 0:
                times[name][round_index] = elapsed
    return times


def describe_times(seconds: np.ndarray) -> dict:
    """Summary of one case's round times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {"median_ms": float(median), "q1_ms": float(q1), "q3_ms": float(q3), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "rounds": int(ms.size), "samples_ms": [round(float(v), 4) for v in ms]}


def paired_ratio(numerator_s: np.ndarray, denominator_s: np.ndarray) -> dict:
    """Median and quartiles of the per-round ratios ``numerator[r] / denominator[r]``."""
    ratios = np.asarray(numerator_s, dtype=np.float64) / np.asarray(denominator_s, dtype=np.float64)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"ratio": float(median), "ratio_q1": float(q1), "ratio_q3": float(q3)}


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Figure:
    """One reported ratio: ``ours`` measured against ``peer``, with its target.

    ``direction`` is ``"<="`` (a cost ratio such as ours/OpenCV time: lower is better) or ``">="`` (a speed-up or
    a throughput ratio: higher is better); ``target`` None means informational only (no pass/fail).
    """

    name: str
    ratio: float
    target: Optional[float]
    direction: str
    ours: str
    peer: str
    ours_ms: Optional[float] = None
    peer_ms: Optional[float] = None
    ratio_q1: Optional[float] = None
    ratio_q3: Optional[float] = None
    headline: bool = True  # False: reported separately (e.g. bf16), not part of the pass/fail summary
    note: str = ""

    @property
    def passed(self) -> Optional[bool]:
        if self.target is None or not np.isfinite(self.ratio):
            return None
        return self.ratio <= self.target if self.direction == "<=" else self.ratio >= self.target

    def to_dict(self) -> dict:
        return {**asdict(self), "pass": self.passed}


def time_figure(name: str, times: Mapping[str, np.ndarray], ours: str, peer: str, target: Optional[float],
                direction: str = "<=", headline: bool = True, note: str = "") -> Figure:
    """A Figure whose ratio is the paired time ratio ``times[ours] / times[peer]``."""
    stats = paired_ratio(times[ours], times[peer])
    return Figure(name=name, ratio=stats["ratio"], target=target, direction=direction, ours=ours, peer=peer,
                  ours_ms=float(np.median(times[ours]) * 1000), peer_ms=float(np.median(times[peer]) * 1000),
                  ratio_q1=stats["ratio_q1"], ratio_q3=stats["ratio_q3"], headline=headline, note=note)


def failed_figure(name: str, ours: str, peer: str, target: Optional[float], direction: str, error: str,
                  headline: bool = True) -> Figure:
    """A figure that could not be measured (e.g. torch.compile unavailable): NaN ratio, the error as its note."""
    return Figure(name=name, ratio=float("nan"), target=target, direction=direction, ours=ours, peer=peer,
                  headline=headline, note=f"failed: {error}")


def format_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def format_ms(value: Optional[float]) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.2f}"


def verdict(figure: Figure) -> str:
    """PASS / FAIL against the target, ``info`` without a target, ``error`` when it could not be measured."""
    if figure.note.startswith("failed") or not np.isfinite(figure.ratio):
        return "error"
    if figure.passed is None:
        return "info"
    return "PASS" if figure.passed else "FAIL"


def print_figures(title: str, figures: Sequence[Figure]) -> None:
    """A plain-text table of ratios (the result) with the absolute medians beside them (context)."""
    print(f"\n== {title} ==")
    width = max([len("figure")] + [len(fig.name) for fig in figures])
    header = f"{'figure':<{width}} {'ratio':>7} {'[q1, q3]':>16} {'target':>8} {'verdict':>7}   ours ms / peer ms"
    print(header)
    print("-" * len(header))
    for fig in figures:
        spread = "" if fig.ratio_q1 is None else f"[{fig.ratio_q1:.3f}, {fig.ratio_q3:.3f}]"
        target = "" if fig.target is None else f"{fig.direction}{fig.target:g}"
        absolute = f"{format_ms(fig.ours_ms)} / {format_ms(fig.peer_ms)}" if fig.ours_ms is not None else ""
        ratio = format_ratio(fig.ratio)
        print(f"{fig.name:<{width}} {ratio:>7} {spread:>16} {target:>8} {verdict(fig):>7}   {absolute}")
        if fig.note:
            print(f"    {fig.note}")


def write_results(path: Optional[Path], benchmark: str, args: argparse.Namespace, figures: Sequence[Figure],
                  timings: Mapping[str, Mapping[str, np.ndarray]], extra: Optional[dict] = None) -> dict:
    """Assemble the JSON document of one benchmark and write it to ``path`` (if given). Returns the document.

    ``timings``: group name (e.g. the cfg) -> case name -> round times in seconds.
    """
    document = {
        "benchmark": benchmark,
        "smoke": bool(args.smoke),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(args.threads),
        "figures": [fig.to_dict() for fig in figures],
        "timings": {group: {case: describe_times(t) for case, t in cases.items()} for group, cases in timings.items()},
        **(extra or {}),
    }
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=1, default=_json_default), encoding="utf-8")
        os.replace(tmp, path)  # atomic: run_all.py never reads a half-written file
        print(f"\nresults written to {path}")
    return document


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------------------------------------------------
# Models with realistic random weights
# --------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def randomize_weights(model: torch.nn.Module, calibration_images: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """Random weights whose activations stay O(1) at every depth, like a trained network's.

    Default initialisation with identity BatchNorm statistics lets activations grow or vanish through 75 layers,
    and near-zero (denormal) or huge values can run different, unrepresentative code paths. So: He-normal conv
    weights (head convs scaled down so box sizes ``exp(tw)`` stay moderate), then the BatchNorm running statistics
    of one training-mode pass over ``calibration_images`` ``(B, 3, H, W)``. Leaves the model in eval mode.
    """
    from yolov3.model import ConvLayer

    generator = torch.Generator().manual_seed(seed)
    layers = [m for m in model.module_list if isinstance(m, ConvLayer)]
    saved_momentum = {}
    for layer in layers:
        weight = layer.conv.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * (2.0 / weight[0].numel()) ** 0.5)
        if layer.bn is None:  # a head conv: its outputs are logits and box deltas
            weight.mul_(0.3)
            layer.conv.bias.zero_()
        else:
            saved_momentum[layer] = layer.bn.momentum
            layer.bn.reset_running_stats()
            layer.bn.momentum = None  # cumulative average: one pass leaves exactly that batch's statistics
    model.train()
    model(calibration_images)
    for layer, momentum in saved_momentum.items():
        layer.bn.momentum = momentum
    return model.eval()


def synthetic_targets(batch: int, num_classes: int, seed: int, min_boxes: int = 4, max_boxes: int = 8) -> torch.Tensor:
    """Fixed training targets ``(N, 6)`` ``[image, class, cx, cy, w, h]`` (normalised), ``min..max`` boxes per image.

    Sizes are log-uniform between 2 % and 60 % of the image side, so every detection layer gets positives.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for image in range(batch):
        count = int(rng.integers(min_boxes, max_boxes + 1))
        wh = np.exp(rng.uniform(np.log(0.02), np.log(0.6), (count, 2)))  # (count, 2)
        centres = rng.uniform(wh / 2, 1 - wh / 2)  # (count, 2): boxes inside the image
        classes = rng.integers(0, num_classes, count)
        rows.append(np.column_stack([np.full(count, image), classes, centres, wh]))
    return torch.from_numpy(np.concatenate(rows).astype(np.float32))  # (N, 6)
