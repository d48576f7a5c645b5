"""Re-running one finished run of a study with its seed: does its result reproduce?

``python ablate.py SPEC --reproduce RUN`` runs RUN's train.py again — the config the spec resolves to, its seed,
and as many CPU threads as the original recorded in its environment.json (a thread count changes the order in
which floats are summed, so a rerun with another one is not a reproduction) — into ``<study>/reproductions/RUN/``,
then compares the two final val mAP@.5:.95. The rerun folder is a run folder like the study's (ablation.json,
config.yaml, results.csv, summary.json, environment.json, console.log), so it is committed, resumed and skipped the
same way; the report lists every one it finds ("Reproductions" in summary.md) and the study's statistics never see
them.

Same machine, same software: a CPU run on the same kind of CPU, torch version and thread count is expected to agree
to the last digit; on another CPU kind (other vector instructions, another oneDNN kernel) or another torch the
sums round differently, and over thousands of steps the runs drift apart. GPU runs are not deterministic at all
here (atomic adds in some backward kernels), so a GPU rerun checks the spread, not the digits. The thread count
is the one of the original's last session (environment.json is rewritten on resume). The table names both runs'
device, CPU, threads and torch, so a reader sees which case a row is.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from yolov3.ablation_plan import plan_one
from yolov3.ablation_spec import AblationError, Study
from yolov3.runs import read_results_csv, read_summary

REPRODUCTIONS = "reproductions"  # <study>/reproductions/<run>/: the reruns
TOLERANCE = 0.005  # |rerun - original| final mAP@.5:.95 that still counts as reproduced
METRIC = "mAP50_95"


@dataclass
class Reproduction:
    """One rerun beside its original: final val mAP@.5:.95 of each, and where each ran."""

    run_name: str
    original: float
    rerun: Optional[float]  # None while the rerun has not finished (or failed: exit_code)
    epochs_compared: int  # epochs with a val mAP@.5:.95 in both results.csv
    largest_epoch_difference: float  # max |rerun - original| over those epochs (nan when none)
    original_env: dict
    rerun_env: dict
    exit_code: Optional[int] = None  # the rerun's train.py exit status as ablate.py recorded it (ablation.json)

    @property
    def failed(self) -> bool:
        return self.rerun is None and self.exit_code not in (None, 0)

    @property
    def difference(self) -> float:
        return float("nan") if self.rerun is None else self.rerun - self.original

    def within(self, tolerance: float = TOLERANCE) -> bool:
        return self.rerun is not None and abs(self.difference) <= tolerance


def reproduction_dir(study_dir: Union[str, Path], run_name: str) -> Path:
    return Path(study_dir) / REPRODUCTIONS / run_name


def plan_reproduction(study: Study, study_dir: Union[str, Path], run_name: str, device: str = "",
                      train_script: Union[str, Path, None] = None) -> tuple:
    """``(PlannedRun, threads, warning)`` for rerunning ``run_name`` into ``<study>/reproductions/``: skip (the
    rerun finished), resume or start, as for a run of the study; ``threads`` is the original's recorded thread count
    (None when it recorded none: then the rerun gets ablate.py's default); ``warning`` says why digits cannot agree
    (the original ran on a GPU), else "". Raises AblationError when the run is not one of the spec's, has not
    finished, or it or an earlier rerun was made with another config than the spec now gives."""
    runs = {run.run_name: run for run in study.runs}
    if run_name not in runs:
        known = ", ".join(list(runs)[:6]) + (", ..." if len(runs) > 6 else "")
        raise AblationError(f"--reproduce {run_name!r}: {study.spec_path} has no such run (its runs: {known})")
    original = Path(study_dir) / "runs" / run_name
    summary, problem = read_summary(original)
    if summary is None:
        raise AblationError(f"--reproduce {run_name}: {original} is not a finished run "
                            f"({problem or 'no summary.json'}); only a finished run can be reproduced")
    if _final(summary) is None:
        raise AblationError(f"--reproduce {run_name}: {original / 'summary.json'} has no final {METRIC} to compare "
                            "with (was the run made with --noval?)")
    _, conflict = plan_one(study, runs[run_name], Path(study_dir) / "runs", device, train_script)
    if conflict:  # e.g. key=value overrides other than the study's: the rerun would not be the same run
        raise AblationError(f"--reproduce {run_name}: the original was made with another config than the spec "
                            f"(and the command line's key=value) now gives:\n{conflict}")
    item, conflict = plan_one(study, runs[run_name], Path(study_dir) / REPRODUCTIONS, device, train_script)
    if conflict:
        raise AblationError(f"--reproduce {run_name}: the earlier rerun was made with another config than the spec "
                            f"now gives:\n{conflict}\ndelete {item.run_dir} to rerun it")
    env = _read_json(original / "environment.json")
    threads = env.get("threads")
    threads = threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None
    device = str(env.get("device") or "cpu")
    warning = "" if device == "cpu" else (f"the original ran on {device}, where training is not deterministic: "
                                          "expect a difference of the size of the seeds' spread, not equal digits")
    return item, threads, warning


def compare(study_dir: Union[str, Path], run_name: str) -> Optional[Reproduction]:
    """The rerun of ``run_name`` beside its original, or None when either has no final mAP@.5:.95 to compare."""
    original_dir = Path(study_dir) / "runs" / run_name
    rerun_dir = reproduction_dir(study_dir, run_name)
    original = _final(read_summary(original_dir)[0])
    if original is None or not rerun_dir.is_dir():
        return None
    rerun = _final(read_summary(rerun_dir)[0])
    before, after = _curve(original_dir), _curve(rerun_dir)
    common = sorted(set(before) & set(after))
    largest = max((abs(after[e] - before[e]) for e in common), default=float("nan"))
    exit_code = _read_json(rerun_dir / "ablation.json").get("exit_code")
    return Reproduction(run_name, original, rerun, len(common), largest, _read_json(original_dir / "environment.json"),
                        _read_json(rerun_dir / "environment.json"),
                        exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None)


def collect(study_dir: Union[str, Path]) -> list:
    """Every rerun folder of a study that can be compared with its original, by run name."""
    folder = Path(study_dir) / REPRODUCTIONS
    if not folder.is_dir():
        return []
    found = (compare(study_dir, path.name) for path in sorted(folder.iterdir()) if path.is_dir())
    return [item for item in found if item is not None]


def describe(item: Reproduction, tolerance: float = TOLERANCE) -> str:
    """One line for the terminal: the two finals, their difference and the verdict."""
    if item.rerun is None:
        return f"{item.run_name}: the rerun " + (f"failed (exit code {item.exit_code})" if item.failed else
                                                 "has not finished (no final mAP@.5:.95 in its summary.json)")
    verdict = "reproduced" if item.within(tolerance) else "NOT reproduced"
    curve = (f"largest difference over the {item.epochs_compared} epochs both validated "
             f"{item.largest_epoch_difference:.4f}" if item.epochs_compared else "no epoch validated in both")
    return (f"{item.run_name}: final val mAP@.5:.95 {item.original:.4f} (original), {item.rerun:.4f} (rerun), "
            f"difference {item.difference:+.4f}: {verdict} (tolerance {tolerance}); {curve}; original on "
            f"{environment_text(item.original_env)}, rerun on {environment_text(item.rerun_env)}")


def environment_text(env: dict) -> str:
    """'AMD EPYC, 2 cores, AVX2, no native bf16; 1 thread; torch 2.13.0+cpu' from an environment.json (the device
    first when it is a GPU)."""
    if not env:
        return "unknown (no environment.json)"
    threads = env.get("threads")
    device = str(env.get("device") or "cpu")
    parts = [] if device == "cpu" else [f"{device} ({env['gpu']})" if env.get("gpu") else device]
    parts.append(str(env.get("cpu_line") or "unknown CPU"))
    if threads is not None:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if env.get("torch"):
        parts.append(f"torch {env['torch']}")
    return "; ".join(parts)


def _final(summary: Optional[dict]) -> Optional[float]:
    value = ((summary or {}).get("final") or {}).get(METRIC)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _curve(run_dir: Path) -> dict:
    """epoch -> val mAP@.5:.95 of the epochs results.csv has one for (validation may skip epochs)."""
    try:
        table = read_results_csv(run_dir / "results.csv")
    except (OSError, ValueError):
        return {}
    epochs, values = table.get("epoch"), table.get(METRIC)
    if epochs is None or values is None:
        return {}
    return {int(e): float(v) for e, v in zip(epochs, values) if math.isfinite(e) and math.isfinite(v)}


def _read_json(path: Path) -> dict:
    """A JSON mapping, or {} when the file is missing, unreadable or not a mapping (the table then says unknown)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


__all__ = ["METRIC", "REPRODUCTIONS", "TOLERANCE", "Reproduction", "collect", "compare", "describe",
           "environment_text", "plan_reproduction", "reproduction_dir"]
