"""Training bookkeeping: initial weights, where a run stands, what its checkpoints hold, and resuming from them.

Initial weights are a train.py checkpoint, a Darknet .weights file, or a Darknet backbone cutoff. Fine-tuning on
another class count is the common case (COCO weights -> 5 classes): tensors whose shapes match are transferred and
the heads that differ keep their fresh initialisation; the message says how many were transferred.

A run's progress is a :class:`TrainState`; :func:`make_checkpoint` turns it (with the model, optimiser, EMA and
scaler) into last.pt or best.pt, and :func:`restore_training` turns last.pt back into it, mid-epoch included, so a
resumed run replays the rest of an uninterrupted one exactly. The run folder's rules (what a new run may reuse,
keeping last.pt and best.pt consistent whatever moment a process dies) close the module.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from yolov3 import config as config_lib
from yolov3.config import Config, ConfigError
from yolov3.diagnostics import DiagnosticsRecorder
from yolov3.model import Darknet
from yolov3.optim import unwrap
from yolov3.runs import WEIGHTS_FOLDER, best_epoch, checkpoint_path, fitness, read_summary, run_dir_of
from yolov3.utils import restore_rng_state, save_rng_state
from yolov3.weights import WeightsError, first_non_finite, read_checkpoint


MIN_TRANSFER_FRACTION = 0.5  # below this share of the model's tensors, --weights is almost surely for another cfg


def transfer_matching(model: nn.Module, state: dict) -> tuple[int, int]:
    """Copy every tensor of ``state`` whose name and shape match the model's; returns (copied, model total)."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching), len(own)


def load_initial_weights(model: nn.Module, path: str, cutoff: Optional[int] = None,
                         cfg_path: Optional[str] = None, allow_partial: bool = False) -> str:
    """Load ``path`` into ``model`` (a Darknet); returns a one-line description of what was loaded.

    ``.pt``: the checkpoint's validated weights, matching tensors only. Darknet files: loaded directly (``cutoff``
    layers for backbones); when the file holds heads for another class count, it is read into a model built from
    ``cfg_path`` as written and the matching tensors are transferred.
    A ``.pt`` that fits fewer than MIN_TRANSFER_FRACTION of the model's tensors is refused unless ``allow_partial``:
    fine-tuning on new classes keeps all but the head convs (98 % of yolov3's tensors), while a checkpoint of
    another cfg matches a few tensors by accident and would silently train mostly from scratch.
    """
    path = str(path)
    if path.endswith(".pt"):
        ckpt = read_checkpoint(path)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: not a train.py checkpoint or a state dict")
        copied, total = transfer_matching(model, state)
        if copied == 0:  # training from scratch by accident would waste a whole run
            raise WeightsError(f"{path}: no tensor matches this model by name and shape; is it for another cfg?")
        if copied < MIN_TRANSFER_FRACTION * total and not allow_partial:
            raise WeightsError(f"{path}: only {copied}/{total} of this model's tensors match it by name and shape "
                               f"(fewer than {MIN_TRANSFER_FRACTION:.0%}): it is probably for another cfg; pass "
                               "--allow-partial-weights to transfer them anyway")
        return f"weights: {path}: transferred {copied}/{total} tensors"
    try:
        model.load_darknet_weights(path, cutoff=cutoff)
        return f"weights: {path}: loaded{f' the first {cutoff} layers' if cutoff else ''}"
    except WeightsError:
        if cutoff is not None or cfg_path is None:
            raise
        as_written = Darknet(cfg_path)
        as_written.load_darknet_weights(path)  # raises a clear error if the file fits neither
        copied, total = transfer_matching(model, as_written.state_dict())
        return f"weights: {path}: transferred {copied}/{total} tensors (heads re-initialised for the new classes)"


