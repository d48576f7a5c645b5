"""Freed memory kept in the process (yolov3/memory.py, what train.py, val.py and detect.py do) against glibc's default.

The setting is per process, so each round starts one fresh process per mode, interleaved (odd rounds reversed):
  kept      ``keep_freed_memory()`` first, as the scripts do
  default   ``YOLOV3_MALLOC=default``: malloc as glibc sets it
Each process runs one job ``--warmup`` times untimed, then ``--steps`` times, and reports its median step and the
minor page faults and kernel CPU time per step (``getrusage``). Jobs (``--jobs``):
  train     yolov3-tiny at 320 px, batch 16: forward, YOLOLoss, backward, SGD step, as train.py runs it here
            (bf16 autocast and channels_last where bf16 is native, float32 elsewhere)
  detect    yolov3-tiny at 416 px, batch 4 (detect.py's batch), the plain fused channels_last model, float32
  val       the same at batch 16 (val.py's batch)
Figure: kept / default step time (target <= 1.0: keeping memory must never cost time), paired per round.

    python benchmarks/bench_memory.py [--jobs train detect val] [--repeats 3] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import common  # first: puts the repository root on sys.path
import numpy as np
import torch

from yolov3.precision import cpu_info, describe_cpu

JOBS = ("train", "detect", "val")


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=3, warmup=3)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per process")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "JOB"), help=argparse.SUPPRESS)  # one round's process
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, repeats=1, warmup=1, steps=2)
    return args


def make_job(job: str, smoke: bool):
    """A closure running one step of ``job``: bench_train_step's training step, or what --no-optimize runs."""
    from bench_train_step import make_step
    from yolov3.config import Config
    from yolov3.loss import YOLOLoss
    from yolov3.model import Darknet, prepare_for_inference
    from yolov3.precision import resolve_precision

    size, batch = {"train": (320, 16), "detect": (416, 4), "val": (416, 16)}[job]
    if smoke:
        size, batch = 64, 2
    model = Darknet(common.resolve_cfg("yolov3-tiny.cfg"), num_classes=3)
    images = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    if job != "train":
        prepare_for_inference(model, optimize=False)  # the plain fused channels_last model

        def infer():
            with torch.inference_mode():
                model(images)
        return infer
    model.to(memory_format=torch.channels_last)
    targets = common.synthetic_targets(batch, model.num_classes, seed=0)
    bf16 = resolve_precision("auto", torch.device("cpu")).dtype == torch.bfloat16  # train.amp's default, as train.py
    return make_step(model, images, targets, YOLOLoss.from_model(model, Config().loss), bf16)


def child(mode: str, job: str, args) -> None:
    """One process of one round: prints its figures as one JSON line."""
    from yolov3 import memory
    if mode == "kept":
        memory.keep_freed_memory()
    common.setup_threads(args.threads)
    step = make_job(job, args.smoke)
    for _ in range(args.warmup):
        step()
    times, faults, kernel = [], [], []
    for _ in range(args.steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step()
        end, after = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        times.append(end - start)
        faults.append(after.ru_minflt - before.ru_minflt)
        kernel.append(after.ru_stime - before.ru_stime)
    print(json.dumps({"malloc": memory.state, "step_s": float(np.median(times)), "faults": float(np.median(faults)),
                      "kernel_s": float(np.median(kernel)),
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(mode: str, job: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "YOLOV3_MALLOC"}
    if mode == "default":
        env["YOLOV3_MALLOC"] = "default"
    command = [sys.executable, __file__, "--child", mode, job, "--threads", str(args.threads), "--warmup",
               str(args.warmup), "--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    record = json.loads(out.strip().splitlines()[-1])
    expected = "kept" if mode == "kept" else "default"
    if record["malloc"] != expected and sys.platform.startswith("linux"):
        raise RuntimeError(f"{mode} process reports malloc {record['malloc']!r}")
    return record


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(*args.child, args)
        return {}
    common.warn_if_busy(args.threads)
    print(f"CPU: {describe_cpu(cpu_info())}", flush=True)
    figures, timings, records = [], {}, {}
    modes = ["kept", "default"]
    for job in args.jobs:
        rounds = {mode: [] for mode in modes}
        for r in range(args.repeats):
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                rounds[mode].append(run_child(mode, job, args))
        times = {mode: np.array([rec["step_s"] for rec in rounds[mode]]) for mode in modes}
        faults = {mode: np.median([rec["faults"] for rec in rounds[mode]]) for mode in modes}
        kernel = {mode: np.median([rec["kernel_s"] for rec in rounds[mode]]) * 1000 for mode in modes}
        rss = {mode: np.median([rec["max_rss_mb"] for rec in rounds[mode]]) for mode in modes}
        note = (f"page faults a step {faults['kept']:.0f} / {faults['default']:.0f}, kernel CPU {kernel['kept']:.0f} / "
                f"{kernel['default']:.0f} ms a step, peak RSS {rss['kept']:.0f} / {rss['default']:.0f} MB")
        figures.append(common.time_figure(f"{job}: kept / default", times, "kept", "default", 1.0, note=note))
        timings[job] = times
        records[job] = rounds
    common.print_figures(f"freed memory kept in the process, {args.threads} threads (time ratio, lower is better)",
                         figures)
    return common.write_results(args.out, "memory", args, figures, timings,
                                {"cpu": describe_cpu(cpu_info()), "rounds": records})


if __name__ == "__main__":
    main()
