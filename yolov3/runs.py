"""A training run's folder as files: what train.py writes there and how everyone else reads it back.

``config.yaml`` and ``environment.json`` (at the start), ``results.csv`` (one row per epoch, :data:`RESULT_COLUMNS`)
and ``summary.json`` (written once the run finished); CONTRACTS.md describes them. The epoch rows are ranked by
:func:`fitness`. Standard library, YAML and NumPy only: the ablation runner and report read run folders without
loading torch. (What the checkpoints hold is yolov3.checkpoint's; where they live, ``weights/last.pt`` and
``weights/best.pt`` or the top of a run made before that layout, is :func:`weights_dir`'s.)
"""
from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from yolov3.config import Config, save_config
from yolov3.files import atomic_write_text, ensure_dir, remove_stale_temporaries

# the epoch means of yolov3.diagnostics (gradient norm before clipping over optimiser steps, the rest over the
# recorded steps); defined here, with the other run-folder formats, so that readers need not load torch
DIAGNOSTIC_EPOCH_COLUMNS = ("grad_norm", "clipped_fraction", "neg_grad_share", "p_pos_mean", "p_neg_q999",
                            "neg_over_half")
RESULT_COLUMNS = ["epoch", "train_box", "train_obj", "train_noobj", "train_cls", "train_total", "lr",
                  "precision", "recall", "mAP50", "mAP50_95", "val_box", "val_obj", "val_noobj", "val_cls",
                  "epoch_time_s", *DIAGNOSTIC_EPOCH_COLUMNS]


WEIGHTS_FOLDER = "weights"  # runs/train/<name>/weights/{last,best}.pt, where every ultralytics version puts them
CHECKPOINT_NAMES = ("last.pt", "best.pt")


def weights_dir(run_dir: Union[str, Path]) -> Path:
    """The folder of a run's checkpoints: ``<run>/weights/``, or the run folder itself for a run made before that
    layout (last.pt or best.pt at its top and neither in weights/). A run keeps the layout it started with, so an
    older run resumed by this version goes on writing where its readers look."""
    run_dir = Path(run_dir)
    nested = run_dir / WEIGHTS_FOLDER
    legacy = any((run_dir / name).is_file() for name in CHECKPOINT_NAMES)
    if legacy and not any((nested / name).is_file() for name in CHECKPOINT_NAMES):
        return run_dir
    return nested


def checkpoint_path(run_dir: Union[str, Path], name: str) -> Path:
    """``<run>/weights/<name>`` (``last.pt``, ``best.pt``, ``epoch5.pt``), in the layout of that run."""
    return weights_dir(run_dir) / name


def run_dir_of(checkpoint: Union[str, Path]) -> Path:
    """The run folder of a checkpoint in either layout: ``<run>/weights/last.pt`` or ``<run>/last.pt``."""
    folder = Path(checkpoint).parent
    if folder.name == WEIGHTS_FOLDER and not (folder / "config.yaml").is_file():  # not an older run named 'weights'
        return folder.parent
    return folder


def find_weights(path: Union[str, Path]) -> Path:
    """What val.py, detect.py and the API load for ``path``: a run folder gives its best.pt (either layout),
    anything else is returned as given. FileNotFoundError naming both places for a folder without one."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = checkpoint_path(path, "best.pt")
    if not best.is_file():
        raise FileNotFoundError(f"{path}: a folder, but neither {path / WEIGHTS_FOLDER / 'best.pt'} nor "
                                f"{path / 'best.pt'} is there (give a train.py run folder or a weights file)")
    return best


def open_run_folder(run_dir: Path, cfg: Config, environment: dict, new: bool) -> list:
    """Ready ``run_dir`` for this process: config.yaml (resolved) and the weights/ folder for a ``new`` run,
    environment.json (what this process runs on), and no temporary files of a write an earlier process was killed
    in (their names returned)."""
    if new:
        ensure_dir(run_dir / WEIGHTS_FOLDER)
        save_config(cfg, run_dir / "config.yaml")
    stale = remove_stale_temporaries(run_dir)  # what an earlier process killed mid-write left behind
    if weights_dir(run_dir) != run_dir and weights_dir(run_dir).is_dir():
        stale += [f"{WEIGHTS_FOLDER}/{name}" for name in remove_stale_temporaries(weights_dir(run_dir))]
    atomic_write_text(run_dir / "environment.json", json.dumps(environment, indent=2))
    return stale


def fitness(metrics: dict) -> float:
    """Model selection score: mostly mAP@.5:.95, a little mAP@.5 (the usual YOLO weighting); -1 if not validated."""
    if math.isnan(metrics["mAP50"]):
        return -1.0
    return 0.1 * metrics["mAP50"] + 0.9 * metrics["mAP50_95"]


def epochs_without_improvement(history: list) -> int:
    """Validated epochs since the best one (epochs without validation do not count either way)."""
    validated = [r for r in history if not math.isnan(r["mAP50"])]
    if not validated:
        return 0
    scores = [fitness(r) for r in validated]
    return len(validated) - 1 - int(np.argmax(scores))


def best_epoch(history: list) -> int:
    scores = [fitness(r) for r in history]
    return int(np.argmax(scores)) + 1 if scores else 0


def csv_text(rows: list, columns) -> str:
    """The run folder's CSV format: a header, then one line per row dict; floats with 6 significant digits, a
    missing column as nan (a run resumed from an older version lacks the newer columns)."""
    lines = [",".join(columns)]
    for row in rows:
        values = [row.get(c, math.nan) for c in columns]
        lines.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values))
    return "\n".join(lines) + "\n"


def write_results_csv(path: Path, rows: list) -> None:
    """results.csv from the history rows (dicts with the RESULT_COLUMNS keys), atomically."""
    atomic_write_text(path, csv_text(rows, RESULT_COLUMNS))


def read_results_csv(path: Union[str, Path]) -> dict:
    """results.csv -> {column: float array}; blank or non-numeric cells become nan."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    columns = list(rows[0].keys()) if rows else []
    out = {}
    for column in columns:
        values = []
        for row in rows:
            try:
                values.append(float(row.get(column)))
            except (TypeError, ValueError):
                values.append(float("nan"))
        out[column] = np.asarray(values, dtype=float)
    return out


