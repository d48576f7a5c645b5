"""The ablation report's tables: summary.csv (one row per run) and summary.md (per arm, with paired intervals)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from yolov3 import ablation_reproduce
from yolov3.report_load import METRIC_TITLES, METRICS, StudyRuns, finished_by_arm, noobj_obj_ratio
from yolov3.report_stats import (CONFIDENCE, ArmSummary, PairedDifference, common_objectness_losses, mean_sd,
                                  paired_difference)

SUMMARY_COLUMNS = ["run", "variant", "arm", "seed", "status", "mAP50", "mAP50_95", "precision", "recall",
                   "train_obj", "train_noobj", "noobj_obj_ratio", "epochs", "wall_time_s",
                   "obj_loss", "obj_gamma", "obj_alpha", "numeric", "cpu"]


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
               "noobj_obj_ratio": noobj_obj_ratio(run.metrics), "obj_loss": loss.get("name"),
               "numeric": run.numeric, "cpu": run.cpu}
        if loss.get("name") != "bce":  # BCE has no gamma or alpha: its config's unused defaults stay blank
            row["obj_gamma"] = loss.get("gamma")
            row["obj_alpha"] = "none" if loss and loss.get("alpha") is None else loss.get("alpha")
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


def _p(value: Optional[float]) -> str:
    if value is None or not np.isfinite(value):
        return ""
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def _runs_cell(arm: ArmSummary) -> str:
    planned = sum(arm.statuses.values())
    failed = arm.statuses.get("failed", 0)
    return f"{arm.n}/{planned}" + (f" ({failed} failed)" if failed else "")


def data_balance_lines(study_dir: Union[str, Path]) -> list:
    """summary.md's section on the data: object : no-object cells of the training split, from the dataset.json
    ablate.py writes (one line per data, cfg and size of the arms); none for a study without one."""
    path = Path(study_dir) / "dataset.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    lines = ["", "## The data: object and no-object cells", ""]
    for entry in entries if isinstance(entries, list) else []:
        where = f"`{entry.get('data')}` with `{entry.get('cfg')}` at {entry.get('img_size')} px"
        if "noobject_per_object" not in entry:
            lines.append(f"- {where}: not counted ({entry.get('problem', 'no statistics')})")
            continue
        lines.append(f"- {where} (arms {', '.join(entry.get('arms', []))}): object : no-object cells = 1 : "
                     f"{entry['noobject_per_object']:,.0f} ({entry['object_cells']:,} object cells, one per box, "
                     f"and {entry['noobject_cells']:,} no-object cells in {entry['images']:,} training images of "
                     f"{entry['cells_per_image']:,} cells)")
    return lines


def reproduction_lines(study_dir: Union[str, Path]) -> list:
    """summary.md's section on the reruns under <study>/reproductions/ (ablate.py --reproduce): each finished run
    rerun with its seed beside the original; none for a study without reruns."""
    items = ablation_reproduce.collect(study_dir)
    if not items:
        return []
    tolerance = ablation_reproduce.TOLERANCE
    lines = ["", "## Reproductions", "",
             f"Finished runs rerun with their seed and thread count (`ablate.py SPEC --reproduce RUN`, into "
             f"`{ablation_reproduce.REPRODUCTIONS}/RUN/`): final val mAP@.5:.95 of each, their difference, the "
             f"largest difference over the epochs both validated, and whether the final ones agree within "
             f"{tolerance}. Equal digits are expected only on the same kind of CPU with the same torch and threads "
             f"(a GPU is not deterministic). Reruns never enter the tables above.", "",
             "| run | original | rerun | Δ | largest \\|Δ\\| over epochs (n) | within "
             f"{tolerance} | original ran on | rerun ran on |", "|---|---|---|---|---|---|---|---|"]
    env = ablation_reproduce.environment_text
    for item in items:
        if item.rerun is None:
            rerun, delta, within = f"failed (exit {item.exit_code})" if item.failed else "not finished", "", ""
        else:
            rerun, delta, within = f"{item.rerun:.4f}", f"{item.difference:+.4f}", "yes" if item.within() else "no"
        largest = "" if not np.isfinite(item.largest_epoch_difference) else \
            f"{item.largest_epoch_difference:.4f} ({item.epochs_compared})"
        lines.append(f"| {item.run_name} | {item.original:.4f} | {rerun} | {delta} | {largest} | {within} | "
                     f"{env(item.original_env)} | {env(item.rerun_env)} |")
    return lines


HARDEST_FRACTION = 0.01  # "the hardest 1 % of negatives" in the diagnostics table


def hardest_share(losses: np.ndarray, fraction: float = HARDEST_FRACTION) -> float:
    """The share of the summed loss that the ``fraction`` of samples with the largest losses carry (nan if empty)."""
    losses = np.sort(np.asarray(losses, dtype=float))[::-1]
    total = losses.sum()
    if not len(losses) or not total > 0:
        return float("nan")
    return float(losses[:max(1, int(round(fraction * len(losses))))].sum() / total)


def _first_step(run, column: str) -> float:
    steps = run.steps or {}
    if column not in steps or not len(steps[column]):
        return float("nan")
    return float(steps[column][0])


def _epoch(run, column: str, which: int) -> float:
    history = run.history or {}
    values = history.get(column)
    if values is None or not len(values):
        return float("nan")
    return float(values[which])


def _last_recorded(run, column: str) -> float:
    """The column's value in the last epoch that recorded one. After epoch 1 the diagnostics sample every
    ``train.diagnostics_every``-th step, so an epoch shorter than that may hold no sample (nan): the final epoch of a
    60-epoch BCCD run (13 steps an epoch, step 780 is the first after its end) is one."""
    values = (run.history or {}).get(column)
    if values is None:
        return float("nan")
    finite = [float(v) for v in values if np.isfinite(v)]
    return finite[-1] if finite else float("nan")


def _max_epoch(run, column: str) -> float:
    values = (run.history or {}).get(column)
    if values is None or not len(values) or not np.isfinite(values).any():
        return float("nan")
    return float(np.nanmax(values))


def _common_bce(run, kind: str) -> np.ndarray:
    """The final model's saved logits of ``kind`` (pos, neg) scored with BCE; empty for a run saved without them."""
    objectness = run.objectness or {}
    if f"{kind}_logit" not in objectness:
        return np.zeros(0)
    return common_objectness_losses(objectness[f"{kind}_logit"], kind == "pos", "bce")


