"""train.py's whole training loop against the bare network step it drives, in the same process.

For each cfg (default yolov3-small.cfg at 256 and yolov3-tiny.cfg at 320), batch 16, and each precision
(``train.amp`` auto and off), every round runs both, interleaved:

    loop   ``train.main`` for one epoch on a generated shapes dataset (mosaic and every augmentation on, the
           default RAM cache, ``--workers`` loader workers), timed per batch where train.py's progress bar
           yields: data, targets, loss, backward, clipping, optimiser, EMA, logging. The first ``--skip`` batches
           of the epoch (oneDNN's first calls) are dropped; the round's figure is the median batch time.
           Validation and the end-of-run plots are stubbed out: they are not the loop.
    bare   the same model (same cfg, classes, channels_last and autocast precision as train.py resolves them),
           forward, backward of ``sum(maps) * 0`` and the same optimiser's step on one fixed batch; median step.

Figure: loop / bare (target <= 1.15: everything outside the network costs at most 15 %), per cfg and precision.
The CPU (model, ISA, native bf16 or not) and the precision each figure ran in are printed and saved.

    python benchmarks/bench_train_loop.py [--cfgs yolov3-small.cfg:256 yolov3-tiny.cfg:320] [--amp auto off]
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import common  # first: puts the repository root on sys.path
import numpy as np
import torch
import yaml

import train
import yolov3.evaluate as evaluate_module
from yolov3.config import TrainConfig
from yolov3.model import Darknet
from yolov3.optim import build_optimizer
from yolov3.precision import describe_cpu, resolve_precision

TARGET_LOOP_OVERHEAD = 1.15  # the issue: the small model's loop <= 1.15x its bare step
NUM_CLASSES = 5  # the shapes dataset's


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=5, warmup=1)
    parser.add_argument("--cfgs", nargs="+", default=["yolov3-small.cfg:256", "yolov3-tiny.cfg:320"],
                        help="cfg:img_size pairs")
    parser.add_argument("--amp", nargs="+", default=["auto", "off"], choices=["auto", "off", "bf16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=10, help="batches per timed epoch")
    parser.add_argument("--skip", type=int, default=2, help="leading batches of each epoch left out")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (0: as the peer harness)")
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, batches=3, skip=1, repeats=1, warmup=0, cfgs=["yolov3-small.cfg:64"])
    return args


class BatchClock:
    """Stands in for train.py's tqdm: records when each batch is handed to the loop (the previous one is done)."""

    stamps: list = []

    def __init__(self, iterable, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        BatchClock.stamps = [time.perf_counter()]
        for item in self.iterable:
            yield item
            BatchClock.stamps.append(time.perf_counter())

    def set_postfix_str(self, *args, **kwargs):
        pass


def make_dataset(folder: Path, images: int, img_size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data_yaml = folder / "shapes.yaml"
    data_yaml.write_text(yaml.safe_dump({
        "path": "shapes", "train": "images/train", "val": "images/val", "nc": NUM_CLASSES,
        "names": ["circle", "rectangle", "triangle", "star", "cross"],
        "generate": {"train_images": images, "val_images": 4, "img_size": img_size, "seed": 0}}))
    return data_yaml


def make_loop(cfg_path: Path, img_size: int, amp: str, data_yaml: Path, project: Path, args):
    runs = iter(range(10**6))

    def loop() -> common.SelfTimed:
        name = f"run{next(runs)}"
        argv = ["--cfg", str(cfg_path), "--data", str(data_yaml), "--img-size", str(img_size), "--batch-size",
                str(args.batch), "--epochs", "1", "--workers", str(args.workers), "--device", "cpu", "--noval",
                "--project", str(project), "--name", name, f"train.amp={amp}", "train.warmup_epochs=0"]
        code = train.main(argv)
        if code != 0:
            raise SystemExit(f"error: train.py exited with {code} ({' '.join(argv)})")
        shutil.rmtree(project / name, ignore_errors=True)
        batch_times = np.diff(BatchClock.stamps)[args.skip:]
        return common.SelfTimed(float(np.median(batch_times)))

    return loop


def make_bare(cfg_path: Path, img_size: int, amp: str, args):
    precision = resolve_precision(amp, torch.device("cpu"))
    model = Darknet(cfg_path, num_classes=NUM_CLASSES).train()
    if TrainConfig().channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, dataclasses.replace(TrainConfig(), lr0=1e-4))
    images = torch.rand(args.batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    steps = max(args.batches - args.skip, 1)

    def bare() -> common.SelfTimed:
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=precision.dtype or torch.float32, enabled=precision.dtype is not None):
                raw_maps = model(images)
            loss = sum(raw.float().sum() for raw in raw_maps) * 0.0
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        return common.SelfTimed(float(np.median(times[1:])))

    return bare, precision


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.setup_threads(args.threads)
    common.warn_if_busy(args.threads)
    # validation, the objectness samples and plots are not the loop (the peer harness leaves them out as well)
    keys = ("precision", "recall", "mAP50", "mAP50_95", "val_box", "val_obj", "val_noobj", "val_cls")
    train.evaluate = lambda *a, **k: {key: float("nan") for key in keys}
    train.objectness_samples = lambda *a, **k: {key: np.zeros(0, np.float32)
                                                for key in ("pos", "neg", "pos_logit", "neg_logit")}
    evaluate_module.evaluate = train.evaluate
    train.plot_results_csv = lambda *a, **k: None
    train.plot_batch = lambda *a, **k: None
    train.tqdm = BatchClock
    cpu = describe_cpu()
    print(f"CPU: {cpu}; torch {torch.__version__}, {args.threads} threads, {args.workers} loader workers", flush=True)
    figures, timings, details = [], {}, {}
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_loop_"))
    try:
        for spec in args.cfgs:
            name, _, size_text = spec.partition(":")
            cfg_path, img_size = common.resolve_cfg(name), int(size_text or 320)
            data_yaml = make_dataset(scratch / f"data{img_size}", args.batch * args.batches, img_size)
            for amp in args.amp:
                bare, precision = make_bare(cfg_path, img_size, amp, args)
                label = f"{cfg_path.stem} {img_size}px, amp={amp} ({precision.name})"
                print(f"{label}: timing the loop and the bare step...", flush=True)
                cases = {"loop": make_loop(cfg_path, img_size, amp, data_yaml, scratch / "runs", args), "bare": bare}
                times = common.interleaved_times(cases, args.repeats, args.warmup)
                figures.append(common.time_figure(f"{label}: training loop / bare step", times, "loop", "bare",
                                                  TARGET_LOOP_OVERHEAD, note=f"{args.batch / np.median(times['loop']):.1f} "
                                                                             "img/s in the loop"))
                timings[label] = times
                details[label] = {"cfg": cfg_path.name, "img_size": img_size, "amp": amp,
                                  "precision": precision.name, "reason": precision.reason}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    common.print_figures(f"training loop vs bare step, batch {args.batch}, {args.threads} threads, {cpu} "
                         "(time ratio, lower is better)", figures)
    return common.write_results(args.out, "train_loop", args, figures, timings, {"details": details, "cpu": cpu})


if __name__ == "__main__":
    main()