def write_summary(run_dir: Path, history: list, wall_time_s: float, precision: str,
                  extra: Optional[dict] = None) -> dict:
    """summary.json of a finished run (atomically): its epochs, the best one and the final epoch's row, plus
    ``extra`` (the final validation's per-class rows, the test split's scores)."""
    final = history[-1] if history else {}
    best = best_epoch(history)
    summary = {"status": "finished", "epochs": len(history), "best_epoch": best,
               "best_fitness": fitness(history[best - 1]) if best else None,
               "final": {k: v for k, v in final.items() if k != "epoch"},
               "wall_time_s": wall_time_s, "precision": precision, **(extra or {})}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float))
    return summary


def objectness_record(samples: dict) -> dict:
    """The arrays of ``objectness_losses.npz`` as a run keeps them: ``samples`` (``pos``, ``neg`` and, where saved,
    ``pos_logit``, ``neg_logit``; any other key as is) in the record's compact form.

    - positives (``pos``, ``pos_logit``): float32, in the order given. They are few (every positive is kept) and
      the report averages their logits' BCE, a single number that float16 would move.
    - negatives (``neg``, ``neg_logit``): float16, as in every record committed since 2026-12-06 (the report reads
      their distribution and the hardest 1 %'s share of it, no single value), reordered by ascending logit (by loss
      where no logit was saved), stably, one permutation for both, so they stay aligned element by element. The
      mask order the sample comes in tells a reader nothing (no cell indices are kept), every reader sorts by loss
      anyway, and a sorted float16 array deflates to a fraction of a shuffled one: a BCCD run's record 116 kB ->
      21 kB, a shapes one 86 kB -> 39 kB (issue 27: every study run's record is committed, 30 runs to a study).
    """
    out = dict(samples)
    for key in ("pos", "pos_logit"):
        if key in out:
            out[key] = np.asarray(out[key], dtype=np.float32).ravel()
    negatives = [key for key in ("neg", "neg_logit") if key in out]
    for key in negatives:
        out[key] = np.asarray(out[key]).ravel().astype(np.float16)
    if len({out[key].size for key in negatives}) > 1:
        raise ValueError("objectness_record: 'neg' and 'neg_logit' differ in length; they must align element by "
                         "element")
    if negatives:
        order = np.argsort(out["neg_logit" if "neg_logit" in out else "neg"], kind="stable")
        for key in negatives:
            out[key] = out[key][order]
    return out


def is_objectness_record(arrays: dict) -> bool:
    """True when ``arrays`` are already in :func:`objectness_record`'s form (rewriting them would change nothing)."""
    negatives = [key for key in ("neg", "neg_logit") if key in arrays]
    if not (all(arrays[key].dtype == np.float32 for key in ("pos", "pos_logit") if key in arrays)
            and all(arrays[key].dtype == np.float16 for key in negatives)):
        return False
    if not negatives:
        return True
    by = arrays["neg_logit" if "neg_logit" in arrays else "neg"]
    return bool(np.array_equal(np.argsort(by, kind="stable"), np.arange(by.size)))


