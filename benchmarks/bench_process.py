"""detect.py and val.py as whole processes, as a user runs them: start-up, loading, preparation, every image, outputs.

Each job is a fresh process timed by its wall clock, in modes run interleaved round by round (odd rounds reversed):
  cold       the default, with an empty preparation cache (the fast path decides for itself whether to measure)
  warm       the default, with the cache an earlier measuring run on this machine left (made once, before timing)
  no_opt     --no-optimize: the plain fused model, no fast path, no cache
  opencv     benchmarks/opencv_detect.py on the same cfg and .weights (detect jobs only): read, letterbox, forward,
             NMS, draw, write, with OpenCV DNN
Figures (paired per round: median ratio and quartiles): cold / no_opt and warm / no_opt (target <= 1.0 plus noise:
the default is never slower than --no-optimize), and cold / opencv, warm / opencv (target <= 0.8 on the 200-photo
job).

Jobs (``--jobs``): detectN runs detect.py over N photos (annotated images written, as the OpenCV script does);
valN runs val.py over N labelled photos (--single-cls, so COCO weights can be scored on any labels). The photos come
from a YOLO dataset (``--data``, default data/bccd.yaml, built with ``python -m yolov3.prepare data/bccd.yaml
--source ../shared/datasets/BCCD_Dataset.zip``), every split pooled and cycled (copies under new names) when N is
larger than the pool.

Models (``--models``): ``tiny`` = cfg/yolov3-tiny.cfg with weights/yolov3-tiny.weights (the COCO weights; random
ones when missing), ``yolov3`` = cfg/yolov3.cfg with random weights whose objectness is shifted until ~20 boxes of a
photo survive NMS (``bench_detect.calibrate_objectness``), saved as a Darknet .weights file both programs read.

    python benchmarks/bench_process.py --jobs detect1 detect100 detect200 detect1000 val1 val100 val1000 \
        --models tiny --repeats 3 --out results.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # first: puts the repository root on sys.path
import numpy as np
import torch
import yaml

from yolov3.data import load_data_yaml
from yolov3.detect_outputs import DETECT_BATCH
from yolov3.files import IMAGE_SUFFIXES
from yolov3.images import read_image
from yolov3.labels import label_path_for
from yolov3.model import Darknet
from yolov3.precision import describe_cpu

REPO = common.REPO_ROOT
OPENCV_TARGET = 0.8  # the issue: detect.py's whole process <= 0.8x the OpenCV script's on the 200-photo job
NOISE = 0.05  # "never slower than --no-optimize by more than its noise": the verdict's margin on cold|warm / no_opt


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=3, warmup=0)
    parser.add_argument("--jobs", nargs="+", default=["detect1", "detect100", "detect200", "detect1000", "val1",
                                                      "val100", "val1000"])
    parser.add_argument("--models", nargs="+", default=["tiny", "yolov3"], choices=["tiny", "yolov3"])
    parser.add_argument("--data", default="data/bccd.yaml", help="a YOLO data YAML whose images (all splits) are used")
    parser.add_argument("--batch-size", type=int, default=16, help="val.py's batch size")
    parser.add_argument("--keep", type=Path, help="keep the job folders and outputs here (default: a temp folder)")
    parser.add_argument("--fill-cache", nargs=3, metavar=("CFG", "WEIGHTS", "SHAPES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, jobs=["detect1", "detect3", "val3"], models=["tiny"], repeats=1)
    for job in args.jobs:
        kind, count = job.rstrip("0123456789"), job[len(job.rstrip("0123456789")):]
        if kind not in ("detect", "val") or not count:
            parser.error(f"--jobs: {job!r} is not detectN or valN")
    return args


def pool_of_photos(data_yaml: str) -> tuple:
    """((image, label) paths of every split of the data YAML, in a stable order; its class names)."""
    data = load_data_yaml(data_yaml)
    pairs = []
    for split in ("train", "val", "test"):
        for folder in (data.get(split) or []) if isinstance(data.get(split), list) else [data.get(split)]:
            if folder and Path(folder).is_dir():
                pairs += [(p, Path(label_path_for(str(p)))) for p in sorted(Path(folder).iterdir())
                          if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise SystemExit(f"error: {data_yaml}: no images found (build it first: python -m yolov3.prepare {data_yaml} "
                         f"--source ...)")
    return pairs, list(data["names"])


def make_job_folder(root: Path, pairs: list, count: int, names: list) -> Path:
    """``root/images`` with ``count`` photos (cycled, renamed) and ``root/labels`` with their labels; a data YAML."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for k in range(count):
        image, label = pairs[k % len(pairs)]
        stem = f"{k:05d}_{image.stem}"
        shutil.copy(image, images / f"{stem}{image.suffix}")
        if label.is_file():
            shutil.copy(label, labels / f"{stem}.txt")
        else:
            (labels / f"{stem}.txt").write_text("")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images",
                                                    "names": names}))
    return root


