"""The ablation report: tables, paired statistics and plots, rebuilt from a study's run folders alone.

Reads ``runs/ablate/<study>/runs/<run>/`` — ``ablation.json`` (identity written by ablate.py before launch: variant,
arm, grid values, seed, baseline, planned index, exit code), ``config.yaml``, ``results.csv``, ``summary.json`` and
``objectness_losses.npz`` — and writes into ``runs/ablate/<study>/``:

    summary.csv                 one row per run (identity, status, final metrics and losses, wall time)
    summary.md                  per arm: mean ± sample sd over seeds and n; the difference to the baseline with a
                                paired 95% confidence interval over seeds (mean of per-seed differences
                                ± t_{0.975, n-1} · sd / sqrt(n)); whether it excludes 0
    map_per_variant.png         (a) mAP@0.5 and mAP@0.5:0.95 per arm: mean ± sd, individual seeds as dots
    val_map_per_epoch.png       (b) validation mAP@0.5 per epoch: mean line and min–max band over seeds
    objectness_losses.png       (c) train object loss, no-object loss and noobj/obj per epoch (log scale)
    grid_gamma_alpha.png        (d) only when the grid sweeps a *gamma and an *alpha key: mAP@0.5 over gamma, a
                                line per alpha
    objectness_cdf.png          (e) cumulative normalised objectness loss of the final model over positives and over
                                negatives, samples sorted by loss (Lin et al. 2017, Fig. 4)

Run status: ``finished`` (summary.json with ``"status": "finished"``; a damaged one is named in a note and does not
count), ``failed`` (ablation.json records a non-zero exit, or exit 0 without a summary), ``partial`` (results.csv or
last.pt but no summary: running or interrupted), ``not started``. Only finished runs enter the statistics and
plots; everything missing is skipped with a note in summary.md, never an exception.
Seeds pair runs: the baseline's seed k run is compared with each arm's seed k run.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import yaml

from yolov3.runs import read_results_csv, read_summary

METRICS = ("mAP50", "mAP50_95", "precision", "recall")
METRIC_TITLES = {"mAP50": "mAP@0.5", "mAP50_95": "mAP@0.5:0.95", "precision": "precision", "recall": "recall"}
CONFIDENCE = 0.95  # two-sided level of the paired interval
CDF_POINTS = 201  # fractions at which the cumulative loss curves are sampled (0, 0.005, ..., 1)
SUMMARY_COLUMNS = ["run", "variant", "arm", "seed", "status", "mAP50", "mAP50_95", "precision", "recall",
                   "train_obj", "train_noobj", "noobj_obj_ratio", "epochs", "wall_time_s",
                   "obj_loss", "obj_gamma", "obj_alpha"]


# --------------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------------
def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer ``df`` >= 1, in closed form (Abramowitz & Stegun 26.7.3-4).

    With theta = atan(|t| / sqrt(df)) and c = cos^2(theta), A = P(|T| < |t|) is
      odd df:  (2/pi) [theta + sin(theta) cos(theta) (1 + 2/3 c + 2*4/(3*5) c^2 + ... up to (df-3)/2 terms)]
               (just 2 theta / pi for df = 1)
      even df: sin(theta) [1 + 1/2 c + 1*3/(2*4) c^2 + ... up to (df-2)/2 terms]
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        series, term = (1.0, 1.0) if df > 1 else (0.0, 0.0)
        for k in range(1, (df - 3) // 2 + 1):
            term *= (2 * k) / (2 * k + 1) * c2
            series += term
        inside = (2 / math.pi) * (theta + math.sin(theta) * math.cos(theta) * series)
    else:
        series, term = 1.0, 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= (2 * k - 1) / (2 * k) * c2
            series += term
        inside = math.sin(theta) * series
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (e.g. t_{0.975, 2} = 4.303), by bisection on the CDF."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if p == 0.5:
        return 0.0
    high = 1.0
    while student_t_cdf(high, df) < p:  # bracket the root; the CDF is increasing
        high *= 2
    low = 0.0
    for _ in range(200):
        mid = (low + high) / 2
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def mean_sd(values: Sequence[float]) -> tuple:
    """(mean, sample standard deviation with n-1); sd is nan for fewer than 2 values, both nan for none."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return float(values.mean()), sd


