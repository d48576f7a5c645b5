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
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from yolov3 import config as config_lib
from yolov3.augment import random_rescale
from yolov3.checkpoint import (TrainState, best_checkpoint_needs_repair, lean_checkpoint, load_initial_weights,
                               load_resume, make_checkpoint, non_finite_weights, prepare_new_run_dir,
                               restore_pending_grads, restore_training, resumed_amp_mode)
from yolov3.config import ConfigError
from yolov3.data import as_single_class, create_dataloader, load_data_yaml
from yolov3.distributed import all_ranks_agree, cleanup_distributed, setup_distributed
from yolov3.diagnostics import DiagnosticsRecorder, objectness_statistics
from yolov3.draw import plot_batch
from yolov3.errors import user_errors
from yolov3.evaluate import LOSS_TERMS, EvalOptions, evaluate, format_table, objectness_samples
from yolov3.loss import YOLOLoss, apply_objectness_prior
from yolov3.model import Darknet
from yolov3.optim import (ModelEMA, accumulation_divisor, accumulation_steps, build_optimizer, freeze_layers,
                          set_learning_rates, unwrap)
from yolov3.plots import plot_labels, plot_results_csv
from yolov3.precision import environment_record, resolve_precision
from yolov3.runs import (TensorBoardLog, TrainLog, epochs_without_improvement, open_run_folder, weights_dir,
                         write_results_csv, write_summary)