def _positives_bce(run) -> float:
    losses = _common_bce(run, "pos")
    return float(losses.mean()) if len(losses) else float("nan")


# (header, digits, value of one finished run): each column's mean ± sd over an arm's finished seeds
DIAGNOSTIC_COLUMNS = (
    ("grad norm, step 1", 0, lambda r: _first_step(r, "grad_norm")),
    ("most clipped (epoch)", 2, lambda r: _max_epoch(r, "clipped_fraction")),
    ("neg. grad share, step 1", 3, lambda r: _first_step(r, "neg_grad_share")),
    ("neg. share, epoch 1", 3, lambda r: _epoch(r, "neg_grad_share", 0)),
    ("neg. share, last recorded epoch", 3, lambda r: _last_recorded(r, "neg_grad_share")),
    ("mean p, positives", 3, lambda r: _last_recorded(r, "p_pos_mean")),
    ("p, negatives' 99.9th pct", 3, lambda r: _last_recorded(r, "p_neg_q999")),
    ("negatives/img p > .5", 2, lambda r: _last_recorded(r, "neg_over_half")),
    ("final BCE, positives (mean)", 3, _positives_bce),
    ("hardest 1 % of negatives' BCE share", 3, lambda r: hardest_share(_common_bce(r, "neg"))),
)