def read_summary(run_dir: Union[str, Path]) -> tuple:
    """``(summary, problem)`` for ``<run_dir>/summary.json``, which train.py writes when a run finished:
    ``(dict, None)`` for a finished run's summary, ``(None, None)`` when there is none, and ``(None, problem)``
    (naming the file) when it is there but is no finished run's summary — truncated, not JSON, not a mapping, or
    without ``"status": "finished"``. Such a run is not finished: counting it would drop it from being redone."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None, f"{path}: unreadable ({exc})"
    if not isinstance(summary, dict):
        return None, f"{path}: expected a JSON mapping, got {type(summary).__name__}"
    if summary.get("status") != "finished":
        return None, f"{path}: status is {summary.get('status')!r}, not 'finished'"
    return summary, None


# --------------------------------------------------------------------------------------------------------------------
# train.log and TensorBoard: what a run said, as lines, and its epoch rows as scalars
# --------------------------------------------------------------------------------------------------------------------
class _Tee:
    """One of sys.stdout / sys.stderr while a :class:`TrainLog` is installed: everything reaches the terminal as
    before; complete lines also reach the log, except what a progress bar draws. tqdm draws each state of its bar in
    one write that starts with a carriage return, so a write holding one is left out, and so is the newline that
    ends a bar; everything else (print's text and its newline come in two writes) is logged line by line."""

    def __init__(self, stream, log: "TrainLog") -> None:
        self.stream, self.log = stream, log
        self.pending = ""  # the start of a line not ended yet
        self.after_bar = False  # the last write drew a progress bar

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        if "\r" in text:
            self.after_bar = True
            return written
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line or not self.after_bar:  # the newline that closes a bar is no line of its own
                self.log.write_line(line)
            self.after_bar = False
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding...: the terminal's
        return getattr(self.stream, name)


class _LogHandler(logging.Handler):
    """The package's log records (yolov3.data's label warnings and scan summary) into train.log; the terminal
    gets them from the package's own handler."""

    def __init__(self, log: "TrainLog") -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        for line in record.getMessage().splitlines():
            self.log.write_line(line)


class TrainLog:
    """``train.log``: every line a run prints (each epoch's summary, warnings, errors), written by the run itself,
    without the progress bars' redraws, which stay on the terminal.

    :meth:`install` tees sys.stdout and sys.stderr (and the ``yolov3`` logger) for the run; lines printed before
    the run folder exists are held in memory until :meth:`attach` opens the file (appending: a resumed run adds to
    it), and are dropped if it never does (a failed start leaves no folder). :meth:`close` puts the streams back.
    """

    def __init__(self) -> None:
        self.held: list = []
        self.file = None
        self.path: Optional[Path] = None
        self._streams: Optional[tuple] = None
        self._handler = _LogHandler(self)

    def install(self) -> "TrainLog":
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self), _Tee(sys.stderr, self)
        logging.getLogger("yolov3").addHandler(self._handler)
        return self

    def attach(self, path: Union[str, Path], header: Sequence[str] = ()) -> None:
        """Start writing to ``path`` (appending): ``header`` lines (the command), then what was held."""
        self.path = Path(path)
        self.file = open(self.path, "a", encoding="utf-8", errors="backslashreplace")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in [f"# {stamp} {text}" for text in header] + self.held:
            self.file.write(line + "\n")
        self.held = []
        self.file.flush()

    def write_line(self, line: str) -> None:
        if self.file is None:
            self.held.append(line)
        else:
            self.file.write(line + "\n")
            self.file.flush()  # a killed run keeps every line up to its end

    def close(self) -> None:
        logging.getLogger("yolov3").removeHandler(self._handler)
        if self._streams is not None:
            for tee in (sys.stdout, sys.stderr):
                if isinstance(tee, _Tee) and tee.pending:
                    self.write_line(tee.pending)
            sys.stdout, sys.stderr = self._streams
            self._streams = None
        if self.file is not None:
            self.file.close()
            self.file = None


TENSORBOARD_SCALARS = {"train": ("box", "obj", "noobj", "cls", "total"), "val": ("box", "obj", "noobj", "cls"),
                       "metrics": ("precision", "recall", "mAP50", "mAP50_95")}


class TensorBoardLog:
    """Each epoch's results.csv row as TensorBoard scalars in the run folder, when ``torch.utils.tensorboard``
    imports (the ``tensorboard`` package is installed); never required: otherwise it is off and says so once."""

    def __init__(self, run_dir: Union[str, Path]) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
        except ImportError:
            self.status = "TensorBoard: off (pip install tensorboard to log the epochs there)"
            return
        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.status = f"TensorBoard: on (tensorboard --logdir {Path(run_dir).parent})"

    def log_epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        for group, names in TENSORBOARD_SCALARS.items():
            for name in names:
                key = name if group == "metrics" else f"{group}_{name}"
                value = row.get(key, math.nan)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{group}/{name}", value, row["epoch"])
        self.writer.add_scalar("lr/group0", row["lr"], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
