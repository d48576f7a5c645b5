"""Reading an ablation study's run folders: identity, status, metrics, history and loss samples of each run.

Everything missing or damaged becomes a note (naming the file) and a status, never an exception; see
:mod:`yolov3.report` for the files read and the statuses.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import yaml

from yolov3.runs import checkpoint_path, read_results_csv, read_summary

METRICS = ("mAP50", "mAP50_95", "precision", "recall")
METRIC_TITLES = {"mAP50": "mAP@0.5", "mAP50_95": "mAP@0.5:0.95", "precision": "precision", "recall": "recall"}


@dataclass
class RunResult:
    """What one run folder holds; metrics are nan where absent."""

    run_name: str
    run_dir: Path
    index: int
    variant: str
    arm: str
    grid: dict
    seed: int
    status: str  # finished | failed | partial | not started
    metrics: dict = field(default_factory=dict)  # METRICS + train_obj, train_noobj, epochs, wall_time_s
    history: Optional[dict] = None  # results.csv column -> float array, one entry per epoch
    objectness: Optional[dict] = None  # objectness_losses.npz: 'pos', 'neg' (own loss) and, since 2026-12,
    # 'pos_logit', 'neg_logit' (the final model's logits, so every arm can be scored with one common loss)
    steps: Optional[dict] = None  # diagnostics.csv column -> float array, one entry per recorded step
    numeric: str = ""  # the precision it trained in (summary.json 'precision': fp32, bf16, fp16); '' if unknown
    cpu: str = ""  # environment.json's cpu_line (where it ran)
    config: Optional[dict] = None  # config.yaml
    baseline: Optional[str] = None  # the study's baseline variant as recorded in ablation.json
    per_class: Optional[list] = None  # summary.json 'per_class' (runs since 2026-12-06): the final validation's rows
    test: Optional[dict] = None  # summary.json 'test' (val.test): the final model scored once on the test split


def _read_json(path: Path, notes: list) -> Optional[dict]:
    """A JSON mapping, or None with a note naming the file (unreadable, truncated, or not a mapping)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path}: unreadable ({exc}); ignored")
        return None
    if not isinstance(content, dict):
        notes.append(f"{path}: expected a JSON mapping, got {type(content).__name__}; ignored")
        return None
    return content


