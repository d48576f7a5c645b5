"""The ablation report: tables, paired statistics and plots, rebuilt from a study's run folders alone.

Reads ``runs/ablate/<study>/runs/<run>/`` — ``ablation.json`` (identity written by ablate.py before launch: variant,
arm, grid values, seed, baseline, planned index, exit code), ``config.yaml``, ``results.csv``, ``summary.json`` and
``objectness_losses.npz`` — and writes into ``runs/ablate/<study>/``:

    summary.csv                 one row per run (identity, status, final metrics and losses, wall time)
    summary.md                  per arm: mean ± sample sd over seeds, finished/planned/failed runs; the difference
                                to the baseline with a paired 95% confidence interval over seeds (mean of per-seed
                                differences ± t_{0.975, n-1} · sd / sqrt(n)), the paired t-test's p and its Holm
                                adjustment over the study's comparisons; seeds run in different precision are
                                never paired; where (precision, CPU) the runs ran
    map_per_variant.png         (a) mAP@0.5 and mAP@0.5:0.95 per arm: mean ± sd, individual seeds as dots
    val_map_per_epoch.png       (b) validation mAP@0.5 and mAP@0.5:0.95 per epoch: mean line and min–max band
    objectness_losses.png       (c) train object loss, no-object loss and noobj/obj per epoch (log scale)
    grid_gamma_alpha.png        (d) only when the grid sweeps a *gamma and an *alpha key: mAP@0.5 over gamma, a
                                line per alpha
    objectness_cdf.png          (e) cumulative normalised objectness loss of the final model over positives and over
                                negatives, samples sorted by loss (Lin et al. 2017, Fig. 4); every arm's saved logits
                                scored with the same BCE and focal (γ=2) losses
    first_epoch.png             (f) epoch 1 step by step (diagnostics.csv): object and no-object loss and the share
                                of the objectness gradient from negatives, per arm

Run status: ``finished`` (summary.json with ``"status": "finished"``; a damaged one is named in a note and does not
count), ``failed`` (ablation.json records a non-zero exit, or exit 0 without a summary), ``partial`` (results.csv or
last.pt but no summary: running or interrupted), ``not started``. Only finished runs enter the statistics and
plots; everything missing is skipped with a note in summary.md, never an exception.
Seeds pair runs: the baseline's seed k run is compared with each arm's seed k run.

The code, in reading order and re-exported here: :mod:`yolov3.report_load` (run folders -> RunResult),
:mod:`yolov3.report_stats` (Student t, paired differences, per-arm summaries), :mod:`yolov3.report_tables`
(summary.csv, summary.md) and :mod:`yolov3.report_plots`; :func:`build_report` below puts them together.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from yolov3.report_load import (METRIC_TITLES, METRICS, RunResult, StudyRuns, collect_runs, load_run,
                                noobj_obj_ratio)
from yolov3.report_plots import (CDF_POINTS, cumulative_loss_curve,
                                 find_gamma_alpha_keys, plot_first_epoch, plot_gamma_alpha, plot_map_per_arm,
                                 plot_objectness_cdf, plot_objectness_losses, plot_val_map_per_epoch)
from yolov3.report_stats import (CONFIDENCE, SUMMARY_METRICS, ArmSummary, PairedDifference, common_objectness_losses,
                                 holm_adjust, mean_sd, paired_difference, student_t_cdf, summarize_arms, t_quantile)
from yolov3.report_tables import SUMMARY_COLUMNS, summary_markdown, write_summary_csv

__all__ = ["CDF_POINTS", "CONFIDENCE", "METRICS", "METRIC_TITLES", "SUMMARY_COLUMNS", "SUMMARY_METRICS", "ArmSummary",
           "PairedDifference", "Report", "RunResult", "StudyRuns", "build_report", "collect_runs",
           "common_objectness_losses", "cumulative_loss_curve", "find_gamma_alpha_keys", "holm_adjust",
           "plot_first_epoch", "load_run", "mean_sd", "noobj_obj_ratio",
           "paired_difference", "plot_gamma_alpha", "plot_map_per_arm", "plot_objectness_cdf",
           "plot_objectness_losses", "plot_val_map_per_epoch", "student_t_cdf", "summarize_arms",
           "summary_markdown", "t_quantile", "write_summary_csv"]


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


def build_report(study_dir: Union[str, Path], plots: bool = True, contrasts: Sequence[tuple] = ()) -> Report:
    """Rebuild summary.csv, summary.md and the plots of ``runs/ablate/<study>/`` from its run folders;
    ``contrasts``: the spec's (arm, reference) pairs compared besides the baseline (``Study.contrasts``)."""
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
            first_path = study_dir / "first_epoch.png"
            first_data = plot_first_epoch(study.runs, first_path, study.notes)
            if first_data is not None:
                files["first_epoch.png"] = first_path
                plot_data["first_epoch"] = first_data
            if any(r.objectness is not None for r in finished):
                files["objectness_cdf.png"] = study_dir / "objectness_cdf.png"
                plot_data["objectness_cdf"] = plot_objectness_cdf(study.runs, files["objectness_cdf.png"],
                                                                  study.notes)
            else:
                study.notes.append("no run has objectness_losses.npz; loss-distribution plot skipped")
    pngs = [str(p) for name, p in files.items() if name.endswith(".png")]
    files["summary.md"] = study_dir / "summary.md"
    files["summary.md"].write_text(summary_markdown(study, arms, pngs, contrasts), encoding="utf-8")
    return Report(study=study, arms=arms, rows=rows, files=files, plots=plot_data)
