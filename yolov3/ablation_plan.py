"""Planning a study: for each run, skip it (finished), resume it (last.pt) or start it, and the train.py command.

A run's state is read from its folder alone (summary.json, last.pt, config.yaml; see :mod:`yolov3.ablation`), so a
crashed or extended study picks up where it stopped. ``describe_plan`` is ablate.py's --dry-run listing.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from yolov3 import config as config_lib
from yolov3 import paths
from yolov3.ablation_spec import AblationError, RunSpec, Study, config_differences, format_value
from yolov3.runs import checkpoint_path, read_summary

ROOT = paths.ROOT  # the checkout, or its copy inside the installed package
DEFAULT_TRAIN_SCRIPT = ROOT / "train.py"
# resolved config keys passed to train.py as flags (always, so train.py's own flag defaults never matter)
FLAG_KEYS = {"cfg": "--cfg", "data": "--data", "train.epochs": "--epochs", "train.batch_size": "--batch-size",
             "train.img_size": "--img-size", "train.seed": "--seed", "train.workers": "--workers"}


@dataclass
class PlannedRun:
    """A run and what to do with it now: 'skip' (finished), 'resume' (last.pt, no summary.json) or 'start'."""

    run: RunSpec
    run_dir: Path
    action: str
    command: list  # argv (train.py invocation), empty for 'skip'
    note: str = ""  # why a run folder is not what it seems (e.g. a damaged summary.json), for the user


# --------------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------------
def yaml_value(value: Any) -> str:
    """A value as train.py's ``key=value`` parser (yaml.safe_load) reads it back: None -> 'null', 'a b' -> 'a b'."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    if text.endswith("..."):
        text = text[:-3].strip()
    return text


def train_command(run: RunSpec, runs_dir: Union[str, Path], hyp: Optional[str] = None, device: str = "",
                  train_script: Union[str, Path, None] = None, resume: bool = False) -> list:
    """The train.py argv for ``run``: the flag keys (:data:`FLAG_KEYS`) from the resolved config, then every other
    spec override as ``key=value``. A resume passes only ``--resume <run>/last.pt`` (train.py takes the config
    from the checkpoint), plus --workers and --device."""
    script = str(train_script or DEFAULT_TRAIN_SCRIPT)
    cmd = [sys.executable, script]
    run_dir = Path(runs_dir) / run.run_name
    if resume:
        cmd += ["--resume", str(checkpoint_path(run_dir, "last.pt")), "--workers", str(run.config.train.workers)]
        return cmd + (["--device", device] if device else [])
    for key, flag in FLAG_KEYS.items():
        cmd += [flag, str(config_lib.get_dotted(run.config, key))]
    if hyp:
        cmd += ["--hyp", hyp]
    cmd += ["--project", str(runs_dir), "--name", run.run_name, "--exist-ok"]
    if device:
        cmd += ["--device", device]
    cmd += [f"{key}={yaml_value(value)}" for key, value in run.overrides.items() if key not in FLAG_KEYS]
    return cmd


def display_command(cmd: Sequence[str]) -> str:
    """``cmd`` as a shell line, with the interpreter shown as 'python' and the script relative to the cwd."""
    shown = list(cmd)
    if shown and shown[0] == sys.executable:
        shown[0] = "python"
    if len(shown) > 1:
        try:
            shown[1] = os.path.relpath(shown[1])
        except ValueError:
            pass
    return shlex.join(shown)


# --------------------------------------------------------------------------------------------------------------------
# Planning (skip / resume / start)
# --------------------------------------------------------------------------------------------------------------------
def study_paths(project: Union[str, Path], study_name: str) -> tuple:
    """(study_dir, runs_dir): runs/ablate/<study>/ and runs/ablate/<study>/runs/."""
    study_dir = Path(project) / study_name
    return study_dir, study_dir / "runs"


def parse_devices(device: str) -> list:
    """'0,1' -> ['0', '1']; '', 'cpu' -> [] (no GPU pinning)."""
    device = (device or "").strip().lower()
    if device in ("", "cpu", "auto"):
        return []
    parts = [d.strip().replace("cuda:", "") for d in device.split(",") if d.strip()]
    for part in parts:
        if not part.isdigit():
            raise AblationError(f"--device {device!r}: expected cpu or GPU indices such as 0 or 0,1")
    return parts