# --------------------------------------------------------------------------------------------------------------------
# Where a run stands, and what its checkpoints hold
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Where training stands. A checkpoint saved at any point (epoch end or Ctrl-C) records it, and resuming from it
    replays the rest exactly: the data order and augmentation depend only on (seed, epoch, index).

    ``saved`` describes the newest last.pt on disk (for truthful messages); ``best_pending`` is a validated best
    checkpoint not written yet (with --nosave it waits for the end); ``busy`` is True while memory is not a
    checkpoint (a batch or the epoch's record half done).
    """

    run_dir: Path  # the run folder; last.pt and best.pt live in its weights/ (yolov3.runs.weights_dir)
    sums: Tensor  # this epoch's loss sums so far: one per yolov3.evaluate.LOSS_TERMS term, then the total
    completed_epochs: int = 0
    batches_done: int = 0  # batches of the current epoch already trained (> 0 only inside an epoch)
    epoch_started: float = field(default_factory=time.time)
    best_fitness: float = -1.0
    best_epoch: int = 0  # the epoch whose weights best.pt holds or is about to hold (0: none yet)
    history: list = field(default_factory=list)  # one results.csv row (dict) per completed epoch
    best_pending: Optional[dict] = None
    busy: bool = False
    saved: Optional[tuple] = None  # (completed epochs, batches done) of the newest last.pt on disk
    diagnostics: Optional[DiagnosticsRecorder] = None  # diagnostics.csv rows and the epoch's means so far

    def start_epoch_after(self, completed_epochs: int) -> None:
        """The next epoch begins: nothing of it done yet."""
        self.completed_epochs, self.batches_done, self.sums = completed_epochs, 0, torch.zeros_like(self.sums)

    def record_epoch(self, row: dict) -> bool:
        """Commit a completed epoch's results.csv row; True when it is the best so far (best.pt-to-be)."""
        score = fitness(row)
        improved = score > self.best_fitness or self.best_epoch == 0
        self.busy = True  # the epoch's record is being committed
        self.best_fitness = max(self.best_fitness, score)
        self.history.append(row)
        self.best_epoch = row["epoch"] if improved else self.best_epoch
        self.start_epoch_after(row["epoch"])
        self.busy = False
        return improved

    def mark_saved(self) -> None:
        """last.pt now holds this state."""
        self.saved = (self.completed_epochs, self.batches_done)

    def what_was_kept(self) -> str:
        """For a message about a failure: which last.pt survives it, if any."""
        if self.saved is None:
            return "no checkpoint had been written yet, so there is nothing to resume"
        epochs, batches = self.saved
        where = f"epoch {epochs}" + (f" and {batches} batches" if batches else "")
        return f"{checkpoint_path(self.run_dir, 'last.pt')} ({where}, written before the problem) was kept"


def make_checkpoint(model: nn.Module, ema, optimizer, scaler, cfg: Config, names, state: TrainState,
                    precision: str, full: bool) -> dict:
    """The checkpoint dict; 'model' holds the weights that were validated (the EMA when enabled).

    ``full`` (last.pt) adds what resuming needs; best.pt stays lean (:func:`lean_checkpoint` drops the same keys).
    Saved inside an epoch (a Ctrl-C), a full checkpoint also holds that epoch's progress: the loss sums so far, its
    time so far and the accumulated gradients not yet applied.
    """
    extra = {"batches_done": state.batches_done, "best_epoch": state.best_epoch, "precision": precision,
             "diagnostics": state.diagnostics.state_dict() if state.diagnostics is not None else None}
    if full and state.batches_done:  # mid-epoch: what the rest of the epoch needs
        extra.update({"partial_sums": state.sums.clone(), "partial_s": time.time() - state.epoch_started,
                      "pending_grads": [None if p.grad is None else p.grad.detach().cpu().clone()
                                        for p in unwrap(model).parameters()]})
    bare = unwrap(model)
    ckpt = {
        "model": (ema.ema if ema else bare).state_dict(),
        "cfg_text": bare.cfg_text,
        "names": list(names),
        "config": config_lib.to_dict(cfg),
        "epoch": state.completed_epochs,  # number of completed epochs
        "best_fitness": state.best_fitness,
        "history": state.history,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if full:  # what resuming needs; best.pt stays lean
        ckpt.update({"train_model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                     "ema": ema.state_dict() if ema else None, "scaler": scaler.state_dict(),
                     "rng": save_rng_state()})
    return {**ckpt, **extra}


def non_finite_weights(model: nn.Module, evaluated: nn.Module) -> Optional[str]:
    """The first NaN/inf tensor of the trained or the evaluated model: such weights are never saved."""
    broken = first_non_finite(unwrap(model).state_dict())
    return broken or (first_non_finite(evaluated.state_dict()) if evaluated is not unwrap(model) else None)


# --------------------------------------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------------------------------------
def find_resume_checkpoint(resume: str, project: str) -> Path:
    """--resume PATH (a last.pt or its run folder, in either layout: yolov3.runs.weights_dir), or the newest
    last.pt under --project."""
    if resume:
        path = Path(resume)
        path = checkpoint_path(path, "last.pt") if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {path}")
        return path
    candidates = sorted([*Path(project).glob(f"*/{WEIGHTS_FOLDER}/last.pt"), *Path(project).glob("*/last.pt")],
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"--resume: no run with a last.pt under {project}")
    return candidates[-1]


def load_resume(resume: str, project: str) -> tuple[dict, Config, Path]:
    """``--resume``: (the checkpoint, its saved config, its run folder). A ConfigError when there is no checkpoint,
    when it cannot be resumed (a best.pt) or when its run already finished."""
    ckpt_path = find_resume_checkpoint(resume, project)
    ckpt = read_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt:
        raise ConfigError(f"--resume: {ckpt_path} is not a resumable checkpoint (use a run's last.pt)")
    cfg = config_lib.from_dict(ckpt["config"], source=str(ckpt_path))
    run_dir = run_dir_of(ckpt_path)
    if read_summary(run_dir)[0] is not None:  # a damaged summary.json does not count: resuming rewrites it
        raise ConfigError(f"--resume: {run_dir} already finished all {cfg.train.epochs} epochs")
    return ckpt, cfg, run_dir


def resumed_amp_mode(ckpt: Optional[dict], amp: str) -> str:
    """The train.amp mode to resolve: a resumed run keeps the precision it started with, even on a machine where
    'auto' would choose otherwise; a new run (``ckpt`` None) takes ``amp``."""
    return {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}.get((ckpt or {}).get("precision"), amp)


def restore_training(state: TrainState, ckpt: dict, model: nn.Module, optimizer, scaler, ema) -> None:
    """Continue from a full checkpoint (last.pt): the trained weights, optimiser, grad scaler (None: not used), EMA
    and RNG states go back into the objects given, and where training stood (mid-epoch included) into ``state``.

    The gradients accumulated before a mid-epoch stop come back separately (:func:`restore_pending_grads`), once
    the model is wrapped for DDP.
    """
    model.load_state_dict(ckpt["train_model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt["scaler"]:  # a CPU run saved an empty scaler; a GPU run resumed on CPU needs none
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    state.completed_epochs, state.best_fitness, state.history = ckpt["epoch"], ckpt["best_fitness"], ckpt["history"]
    state.best_epoch = ckpt.get("best_epoch", best_epoch(state.history))
    state.saved = (ckpt["epoch"], ckpt.get("batches_done", 0))
    if ckpt.get("batches_done"):  # stopped inside an epoch: its loss sums so far
        state.batches_done = ckpt["batches_done"]
        state.sums = ckpt["partial_sums"].clone()
    if state.diagnostics is not None and ckpt.get("diagnostics"):  # older checkpoints have none: start afresh
        state.diagnostics.load_state_dict(ckpt["diagnostics"])
    restore_rng_state(ckpt["rng"])


def restore_pending_grads(ckpt: dict, model: nn.Module, device: torch.device) -> None:
    """The gradients a mid-epoch checkpoint had accumulated towards its next optimiser step (none at an epoch end)."""
    if ckpt.get("batches_done"):
        for parameter, grad in zip(unwrap(model).parameters(), ckpt["pending_grads"]):
            parameter.grad = None if grad is None else grad.to(device)


# --------------------------------------------------------------------------------------------------------------------
# The run folder: what a new run may reuse, and keeping last.pt and best.pt consistent whatever moment a process dies.

RUN_OUTPUTS = ("config.yaml", "results.csv", "diagnostics.csv", "results.png", "train_batch0.png",
               "objectness_losses.npz", "labels.jpg", "val_batch0_labels.jpg", "val_batch0_pred.jpg",
               "PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png", "confusion_matrix.png")
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # what torch.utils.tensorboard writes into the run folder


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds another run's results); the message says what to do."""


def prepare_new_run_dir(run_dir: Path) -> list:
    """Check that ``run_dir`` (an existing folder reused with --exist-ok, or a new one) may receive a new run.

    A folder holding a finished run (summary.json) or a resumable one (last.pt) is refused: mixing two runs' rows,
    plots and checkpoints would lose the old results and make the new ones unreadable. Leftovers of a run that
    failed before its first checkpoint (its config, plots, partial results.csv, TensorBoard events) are removed so
    the new run starts clean; other files (train.log, which the new run appends to; your notes) are left alone. A
    folder holding such a file but no config.yaml (which a run writes first) is not a run's: it is refused.
    Checkpoints are looked for in both layouts (``weights/`` and the top of the folder). Returns the names removed.
    """
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        raise RunFolderError(f"{run_dir} holds a finished run (summary.json); --exist-ok reuses a folder only for "
                             "a run that left no results: choose another --name, or delete the folder first")
    for folder in (run_dir / WEIGHTS_FOLDER, run_dir):
        if (folder / "last.pt").exists():
            raise RunFolderError(f"{run_dir} holds an unfinished run ({folder / 'last.pt'}): continue it with "
                                 f"'python train.py --resume {run_dir}', or choose another --name")
        if (folder / "best.pt").exists():
            raise RunFolderError(f"{run_dir} holds a model ({folder / 'best.pt'}) that a new run would overwrite: "
                                 "choose another --name, or move it away first")
    leftovers = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).is_file()]
    leftovers += sorted(run_dir.glob(TENSORBOARD_EVENTS))
    if leftovers and not (run_dir / "config.yaml").is_file():
        # a run writes config.yaml before anything else: without it these files are someone's own, not leftovers
        raise RunFolderError(f"{run_dir} holds {leftovers[0].name}, which a new run would overwrite, and no "
                             "config.yaml, so it is not left by a train.py run: choose another --name, or move it "
                             "away first")
    removed = []
    for path in [run_dir / name for name in RUN_OUTPUTS] + sorted(run_dir.glob(TENSORBOARD_EVENTS)):
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def lean_checkpoint(full: dict) -> dict:
    """best.pt's content from a full (last.pt) checkpoint: the validated weights and what describes them."""
    resume_only = ("train_model", "optimizer", "ema", "scaler", "rng", "partial_sums", "partial_s", "pending_grads")
    return {key: value for key, value in full.items() if key not in resume_only}


def best_checkpoint_needs_repair(last: dict, best_path: Path) -> bool:
    """True when last.pt records a best epoch whose weights best.pt does not hold, and last.pt can supply them.

    Training writes last.pt (recording ``best_epoch``) before best.pt, so a process killed between the two leaves
    best.pt missing or one epoch behind, while last.pt, saved at the end of that epoch, holds exactly the
    validated weights best.pt should have.
    """
    best_epoch = last.get("best_epoch")
    if not best_epoch or best_epoch != last.get("epoch") or last.get("batches_done"):
        return False  # best.pt was written before last.pt moved on, or last.pt is mid-epoch
    if not best_path.is_file():
        return True
    try:
        return read_checkpoint(best_path).get("epoch") != best_epoch
    except ValueError:  # unreadable best.pt (it is written atomically, so only by outside damage): replace it
        return True