def model_files(name: str, work: Path, photo: Path) -> tuple:
    """(cfg, weights) paths of a benchmark model (see the module docstring)."""
    cfg = REPO / "cfg" / ("yolov3-tiny.cfg" if name == "tiny" else "yolov3.cfg")
    coco = REPO / "weights" / "yolov3-tiny.weights"
    if name == "tiny" and coco.is_file():
        return cfg, coco
    from bench_detect import calibrate_objectness
    from yolov3.detector import Detector

    image = read_image(str(photo))
    detector = Detector(Darknet(cfg).eval(), torch.device("cpu"), 416, 0.25, 0.45, 300, None, False)
    tensor = detector.preprocess(image)[0]
    model = common.randomize_weights(Darknet(cfg), torch.rand(2, 3, 416, 416), seed=0)
    calibrate_objectness(model, tensor, dict(conf_thres=0.25, iou_thres=0.45, max_det=300, agnostic=False), 20)
    path = work / f"{name}-random.weights"
    model.save_darknet_weights(path)
    return cfg, path


def input_shapes(jobs: list, val_batch: int) -> list:
    """The network inputs the jobs run at: detect.py letterboxes a 640x480 photo to 320x416 and runs DETECT_BATCH
    at a time (and what is left at the end of a folder); val.py letterboxes to 416x416, its batch and its last one."""
    shapes = set()
    for job in jobs:
        kind = job.rstrip("0123456789")
        count = int(job[len(kind):])
        full, hw = (DETECT_BATCH, (320, 416)) if kind == "detect" else (val_batch, (416, 416))
        shapes.update((size, 3, *hw) for size in {min(full, count), count % full} if size)
    return sorted(shapes)


def fill_warm_cache(cfg: Path, weights: Path, path: Path, shapes: list, threads: int) -> None:
    """What an earlier run on this machine would have left in the preparation cache: every conv measured at the
    jobs' input shapes (:func:`input_shapes`) at the jobs' thread count, in a fresh process set up as detect.py and
    val.py run (idle OpenMP threads asleep, freed memory kept: without it every large Winograd temporary is mapped
    and zero-filled anew on each call, and the measurement turns against Winograd)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "YOLOV3_PREP_CACHE": str(path)}
    argv = [sys.executable, __file__, "--fill-cache", str(cfg), str(weights), json.dumps(shapes),
            "--threads", str(threads)]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"error: filling the warm cache exited {done.returncode}:\n{done.stdout[-2000:]}")
    print(f"warm cache for inputs {shapes}: {path}", flush=True)


def measure_into_cache(cfg: str, weights: str, shapes: list, threads: int) -> None:
    """:func:`fill_warm_cache`'s process: the cache named by $YOLOV3_PREP_CACHE filled for ``shapes``."""
    from yolov3 import fastconv
    from yolov3.memory import keep_freed_memory
    from yolov3.model import load_model, prepare_for_inference

    keep_freed_memory()
    torch.set_num_threads(threads)
    fastconv.use_prep_cache("use")
    model, _ = load_model(weights, cfg=cfg)
    prepare_for_inference(model, expected_calls=fastconv.JOB_MIN_CALLS)
    with torch.inference_mode():
        for shape in shapes:
            x = torch.rand(shape).contiguous(memory_format=torch.channels_last)
            for _ in range(fastconv.MOST_MEASURING_CALLS):
                model(x)


