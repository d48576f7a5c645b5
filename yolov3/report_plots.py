"""The ablation report's five plots, with matplotlib's object API (no pyplot state, no display needed).

Each function writes one PNG and returns the data it drew, so tests check content without looking at pixels; see
:mod:`yolov3.report` for what each plot shows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from yolov3.report_load import METRIC_TITLES, RunResult
from yolov3.report_stats import ArmSummary

CDF_POINTS = 201  # fractions at which the cumulative loss curves are sampled (0, 0.005, ..., 1)


def _figure(ncols: int, width: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure  # imported when a figure is drawn: matplotlib is slow to import

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _colors(n: int) -> list:
    import matplotlib  # (see _figure)

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