def plan_one(study: Study, run: RunSpec, runs_dir: Union[str, Path], device: str = "",
             train_script: Union[str, Path, None] = None) -> tuple:
    """``(PlannedRun, conflict)`` for ``run`` in ``runs_dir/<run name>``: 'skip' (summary.json), 'resume' (last.pt,
    no summary.json) or 'start'; ``conflict`` names the config keys in which a finished or partial run's saved
    config.yaml differs from what the spec resolves to (else ""). Raises AblationError for an unreadable config.yaml.
    """
    run_dir = Path(runs_dir) / run.run_name
    device = "0" if parse_devices(device) else device  # with GPUs listed, each child sees one, as cuda:0
    summary, problem = read_summary(run_dir)
    finished = summary is not None
    partial = checkpoint_path(run_dir, "last.pt").is_file()  # weights/last.pt, or last.pt of an older run
    conflict = ""
    if finished or partial:
        config_path = run_dir / "config.yaml"
        if config_path.is_file():
            try:
                saved = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError is a ValueError
                raise AblationError(f"{config_path}: unreadable or invalid YAML: {exc}") from None
            diffs = config_differences(run.config, saved)
            if diffs:
                conflict = (f"  {run_dir}: " + "; ".join(diffs[:5]) +
                            (f"; ... ({len(diffs) - 5} more)" if len(diffs) > 5 else ""))
        elif finished:
            conflict = f"  {run_dir}: has summary.json but no config.yaml to compare with the spec"
    if finished:
        action, cmd = "skip", []
    elif partial:
        action = "resume"
        cmd = train_command(run, runs_dir, study.hyp, device, train_script, resume=True)
    else:
        action = "start"
        cmd = train_command(run, runs_dir, study.hyp, device, train_script)
    done = {"resume": "resumed from its last.pt", "start": "started again"}.get(action, "")
    note = f"{problem}; the run counts as not finished and is {done}" if problem else ""
    return PlannedRun(run=run, run_dir=run_dir, action=action, command=cmd, note=note), conflict


def plan_runs(study: Study, study_dir: Union[str, Path], device: str = "",
              train_script: Union[str, Path, None] = None) -> list:
    """Decide per run: 'skip' (summary.json, config matches), 'resume' (last.pt, no summary.json) or 'start'.

    Raises AblationError listing every run whose saved config.yaml no longer matches the spec.
    """
    runs_dir = Path(study_dir) / "runs"
    planned, conflicts = [], []
    for run in study.runs:
        item, conflict = plan_one(study, run, runs_dir, device, train_script)
        planned.append(item)
        if conflict:
            conflicts.append(conflict)
    if conflicts:
        raise AblationError(f"{study.spec_path}: the spec changed since these runs were made (their config.yaml "
                            "differs from what the spec now resolves to):\n" + "\n".join(conflicts) +
                            "\ndelete those run folders to redo them, or run the changed spec under another "
                            "--name")
    return planned


def stale_run_folders(study: Study, study_dir: Union[str, Path]) -> list:
    """Run folders under the study that the current spec does not produce (e.g. a removed variant)."""
    runs_dir = Path(study_dir) / "runs"
    expected = {run.run_name for run in study.runs}
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in expected)


def describe_plan(study: Study, planned: Sequence[PlannedRun]) -> str:
    """The --dry-run listing: one block per run with its action, identity, overrides and exact command."""
    counts = {a: sum(p.action == a for p in planned) for a in ("start", "resume", "skip")}
    lines = [f"study {study.name}: {len(planned)} runs ({len(study.variants)} variants"
             + (f", grid {' x '.join(str(len(v)) for v in study.grid.values())} on {', '.join(study.grid_variants)}"
                if study.grid else "")
             + f", seeds {study.seeds}); baseline {study.baseline}; "
             + ", ".join(f"{n} to {a}" for a, n in counts.items()),
             "base: " + (f"--hyp {study.hyp} " if study.hyp else "")
             + (" ".join(f"{k}={yaml_value(v)}" for k, v in study.base.items()) or "(defaults)")]
    for p in planned:
        run = p.run
        grid = " ".join(f"{k}={format_value(v)}" for k, v in run.grid.items()) or "-"
        own = {**study.variants[run.variant], **run.grid}  # what this run adds to base
        overrides = " ".join(f"{k}={yaml_value(v)}" for k, v in own.items()) or "-"
        lines.append(f"[{run.index + 1}/{len(planned)}] {run.run_name}  ({p.action})")
        lines.append(f"    variant: {run.variant}  grid: {grid}  seed: {run.seed}")
        lines.append(f"    overrides (on top of base): {overrides}")
        lines.append(f"    command: {display_command(p.command) if p.command else '(finished; skipped)'}")
    return "\n".join(lines)