from yolov3.train_cli import check_resume_flags, command_header, format_config, resolve_config
from yolov3.train_cli import parse_args as parse_train_args
from yolov3.utils import (OutputError, StopRequest, atomic_torch_save, atomic_write, atomic_write_text, increment_path,
                          seed_everything)


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the batch and what was kept."""


def parse_args(argv=None) -> argparse.Namespace:
    """The flags and the config keys they set: yolov3/train_cli.py (``--help`` lists them with their defaults)."""
    return parse_train_args(argv, description=__doc__)


def train(args: argparse.Namespace, log: TrainLog) -> dict:
    """One run: configuration and run folder, data, model and optimiser, the epoch loop, then summary.json.
    ``log`` is train.log (installed by main), attached to the run folder once it exists."""
    rank, local_rank, world_size, device = setup_distributed(args.device)
    is_main = rank in (-1, 0)

    # ---- configuration and run folder ----
    ckpt = None
    if args.resume is not None:
        check_resume_flags(args)
        ckpt, cfg, run_dir = load_resume(args.resume, args.project)
        if args.workers is not None:
            cfg = config_lib.apply_overrides(cfg, [f"train.workers={args.workers}"])
    else:
        cfg, notes = resolve_config(args)
        for note in notes if is_main else []:  # what --hyp translated, the size --cfg implied
            print(note)
        run_dir = increment_path(Path(args.project) / args.name, exist_ok=args.exist_ok)
        if is_main and run_dir.exists():
            prepare_new_run_dir(run_dir)  # refuses a folder holding another run before any work is done
    tcfg = cfg.train
    seed_everything(tcfg.seed + max(rank, 0))

    # ---- data ----
    data = load_data_yaml(cfg.data)
    data = as_single_class(data) if tcfg.single_cls else data  # every box as class 0, 'object'
    names = data["names"]
    if cfg.val.test and not data.get("test"):
        raise ConfigError(f"'val.test' is true but {cfg.data} has no 'test' split")
    if tcfg.batch_size % world_size:
        raise ConfigError(f"'train.batch_size' {tcfg.batch_size} must be divisible by the {world_size} processes")
    batch_per_process = tcfg.batch_size // world_size
    train_loader, train_set = create_dataloader(data, "train", tcfg.img_size, batch_per_process, cfg.augment,
                                                tcfg.workers, tcfg.seed, shuffle=True, cache=tcfg.cache,
                                                rank=rank, world_size=world_size, device=device)
    val_loader = None
    if is_main:
        val_loader, _ = create_dataloader(data, "val", tcfg.img_size, batch_per_process, None, tcfg.workers,
                                          tcfg.seed, shuffle=False, cache=tcfg.cache, device=device)

    # ---- model, loss, optimiser ----
    model = Darknet(ckpt["cfg_text"] if ckpt else cfg.cfg, num_classes=len(names))
    if ckpt is None and cfg.loss.obj_prior is not None:
        # before loading weights: heads that come from the weights keep their trained biases, fresh heads get pi
        apply_objectness_prior(model, cfg.loss.obj_prior)
    weights_note = None
    if ckpt is None and cfg.weights:
        weights_note = load_initial_weights(model, cfg.weights, cutoff=cfg.cutoff, cfg_path=cfg.cfg,
                                            allow_partial=args.allow_partial_weights)
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
        precision = resolve_precision(resumed_amp_mode(ckpt, tcfg.amp), device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    use_amp = precision.dtype is not None
    autocast_dtype = precision.dtype or torch.float32
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.scaler)
    ema = ModelEMA(model, tcfg.ema_decay, tcfg.ema_tau) if (tcfg.ema and is_main) else None

    # Every input is valid now: only from here on does the run leave anything on disk.
    tensorboard = None
    if is_main:
        environment = environment_record(device, precision)
        stale = open_run_folder(run_dir, cfg, environment, new=ckpt is None)
        log.attach(run_dir / "train.log", command_header(args, cfg, resumed=ckpt is not None))
        tensorboard = TensorBoardLog(run_dir)
        print(f"run folder: {run_dir}  device: {device}  world size: {world_size}  precision: {precision.name} "
              f"({precision.reason}; {environment['cpu_line']})"
              + (f"  (removed {len(stale)} temporary file(s) of a killed write)" if stale else ""))
        if weights_note:
            print(weights_note)
        print(tensorboard.status + (f"; {len(frozen)} frozen layer(s): {frozen}" if frozen else ""))
        if ckpt is None:  # what the labels hold: classes, where the boxes are, their sizes
            plot_labels(train_set.labels, names, run_dir / "labels.jpg")
    weights = weights_dir(run_dir)  # <run>/weights/, or the top of a run made before that layout
    state = TrainState(run_dir, sums=torch.zeros(len(LOSS_TERMS) + 1),  # where training stands (yolov3.checkpoint)
                       diagnostics=DiagnosticsRecorder(tcfg.diagnostics_every, tcfg.grad_clip))
    if ckpt is not None:
        restore_training(state, ckpt, model, optimizer, scaler if precision.scaler else None, ema)
        if is_main:
            if best_checkpoint_needs_repair(ckpt, weights / "best.pt"):  # killed between last.pt and best.pt
                atomic_torch_save(lean_checkpoint(ckpt), weights / "best.pt")
                print(f"best.pt restored from last.pt (epoch {state.best_epoch}): the process had stopped between "
                      "the two writes")
            print(f"resuming {run_dir} from epoch {state.completed_epochs + 1}/{tcfg.epochs}")
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    if ckpt is not None:
        restore_pending_grads(ckpt, model, device)

    start_epoch = state.completed_epochs
    iters_per_epoch = len(train_loader)
    warmup_iters = round(tcfg.warmup_epochs * iters_per_epoch)
    started = time.time() - (state.history[-1]["elapsed_s"] if state.history else 0.0) \
        - (ckpt or {}).get("partial_s", 0.0)
    results_csv = run_dir / "results.csv"
    evaluated = ema.ema if ema is not None else unwrap(model)  # what is validated, saved as 'model' and reported

    def checkpoint(full: bool) -> dict:
        return make_checkpoint(model, ema, optimizer, scaler, cfg, names, state, precision.name, full)

    def save_last() -> None:
        try:
            atomic_torch_save(checkpoint(full=True), weights / "last.pt")
        except OutputError as exc:  # disk full, folder made read-only: the previous last.pt is untouched
            raise OutputError(f"{exc}; {state.what_was_kept()}", exc.errno) from None
        state.mark_saved()

    def save_pending_best() -> None:
        if state.best_pending is not None:
            atomic_torch_save(state.best_pending, weights / "best.pt")
            state.best_pending = None

    # ---- the loop ----
    metrics: dict = {}  # the last validation's result; its per-class table closes the run
    stop_request = StopRequest("finishing this batch, then saving last.pt").install()
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            state.epoch_started = time.time() - (ckpt or {}).get("partial_s", 0.0) * (epoch == start_epoch)
            unwrap(model).train()
            train_set.set_epoch(epoch)
            skip = state.batches_done  # > 0 only when resuming inside this epoch
            train_loader.sampler.skip = skip * batch_per_process
            bar = tqdm(train_loader, total=iters_per_epoch, initial=skip, disable=not is_main,
                       dynamic_ncols=True, desc=f"epoch {epoch + 1}/{tcfg.epochs}")
            if not skip:
                optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            clipping = tcfg.grad_clip is not None and (tcfg.grad_clip_epochs is None or epoch < tcfg.grad_clip_epochs)
            max_norm = tcfg.grad_clip if clipping else math.inf  # train.grad_clip(_epochs)
            for batch_index, (images, targets, paths, _shapes) in enumerate(bar, start=skip):
                iteration = batch_index + iters_per_epoch * epoch
                lr = set_learning_rates(optimizer, tcfg, iteration, iters_per_epoch, warmup_iters)
                state.busy = True  # from here until the batch is recorded, memory is not a checkpoint
                images = images.to(device, non_blocking=True, memory_format=memory_format)
                targets = targets.to(device)
                if tcfg.multi_scale:
                    images = random_rescale(images, tcfg.img_size, seed=tcfg.seed * 1_000_003 + iteration)
                with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=use_amp):
                    raw_maps = [m.float() for m in model(images)]
                record = is_main and state.diagnostics.wants(epoch, iteration)  # diagnostics.csv gets this step
                if record:  # keep dL/d(raw maps) for the objectness-gradient shares
                    for m in raw_maps:
                        m.retain_grad()
                loss, terms = loss_fn(raw_maps, targets, masks=record)
                if all_ranks_agree(not torch.isfinite(loss).item(), world_size, device):
                    raise NonFiniteLoss(f"non-finite loss {loss.item()} at epoch {epoch + 1}, batch {batch_index}; "
                                        f"images: {', '.join(str(p) for p in paths)}; {state.what_was_kept()}")
                scaler.scale(loss / accumulation_divisor(batch_index, accumulate, iters_per_epoch)).backward()
                grad_norm = clipped = None
                if (batch_index + 1) % accumulate == 0 or batch_index + 1 == iters_per_epoch:
                    scaler.unscale_(optimizer)
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(  # the norm before clipping
                        model.parameters(), max_norm=max_norm))
                    clipped = state.diagnostics.optimizer_step(grad_norm, max_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model)
                if record:
                    stats = objectness_statistics(raw_maps, terms["masks"], images.shape[0])
                    state.diagnostics.record(epoch, iteration, lr, terms, stats, grad_norm, clipped)
                state.sums += torch.tensor([float(terms[t]) for t in LOSS_TERMS] + [float(loss.detach())])
                state.batches_done = batch_index + 1
                state.busy = False
                if all_ranks_agree(stop_request.requested, world_size, device):
                    raise KeyboardInterrupt  # Ctrl-C arrived during the batch: stop here, between batches
                means = state.sums / (batch_index + 1)
                bar.set_postfix_str(" ".join(f"{t} {means[k]:.3f}" for k, t in enumerate(LOSS_TERMS))
                                    + f" lr {lr:.2e}", refresh=False)  # drawn at the bar's own pace (mininterval)
                if is_main and epoch == 0 and batch_index == 0 and ckpt is None:
                    plot_batch(images.detach().cpu(), targets.cpu(), paths, names, run_dir / "train_batch0.png")
            train_loader.sampler.skip = 0

            # ---- end of epoch: validate, log, save (main process only) ----
            means = state.sums / max(iters_per_epoch, 1)
            epoch_diagnostics = state.diagnostics.end_epoch()
            final_epoch = epoch + 1 == tcfg.epochs
            if not is_main:
                state.start_epoch_after(epoch + 1)
                if all_ranks_agree(stop_request.requested, world_size, device):
                    raise KeyboardInterrupt
                if all_ranks_agree(False, world_size, device):  # rank 0 decides on early stopping
                    break
                continue
            broken = non_finite_weights(model, evaluated)
            if broken is not None:  # a diverged model must be neither validated nor saved
                raise NonFiniteLoss(f"the weights became NaN or infinite during epoch {epoch + 1} (first in "
                                    f"'{broken}') although each batch's loss was finite; nothing of this epoch was "
                                    f"saved; {state.what_was_kept()}")
            if final_epoch or (not args.noval and (epoch + 1) % cfg.val.interval == 0):
                options = EvalOptions(cfg.val.conf_thres, cfg.val.iou_thres, cfg.val.max_det,
                                      plot_dir=run_dir if final_epoch else None)
                metrics = evaluate(evaluated, val_loader, names, device, options, loss_fn=loss_fn)
            else:
                metrics = {k: float("nan") for k in ("precision", "recall", "mAP50", "mAP50_95", "val_box",
                                                      "val_obj", "val_noobj", "val_cls")}
            row = {"epoch": epoch + 1, **{f"train_{t}": float(means[k]) for k, t in enumerate(LOSS_TERMS)},
                   "train_total": float(means[-1]), "lr": float(lr),
                   **{k: float(metrics[k]) for k in ("precision", "recall", "mAP50", "mAP50_95")},
                   **{k: float(metrics.get(k, float("nan"))) for k in ("val_box", "val_obj", "val_noobj",
                                                                        "val_cls")},
                   "epoch_time_s": time.time() - state.epoch_started, "elapsed_s": time.time() - started,
                   **epoch_diagnostics}
            improved = state.record_epoch(row)
            tensorboard.log_epoch(row)
            stop = bool(tcfg.patience) and epochs_without_improvement(state.history) > tcfg.patience
            save_now = not args.nosave or final_epoch or stop
            if improved:  # best.pt-to-be: kept in memory (a copy, as training goes on) until it may be written
                best = checkpoint(full=False)
                state.best_pending = best if save_now else {**best, "model": {
                    key: value.detach().clone() for key, value in best["model"].items()}}
            write_results_csv(results_csv, state.history)
            atomic_write_text(run_dir / "diagnostics.csv", state.diagnostics.csv_text())
            plot_results_csv(results_csv, run_dir / "results.png")
            print(f"epoch {epoch + 1}: P {row['precision']:.3f} R {row['recall']:.3f} "
                  f"mAP@.5 {row['mAP50']:.3f} mAP@.5:.95 {row['mAP50_95']:.3f}  ({row['epoch_time_s']:.0f} s)")
            if save_now:
                # last.pt first: it records best_epoch, so a process killed before best.pt is written gets
                # best.pt back from last.pt on --resume (checkpoint.best_checkpoint_needs_repair)
                save_last()
                save_pending_best()
                if tcfg.save_period and (epoch + 1) % tcfg.save_period == 0:
                    atomic_torch_save(checkpoint(full=False), weights / f"epoch{epoch + 1}.pt")
            if stop:
                print(f"stopping early: no improvement for {tcfg.patience} validated epochs")
            if all_ranks_agree(stop_request.requested, world_size, device):
                raise KeyboardInterrupt  # Ctrl-C during validation or saving: the epoch is complete
            if all_ranks_agree(stop, world_size, device):
                break
    except KeyboardInterrupt:
        if is_main:
            if state.busy:  # a second Ctrl-C inside a batch: its gradients or weights are half updated
                note = f"stopped at once inside a batch, so nothing was saved; {state.what_was_kept()}"
            elif non_finite_weights(model, evaluated) is not None:
                note = f"the weights are NaN or infinite, so they were not saved; {state.what_was_kept()}"
            else:
                save_pending_best()  # mid-epoch, last.pt cannot restore it (its weights moved on): best.pt first
                save_last()
                note = (f"saved {weights / 'last.pt'} ({state.completed_epochs} epochs and "
                        f"{state.batches_done} batches done)")
            resumable = state.saved is not None
            print(f"\ninterrupted: {note}" + (f"; continue with: python train.py --resume {run_dir}" if resumable
                                                else ""), file=sys.stderr)
        raise
    finally:
        stop_request.restore()
        if tensorboard is not None:
            tensorboard.close()

    summary = {}
    if is_main:
        if state.history and "per_class" in metrics:
            print(format_table(metrics))  # the final validation, class by class
        test_loader = None
        if cfg.val.test:  # once, at the end: a split no choice of this run has looked at
            test_loader, _ = create_dataloader(data, "test", tcfg.img_size, batch_per_process, None, tcfg.workers,
                                               tcfg.seed, shuffle=False, device=device)
        summary = finish_run(run_dir, cfg, evaluated, loss_fn, val_loader, device, state.history, started,
                             precision.name, metrics if state.history else {}, test_loader, names)
    cleanup_distributed(world_size)
    return summary


def finish_run(run_dir, cfg, model, loss_fn, val_loader, device, history, started, precision: str,
               final_metrics: dict, test_loader, names) -> dict:
    """summary.json (with the final validation's per-class rows and, with val.test, the test split's scores) and the
    objectness-loss distributions of the final model (read by the ablation report)."""
    samples = objectness_samples(model, val_loader, cfg.loss, device, seed=cfg.train.seed)
    samples["neg_logit"] = samples["neg_logit"].astype(np.float16)  # the largest array: half the file; ~1% in a tail loss
    atomic_write(run_dir / "objectness_losses.npz", lambda fh: np.savez_compressed(fh, **samples))
    extra = {"per_class": final_metrics["per_class"]} if "per_class" in final_metrics else {}
    if test_loader is not None:
        scored = evaluate(model, test_loader, names, device,
                          EvalOptions(cfg.val.conf_thres, cfg.val.iou_thres, cfg.val.max_det))
        extra["test"] = {k: scored[k] for k in ("precision", "recall", "mAP50", "mAP50_95", "per_class")}
        print(f"test split: mAP@.5 {scored['mAP50']:.3f} mAP@.5:.95 {scored['mAP50_95']:.3f}")
    summary = write_summary(run_dir, history, time.time() - started, precision, extra)
    final = history[-1] if history else {}
    print(f"done in {summary['wall_time_s'] / 60:.1f} min: mAP@.5 {final.get('mAP50', float('nan')):.3f} "
          f"mAP@.5:.95 {final.get('mAP50_95', float('nan')):.3f}; weights in {run_dir}")
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
    sys.exit(main())
