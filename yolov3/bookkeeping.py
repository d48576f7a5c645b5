"""Everything train.py does besides training the model, behind one object: a :class:`Bookkeeper`.

    plan = start_run(args, is_main)                 # the flags resolved once: config, run folder, last.pt to resume
    book = Bookkeeper(plan, names, precision, device, world_size, is_main)
    book.open(log, labels, weights_note, frozen)    # the run folder's first files: nothing is written before
    book.attach(model, optimizer, scaler, ema)      # what checkpoints hold; a resumed run's state goes back into it
    with book.stopping_on_ctrl_c():
        for epoch in book.epochs():
            for ... in book.progress(loader, epoch):
                book.start_batch(...); book.watch(raw_maps); book.check_loss(loss, paths)
                book.optimizer_step(grad_norm, max_norm); book.end_batch(loss, terms, images, targets, paths)
            book.check_weights(epoch); book.validation_options(epoch); book.end_epoch(epoch, metrics)
    book.print_final_table(); book.finish(loss_fn, val_loader, test_loader)

The rules it keeps, so that train.py need not:

* **Checkpoint order.** At an epoch end last.pt is written before best.pt: last.pt records ``best_epoch``, so a
  process killed between the two writes gets best.pt back from last.pt on --resume
  (:func:`yolov3.checkpoint.best_checkpoint_needs_repair`, applied by :meth:`Bookkeeper.attach`). After a Ctrl-C
  inside an epoch best.pt goes first: last.pt's weights have moved on and could not restore it.
* **Ctrl-C.** The first one finishes the batch (:class:`yolov3.utils.StopRequest`), saves last.pt and exits 130
  with a --resume hint; a second one stops at once, and nothing is saved while a batch is half done.
* **DDP.** Every stop is agreed by all ranks through :class:`RankAgreement`, whose rule is stated there.
* **NaN guard.** A non-finite loss stops the run before its backward pass; non-finite weights are neither validated
  nor saved; each message says which last.pt survives (:meth:`yolov3.checkpoint.TrainState.what_was_kept`).
* **Diagnostics.** diagnostics.csv gets the steps :class:`yolov3.diagnostics.DiagnosticsRecorder` wants, with the
  objectness gradients of the raw maps.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from yolov3 import config as config_lib
from yolov3.checkpoint import (TrainState, best_checkpoint_needs_repair, lean_checkpoint, load_resume,
                               make_checkpoint, non_finite_weights, prepare_new_run_dir, restore_pending_grads,
                               restore_training)
from yolov3.config import Config
from yolov3.diagnostics import DiagnosticsRecorder, objectness_statistics
from yolov3.distributed import all_reduce_max
from yolov3.draw import plot_batch
from yolov3.evaluate import LOSS_TERMS, EvalOptions, evaluate, format_table, objectness_samples
from yolov3.optim import unwrap
from yolov3.plots import plot_labels, plot_results_csv
from yolov3.precision import Precision, environment_record
from yolov3.runs import (TensorBoardLog, TrainLog, epochs_without_improvement, objectness_record, open_run_folder,
                         weights_dir, write_results_csv, write_summary)
from yolov3.train_cli import check_resume_flags, command_header, resolve_config
from yolov3.utils import OutputError, StopRequest, atomic_torch_save, atomic_write, atomic_write_text, increment_path

VALIDATION_KEYS = ("precision", "recall", "mAP50", "mAP50_95", "val_box", "val_obj", "val_noobj", "val_cls")


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the batch and what was kept."""