@dataclass
class PairedDifference:
    """Variant minus baseline over the seeds both finished; interval = mean ± t_{(1+level)/2, n-1} sd / sqrt(n)."""

    n: int
    seeds: list
    mean: float
    sd: float
    half_width: Optional[float]  # None when n < 2 (undefined)
    low: Optional[float]
    high: Optional[float]
    excludes_zero: Optional[bool]


def paired_difference(baseline_by_seed: dict, variant_by_seed: dict, level: float = CONFIDENCE) -> PairedDifference:
    """Paired comparison over the seeds present (and finite) in both {seed: value} mappings."""
    seeds = sorted(s for s in variant_by_seed if s in baseline_by_seed
                   and np.isfinite(variant_by_seed[s]) and np.isfinite(baseline_by_seed[s]))
    diffs = [variant_by_seed[s] - baseline_by_seed[s] for s in seeds]
    mean, sd = mean_sd(diffs)
    if len(diffs) < 2:
        return PairedDifference(len(diffs), seeds, mean, sd, None, None, None, None)
    half = t_quantile((1 + level) / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return PairedDifference(len(diffs), seeds, mean, sd, half, mean - half, mean + half,
                            bool(mean - half > 0 or mean + half < 0))


# --------------------------------------------------------------------------------------------------------------------
# Reading run folders
# --------------------------------------------------------------------------------------------------------------------
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
    objectness: Optional[dict] = None  # {'pos': array, 'neg': array} from objectness_losses.npz
    config: Optional[dict] = None  # config.yaml
    baseline: Optional[str] = None  # the study's baseline variant as recorded in ablation.json


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
    elif history is not None or (run_dir / "last.pt").is_file():
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
                objectness = {"pos": np.asarray(npz["pos"], dtype=float).ravel(),
                              "neg": np.asarray(npz["neg"], dtype=float).ravel()}
        except (OSError, KeyError, ValueError) as exc:
            notes.append(f"{run_dir.name}: objectness_losses.npz unreadable ({exc})")
    elif status == "finished":
        notes.append(f"{run_dir.name}: no objectness_losses.npz; left out of the loss-distribution plot")

    return RunResult(run_name=identity.get("run_name", run_dir.name), run_dir=run_dir,
                     index=int(identity.get("index", 10**9)), variant=str(identity.get("variant", run_dir.name)),
                     arm=str(identity.get("arm", run_dir.name)), grid=dict(identity.get("grid") or {}),
                     seed=int(identity.get("seed", -1)), status=status, metrics=metrics, history=history,
                     objectness=objectness, config=config, baseline=identity.get("baseline"))


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


# --------------------------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class ArmSummary:
    """One arm (variant + grid point) over its finished seeds."""

    arm: str
    variant: str
    grid: dict
    seeds: list  # finished seeds
    n: int
    values: dict  # metric -> {seed: value}
    mean: dict  # metric -> mean over seeds
    sd: dict  # metric -> sample sd (nan for n < 2)
    vs_baseline: dict  # metric -> PairedDifference (absent for the baseline itself)


SUMMARY_METRICS = METRICS + ("train_obj", "train_noobj", "noobj_obj_ratio", "wall_time_s")


def _ratio(metrics: dict) -> float:
    obj, noobj = metrics.get("train_obj", float("nan")), metrics.get("train_noobj", float("nan"))
    return noobj / obj if np.isfinite(obj) and np.isfinite(noobj) and obj > 0 else float("nan")


def summarize_arms(runs: Sequence[RunResult], baseline: Optional[str]) -> list:
    """Mean ± sd per arm over finished runs, and paired differences to the baseline arm, in planned order."""
    order: list = []
    by_arm: dict = {}
    for run in runs:
        if run.arm not in by_arm:
            order.append(run.arm)
            by_arm[run.arm] = []
        if run.status == "finished":
            by_arm[run.arm].append(run)
    arms = []
    for arm in order:
        finished = by_arm[arm]
        values = {m: {r.seed: (_ratio(r.metrics) if m == "noobj_obj_ratio" else r.metrics.get(m, float("nan")))
                      for r in finished} for m in SUMMARY_METRICS}
        stats = {m: mean_sd(list(values[m].values())) for m in SUMMARY_METRICS}
        first = next(r for r in runs if r.arm == arm)
        arms.append(ArmSummary(arm=arm, variant=first.variant, grid=dict(first.grid),
                               seeds=sorted(r.seed for r in finished), n=len(finished), values=values,
                               mean={m: s[0] for m, s in stats.items()}, sd={m: s[1] for m, s in stats.items()},
                               vs_baseline={}))
    base = next((a for a in arms if a.arm == baseline), None)
    if base is not None:
        for arm in arms:
            if arm is not base:
                arm.vs_baseline = {m: paired_difference(base.values[m], arm.values[m]) for m in METRICS}
    return arms


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_summary_csv(study: StudyRuns, path: Union[str, Path]) -> list:
    """One row per run; grid values get a column per grid key (named by the dotted key). Returns the rows."""
    header = SUMMARY_COLUMNS[:3] + list(study.grid_keys) + SUMMARY_COLUMNS[3:]
    rows = []
    for run in study.runs:
        loss = ((run.config or {}).get("loss") or {}).get("objectness") or {}
        row = {"run": run.run_name, "variant": run.variant, "arm": run.arm, "seed": run.seed, "status": run.status,
               **{m: run.metrics.get(m) for m in METRICS + ("train_obj", "train_noobj", "epochs", "wall_time_s")},
               "noobj_obj_ratio": _ratio(run.metrics), "obj_loss": loss.get("name"),
               "obj_gamma": loss.get("gamma"), "obj_alpha": "none" if loss and loss.get("alpha") is None
               else loss.get("alpha")}
        for key in study.grid_keys:
            row[key] = run.grid.get(key, "") if key in run.grid else ""
            if key in run.grid and run.grid[key] is None:
                row[key] = "none"
        rows.append(row)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(row.get(col)) for col in header])
    return rows


