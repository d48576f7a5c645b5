"""Training bookkeeping: initial weights, and the run folder's checkpoints kept consistent through crashes.

Initial weights are a train.py checkpoint, a Darknet .weights file, or a Darknet backbone cutoff. Fine-tuning on
another class count is the common case (COCO weights -> 5 classes): tensors whose shapes match are transferred and
the heads that differ keep their fresh initialisation; the message says how many were transferred.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from yolov3.model import Darknet
from yolov3.weights import WeightsError, read_checkpoint


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
# The run folder: what a new run may reuse, and keeping last.pt and best.pt consistent whatever moment a process dies.

RUN_OUTPUTS = ("config.yaml", "results.csv", "diagnostics.csv", "results.png", "train_batch0.png", "objectness_losses.npz",
               "PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png", "confusion_matrix.png")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds another run's results); the message says what to do."""


def prepare_new_run_dir(run_dir: Path) -> list:
    """Check that ``run_dir`` (an existing folder reused with --exist-ok, or a new one) may receive a new run.

    A folder holding a finished run (summary.json) or a resumable one (last.pt) is refused: mixing two runs' rows,
    plots and checkpoints would lose the old results and make the new ones unreadable. Leftovers of a run that
    failed before its first checkpoint (its config, plots, partial results.csv) are removed so the new run starts
    clean; other files (a train.log, your notes) are left alone. Returns the names removed.
    """
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        raise RunFolderError(f"{run_dir} holds a finished run (summary.json); --exist-ok reuses a folder only for "
                             "a run that left no results: choose another --name, or delete the folder first")
    if (run_dir / "last.pt").exists():
        raise RunFolderError(f"{run_dir} holds an unfinished run (last.pt): continue it with "
                             f"'python train.py --resume {run_dir}', or choose another --name")
    if (run_dir / "best.pt").exists():
        raise RunFolderError(f"{run_dir} holds a model (best.pt) that a new run would overwrite: choose another "
                             "--name, or move it away first")
    removed = []
    for name in RUN_OUTPUTS:
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
            removed.append(name)
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
