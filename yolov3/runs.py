"""A training run's folder as files: what train.py writes there and how everyone else reads it back.

``results.csv`` (one row per epoch, :data:`RESULT_COLUMNS`) and ``summary.json`` (written once the run finished);
CONTRACTS.md describes both. Standard library and NumPy only: the ablation runner and report read run folders
without loading torch.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Union

import numpy as np

from yolov3.files import atomic_write_text

RESULT_COLUMNS = ["epoch", "train_box", "train_obj", "train_noobj", "train_cls", "train_total", "lr",
                  "precision", "recall", "mAP50", "mAP50_95", "val_box", "val_obj", "val_noobj", "val_cls",
                  "epoch_time_s"]


def write_results_csv(path: Path, rows: list) -> None:
    """results.csv from the history rows (dicts with every RESULT_COLUMNS key), atomically."""
    lines = [",".join(RESULT_COLUMNS)]
    for row in rows:
        lines.append(",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in RESULT_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")


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