def commands(kind: str, job: Path, cfg: Path, weights: Path, out: Path, batch: int, threads: int = 2) -> dict:
    """mode -> argv of one run of the job."""
    python = sys.executable
    if kind == "detect":
        ours = [python, str(REPO / "detect.py"), "--weights", str(weights), "--cfg", str(cfg), "--source",
                str(job / "images"), "--project", str(out), "--name", "ours", "--exist-ok", "--img-size", "416"]
        return {"cold": ours, "warm": ours, "no_opt": ours + ["--no-optimize"],
                "opencv": [python, str(REPO / "benchmarks" / "opencv_detect.py"), "--cfg", str(cfg), "--weights",
                           str(weights), "--source", str(job / "images"), "--out", str(out / "opencv"),
                           "--threads", str(threads), "--img-size", "416"]}
    ours = [python, str(REPO / "val.py"), "--weights", str(weights), "--cfg", str(cfg), "--data",
            str(job / "data.yaml"), "--single-cls", "--batch-size", str(batch), "--project", str(out),
            "--name", "ours", "--exist-ok", "--img-size", "416"]
    return {"cold": ours, "warm": ours, "no_opt": ours + ["--no-optimize"]}


def run_once(argv: list, env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}")
    return elapsed


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.fill_cache:
        cfg, weights, shapes = args.fill_cache
        measure_into_cache(cfg, weights, [tuple(shape) for shape in json.loads(shapes)], args.threads)
        return {}
    common.warn_if_busy(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-process-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    pairs, names = pool_of_photos(args.data)
    base_env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    base_env.pop("YOLOV3_PREP_CACHE", None)
    figures, timings, details = [], {}, {"cpu": describe_cpu(), "pool_photos": len(pairs)}
    try:
        for model_name in args.models:
            cfg, weights = model_files(model_name, work, pairs[0][0])
            warm_cache = work / f"{model_name}-warm-cache.json"
            fill_warm_cache(cfg, weights, warm_cache, input_shapes(args.jobs, args.batch_size), args.threads)
            for job_name in args.jobs:
                kind = job_name.rstrip("0123456789")
                count = int(job_name[len(kind):])
                job = work / f"{model_name}-{job_name}"
                if not job.exists():
                    make_job_folder(job, pairs, count, names)
                out = job / "out"
                argvs = commands(kind, job, cfg, weights, out, args.batch_size, args.threads)
                cold_cache = work / f"{model_name}-cold-cache.json"
                envs = {"cold": {**base_env, "YOLOV3_PREP_CACHE": str(cold_cache)},
                        "warm": {**base_env, "YOLOV3_PREP_CACHE": str(warm_cache)},
                        "no_opt": {**base_env, "YOLOV3_PREP_CACHE": "off"}, "opencv": base_env}
                def case(mode: str):
                    def call():
                        if mode == "cold" and cold_cache.exists():
                            cold_cache.unlink()
                        return common.SelfTimed(run_once(argvs[mode], envs[mode]))
                    return call

                label = f"{model_name} {job_name}"
                print(f"{label}: {', '.join(argvs)} x {args.repeats} rounds...", flush=True)
                times = common.interleaved_times({mode: case(mode) for mode in argvs}, args.repeats, args.warmup,
                                                 collect_garbage=False)
                timings[label] = times
                for mode in ("cold", "warm"):
                    figures.append(common.time_figure(f"{label} {mode} / no_opt", times, mode, "no_opt",
                                                      1.0 + NOISE))
                if "opencv" in times:
                    target = OPENCV_TARGET if count == 200 else None
                    for mode in ("cold", "warm", "no_opt"):
                        figures.append(common.time_figure(f"{label} {mode} / opencv", times, mode, "opencv",
                                                          target if mode != "no_opt" else None,
                                                          headline=mode != "no_opt"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    common.print_figures(f"whole processes, {details['cpu']}, {args.threads} threads (time ratio, lower is better; "
                         f"no_opt targets allow {NOISE:.0%} noise)", figures)
    return common.write_results(args.out, "process", args, figures, timings, {"details": details})


if __name__ == "__main__":
    main()