def _finite(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value


def load_run(run_dir: Union[str, Path], notes: list) -> Optional[RunResult]:
    """Read one run folder; None (with a note) when it has no readable ablation.json."""
    run_dir = Path(run_dir)
    identity_path = run_dir / "ablation.json"
    if not identity_path.is_file():
        notes.append(f"{run_dir.name}: no ablation.json (not made by ablate.py); ignored")
        return None
    identity = _read_json(identity_path, notes)
    if identity is None:
        return None
    summary, problem = read_summary(run_dir)
    if problem:
        notes.append(f"{problem}; the run counts as not finished")
    history = None
    if (run_dir / "results.csv").is_file():
        try:
            history = read_results_csv(run_dir / "results.csv")
        except (OSError, csv.Error) as exc:
            notes.append(f"{run_dir.name}: results.csv unreadable ({exc})")
    config = None
    if (run_dir / "config.yaml").is_file():
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            notes.append(f"{run_dir.name}: config.yaml unreadable ({exc})")

    exit_code = identity.get("exit_code")
    if summary is not None:  # read_summary returns only a finished run's summary
        status = "finished"
    elif exit_code is not None:
        status = "failed"  # a non-zero exit, or exit 0 without summary.json
    elif history is not None or checkpoint_path(run_dir, "last.pt").is_file():
        status = "partial"
    else:
        status = "not started"

    metrics = {key: float("nan") for key in METRICS + ("train_obj", "train_noobj", "epochs", "wall_time_s")}
    if summary is not None:
        final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
        for key in METRICS + ("train_obj", "train_noobj"):
            metrics[key] = _finite(final.get(key))
        metrics["epochs"] = _finite(summary.get("epochs"))
        metrics["wall_time_s"] = _finite(summary.get("wall_time_s"))
    elif history is not None and len(next(iter(history.values()), [])):
        for key in METRICS + ("train_obj", "train_noobj"):
            if key in history:
                metrics[key] = float(history[key][-1])
        metrics["epochs"] = float(len(next(iter(history.values()))))
        if "epoch_time_s" in history:
            metrics["wall_time_s"] = float(np.nansum(history["epoch_time_s"]))

    objectness = None
    npz_path = run_dir / "objectness_losses.npz"
    if npz_path.is_file():
        try:
            with np.load(npz_path) as npz:
                objectness = {key: np.asarray(npz[key], dtype=float).ravel()
                              for key in ("pos", "neg", "pos_logit", "neg_logit") if key in npz.files}
            missing = {"pos", "neg"} - set(objectness)
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        except (OSError, KeyError, ValueError) as exc:
            notes.append(f"{run_dir.name}: objectness_losses.npz unreadable ({exc})")
    elif status == "finished":
        notes.append(f"{run_dir.name}: no objectness_losses.npz; left out of the loss-distribution plot")

    steps = None
    if (run_dir / "diagnostics.csv").is_file():
        try:
            steps = read_results_csv(run_dir / "diagnostics.csv")  # the same plain numeric CSV reader
        except (OSError, csv.Error, ValueError) as exc:
            notes.append(f"{run_dir.name}: diagnostics.csv unreadable ({exc})")
    environment = _read_json(run_dir / "environment.json", notes) if (run_dir / "environment.json").is_file() else None
    numeric = str((summary or {}).get("precision") or (environment or {}).get("precision") or "")

    return RunResult(run_name=identity.get("run_name", run_dir.name), run_dir=run_dir,
                     index=int(identity.get("index", 10**9)), variant=str(identity.get("variant", run_dir.name)),
                     arm=str(identity.get("arm", run_dir.name)), grid=dict(identity.get("grid") or {}),
                     seed=int(identity.get("seed", -1)), status=status, metrics=metrics, history=history,
                     objectness=objectness, config=config, baseline=identity.get("baseline"), steps=steps,
                     numeric=numeric, cpu=str((environment or {}).get("cpu_line", "")),
                     per_class=_rows_or_none((summary or {}).get("per_class")),
                     test=(summary or {}).get("test") if isinstance((summary or {}).get("test"), dict) else None)


def _rows_or_none(value: Any) -> Optional[list]:
    """summary.json's per-class rows when they are a list of mappings with a name, else None."""
    if isinstance(value, list) and value and all(isinstance(r, dict) and "name" in r for r in value):
        return value
    return None


def finished_by_arm(runs: Sequence[RunResult]) -> dict:
    """{arm: its finished runs, in planned order}; an arm with none is absent."""
    out: dict = {}
    for run in runs:
        if run.status == "finished":
            out.setdefault(run.arm, []).append(run)
    return out


@dataclass
class StudyRuns:
    study_dir: Path
    name: str
    baseline: Optional[str]
    grid_keys: list
    runs: list  # list[RunResult] in planned order
    notes: list


def collect_runs(study_dir: Union[str, Path]) -> StudyRuns:
    """Every run folder of a study, in planned order; runs listed in runs.json but with no folder are added as
    'not started', folders the current runs.json does not list are noted and left out."""
    study_dir = Path(study_dir)
    notes: list = []
    runs_dir = study_dir / "runs"
    listed = None
    if (study_dir / "runs.json").is_file():
        plan = _read_json(study_dir / "runs.json", notes)
        if plan is not None:
            listed = {r["run_name"]: r for r in plan.get("runs", [])}
    runs = []
    if runs_dir.is_dir():
        for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            if listed is not None and run_dir.name not in listed:
                notes.append(f"{run_dir.name}: not in the current runs.json (from an earlier spec?); left out")
                continue
            result = load_run(run_dir, notes)
            if result is not None:
                runs.append(result)
    present = {r.run_name for r in runs}
    for name, record in (listed or {}).items():
        if name not in present:
            runs.append(RunResult(run_name=name, run_dir=runs_dir / name, index=int(record.get("index", 10**9)),
                                  variant=record.get("variant", name), arm=record.get("arm", name),
                                  grid=dict(record.get("grid") or {}), seed=int(record.get("seed", -1)),
                                  status="not started",
                                  metrics={k: float("nan") for k in METRICS + ("train_obj", "train_noobj",
                                                                               "epochs", "wall_time_s")}))
    runs.sort(key=lambda r: (r.index, r.run_name))
    baselines = {r.baseline for r in runs if r.baseline is not None}
    if listed is not None and plan.get("baseline"):
        baseline = plan["baseline"]
    elif len(baselines) == 1:
        baseline = baselines.pop()
    else:
        baseline = None
        notes.append("no single baseline recorded in the run folders; no differences computed")
    grid_keys = list(plan.get("grid_keys", [])) if listed is not None else []
    for run in runs:
        for key in run.grid:
            if key not in grid_keys:
                grid_keys.append(key)
    not_finished = [r for r in runs if r.status != "finished"]
    for run in not_finished:
        notes.append(f"{run.run_name}: {run.status}; left out of the statistics")
    return StudyRuns(study_dir, study_dir.name, baseline, grid_keys, runs, notes)


def noobj_obj_ratio(metrics: dict) -> float:
    """Final train no-object loss over object loss of a run's metrics; nan when either is missing or obj is 0."""
    obj, noobj = metrics.get("train_obj", float("nan")), metrics.get("train_noobj", float("nan"))
    return noobj / obj if np.isfinite(obj) and np.isfinite(noobj) and obj > 0 else float("nan")