def _pm(mean: float, sd: float, digits: int = 4) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if np.isfinite(sd) else f"{mean:.{digits}f} (n=1)"


def _interval(diff: Optional[PairedDifference], digits: int = 4) -> tuple:
    """(difference, CI text, excludes-0 text) for a summary.md row."""
    if diff is None:
        return "(baseline)", "", ""
    if diff.n == 0:
        return "—", "no seed finished in both", ""
    delta = f"{diff.mean:+.{digits}f}"
    if diff.half_width is None:
        return delta, "undefined (n=1)", ""
    ci = f"±{diff.half_width:.{digits}f} [{diff.low:+.{digits}f}, {diff.high:+.{digits}f}]"
    return delta, ci, "yes" if diff.excludes_zero else "no"


def summary_markdown(study: StudyRuns, arms: Sequence[ArmSummary], plots: Sequence[str]) -> str:
    """The text of summary.md."""
    counts = {}
    for run in study.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    lines = [f"# Ablation study `{study.name}`", ""]
    lines.append(f"Baseline: `{study.baseline}`. Runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
    lines.append("")
    lines.append(f"Each cell is the mean ± sample sd over finished seeds. Δ is the arm minus the baseline, paired by "
                 f"seed; the interval is the mean of the per-seed differences ± t(0.975, n−1) · sd/√n "
                 f"({int(CONFIDENCE * 100)}% confidence; undefined for n = 1). 'excl. 0' says whether the interval "
                 f"excludes zero.")
    for metric in ("mAP50", "mAP50_95"):
        lines += ["", f"## {METRIC_TITLES[metric]}", "",
                  "| arm | n | mean ± sd | Δ vs baseline | 95% CI of Δ | excl. 0 |", "|---|---|---|---|---|---|"]
        for arm in arms:
            delta, ci, excl = _interval(arm.vs_baseline.get(metric) if arm.vs_baseline else None)
            if arm.arm != study.baseline and not arm.vs_baseline:
                delta, ci, excl = "—", "no baseline", ""
            lines.append(f"| {arm.arm} | {arm.n} | {_pm(arm.mean[metric], arm.sd[metric])} | {delta} | {ci} | "
                         f"{excl} |")
    lines += ["", "## Precision, recall and final training objectness losses", "",
              "| arm | n | precision | recall | train obj | train noobj | noobj / obj | wall time (min) |",
              "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        wall = arm.mean["wall_time_s"] / 60 if np.isfinite(arm.mean["wall_time_s"]) else float("nan")
        lines.append(f"| {arm.arm} | {arm.n} | {_pm(arm.mean['precision'], arm.sd['precision'])} | "
                     f"{_pm(arm.mean['recall'], arm.sd['recall'])} | "
                     f"{_pm(arm.mean['train_obj'], arm.sd['train_obj'])} | "
                     f"{_pm(arm.mean['train_noobj'], arm.sd['train_noobj'])} | "
                     f"{_pm(arm.mean['noobj_obj_ratio'], arm.sd['noobj_obj_ratio'], 2)} | "
                     f"{'—' if not np.isfinite(wall) else f'{wall:.1f}'} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if study.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in study.notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API: no pyplot state, no display needed)
# --------------------------------------------------------------------------------------------------------------------
def _figure(ncols: int, width: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_map_per_arm(arms: Sequence[ArmSummary], path: Union[str, Path], baseline: Optional[str] = None) -> dict:
    """(a) mAP@0.5 and mAP@0.5:0.95 per arm: mean with sd error bars, each seed a dot. Returns the plotted data."""
    data = {m: {a.arm: {"mean": a.mean[m], "sd": a.sd[m], "seeds": dict(a.values[m])} for a in arms if a.n}
            for m in ("mAP50", "mAP50_95")}
    fig, axes = _figure(2, width=max(5.0, 0.55 * len(arms) + 2))
    for ax, metric in zip(axes, ("mAP50", "mAP50_95")):
        shown = [a for a in arms if a.n]
        x = np.arange(len(shown))
        means = [a.mean[metric] for a in shown]
        sds = [a.sd[metric] if np.isfinite(a.sd[metric]) else 0.0 for a in shown]
        ax.errorbar(x, means, yerr=sds, fmt="s", color="black", capsize=4, label="mean ± sd", zorder=3)
        for i, arm in enumerate(shown):
            seeds = sorted(arm.values[metric])
            offsets = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else [0.0]
            ax.scatter(i + np.asarray(offsets), [arm.values[metric][s] for s in seeds], s=14, alpha=0.6,
                       color="tab:blue", label="seeds" if i == 0 else None, zorder=2)
        base = next((a for a in shown if a.arm == baseline), None)
        if base is not None:
            ax.axhline(base.mean[metric], color="gray", linestyle="--", linewidth=1, label=f"baseline {baseline}")
        ax.set_xticks(x, [a.arm for a in shown], rotation=45 if len(shown) > 3 else 0, ha="right"
                      if len(shown) > 3 else "center", fontsize=8)
        ax.set_ylabel(METRIC_TITLES[metric])
        ax.set_title(f"final {METRIC_TITLES[metric]} per arm")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return data


def _per_epoch(runs: Sequence[RunResult], column: str, transform=None) -> Optional[dict]:
    """Stack one results.csv column over runs by epoch number: {'epoch', 'mean', 'min', 'max', 'n'} or None."""
    series = []
    for run in runs:
        if run.history is None or column not in run.history and transform is None:
            continue
        values = transform(run.history) if transform else run.history[column]
        if values is None:
            continue
        epochs = run.history.get("epoch", np.arange(1, len(values) + 1, dtype=float))
        series.append(dict(zip(epochs.tolist(), values.tolist())))
    if not series:
        return None
    epochs = sorted({e for s in series for e in s})
    table = np.array([[s.get(e, np.nan) for e in epochs] for s in series], dtype=float)  # (runs, epochs)
    valid = np.isfinite(table).any(axis=0)
    if not valid.any():
        return None
    table = table[:, valid]
    with np.errstate(all="ignore"):
        return {"epoch": np.asarray(epochs)[valid], "mean": np.nanmean(table, axis=0),
                "min": np.nanmin(table, axis=0), "max": np.nanmax(table, axis=0),
                "n": np.isfinite(table).sum(axis=0)}


def _finished_by_arm(runs: Sequence[RunResult]) -> dict:
    out: dict = {}
    for run in runs:
        if run.status == "finished":
            out.setdefault(run.arm, []).append(run)
    return out


def plot_val_map_per_epoch(runs: Sequence[RunResult], path: Union[str, Path], notes: list) -> dict:
    """(b) validation mAP@0.5 per epoch per arm: mean over seeds, min–max band."""
    by_arm = _finished_by_arm(runs)
    data = {}
    for arm, arm_runs in by_arm.items():
        curve = _per_epoch(arm_runs, "mAP50")
        if curve is None:
            notes.append(f"{arm}: no per-epoch mAP50 in results.csv; left out of the per-epoch plot")
            continue
        data[arm] = curve
    fig, axes = _figure(1, width=7)
    ax = axes[0]
    for (arm, curve), color in zip(data.items(), _colors(len(data))):
        ax.plot(curve["epoch"], curve["mean"], color=color, label=arm)
        ax.fill_between(curve["epoch"], curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mAP@0.5")
    ax.set_title("validation mAP@0.5 (mean over seeds, min–max band)")
    ax.grid(alpha=0.3)
    if data:
        ax.legend(fontsize=7, ncol=2 if len(data) > 8 else 1)
    fig.savefig(path, dpi=120)
    return data


def plot_objectness_losses(runs: Sequence[RunResult], path: Union[str, Path], notes: list) -> dict:
    """(c) train object loss, no-object loss and their ratio noobj/obj per epoch per arm (log scale).

    Under BCE the no-object term, summed over thousands of empty cells, can dwarf the object term; the ratio shows
    by how much and how focal loss changes it."""
    def ratio(history: dict) -> Optional[np.ndarray]:
        if "train_obj" not in history or "train_noobj" not in history:
            return None
        with np.errstate(all="ignore"):
            return np.where(history["train_obj"] > 0, history["train_noobj"] / history["train_obj"], np.nan)

    panels = (("train_obj", "object loss (train)", None), ("train_noobj", "no-object loss (train)", None),
              ("ratio", "no-object / object", ratio))
    data: dict = {name: {} for name, _, _ in panels}
    for arm, arm_runs in _finished_by_arm(runs).items():
        for name, _, transform in panels:
            curve = _per_epoch(arm_runs, name, transform)
            if curve is not None:
                data[name][arm] = curve
        if arm not in data["train_obj"]:
            notes.append(f"{arm}: no train_obj/train_noobj columns in results.csv; left out of the loss plot")
    fig, axes = _figure(3)
    arms = list(dict.fromkeys(a for panel in data.values() for a in panel))
    colors = dict(zip(arms, _colors(len(arms))))
    for ax, (name, title, _) in zip(axes, panels):
        positive = True
        for arm, curve in data[name].items():
            ax.plot(curve["epoch"], curve["mean"], color=colors[arm], label=arm)
            ax.fill_between(curve["epoch"], curve["min"], curve["max"], color=colors[arm], alpha=0.15, linewidth=0)
            positive &= bool(np.all(curve["min"][np.isfinite(curve["min"])] > 0))
        if data[name] and positive:
            ax.set_yscale("log")  # the terms differ by orders of magnitude between BCE and focal
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    if arms:  # one legend for the three panels, outside them so it hides no curve
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    fig.savefig(path, dpi=120)
    return data


def find_gamma_alpha_keys(grid_keys: Sequence[str]) -> Optional[tuple]:
    """(gamma key, alpha key) when the grid sweeps both, preferring a pair under the same section."""
    gammas = [k for k in grid_keys if k.split(".")[-1] == "gamma"]
    alphas = [k for k in grid_keys if k.split(".")[-1] == "alpha"]
    for g in gammas:
        for a in alphas:
            if g.rsplit(".", 1)[0] == a.rsplit(".", 1)[0]:
                return g, a
    return (gammas[0], alphas[0]) if gammas and alphas else None


def plot_gamma_alpha(arms: Sequence[ArmSummary], grid_keys: Sequence[str], path: Union[str, Path],
                     baseline: Optional[str] = None) -> Optional[dict]:
    """(d) mAP@0.5 over gamma, one line per alpha (mean ± sd over seeds), a panel per gridded variant.

    Returns {variant: {alpha label: {'gamma': [...], 'mean': [...], 'sd': [...]}}}, or None (no plot) when the grid
    does not sweep both a gamma and an alpha key."""
    keys = find_gamma_alpha_keys(grid_keys)
    if keys is None:
        return None
    gamma_key, alpha_key = keys
    data: dict = {}
    for arm in arms:
        if arm.n == 0 or gamma_key not in arm.grid or alpha_key not in arm.grid:
            continue
        alpha = arm.grid[alpha_key]
        label = "none" if alpha is None else format(alpha, "g")
        line = data.setdefault(arm.variant, {}).setdefault(label, {"gamma": [], "mean": [], "sd": []})
        line["gamma"].append(float(arm.grid[gamma_key]))
        line["mean"].append(arm.mean["mAP50"])
        line["sd"].append(arm.sd["mAP50"])
    if not data:
        return None
    for lines in data.values():  # sort each line by gamma
        for line in lines.values():
            order = np.argsort(line["gamma"])
            for k in line:
                line[k] = [line[k][i] for i in order]
    base = next((a for a in arms if a.arm == baseline and a.n), None)
    fig, axes = _figure(len(data), width=6)
    for ax, (variant, lines) in zip(axes, data.items()):
        for (label, line), color in zip(lines.items(), _colors(len(lines))):
            sds = [s if np.isfinite(s) else 0.0 for s in line["sd"]]
            ax.errorbar(line["gamma"], line["mean"], yerr=sds, marker="o", capsize=3, color=color,
                        label=f"{alpha_key.split('.')[-1]} = {label}")
        if base is not None:
            ax.axhline(base.mean["mAP50"], color="gray", linestyle="--", linewidth=1, label=f"baseline {baseline}")
        ax.set_xlabel(gamma_key)
        ax.set_ylabel("mAP@0.5")
        ax.set_title(f"{variant}: mAP@0.5 over {gamma_key.split('.')[-1]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return data


def cumulative_loss_curve(losses: np.ndarray, fractions: np.ndarray) -> Optional[np.ndarray]:
    """Cumulative normalised loss at ``fractions`` of the samples sorted by loss, ascending (Lin et al. Fig. 4).

    Sample i of n (sorted) sits at fraction (i+1)/n with value sum(losses[:i+1]) / sum(losses); the curve starts at
    (0, 0) and is linear in between. None when there are no samples or the total loss is not positive."""
    losses = np.sort(np.asarray(losses, dtype=float).ravel())
    losses = losses[np.isfinite(losses)]
    total = losses.sum() if losses.size else 0.0
    if losses.size == 0 or total <= 0:
        return None
    x = np.concatenate([[0.0], np.arange(1, losses.size + 1) / losses.size])
    y = np.concatenate([[0.0], np.cumsum(losses) / total])
    return np.interp(fractions, x, y)


def plot_objectness_cdf(runs: Sequence[RunResult], path: Union[str, Path], notes: list) -> dict:
    """(e) per arm, the mean over seeds of the cumulative normalised loss curves, positives and negatives."""
    fractions = np.linspace(0.0, 1.0, CDF_POINTS)
    data: dict = {"fraction": fractions, "pos": {}, "neg": {}}
    for arm, arm_runs in _finished_by_arm(runs).items():
        for kind in ("pos", "neg"):
            curves = []
            for run in arm_runs:
                if run.objectness is None:
                    continue
                curve = cumulative_loss_curve(run.objectness[kind], fractions)
                if curve is None:
                    notes.append(f"{run.run_name}: no {kind} objectness losses with a positive total; "
                                 f"left out of the {kind} distribution")
                    continue
                curves.append(curve)
            if curves:
                data[kind][arm] = np.mean(curves, axis=0)
    fig, axes = _figure(2)
    arms = list(dict.fromkeys(list(data["pos"]) + list(data["neg"])))
    colors = dict(zip(arms, _colors(len(arms))))
    for ax, kind, title in zip(axes, ("pos", "neg"), ("positive samples", "negative samples")):
        for arm, curve in data[kind].items():
            ax.plot(fractions, curve, color=colors[arm], label=arm)
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)  # equal loss per sample
        ax.set_xlabel(f"fraction of {title} (sorted by loss, ascending)")
        ax.set_ylabel("cumulative normalised loss")
        ax.set_title(f"objectness loss of the final model: {title}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    if arms:
        fig.legend(*axes[0 if data["pos"] else 1].get_legend_handles_labels(), loc="outside right upper",
                   fontsize=7)
    fig.savefig(path, dpi=120)
    return data


# --------------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Report:
    study: StudyRuns
    arms: list  # list[ArmSummary]
    rows: list  # summary.csv rows
    files: dict  # name -> Path of every file written
    plots: dict  # plot name -> the data drawn


def build_report(study_dir: Union[str, Path], plots: bool = True) -> Report:
    """Rebuild summary.csv, summary.md and the plots of ``runs/ablate/<study>/`` from its run folders."""
    study_dir = Path(study_dir)
    study = collect_runs(study_dir)
    arms = summarize_arms(study.runs, study.baseline)
    if study.baseline is not None and not any(a.arm == study.baseline and a.n for a in arms):
        study.notes.append(f"the baseline {study.baseline} has no finished run yet; no differences computed")
    files: dict = {}
    plot_data: dict = {}
    files["summary.csv"] = study_dir / "summary.csv"
    rows = write_summary_csv(study, files["summary.csv"])
    if plots:
        finished = [r for r in study.runs if r.status == "finished"]
        if not finished:
            study.notes.append("no finished run yet; plots skipped")
        else:
            files["map_per_variant.png"] = study_dir / "map_per_variant.png"
            plot_data["map_per_variant"] = plot_map_per_arm(arms, files["map_per_variant.png"], study.baseline)
            files["val_map_per_epoch.png"] = study_dir / "val_map_per_epoch.png"
            plot_data["val_map_per_epoch"] = plot_val_map_per_epoch(study.runs, files["val_map_per_epoch.png"],
                                                                    study.notes)
            files["objectness_losses.png"] = study_dir / "objectness_losses.png"
            plot_data["objectness_losses"] = plot_objectness_losses(study.runs, files["objectness_losses.png"],
                                                                    study.notes)
            grid_path = study_dir / "grid_gamma_alpha.png"
            grid_data = plot_gamma_alpha(arms, study.grid_keys, grid_path, study.baseline)
            if grid_data is not None:
                files["grid_gamma_alpha.png"] = grid_path
                plot_data["grid_gamma_alpha"] = grid_data
            if any(r.objectness is not None for r in finished):
                files["objectness_cdf.png"] = study_dir / "objectness_cdf.png"
                plot_data["objectness_cdf"] = plot_objectness_cdf(study.runs, files["objectness_cdf.png"],
                                                                  study.notes)
            else:
                study.notes.append("no run has objectness_losses.npz; loss-distribution plot skipped")
    pngs = [str(p) for name, p in files.items() if name.endswith(".png")]
    files["summary.md"] = study_dir / "summary.md"
    files["summary.md"].write_text(summary_markdown(study, arms, pngs), encoding="utf-8")
    return Report(study=study, arms=arms, rows=rows, files=files, plots=plot_data)
