#!/usr/bin/env python
"""Train a YOLOv3-family detector described by a Darknet .cfg.

    python train.py                                    # small model, built-in shapes dataset, CPU-friendly defaults
    python train.py --cfg cfg/yolov3-tiny.cfg --data data/voc.yaml --imgsz 416 --epochs 100
    python train.py --hyp hyp.scratch-low.yaml         # a yolov5 hyp file, translated (or one of ours)
    python train.py loss.objectness.name=focal loss.objectness.gamma=2 loss.objectness.alpha=0.25
    python train.py --print-config                     # every config key, its default and why
    python train.py --resume                           # continue the most recent run (or --resume runs/train/exp)
    torchrun --nproc_per_node 2 train.py ...           # DDP: NCCL on GPUs, gloo on CPU

Configuration: defaults (yolov3/config.py) <- --hyp YAML <- the flags below <- dotted key=value overrides.
The run folder (runs/train/<name>/) gets config.yaml, train.log, results.csv, results.png, labels.jpg,
weights/last.pt, weights/best.pt, val_batch0_labels.jpg / val_batch0_pred.jpg and summary.json.
"""
from __future__ import annotations

import argparse
import math
import sys
import traceback

import torch

from yolov3.augment import random_rescale
from yolov3.bookkeeping import Bookkeeper, NonFiniteLoss, start_run
from yolov3.checkpoint import load_initial_weights, resumed_amp_mode
from yolov3.config import ConfigError
from yolov3.data import as_single_class, create_dataloader, load_data_yaml
from yolov3.distributed import cleanup_distributed, setup_distributed
from yolov3.errors import user_errors
from yolov3.evaluate import evaluate
from yolov3.labels import split_images
from yolov3.loss import YOLOLoss, apply_objectness_prior
from yolov3.memory import keep_freed_memory
from yolov3.model import Darknet
from yolov3.optim import (ModelEMA, accumulation_divisor, accumulation_steps, build_optimizer, freeze_layers,
                          set_learning_rates, unwrap)
from yolov3.precision import resolve_precision
from yolov3.runs import TrainLog
from yolov3.train_cli import format_config, resolve_config
from yolov3.train_cli import parse_args as parse_train_args
from yolov3.utils import seed_everything


def parse_args(argv=None) -> argparse.Namespace:
    """The flags and the config keys they set: yolov3/train_cli.py (``--help`` lists them with their defaults)."""
    return parse_train_args(argv, description=__doc__)


