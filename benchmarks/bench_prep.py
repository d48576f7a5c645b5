"""The fast path's first calls: what measuring (and using a known choice) costs a job against the plain model.

Behind fastconv.JOB_MIN_CALLS and fastconv.USE_KNOWN_MIN_CALLS. Each round starts one fresh process per mode,
interleaved (odd rounds reversed), so every process pays its own preparation (weights re-laid out, oneDNN primitives
built: oneDNN keeps them per process), as detect.py and val.py do:
  cold    optimize_for_inference() with an empty preparation cache, told the job is long: measures from call 1
  warm    the same with the cache a measuring process left for this model and input (made once, before timing)
  plain   the plain fused channels_last model (--no-optimize)
Each process makes ``--calls`` forward calls on one input (random values, channels_last, float32, inference_mode),
as detect.py and val.py run them (freed memory kept, idle OpenMP threads asleep), and reports each call's seconds.
Figures: the time of the first n calls, cold / plain and warm / plain, paired per round, for each n of ``--marks``;
target <= 1.0 + 5 % noise from n = JOB_MIN_CALLS (cold) and n = USE_KNOWN_MIN_CALLS (warm), the jobs that use them.

Models (``--models``): tiny = cfg/yolov3-tiny.cfg with weights/yolov3-tiny.weights (random weights when missing),
yolov3 = cfg/yolov3.cfg with its initial weights (the paths' speeds do not depend on the values). Inputs
(``--inputs``): detect = 4x3x320x416 (detect.py's batch of 640x480 photos at 416), val = 16x3x416x416.

    python benchmarks/bench_prep.py --models tiny yolov3 --inputs detect val --repeats 5 --out prep.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import common  # first: puts the repository root on sys.path
import numpy as np

INPUTS = {"detect": (4, 3, 320, 416), "val": (16, 3, 416, 416)}
MODES = ("cold", "warm", "plain")
NOISE = 0.05


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=5, warmup=0)
    parser.add_argument("--models", nargs="+", default=["tiny"], choices=["tiny", "yolov3"])
    parser.add_argument("--inputs", nargs="+", default=["detect", "val"], choices=sorted(INPUTS))
    parser.add_argument("--calls", type=int, default=12, help="forward calls per process")
    parser.add_argument("--marks", type=int, nargs="+", default=[1, 2, 3, 4, 10],
                        help="report the time of the first n calls for these n")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "MODEL", "INPUT", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, models=["tiny"], inputs=["detect"], repeats=1, calls=2, marks=[1, 2])
    if any(not 1 <= n <= args.calls for n in args.marks):
        parser.error(f"--marks must lie in 1..--calls ({args.calls}), got {args.marks}")
    return args


def child(mode: str, model_name: str, input_name: str, cache: str, calls: int, threads: int, smoke: bool) -> None:
    """One process of one mode: prints the seconds of each forward call as JSON."""
    from yolov3.memory import keep_freed_memory

    keep_freed_memory()  # as detect.py and val.py run
    import torch

    from yolov3 import fastconv
    from yolov3.model import Darknet, load_model, prepare_for_inference

    torch.set_num_threads(threads)
    os.environ["YOLOV3_PREP_CACHE"] = cache
    fastconv.use_prep_cache("use")
    cfg = common.resolve_cfg("yolov3-tiny.cfg" if model_name == "tiny" else "yolov3.cfg")
    coco = common.REPO_ROOT / "weights" / "yolov3-tiny.weights"
    model = load_model(coco, cfg=cfg)[0] if model_name == "tiny" and coco.is_file() else Darknet(cfg)
    prepare_for_inference(model, optimize=mode != "plain", expected_calls=10 ** 6)  # long: measures from call 1
    shape = (1, 3, 64, 64) if smoke else INPUTS[input_name]
    x = torch.rand(shape).contiguous(memory_format=torch.channels_last)
    seconds = []
    with torch.inference_mode():
        for _ in range(calls):
            start = time.perf_counter()
            model(x)
            seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def run_child(args, mode: str, model_name: str, input_name: str, cache: Path,
              calls: Optional[int] = None) -> np.ndarray:
    argv = [sys.executable, __file__, "--child", mode, model_name, input_name, str(cache), "--calls",
            str(calls or args.calls), "--threads", str(args.threads)] + (["--smoke"] if args.smoke else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(*args.child, args.calls, args.threads, args.smoke)
        return {}
    common.warn_if_busy(args.threads)
    from yolov3 import fastconv

    figures, timings, calls_s = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as work:
        for model_name in args.models:
            for input_name in args.inputs:
                label = f"{model_name} {input_name}"
                warm_cache, cold_cache = Path(work) / f"{label}-warm.json", Path(work) / f"{label}-cold.json"
                # what a measuring run leaves: enough calls for every candidate of every conv
                run_child(args, "cold", model_name, input_name, warm_cache, fastconv.MOST_MEASURING_CALLS)
                print(f"{label}: {', '.join(MODES)} x {args.repeats} rounds of {args.calls} calls...", flush=True)
                runs = {mode: [] for mode in MODES}
                for round_index in range(args.repeats):
                    for mode in (MODES if round_index % 2 == 0 else MODES[::-1]):
                        cold_cache.unlink(missing_ok=True)
                        cache = {"cold": cold_cache, "warm": warm_cache, "plain": "off"}[mode]
                        runs[mode].append(run_child(args, mode, model_name, input_name, cache))
                calls_s[label] = {mode: np.stack(rows).round(5).tolist() for mode, rows in runs.items()}
                for n in args.marks:
                    times = {mode: np.array([row[:n].sum() for row in rows]) for mode, rows in runs.items()}
                    timings[f"{label} first {n}"] = times
                    for mode, rule in (("cold", fastconv.JOB_MIN_CALLS), ("warm", fastconv.USE_KNOWN_MIN_CALLS)):
                        target = 1.0 + NOISE if n >= rule else None
                        figures.append(common.time_figure(f"{label} first {n} calls {mode} / plain", times, mode,
                                                          "plain", target))
    common.print_figures(f"first calls, fresh process each, {args.threads} threads (time ratio, lower is better; "
                         f"targets from the job lengths that use each mode, {NOISE:.0%} noise)", figures)
    return common.write_results(args.out, "prep", args, figures, timings,
                                {"calls_s": calls_s, "rules": {"JOB_MIN_CALLS": fastconv.JOB_MIN_CALLS,
                                                              "USE_KNOWN_MIN_CALLS": fastconv.USE_KNOWN_MIN_CALLS}})


if __name__ == "__main__":
    main()