# --------------------------------------------------------------------------------------------------------------------
# DDP: stopping together
# --------------------------------------------------------------------------------------------------------------------
class RankAgreement:
    """The decisions that stop training, taken by all ranks together (one flag true on any rank: true on all).

    **The rule.** Every rank calls :meth:`any` at the same points, in the same order, the same number of times:
    ``"loss"`` once per batch (a non-finite loss, before backward), ``"batch"`` once per batch (a Ctrl-C, after the
    batch is recorded) and ``"epoch"`` once per epoch (a Ctrl-C, and rank 0's early stop, after rank 0 has validated
    and saved). Each call is a collective that waits for every rank: a rank that calls once more, or at another point,
    would hang the others or pair its decision with an unrelated one. So every call carries its point, epoch and batch,
    and a call that meets a different one raises on every rank at once, naming both, instead of hanging.

    A single process (``world_size`` 1) agrees with itself without any collective. ``all_reduce_max`` replaces a
    tensor in place by its elementwise maximum over the ranks (:func:`yolov3.distributed.all_reduce_max`; the tests
    pass their own).
    """

    POINTS = ("loss", "batch", "epoch")
    MAX_FLAGS = 2  # every call reduces the same tensor size, whatever its number of flags
    BATCHES = 2**24  # positions are exact in float64 up to this many batches per epoch (and 2**27 epochs)

    def __init__(self, world_size: int, device: torch.device,
                 all_reduce_max: Callable[[Tensor], None] = all_reduce_max) -> None:
        self.world_size, self.device, self._all_reduce_max = world_size, device, all_reduce_max

    def any(self, point: str, epoch: int, batch: int, *flags: bool) -> Tuple[bool, ...]:
        """For each flag: whether it is true on any rank. ``batch`` is -1 for the per-epoch point."""
        if point not in self.POINTS or not 0 < len(flags) <= self.MAX_FLAGS:
            raise ValueError(f"RankAgreement.any: point {point!r} with {len(flags)} flags")
        if self.world_size == 1:
            return tuple(bool(flag) for flag in flags)
        position = float(self._position(point, epoch, batch))
        padded = [float(bool(flag)) for flag in flags] + [0.0] * (self.MAX_FLAGS - len(flags))
        # the maximum of the position and of its negative: the highest and the lowest, equal when in step
        values = torch.tensor(padded + [position, -position], dtype=torch.float64, device=self.device)
        self._all_reduce_max(values)
        reduced = values.tolist()
        highest, lowest = int(reduced[self.MAX_FLAGS]), int(-reduced[self.MAX_FLAGS + 1])
        if highest != lowest:
            raise RuntimeError(f"DDP ranks out of step: one rank is at {self._describe(lowest)}, another at "
                               f"{self._describe(highest)}; every rank must reach the same agreement points in the "
                               "same order (yolov3.bookkeeping.RankAgreement)")
        return tuple(value > 0 for value in reduced[:len(flags)])

    def _position(self, point: str, epoch: int, batch: int) -> int:
        """(epoch, batch, point) as one number, a different one for each place, so that one all_reduce of it and
        of its negative finds whether every rank is at the same place (and names the two extremes if not)."""
        return (epoch * self.BATCHES + batch + 1) * len(self.POINTS) + self.POINTS.index(point)

    def _describe(self, position: int) -> str:
        rest, point = divmod(position, len(self.POINTS))
        epoch, batch = divmod(rest, self.BATCHES)
        return f"'{self.POINTS[point]}' of epoch {epoch + 1}" + (f", batch {batch - 1}" if batch > 0 else "")


# --------------------------------------------------------------------------------------------------------------------
# The flags, resolved once
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPlan:
    """What train.py's flags decide, resolved before anything is built: the loop reads this and the config, never
    the flags."""

    cfg: Config  # resolved (defaults <- --hyp <- flags <- overrides), or last.pt's when resuming
    run_dir: Path
    checkpoint: Optional[dict]  # last.pt's content when resuming, else None
    log_header: Tuple[str, ...]  # train.log's first lines for this process (yolov3.train_cli.command_header)
    allow_partial_weights: bool  # --allow-partial-weights
    noval: bool  # --noval: validate only after the final epoch
    nosave: bool  # --nosave: save only the final checkpoint

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None


def start_run(args: argparse.Namespace, is_main: bool) -> RunPlan:
    """The config and run folder of a new run (a folder holding another run is refused before any work is done),
    or of the run ``--resume`` continues (its saved config; only ``--workers`` and the other RESUME_FLAGS may
    change)."""
    checkpoint = None
    if args.resume is not None:
        check_resume_flags(args)
        checkpoint, cfg, run_dir = load_resume(args.resume, args.project)
        if args.workers is not None:
            cfg = config_lib.apply_overrides(cfg, [f"train.workers={args.workers}"])
    else:
        cfg, notes = resolve_config(args)
        for note in notes if is_main else []:  # what --hyp translated, the size --cfg implied
            print(note)
        run_dir = increment_path(Path(args.project) / args.name, exist_ok=args.exist_ok)
        if is_main and run_dir.exists():
            prepare_new_run_dir(run_dir)
    header = tuple(command_header(args, cfg, resumed=checkpoint is not None))
    return RunPlan(cfg, run_dir, checkpoint, header, args.allow_partial_weights, args.noval, args.nosave)


# --------------------------------------------------------------------------------------------------------------------
# The bookkeeper
# --------------------------------------------------------------------------------------------------------------------