def train(args: argparse.Namespace, log: TrainLog) -> dict:
    """One run: data, model and optimiser, the epoch loop, then summary.json. Everything besides training the model
    (run folder, checkpoints and resuming, Ctrl-C, DDP agreement, NaN guard, diagnostics) is ``book``'s
    (yolov3/bookkeeping.py). ``log`` is train.log (installed by main), attached to the run folder once it exists."""
    rank, local_rank, world_size, device = setup_distributed(args.device)
    is_main = rank in (-1, 0)
    plan = start_run(args, is_main)  # the flags resolved once: from here on only the config (and plan) decide
    cfg, tcfg, ckpt = plan.cfg, plan.cfg.train, plan.checkpoint
    seed_everything(tcfg.seed + max(rank, 0))

    # ---- data ----
    data = load_data_yaml(cfg.data)
    data = as_single_class(data) if tcfg.single_cls else data  # every box as class 0, 'object'
    names = data["names"]
    if cfg.val.test and not data.get("test"):
        raise ConfigError(f"'val.test' is true but {cfg.data} has no 'test' split")
    for split in ("train", "val") + (("test",) if cfg.val.test else ()):
        split_images(data, split)  # a split that is missing or empty fails now, not after the train scan
    if tcfg.batch_size % world_size:
        raise ConfigError(f"'train.batch_size' {tcfg.batch_size} must be divisible by the {world_size} processes")
    batch_per_process = tcfg.batch_size // world_size

    def loader(split, augment=None, **kwargs):
        return create_dataloader(data, split, tcfg.img_size, batch_per_process, augment, tcfg.workers, tcfg.seed,
                                 device=device, **kwargs)

    train_loader, train_set = loader("train", cfg.augment, shuffle=True, cache=tcfg.cache, rank=rank,
                                     world_size=world_size)
    val_loader = loader("val", shuffle=False, cache=tcfg.cache)[0] if is_main else None

    # ---- model, loss, optimiser ----
    model = Darknet(ckpt["cfg_text"] if ckpt else cfg.cfg, num_classes=len(names))
    if ckpt is None and cfg.loss.obj_prior is not None:
        # before loading weights: heads that come from the weights keep their trained biases, fresh heads get pi
        apply_objectness_prior(model, cfg.loss.obj_prior)
    weights_note = None
    if ckpt is None and cfg.weights:
        weights_note = load_initial_weights(model, cfg.weights, cutoff=cfg.cutoff, cfg_path=cfg.cfg,
                                            allow_partial=plan.allow_partial_weights)
    frozen = freeze_layers(model, tcfg.freeze) if tcfg.freeze else []  # before the optimiser: it skips them
    model.to(device)
    if world_size > 1 and tcfg.sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = YOLOLoss.from_model(model, cfg.loss)
    # optimiser step every `accumulate` batches on the mean gradient of those batches (accumulation_divisor), so
    # weight decay and lr need no rescaling: a step sees the gradient of one nominal batch whatever the batch size
    accumulate = accumulation_steps(tcfg.nominal_batch, tcfg.batch_size)
    optimizer = build_optimizer(model, tcfg)
    try:
        precision = resolve_precision(resumed_amp_mode(ckpt, tcfg.amp), device, resumed=ckpt is not None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.scaler)
    ema = ModelEMA(model, tcfg.ema_decay, tcfg.ema_tau) if (tcfg.ema and is_main) else None

    # ---- bookkeeping: only from here on does the run leave anything on disk ----
    book = Bookkeeper(plan, names, precision, device, world_size, is_main)
    book.open(log, train_set.labels, weights_note, frozen)
    book.attach(model, optimizer, scaler, ema)  # resuming: last.pt's state goes back into them
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    book.restore_gradients(model)
    iters_per_epoch = len(train_loader)
    warmup_iters = round(tcfg.warmup_epochs * iters_per_epoch)

    # ---- the loop ----
    with book.stopping_on_ctrl_c():  # Ctrl-C: finish the batch, save last.pt, exit 130
        for epoch in book.epochs():
            unwrap(model).train()
            train_set.set_epoch(epoch)
            skip = book.batches_done  # > 0 only when resuming inside this epoch
            train_loader.sampler.skip = skip * batch_per_process
            if not skip:
                optimizer.zero_grad(set_to_none=True)
            clipping = tcfg.grad_clip is not None and (tcfg.grad_clip_epochs is None or epoch < tcfg.grad_clip_epochs)
            max_norm = tcfg.grad_clip if clipping else math.inf  # train.grad_clip(_epochs)
            for batch_index, (images, targets, paths, _) in enumerate(book.progress(train_loader, epoch), start=skip):
                iteration = batch_index + iters_per_epoch * epoch
                lr = set_learning_rates(optimizer, tcfg, iteration, iters_per_epoch, warmup_iters)
                book.start_batch(epoch, batch_index, iteration, lr)
                images = images.to(device, non_blocking=True, memory_format=memory_format)
                targets = targets.to(device)
                if tcfg.multi_scale:
                    images = random_rescale(images, tcfg.img_size, seed=tcfg.seed * 1_000_003 + iteration)
                with torch.autocast(device_type=device.type, dtype=precision.dtype or torch.float32,
                                    enabled=precision.dtype is not None):
                    raw_maps = [m.float() for m in model(images)]
                record = book.watch(raw_maps)  # diagnostics.csv records this step: keep dL/d(raw maps)
                loss, terms = loss_fn(raw_maps, targets, masks=record)
                book.check_loss(loss, paths)  # NaN or inf on any rank: every rank stops, before backward
                scaler.scale(loss / accumulation_divisor(batch_index, accumulate, iters_per_epoch)).backward()
                if (batch_index + 1) % accumulate == 0 or batch_index + 1 == iters_per_epoch:
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
                    book.optimizer_step(float(grad_norm), max_norm)  # the norm before clipping
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model)
                book.end_batch(loss, terms, images, targets, paths)  # a Ctrl-C on any rank stops here
            train_loader.sampler.skip = 0

            metrics = None  # validation: main process only
            if is_main:
                book.check_weights(epoch)  # a diverged model is neither validated nor saved
                options = book.validation_options(epoch)  # None: not this epoch (val.interval, --noval)
                if options is not None:
                    metrics = evaluate(book.evaluated, val_loader, names, device, options, loss_fn=loss_fn)
            if book.end_epoch(epoch, metrics):  # results, checkpoints; every rank agrees on stopping
                break

    summary = {}
    if is_main:
        book.print_final_table()
        # the test split once, at the end: a split no choice of this run has looked at
        test_loader = loader("test", shuffle=False)[0] if cfg.val.test else None
        summary = book.finish(loss_fn, val_loader, test_loader)
    cleanup_distributed(world_size)
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    log = TrainLog().install()  # train.log: what this run prints, line by line (kept once its folder exists)
    try:
        if args.print_config:
            print(format_config(resolve_config(args)[0]))
        else:
            train(args, log)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLoss as exc:
        print(f"error: {exc}\nlower train.lr0, or check the labels of the images named above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug rather than a mistake of the user's: its traceback in train.log too
        for line in traceback.format_exc().splitlines():
            log.write_line(line)
        raise
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # the command's own process only: every step reuses the same memory (yolov3/memory.py)
    sys.exit(main())
