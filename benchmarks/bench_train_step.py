"""One training step with the YOLOv3 loss against the bare network, and focal against BCE objectness.

For each cfg (default cfg/yolov3-small.cfg and yolov3-tiny.cfg) at 320x320, batch 16, float32 (``--bf16``: bf16
autocast and channels_last, as train.py runs where bf16 is native), three identical copies of one randomly initialised
model, each with its own SGD optimiser (``yolov3.optim.build_optimizer``, the train.py parameter groups), step on the
same fixed batch (random images, 4-8 synthetic boxes per image):

    bare   forward, backward of a trivial loss (sum of the raw maps x 0: every gradient kernel still runs), step
    bce    forward, ``YOLOLoss.from_model`` (defaults: BCE objectness) on the targets, backward, step
    focal  the same with ``loss.objectness.name=focal`` (gamma 2, alpha .25)

Figures: bce / bare (target <= 1.15: assigning targets and computing the loss costs at most 15 % of the network)
and focal / bce (target <= 1.03: focal objectness is nearly free). ``--compile`` adds ``compiled``, the bce step with
the model wrapped in ``torch.compile`` (inductor), against bce (informational: whether compiling would pay for
training, with the compile time of its first steps reported apart). Gradient clipping and the EMA of train.py are
left out of all three: they are the same work whatever the loss.

    python benchmarks/bench_train_step.py [--cfgs yolov3-small.cfg yolov3-tiny.cfg] [--img-size 320] [--batch 16]
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import common  # first: puts the repository root on sys.path
import numpy as np
import torch

from yolov3.config import Config, TrainConfig, apply_overrides
from yolov3.loss import YOLOLoss
from yolov3.model import Darknet
from yolov3.optim import build_optimizer

TARGET_LOSS_OVERHEAD = 1.15  # the issue: full step / bare network step
TARGET_FOCAL_OVERHEAD = 1.03  # the issue: focal step / BCE step
BENCH_LR = 1e-3  # any value times the same; a small one keeps the repeated steps on one fixed batch from diverging


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=15, warmup=2)
    parser.add_argument("--cfgs", nargs="+", default=["yolov3-small.cfg", "yolov3-tiny.cfg"])
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="also time the bce step under torch.compile")
    parser.add_argument("--bf16", action="store_true",
                        help="every step as train.py runs it where bf16 is native: bf16 autocast, channels_last")
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, img_size=64, batch=2, repeats=2, warmup=1)
    if args.img_size % 32:
        parser.error(f"--img-size must be a multiple of 32, got {args.img_size}")
    return args


def make_step(model: Darknet, images: torch.Tensor, targets: torch.Tensor, loss_fn, bf16: bool = False):
    """A closure doing one optimiser step; ``loss_fn`` None means the trivial zero loss of the bare network."""
    optimizer = build_optimizer(model, dataclasses.replace(TrainConfig(), lr0=BENCH_LR))
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            raw_maps = [raw.float() for raw in model(images)]  # list of (B, A, H, W, 5+C)
        if loss_fn is None:
            loss = sum(raw.sum() for raw in raw_maps) * 0.0
        else:
            loss, _terms = loss_fn(raw_maps, targets)
        loss.backward()
        optimizer.step()

    return step


def bench_cfg(cfg_path: Path, args):
    torch.manual_seed(args.seed)
    images = torch.rand(args.batch, 3, args.img_size, args.img_size)  # (B, 3, S, S)
    base = common.randomize_weights(Darknet(cfg_path), images[:2], seed=args.seed)
    if args.bf16:  # train.py's layout and precision on a CPU with native bf16
        images = images.contiguous(memory_format=torch.channels_last)
        base.to(memory_format=torch.channels_last)
    targets = common.synthetic_targets(args.batch, base.num_classes, args.seed)  # (N, 6)
    bce_cfg = Config().loss
    focal_cfg = apply_overrides(Config(), ["loss.objectness.name=focal"]).loss
    models = {name: copy.deepcopy(base) for name in ("bare", "bce", "focal")}
    steps = {
        "bare": make_step(models["bare"], images, targets, None, args.bf16),
        "bce": make_step(models["bce"], images, targets, YOLOLoss.from_model(models["bce"], bce_cfg), args.bf16),
        "focal": make_step(models["focal"], images, targets, YOLOLoss.from_model(models["focal"], focal_cfg),
                           args.bf16),
    }
    compile_s = None
    if args.compile:
        models["compiled"] = copy.deepcopy(base)
        compiled = torch.compile(models["compiled"])
        compiled.num_classes = base.num_classes
        steps["compiled"] = make_step(compiled, images, targets, YOLOLoss.from_model(models["compiled"], bce_cfg),
                                      args.bf16)
        start = time.perf_counter()
        steps["compiled"]()  # compiles forward and backward
        steps["compiled"]()  # and the recompile some graphs take at their second call
        compile_s = time.perf_counter() - start
    times = common.interleaved_times(steps, args.repeats, args.warmup)
    loss_ms = float(np.median(times["bce"] - times["bare"])) * 1000
    stem = cfg_path.stem
    figures = [
        common.time_figure(f"{stem} train step (BCE loss) / bare network", times, "bce", "bare",
                           TARGET_LOSS_OVERHEAD, note=f"loss share ~{loss_ms:.1f} ms per step"),
        common.time_figure(f"{stem} train step focal / BCE objectness", times, "focal", "bce", TARGET_FOCAL_OVERHEAD),
    ]
    if compile_s is not None:
        figures.append(common.time_figure(f"{stem} train step torch.compile / eager (BCE)", times, "compiled", "bce",
                                          None, note=f"compiling took {compile_s:.1f} s (the first two steps)"))
    info = {"cfg": cfg_path.name, "img_size": args.img_size, "batch": args.batch, "num_targets": int(len(targets)),
            "num_classes": base.num_classes, "compile_s": compile_s, "bf16_channels_last": args.bf16}
    return figures, times, info


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.setup_threads(args.threads)
    common.warn_if_busy(args.threads)
    figures, timings, details = [], {}, {}
    for name in args.cfgs:
        cfg_path = common.resolve_cfg(name)
        print(f"{cfg_path.name} at {args.img_size}, batch {args.batch}: timing bare / BCE / focal steps...", flush=True)
        cfg_figures, times, info = bench_cfg(cfg_path, args)
        figures += cfg_figures
        timings[cfg_path.stem] = times
        details[cfg_path.stem] = info
    common.print_figures(f"training step, batch {args.batch} at {args.img_size}px, {args.threads} threads"
                         f"{', bf16 autocast, channels_last' if args.bf16 else ''} "
                         "(time ratio, lower is better)", figures)
    return common.write_results(args.out, "train_step", args, figures, timings, {"details": details})


if __name__ == "__main__":
    main()