def diagnostics_lines(study: StudyRuns, arms: Sequence[ArmSummary]) -> list:
    """The objectness diagnostics per arm (mean ± sd over finished seeds), or nothing when no run recorded them."""
    finished = {arm.arm: [r for r in study.runs if r.arm == arm.arm and r.status == "finished"] for arm in arms}
    if not any(r.steps or (r.history and "neg_grad_share" in r.history) for runs in finished.values() for r in runs):
        return []
    lines = ["", "## Objectness diagnostics", "",
             "Training (`diagnostics.csv`, `results.csv`): the gradient norm before clipping at the first step and "
             "the largest fraction of an epoch's steps that clipping rescaled; the negatives' share of Σ|∂L/∂x| over "
             "the objectness logits (the direct measure of swamping: 0.5 = negatives and positives pull alike) at "
             "the first step, over epoch 1 and over the last epoch that recorded a step (the last epoch itself unless it is "
             "shorter than `train.diagnostics_every` steps); that epoch's mean p on positives, p at the "
             "99.9th percentile of negatives and negatives per image with p > .5. The final model on the validation "
             "images, every arm scored with the same BCE from its saved logits (`objectness_losses.npz`): the mean "
             "loss of positives, and the share of the negatives' summed loss carried by the hardest 1 % of them.", "",
             "| arm | n | " + " | ".join(header for header, _, _ in DIAGNOSTIC_COLUMNS) + " |",
             "|---|---|" + "---|" * len(DIAGNOSTIC_COLUMNS)]
    for arm in arms:
        runs = finished[arm.arm]
        cells = []
        for _, digits, value in DIAGNOSTIC_COLUMNS:
            values = [v for v in (value(r) for r in runs) if np.isfinite(v)]
            cells.append(_pm(*mean_sd(values), digits) if values else "—")
        lines.append(f"| {arm.arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def per_class_lines(study: StudyRuns, arms: Sequence[ArmSummary]) -> list:
    """Per-class AP of the final validation, mean ± sd over an arm's seeds (runs that recorded it: summary.json
    'per_class'); nothing for studies whose runs did not."""
    finished = finished_by_arm(study.runs)
    names = next((([row["name"] for row in r.per_class]) for runs in finished.values() for r in runs
                  if r.per_class), None)
    if not names:
        return []
    lines = ["", "## Per-class AP (final epoch, validation split)", "",
             "Mean ± sd over the seeds whose run recorded per-class rows (n). The rare classes are where a change in "
             "the weighting of cells shows first.", "",
             "| arm | n | " + " | ".join(f"{name} AP@.5 | {name} AP@.5:.95" for name in names) + " |",
             "|---|---|" + "---|" * (2 * len(names))]
    for arm in arms:
        runs = _runs_with_classes(finished, arm.arm, names)
        cells = []
        for index in range(len(names)):
            for key in ("mAP50", "mAP50_95"):
                cells.append(_pm(*mean_sd([float(r.per_class[index].get(key, float("nan"))) for r in runs]), 3)
                             if runs else "—")
        lines.append(f"| {arm.arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines + _per_class_difference_lines(study, arms, names, finished)


def _runs_with_classes(finished: dict, arm: str, names: list) -> list:
    """The arm's finished runs whose per-class rows are these classes, in this order."""
    return [r for r in finished.get(arm, []) if r.per_class and [row["name"] for row in r.per_class] == names]


def _per_class_difference_lines(study: StudyRuns, arms: Sequence[ArmSummary], names: list, finished: dict) -> list:
    """Each arm's per-class AP@.5:.95 minus the baseline's, paired by seed as the main table pairs (same precision)."""
    base = next((arm for arm in arms if arm.arm == study.baseline), None)
    if base is None:
        return []

    def ap_by_seed(arm: ArmSummary, index: int) -> dict:
        return {r.seed: float(r.per_class[index].get("mAP50_95", float("nan")))
                for r in _runs_with_classes(finished, arm.arm, names)}

    lines = ["", f"Per-class AP@.5:.95, each arm minus `{study.baseline}`, paired by seed as above (the mean "
             f"difference and its {int(CONFIDENCE * 100)}% interval; secondary, not corrected):", "",
             "| arm | paired n | " + " | ".join(f"{name} Δ | {name} 95% CI" for name in names) + " |",
             "|---|---|" + "---|" * (2 * len(names))]
    for arm in arms:
        if arm is base:
            lines.append(f"| {arm.arm} |  | " + " | ".join("(baseline) | " for _ in names) + " |")
            continue
        diffs = [paired_difference(ap_by_seed(base, i), ap_by_seed(arm, i), baseline_numeric=base.numeric,
                                   variant_numeric=arm.numeric) for i in range(len(names))]
        cells = [cell for diff in diffs for cell in _interval(diff, 3)[:2]]
        lines.append(f"| {arm.arm} | {diffs[0].n} | " + " | ".join(cells) + " |")
    return lines


def test_split_lines(study: StudyRuns, arms: Sequence[ArmSummary]) -> list:
    """The test split, scored once at the end of each run (val.test): mean ± sd per arm and the paired difference
    to the baseline (secondary: not corrected, no choice was made on it)."""
    finished = finished_by_arm(study.runs)
    if not any(r.test for runs in finished.values() for r in runs):
        return []
    base = {r.seed: r.test for r in finished.get(study.baseline, []) if r.test}
    lines = ["", "## Test split (scored once, at the end of each run)", "",
             "Secondary endpoint: nothing in the study was chosen on it. Δ is paired by seed against the baseline, "
             f"{int(CONFIDENCE * 100)}% interval, not corrected.", "",
             "| arm | n | mAP@0.5 | mAP@0.5:0.95 | Δ mAP@0.5:0.95 | 95% CI of Δ |", "|---|---|---|---|---|---|"]
    for arm in arms:
        tests = {r.seed: r.test for r in finished.get(arm.arm, []) if r.test}
        cells = [_pm(*mean_sd([float(t.get(k, float("nan"))) for t in tests.values()])) if tests else "—"
                 for k in ("mAP50", "mAP50_95")]
        delta, ci = "", ""
        if arm.arm != study.baseline and base:
            diff = paired_difference({s: float(t["mAP50_95"]) for s, t in base.items()},
                                     {s: float(t["mAP50_95"]) for s, t in tests.items()})
            delta, ci, _ = _interval(diff)
        lines.append(f"| {arm.arm} | {len(tests)} | {cells[0]} | {cells[1]} | {delta} | {ci} |")
    return lines


def contrast_lines(arms: Sequence[ArmSummary], contrasts: Sequence[tuple], interim: bool) -> list:
    """The comparisons a spec names besides the baseline's (``contrasts``: (arm, reference) pairs), paired by seed
    as the baseline table pairs them; secondary, so not corrected."""
    if not contrasts:
        return []
    by_name = {arm.arm: arm for arm in arms}
    lines = ["", "## Contrasts named in the spec", "",
             "Secondary: each arm minus another arm the spec names (not the baseline), paired by seed over the seeds "
             "both finished in the same numeric precision, the same interval and two-sided paired t-test as above; "
             "not corrected (Holm covers the comparisons with the baseline only)"
             + ("; planned runs are still to come" if interim else "") + ".", "",
             "| arm | minus | metric | paired n | Δ | 95% CI of Δ | excl. 0 | p |", "|---|---|---|---|---|---|---|---|"]
    for name, reference in contrasts:
        arm, ref = by_name.get(name), by_name.get(reference)
        for metric in ("mAP50_95", "mAP50"):
            if arm is None or ref is None:  # the study folder was planned from another spec
                lines.append(f"| {name} | {reference} | {METRIC_TITLES[metric]} |  | — | not in this study's runs |  |  |")
                continue
            diff = paired_difference(ref.values[metric], arm.values[metric], baseline_numeric=ref.numeric,
                                     variant_numeric=arm.numeric)
            delta, ci, excl = _interval(diff)
            lines.append(f"| {name} | {reference} | {METRIC_TITLES[metric]} | {diff.n} | {delta} | {ci} | {excl} | "
                         f"{_p(diff.p_value)} |")
    return lines


def summary_markdown(study: StudyRuns, arms: Sequence[ArmSummary], plots: Sequence[str],
                     contrasts: Sequence[tuple] = ()) -> str:
    """The text of summary.md; ``contrasts``: the spec's (arm, reference) pairs (:func:`contrast_lines`)."""
    counts = {}
    for run in study.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    lines = [f"# Ablation study `{study.name}`", ""]
    lines.append(f"Baseline: `{study.baseline}`. Runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
    lines.append("")
    comparisons = sum(1 for arm in arms if arm.vs_baseline)
    # runs still to come (not failed ones: those are final) make every verdict of the table an interim one
    interim = bool(counts.get("partial") or counts.get("not started"))
    with_p = sum(1 for arm in arms if arm.vs_baseline and arm.vs_baseline["mAP50_95"].p_value is not None)
    # Holm is valid over the tests made; a comparison without a p (fewer than 2 paired seeds) is not one yet
    family = (f"the {comparisons} comparisons of the table" if with_p == comparisons else
              f"the comparisons of the table that have a p, {with_p} of {comparisons} (an arm has one once 2 of "
              f"its seeds are paired with the baseline's" +
              ("; planned runs are still to come, so a verdict read now is not the study's)" if interim else ")"))
    lines.append(f"Each cell is the mean ± sample sd over finished seeds ('runs': finished / planned, failed ones "
                 f"named). Δ is the arm minus the baseline, paired by seed over the seeds both finished in the same "
                 f"numeric precision ('paired n'); the interval is the mean of the per-seed differences ± t(0.975, "
                 f"n−1) · sd/√n ({int(CONFIDENCE * 100)}% confidence, not adjusted; undefined for n = 1). p is the "
                 f"two-sided paired t-test; 'Holm p' adjusts it over {family} "
                 f"(every arm against the baseline, Holm 1979), and 'Holm < .05' is the verdict that keeps the "
                 f"chance of any false positive in the table at 5%.")
    for metric in ("mAP50", "mAP50_95"):
        lines += ["", f"## {METRIC_TITLES[metric]}", "",
                  "| arm | runs | paired n | mean ± sd | Δ vs baseline | 95% CI of Δ | excl. 0 | p | Holm p | "
                  "Holm < .05 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for arm in arms:
            diff = arm.vs_baseline.get(metric) if arm.vs_baseline else None
            delta, ci, excl = _interval(diff)
            paired = str(diff.n) if diff is not None else ""
            p, holm = (_p(diff.p_value), _p(diff.p_holm)) if diff is not None else ("", "")
            verdict = "" if diff is None or diff.p_holm is None else ("yes" if diff.p_holm < 0.05 else "no")
            if verdict and interim:
                verdict += " (interim)"
            if arm.arm != study.baseline and not arm.vs_baseline:
                delta, ci, excl, paired = "—", "no baseline", "", ""
            lines.append(f"| {arm.arm} | {_runs_cell(arm)} | {paired} | {_pm(arm.mean[metric], arm.sd[metric])} | "
                         f"{delta} | {ci} | {excl} | {p} | {holm} | {verdict} |")
    lines += contrast_lines(arms, contrasts, interim)
    unpaired = sorted({(arm.arm, seed) for arm in arms for diff in arm.vs_baseline.values()
                       for seed in diff.unpaired_precision})
    if unpaired:
        study.notes.append("not paired, configured alike but trained in another precision than the baseline's run "
                           "of the same seed: "
                           + ", ".join(f"{arm} seed {seed}" for arm, seed in unpaired))
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
    lines += per_class_lines(study, arms)
    lines += test_split_lines(study, arms)
    lines += diagnostics_lines(study, arms)
    where = {}
    for run in study.runs:
        if run.status == "finished":
            where.setdefault((run.numeric or "unknown", run.cpu or "unknown CPU"), []).append(run)
    if where:
        lines += ["", "## Where the finished runs ran", "",
                  "Training time is each run's own wall time, summed (runs made side by side overlap on the clock).",
                  "", "| precision | CPU | runs | training time, all runs (h) |", "|---|---|---|---|"]
        for (numeric, cpu), runs in sorted(where.items()):
            known = [s for s in (r.metrics.get("wall_time_s", float("nan")) for r in runs) if np.isfinite(s)]
            total = f"{sum(known) / 3600:.2f}" if known else ""
            if known and len(known) < len(runs):
                total += f" ({len(known)} timed)"
            lines.append(f"| {numeric} | {cpu} | {len(runs)} | {total} |")
    lines += reproduction_lines(study.study_dir)
    lines += data_balance_lines(study.study_dir)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if study.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in study.notes]
    return "\n".join(lines) + "\n"
