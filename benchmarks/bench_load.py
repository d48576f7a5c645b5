"""detect.py's per-image time on a shared CPU: torch's default thread count against ``--threads auto``.

For each load, the benchmark starts that many busy processes (each a 1-thread torch matrix-product loop, one core's
worth of work; or one 2-thread torch process, the issue's case), waits for them to spin up, then runs detect.py's
``Detector`` (yolov3-tiny, random weights, 416 px, ``optimize_for_inference()``, a generated 640x480 frame) in a
fresh process per policy, so each starts its OpenMP pool under the load as detect.py would:
  * ``default``: torch's default, one thread per core (what detect.py did before ``--threads``);
  * ``auto``: ``--threads auto`` (``yolov3.threads.ThreadGovernor``: the cores the others leave idle);
  and, to find the cause, two more with torch's default thread count:
  * ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep at once instead of spinning);
  * ``plain``: the plain fused channels_last model (``--no-optimize``: fewer, larger ops than Winograd's);
  * ``auto_passive``: both ``--threads auto`` and ``OMP_WAIT_POLICY=PASSIVE``.
Each child times its first image (which pays the fast paths' one-time measurement) and then ``--images`` images.
The policies alternate order between rounds. Reported: median ms per image [quartiles over all rounds' images],
the first image, the slowdown against the same policy on the idle machine, and ``(load + 1) / cores``: how much a
single-threaded program slows when it gets its fair share of the cores (the proportional degradation the issue asks
for; below 1 the load leaves a core idle, so no slowdown is due).

    python benchmarks/bench_load.py [--loads 0 1 2 3 t2] [--images 20] [--rounds 2] [--out x.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common  # first: puts the repository root on sys.path
import numpy as np

LOAD_UNIT = ("import torch, sys\ntorch.set_num_threads(int(sys.argv[1]))\na = torch.randn(384, 384)\n"
             "while True:\n    a = torch.tanh(a @ a)\n")  # a core (or two) kept busy until killed


POLICIES = ("default", "passive", "plain", "auto", "auto_passive")


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=2, warmup=0)
    parser.add_argument("--loads", nargs="+", default=["0", "t2", "1", "2", "3"],
                        help="0..N busy 1-thread processes, or t2 for one 2-thread torch process")
    parser.add_argument("--images", type=int, default=20, help="timed images per child process")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--cfg", default="yolov3-tiny.cfg")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, images=3, repeats=1, loads=["0", "1"], img_size=128)
    return args


def child(args) -> None:
    """One detect.py-like process: builds the Detector under the current load and prints its timings as JSON."""
    import torch

    from yolov3.detector import Detector
    from yolov3.model import Darknet, prepare_for_inference
    from yolov3.synthetic import render_image

    start = time.perf_counter()
    policy = "auto" if args.child.startswith("auto") else None  # otherwise torch's own thread count
    model = Darknet(common.resolve_cfg(args.cfg), num_classes=80)
    prepare_for_inference(model, optimize=args.child != "plain")
    detector = Detector(model, torch.device("cpu"), args.img_size, 0.25, 0.45, 300, None, False, threads=policy)
    with torch.no_grad():  # random weights would pass thousands of boxes to NMS: none pass, the network is timed
        for conv in model.head_convs:
            conv.bias.view(len(model.yolo_layers[0].mask), -1)[:, 4] = -20.0
    frame = np.ascontiguousarray(render_image(np.random.default_rng(0), 640, 4, 8)[0][:480])  # a 640x480 frame
    times = []
    for index in range(args.images + 1):
        t0 = time.perf_counter()
        detector(frame)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first_s": times[0], "times_s": times[1:], "threads": torch.get_num_threads(),
                      "governor": detector.governor.describe(), "startup_s": time.perf_counter() - start}))


def start_load(load: str):
    units = [2] if load == "t2" else [1] * int(load)
    env = dict(os.environ, OMP_NUM_THREADS="2" if load == "t2" else "1")
    return [subprocess.Popen([sys.executable, "-c", LOAD_UNIT, str(threads)], env=env) for threads in units]


def load_cores(load: str) -> float:
    return 2.0 if load == "t2" else float(load)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    from yolov3.precision import describe_cpu
    from yolov3.threads import usable_cpus

    common.warn_if_busy(args.threads)
    cores = len(usable_cpus())
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    results = {load: {policy: [] for policy in args.policies} for load in args.loads}
    for round_index in range(args.repeats):
        for load in args.loads:
            hogs = start_load(load)
            try:
                time.sleep(2.0 if hogs else 0.0)  # the hogs import torch and reach their loop
                policies = args.policies if round_index % 2 == 0 else args.policies[::-1]
                for policy in policies:
                    cmd = [sys.executable, __file__, "--child", policy, "--images", str(args.images), "--cfg",
                           args.cfg, "--img-size", str(args.img_size)]
                    child_env = dict(env, OMP_WAIT_POLICY="PASSIVE") if policy.endswith("passive") else env
                    out = subprocess.run(cmd, env=child_env, capture_output=True, text=True, check=True)
                    record = json.loads(out.stdout.strip().splitlines()[-1])
                    results[load][policy].append(record)
                    print(f"round {round_index + 1} load {load} {policy}: median "
                          f"{np.median(record['times_s']) * 1000:.1f} ms, first {record['first_s'] * 1000:.0f} ms, "
                          f"{record['governor']}", flush=True)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
    idle = {p: float(np.median(sum((r["times_s"] for r in results[args.loads[0]][p]), []))) for p in args.policies}
    rows = []
    print(f"\n{describe_cpu()}; {cores} cores; {args.cfg} at {args.img_size}, {args.images} images x {args.repeats} "
          f"rounds per cell; slowdown against the same policy with load {args.loads[0]}")
    print("| load (busy cores of others) | (load+1)/cores | policy | threads | ms per image, median [q1, q3] | "
          "slowdown | first image ms |")
    print("|---|---|---|---|---|---|---|")
    for load in args.loads:
        for policy in args.policies:
            times = np.array(sum((r["times_s"] for r in results[load][policy]), [])) * 1000
            q1, med, q3 = np.percentile(times, [25, 50, 75])
            first = float(np.median([r["first_s"] for r in results[load][policy]]) * 1000)
            threads = sorted({r["threads"] for r in results[load][policy]})
            row = {"load": load, "load_cores": load_cores(load), "fair_share_slowdown": (load_cores(load) + 1) / cores,
                   "policy": policy, "threads": threads, "median_ms": med, "q1_ms": q1, "q3_ms": q3,
                   "slowdown": med / (idle[policy] * 1000), "first_ms": first}
            rows.append(row)
            label = "one 2-thread torch process" if load == "t2" else f"{load}"
            print(f"| {label} | {row['fair_share_slowdown']:.2f} | {policy} | {'/'.join(map(str, threads))} | "
                  f"{med:.1f} [{q1:.1f}, {q3:.1f}] | {row['slowdown']:.2f} | {first:.0f} |")
    if args.out:
        from yolov3.files import atomic_write_text
        atomic_write_text(args.out, json.dumps({"environment": common.environment(args.threads), "cpu": describe_cpu(),
                                                "rows": rows, "raw": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
