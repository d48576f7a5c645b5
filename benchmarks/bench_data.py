"""Does the training data pipeline keep up? Images/s it delivers against images/s a training step consumes.

Loader: ``create_dataloader`` on the train split of ``data/shapes.yaml`` with the default ``AugmentConfig``
(mosaic on) and ``TrainConfig().workers`` worker processes, at the default training size (256) and batch (16),
exactly as train.py builds it. Consumer: one training step of ``cfg/yolov3-small.cfg`` (forward, default YOLOLoss,
backward, SGD step) on a batch of that loader.

The two are timed in alternating blocks, each with the other idle:
  * loader block: first take the batches the workers prefetched while the previous block ran (untimed, they would
    come for free), then time ``--loader-batches`` batches: the steady production rate, including the uint8 ->
    float conversion that happens in the main process;
  * training block: one untimed step (it absorbs the workers refilling their prefetch queue), then
    ``--train-steps`` timed steps.
Figure: loader images/s / training images/s, target >= 2, so that the loader keeps the step fed even while both
share the CPU during real training.

    python benchmarks/bench_data.py [--data data/shapes.yaml] [--img-size 256] [--batch 16] [--workers N]
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterator

import common  # first: puts the repository root on sys.path
import numpy as np
import torch

from yolov3.config import AugmentConfig, Config, TrainConfig
from yolov3.data import create_dataloader, load_data_yaml
from yolov3.loss import YOLOLoss
from yolov3.model import Darknet
from yolov3.optim import build_optimizer

TARGET = 2.0  # the issue: the loader delivers at least twice what training consumes
PREFETCH_FACTOR = 2  # torch DataLoader's default: batches each worker prepares ahead (create_dataloader keeps it)
BENCH_LR = 1e-3  # any value times the same; small keeps repeated steps on one batch from diverging


def parse_args(argv=None):
    defaults = TrainConfig()
    parser = common.base_parser(__doc__, repeats=8, warmup=1)
    parser.add_argument("--data", default=str(common.REPO_ROOT / Config().data), help="dataset YAML")
    parser.add_argument("--cfg", default=str(common.REPO_ROOT / Config().cfg), help="model of the training step")
    parser.add_argument("--img-size", type=int, default=defaults.img_size)
    parser.add_argument("--batch", type=int, default=defaults.batch_size)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="loader worker processes "
                                                                             f"(default {defaults.workers})")
    parser.add_argument("--loader-batches", type=int, default=10, help="timed batches per loader block")
    parser.add_argument("--train-steps", type=int, default=3, help="timed steps per training block")
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, img_size=128, batch=4, loader_batches=2, train_steps=1, repeats=2, warmup=1)
    return args


def endless_batches(loader, dataset) -> Iterator:
    """Batches across epoch boundaries, calling ``set_epoch`` as train.py does."""
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.setup_threads(args.threads)
    common.warn_if_busy(args.threads)
    data = load_data_yaml(args.data)
    loader, dataset = create_dataloader(data, "train", args.img_size, args.batch, AugmentConfig(), args.workers,
                                        args.seed, shuffle=True, progress=False)
    workers = loader.num_workers
    batches = endless_batches(loader, dataset)
    print(f"{Path(args.data).name}: {len(dataset)} train images, mosaic {AugmentConfig().mosaic}, {workers} workers, "
          f"batch {args.batch} at {args.img_size}", flush=True)

    torch.manual_seed(args.seed)
    images, targets, _paths, _shapes = next(batches)  # the training step's fixed batch
    model = Darknet(args.cfg, num_classes=len(data["names"])).train()
    loss_fn = YOLOLoss.from_model(model, Config().loss)
    optimizer = build_optimizer(model, dataclasses.replace(TrainConfig(), lr0=BENCH_LR))

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss, _terms = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()

    def loader_block() -> common.SelfTimed:
        for _ in range(PREFETCH_FACTOR * workers):  # ready since the last block: free, so not timed
            next(batches)
        count = 0
        start = time.perf_counter()
        for _ in range(args.loader_batches):
            count += len(next(batches)[0])
        seconds_per_image = (time.perf_counter() - start) / count
        return common.SelfTimed(seconds_per_image * args.batch)  # per full batch, comparable with a step

    def train_block() -> common.SelfTimed:
        train_step()  # untimed: the workers refill their prefetch queue during it
        start = time.perf_counter()
        for _ in range(args.train_steps):
            train_step()
        return common.SelfTimed((time.perf_counter() - start) / args.train_steps)

    times = common.interleaved_times({"loader": loader_block, "train_step": train_block}, args.repeats, args.warmup)
    loader_ips = args.batch / np.median(times["loader"])
    train_ips = args.batch / np.median(times["train_step"])
    # ratio of throughputs = (time per batch of the step) / (time per batch of the loader), paired per round
    figure = common.time_figure(f"loader images/s / training images/s ({Path(args.cfg).stem})", times,
                                "train_step", "loader", TARGET, ">=",
                                note=f"loader {loader_ips:.1f} img/s with {workers} workers; training consumes "
                                     f"{train_ips:.1f} img/s; ms columns: step / loader time per batch of "
                                     f"{args.batch}")
    common.print_figures(f"data pipeline with mosaic, {args.threads} threads in the main process "
                         "(throughput ratio, higher is better)", [figure])
    details = {"dataset": args.data, "train_images": len(dataset), "workers": workers,
               "augment": dataclasses.asdict(AugmentConfig()), "loader_images_per_s": float(loader_ips),
               "train_images_per_s": float(train_ips)}
    return common.write_results(args.out, "data", args, [figure], {"data": times}, {"details": details})


if __name__ == "__main__":
    main()