def best_pt_note(history: list, best_epoch: int) -> str:
    """What the run's last line adds when best.pt is not the last epoch's model: val.py and detect.py take a run
    folder's best.pt, so its epoch and score are said beside the last epoch's (empty when they are the same)."""
    best = next((row for row in history if row.get("epoch") == best_epoch), None)
    if best is None or best_epoch == history[-1].get("epoch"):  # (no history: no best row either)
        return ""
    return (f" (epoch {history[-1]['epoch']}); best.pt, which val.py and detect.py take from the run folder, is epoch "
            f"{best_epoch}: mAP@.5:.95 {best.get('mAP50_95', float('nan')):.3f}")


class Bookkeeper:
    """The run folder, checkpoints and resuming, Ctrl-C, the DDP stop agreement, the NaN guard and the diagnostics of
    one training run (the module docstring gives the calls in order and the rules they keep).

    Every rank has one; only the main process (``is_main``) writes files, validates and prints."""

    def __init__(self, plan: RunPlan, names: Sequence[str], precision: Precision, device: torch.device,
                 world_size: int, is_main: bool) -> None:
        self.plan, self.cfg, self.run_dir = plan, plan.cfg, plan.run_dir
        self.names, self.precision, self.device, self.is_main = list(names), precision, device, is_main
        self.world_size = world_size
        self.weights = weights_dir(plan.run_dir)  # <run>/weights/, or the top of a run made before that layout
        self.agreement = RankAgreement(world_size, device)
        self.stop_request = StopRequest("finishing this batch, then saving last.pt")
        self.state = TrainState(plan.run_dir, sums=torch.zeros(len(LOSS_TERMS) + 1),
                                diagnostics=DiagnosticsRecorder(self.cfg.train.diagnostics_every,
                                                                self.cfg.train.grad_clip))
        self.tensorboard: Optional[TensorBoardLog] = None
        self.metrics: dict = {}  # the last validation's result: its per-class table closes the run
        self.started = time.time()
        self.iters_per_epoch = 0
        self.lr = 0.0
        self.epoch = self.batch_index = self.iteration = 0
        self._bar = None
        self._step: Optional[tuple] = None  # (grad_norm, clipped) when this batch stepped the optimiser
        self._recorded_maps: Optional[list] = None  # this batch's raw maps, when diagnostics.csv records it

    # ---- start ----------------------------------------------------------------------------------------------------
    def open(self, log: TrainLog, labels: Sequence[np.ndarray], weights_note: Optional[str], frozen: list) -> None:
        """Every input is valid now: the run folder gets its first files (config.yaml, environment.json), train.log
        and TensorBoard attach, and the terminal learns where the run goes; a new run draws labels.jpg."""
        if not self.is_main:
            return
        environment = environment_record(self.device, self.precision)
        stale = open_run_folder(self.run_dir, self.cfg, environment, new=not self.plan.resuming)
        log.attach(self.run_dir / "train.log", self.plan.log_header)
        self.tensorboard = TensorBoardLog(self.run_dir)
        precision = self.precision
        print(f"run folder: {self.run_dir}  device: {self.device}  world size: {self.world_size}  precision: "
              f"{precision.name} ({precision.reason}; {environment['cpu_line']})"
              + (f"  (removed {len(stale)} temporary file(s) of a killed write)" if stale else ""))
        if weights_note:
            print(weights_note)
        print(self.tensorboard.status + (f"; {len(frozen)} frozen layer(s): {frozen}" if frozen else ""))
        if not self.plan.resuming:  # what the labels hold: classes, where the boxes are, their sizes
            plot_labels(labels, self.names, self.run_dir / "labels.jpg")

    def attach(self, model: nn.Module, optimizer, scaler, ema) -> None:
        """The objects a checkpoint holds (``model`` not yet wrapped for DDP). Resuming, last.pt's state goes back
        into them and into where training stands, mid-epoch included, and best.pt is repaired if the process died
        between the two writes; the pending gradients follow with :meth:`restore_gradients`."""
        self.model, self.optimizer, self.scaler, self.ema = unwrap(model), optimizer, scaler, ema
        self.evaluated = ema.ema if ema is not None else self.model  # validated, saved as 'model' and reported
        checkpoint = self.plan.checkpoint
        if checkpoint is not None:
            restore_training(self.state, checkpoint, self.model, optimizer,
                             scaler if self.precision.scaler else None, ema)
            if self.is_main:
                if best_checkpoint_needs_repair(checkpoint, self.weights / "best.pt"):
                    atomic_torch_save(lean_checkpoint(checkpoint), self.weights / "best.pt")
                    print(f"best.pt restored from last.pt (epoch {self.state.best_epoch}): the process had stopped "
                          "between the two writes")
                print(f"resuming {self.run_dir} from epoch {self.state.completed_epochs + 1}/{self.cfg.train.epochs}")
        history = self.state.history
        self.started = (time.time() - (history[-1]["elapsed_s"] if history else 0.0)
                        - (checkpoint or {}).get("partial_s", 0.0))

    def restore_gradients(self, model: nn.Module) -> None:
        """The gradients a mid-epoch last.pt had accumulated towards its next optimiser step (after the DDP wrap)."""
        if self.plan.checkpoint is not None:
            restore_pending_grads(self.plan.checkpoint, model, self.device)

    # ---- the loop -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stopping_on_ctrl_c(self) -> Iterator[None]:
        """Around the loop: Ctrl-C becomes a request to stop between batches; whatever stops the loop with
        KeyboardInterrupt, the main process saves what may be saved and says how to continue."""
        self.stop_request.install()
        try:
            yield
        except KeyboardInterrupt:
            if self.is_main:
                self._save_after_interrupt()
            raise
        finally:
            self.stop_request.restore()
            if self.tensorboard is not None:
                self.tensorboard.close()

    def epochs(self) -> Iterator[int]:
        """The epochs left, from where the run stands; each one's clock starts as it is handed out (a resumed
        epoch's with the time it had already taken)."""
        first = self.state.completed_epochs
        partial_s = (self.plan.checkpoint or {}).get("partial_s", 0.0)
        for epoch in range(first, self.cfg.train.epochs):
            self.state.epoch_started = time.time() - partial_s * (epoch == first)
            self.lr = self.optimizer.param_groups[0]["lr"]  # the row's lr, should no batch be left to run
            yield epoch

    @property
    def batches_done(self) -> int:
        """Batches of the current epoch already trained (> 0 only when resuming inside it)."""
        return self.state.batches_done

    def progress(self, loader, epoch: int) -> tqdm:
        """The epoch's batches with a progress bar (main process), starting after those already done."""
        self.iters_per_epoch = len(loader)
        self._bar = tqdm(loader, total=self.iters_per_epoch, initial=self.state.batches_done,
                         disable=not self.is_main, dynamic_ncols=True,
                         desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}")
        return self._bar

    def start_batch(self, epoch: int, batch_index: int, iteration: int, lr: float) -> None:
        self.epoch, self.batch_index, self.iteration, self.lr = epoch, batch_index, iteration, lr
        self._step = self._recorded_maps = None
        self.state.busy = True  # from here until the batch is recorded, memory is not a checkpoint

    def watch(self, raw_maps: list) -> bool:
        """Whether diagnostics.csv records this step; if so the raw maps keep their gradients (the objectness
        gradient shares) and the loss should return its masks."""
        record = self.is_main and self.state.diagnostics.wants(self.epoch, self.iteration)
        if record:
            for raw in raw_maps:
                raw.retain_grad()
            self._recorded_maps = raw_maps
        return record

    def check_loss(self, loss: Tensor, paths: Sequence[str]) -> None:
        """Stop every rank, before backward, when the loss is NaN or infinite on any of them."""
        (broken,) = self.agreement.any("loss", self.epoch, self.batch_index, not torch.isfinite(loss).item())
        if broken:
            raise NonFiniteLoss(f"non-finite loss {loss.item()} at epoch {self.epoch + 1}, batch {self.batch_index}; "
                                f"images: {', '.join(str(p) for p in paths)}; {self.state.what_was_kept()}")

    def optimizer_step(self, grad_norm: float, max_norm: float) -> None:
        """Note an optimiser step's gradient norm before clipping (``max_norm``: the clip in force, inf when off)."""
        self._step = (grad_norm, self.state.diagnostics.optimizer_step(grad_norm, max_norm))

    def end_batch(self, loss: Tensor, terms: dict, images: Tensor, targets: Tensor, paths: Sequence[str]) -> None:
        """Record the batch (loss sums, diagnostics), then stop every rank here, between batches, if Ctrl-C came
        during it on any of them."""
        state = self.state
        if self._recorded_maps is not None:
            stats = objectness_statistics(self._recorded_maps, terms["masks"], images.shape[0])
            grad_norm, clipped = self._step or (None, None)
            state.diagnostics.record(self.epoch, self.iteration, self.lr, terms, stats, grad_norm, clipped)
            self._recorded_maps = None
        state.sums += torch.tensor([float(terms[t]) for t in LOSS_TERMS] + [float(loss.detach())])
        state.batches_done = self.batch_index + 1
        state.busy = False
        (stop,) = self.agreement.any("batch", self.epoch, self.batch_index, self.stop_request.requested)
        if stop:
            raise KeyboardInterrupt
        means = state.sums / (self.batch_index + 1)
        self._bar.set_postfix_str(" ".join(f"{t} {means[k]:.3f}" for k, t in enumerate(LOSS_TERMS))
                                  + f" lr {self.lr:.2e}", refresh=False)  # drawn at the bar's own pace (mininterval)
        if self.is_main and self.epoch == 0 and self.batch_index == 0 and not self.plan.resuming:
            plot_batch(images.detach().cpu(), targets.cpu(), paths, self.names, self.run_dir / "train_batch0.png")

    # ---- end of an epoch ------------------------------------------------------------------------------------------
    def check_weights(self, epoch: int) -> None:
        """A diverged model must be neither validated nor saved (main process, before validating)."""
        broken = non_finite_weights(self.model, self.evaluated)
        if broken is not None:
            raise NonFiniteLoss(f"the weights became NaN or infinite during epoch {epoch + 1} (first in '{broken}') "
                                f"although each batch's loss was finite; nothing of this epoch was saved; "
                                f"{self.state.what_was_kept()}")

    def validation_options(self, epoch: int) -> Optional[EvalOptions]:
        """How to validate after ``epoch``, or None when it is not validated: every ``val.interval`` epochs (with
        --noval none) and always after the last, whose validation also draws its plots into the run folder."""
        final = epoch + 1 == self.cfg.train.epochs
        if not final and (self.plan.noval or (epoch + 1) % self.cfg.val.interval):
            return None
        val = self.cfg.val
        return EvalOptions(val.conf_thres, val.iou_thres, val.max_det, plot_dir=self.run_dir if final else None)

    def end_epoch(self, epoch: int, metrics: Optional[dict]) -> bool:
        """Record the epoch (results.csv, diagnostics.csv, results.png, TensorBoard, its line), save the checkpoints
        it calls for, and agree with every rank on stopping; True to stop early (``train.patience``). ``metrics``:
        the validation's result, None when the epoch was not validated (other ranks: always None)."""
        state, tcfg = self.state, self.cfg.train
        means = state.sums / max(self.iters_per_epoch, 1)
        epoch_diagnostics = state.diagnostics.end_epoch()
        if not self.is_main:
            state.start_epoch_after(epoch + 1)
            return self._agree_to_stop(epoch, False)  # rank 0 decides on early stopping
        final = epoch + 1 == tcfg.epochs
        self.metrics = metrics if metrics is not None else dict.fromkeys(VALIDATION_KEYS, float("nan"))
        row = {"epoch": epoch + 1, **{f"train_{t}": float(means[k]) for k, t in enumerate(LOSS_TERMS)},
               "train_total": float(means[-1]), "lr": float(self.lr),
               **{k: float(self.metrics.get(k, float("nan"))) for k in VALIDATION_KEYS},
               "epoch_time_s": time.time() - state.epoch_started, "elapsed_s": time.time() - self.started,
               **epoch_diagnostics}
        improved = state.record_epoch(row)
        self.tensorboard.log_epoch(row)
        stop = bool(tcfg.patience) and epochs_without_improvement(state.history) > tcfg.patience
        save_now = not self.plan.nosave or final or stop
        if improved:  # best.pt-to-be: kept in memory (a copy, as training goes on) until it may be written
            best = self._checkpoint(full=False)
            state.best_pending = best if save_now else {**best, "model": {
                key: value.detach().clone() for key, value in best["model"].items()}}
        results_csv = self.run_dir / "results.csv"
        write_results_csv(results_csv, state.history)
        atomic_write_text(self.run_dir / "diagnostics.csv", state.diagnostics.csv_text())
        plot_results_csv(results_csv, self.run_dir / "results.png")
        print(f"epoch {epoch + 1}: P {row['precision']:.3f} R {row['recall']:.3f} "
              f"mAP@.5 {row['mAP50']:.3f} mAP@.5:.95 {row['mAP50_95']:.3f}  ({row['epoch_time_s']:.0f} s)")
        if save_now:
            self._save_last()  # first: see the module docstring, "Checkpoint order"
            self._save_pending_best()
            if tcfg.save_period and (epoch + 1) % tcfg.save_period == 0:
                atomic_torch_save(self._checkpoint(full=False), self.weights / f"epoch{epoch + 1}.pt")
        if stop:
            print(f"stopping early: no improvement for {tcfg.patience} validated epochs")
        return self._agree_to_stop(epoch, stop)

    def _agree_to_stop(self, epoch: int, early: bool) -> bool:
        ctrl_c, early = self.agreement.any("epoch", epoch, -1, self.stop_request.requested, early)
        if ctrl_c:
            raise KeyboardInterrupt  # Ctrl-C during validation or saving: the epoch is complete
        return early

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def _checkpoint(self, full: bool) -> dict:
        return make_checkpoint(self.model, self.ema, self.optimizer, self.scaler, self.cfg, self.names, self.state,
                               self.precision.name, full)

    def _save_last(self) -> None:
        try:
            atomic_torch_save(self._checkpoint(full=True), self.weights / "last.pt")
        except OutputError as exc:  # disk full, folder made read-only: the previous last.pt is untouched
            raise OutputError(f"{exc}; {self.state.what_was_kept()}", exc.errno) from None
        self.state.mark_saved()

    def _save_pending_best(self) -> None:
        if self.state.best_pending is not None:
            atomic_torch_save(self.state.best_pending, self.weights / "best.pt")
            self.state.best_pending = None

    def _save_after_interrupt(self) -> None:
        state = self.state
        if state.busy:  # a second Ctrl-C inside a batch: its gradients or weights are half updated
            note = f"stopped at once inside a batch, so nothing was saved; {state.what_was_kept()}"
        elif non_finite_weights(self.model, self.evaluated) is not None:
            note = f"the weights are NaN or infinite, so they were not saved; {state.what_was_kept()}"
        else:
            self._save_pending_best()  # mid-epoch, last.pt cannot restore it (its weights moved on): best.pt first
            self._save_last()
            note = (f"saved {self.weights / 'last.pt'} ({state.completed_epochs} epochs and "
                    f"{state.batches_done} batches done)")
        resumable = state.saved is not None
        print(f"\ninterrupted: {note}" + (f"; continue with: python train.py --resume {self.run_dir}" if resumable
                                            else ""), file=sys.stderr)

    # ---- the end --------------------------------------------------------------------------------------------------
    def print_final_table(self) -> None:
        """The final validation, class by class (when the last epoch was validated)."""
        if self.state.history and "per_class" in self.metrics:
            print(f"the last epoch's model (epoch {self.state.history[-1]['epoch']}), on the validation split:")
            print(format_table(self.metrics))

    def finish(self, loss_fn, val_loader, test_loader) -> dict:
        """summary.json (with the final validation's per-class rows and, given a ``test_loader``, the test split's
        scores) and the objectness-loss distributions of the final model (read by the ablation report)."""
        cfg, model = self.cfg, self.evaluated
        # the compact form (negatives float16, ordered by logit): a study commits this file for every run
        samples = objectness_record(objectness_samples(model, val_loader, cfg.loss, self.device, seed=cfg.train.seed))
        atomic_write(self.run_dir / "objectness_losses.npz", lambda fh: np.savez_compressed(fh, **samples))
        final_metrics = self.metrics if self.state.history else {}
        extra = {"per_class": final_metrics["per_class"]} if "per_class" in final_metrics else {}
        if test_loader is not None:
            scored = evaluate(model, test_loader, self.names, self.device,
                              EvalOptions(cfg.val.conf_thres, cfg.val.iou_thres, cfg.val.max_det))
            extra["test"] = {k: scored[k] for k in ("precision", "recall", "mAP50", "mAP50_95", "per_class")}
            print(f"test split: mAP@.5 {scored['mAP50']:.3f} mAP@.5:.95 {scored['mAP50_95']:.3f}")
        history = self.state.history
        summary = write_summary(self.run_dir, history, time.time() - self.started, self.precision.name, extra)
        final = history[-1] if history else {}
        print(f"done in {summary['wall_time_s'] / 60:.1f} min: mAP@.5 {final.get('mAP50', float('nan')):.3f} "
              f"mAP@.5:.95 {final.get('mAP50_95', float('nan')):.3f}{best_pt_note(history, self.state.best_epoch)}; "
              f"weights in {self.run_dir}")
        return summary
