"""The ablation report's six plots, with matplotlib's object API (no pyplot state, no display needed).

Each function writes one PNG and returns the data it drew, so tests check content without looking at pixels; see
:mod:`yolov3.report` for what each plot shows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from yolov3.plots import whole_epochs
from yolov3.report_load import METRIC_TITLES, RunResult, finished_by_arm
from yolov3.report_stats import ArmSummary, common_objectness_losses

CDF_POINTS = 201  # fractions at which the cumulative loss curves are sampled (0, 0.005, ..., 1)
# The report's figures are committed with every study (issue 27: a clone's docs/ stays small). 100 dpi keeps the
# 7-pt legends legible (at 85 dpi they were barely so); a 256-colour palette holds a line plot's few colours and
# their anti-aliased blends, and makes each PNG about a quarter of matplotlib's 120-dpi RGBA one.
DPI = 100
PALETTE_COLOURS = 256


def _save(fig, path: Union[str, Path]) -> None:
    """Write ``fig`` as a palette PNG. Deterministic: median-cut quantisation without dithering (dithering is noise
    that compresses badly, and the flat colours of a plot need none), and no metadata (matplotlib's PNG names its
    version; the same figure drawn by a later matplotlib should not differ for that alone)."""
    import io

    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as rgba:
        # the figure is drawn on an opaque white face: the alpha channel carries nothing
        # method 0, dither 0: Image.Quantize.MEDIANCUT, Image.Dither.NONE, by number because the named enums came
        # with Pillow 9.1 and matplotlib 3.5 (requirements.txt) still accepts Pillow 6.2
        image = rgba.convert("RGB").quantize(PALETTE_COLOURS, method=0, dither=0)
    image.save(path, format="PNG", optimize=True)


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
        all_seeds = sorted({s for a in shown for s in a.values[metric]})
        seed_colors = dict(zip(all_seeds, _colors(len(all_seeds))))
        for seed in all_seeds:  # one faint line per seed across the arms: the pairing the statistics use
            points = [(i, a.values[metric][seed]) for i, a in enumerate(shown) if seed in a.values[metric]]
            ax.plot([p[0] for p in points], [p[1] for p in points], color=seed_colors[seed], alpha=0.45,
                    linewidth=0.8, marker="o", markersize=3.5, label=f"seed {seed}", zorder=2)
        base = next((a for a in shown if a.arm == baseline), None)
        if base is not None:
            ax.axhline(base.mean[metric], color="gray", linestyle="--", linewidth=1, label=f"baseline {baseline}")
        ax.set_xticks(x, [a.arm for a in shown], rotation=45 if len(shown) > 3 else 0, ha="right"
                      if len(shown) > 3 else "center", fontsize=8)
        ax.set_ylabel(METRIC_TITLES[metric])
        ax.set_title(f"final {METRIC_TITLES[metric]}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(all_seeds) > 4 else 1)
    _save(fig, path)
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


def plot_val_map_per_epoch(runs: Sequence[RunResult], path: Union[str, Path], notes: list) -> dict:
    """(b) validation mAP@0.5 and mAP@0.5:0.95 (the primary endpoint) per epoch per arm: mean over seeds, min–max
    band. Returns {arm: the mAP@0.5 curve, with the mAP@0.5:0.95 curve under 'mAP50_95' when recorded}."""
    by_arm = finished_by_arm(runs)
    data = {}
    for arm, arm_runs in by_arm.items():
        curve = _per_epoch(arm_runs, "mAP50")
        if curve is None:
            notes.append(f"{arm}: no per-epoch mAP50 in results.csv; left out of the per-epoch plot")
            continue
        strict = _per_epoch(arm_runs, "mAP50_95")
        data[arm] = {**curve, **({"mAP50_95": strict} if strict is not None else {})}
    fig, axes = _figure(2, width=6)
    for ax, (key, title) in zip(axes, (("mAP50", "validation mAP@0.5"), ("mAP50_95", "validation mAP@0.5:0.95"))):
        for (arm, curve), color in zip(data.items(), _colors(len(data))):
            curve = curve if key == "mAP50" else curve.get("mAP50_95")
            if curve is None:
                continue
            ax.plot(curve["epoch"], curve["mean"], color=color, label=arm)
            ax.fill_between(curve["epoch"], curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        whole_epochs(ax)
        ax.set_ylabel(title)
        ax.set_title(f"{title} (mean over seeds, min–max band)", fontsize=10)
        ax.grid(alpha=0.3)
    if data:
        axes[0].legend(fontsize=7, ncol=2 if len(data) > 8 else 1)
    _save(fig, path)
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
    for arm, arm_runs in finished_by_arm(runs).items():
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
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        whole_epochs(ax)
        ax.grid(alpha=0.3, which="both")
    if arms:  # one legend for the three panels, outside them so it hides no curve
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    _save(fig, path)
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
        ax.set_title(f"{variant}: mAP@0.5 over {gamma_key.split('.')[-1]}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
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


SCORERS = (("bce", "BCE"), ("focal2", "focal loss, γ=2"))


def plot_objectness_cdf(runs: Sequence[RunResult], path: Union[str, Path], notes: list) -> dict:
    """(e) per arm, the mean over seeds of the cumulative normalised loss curves, positives and negatives.

    Every final model is scored with the same functions — BCE and focal loss with γ = 2 — from its saved logits, one
    row each, as Fig. 4 of Lin et al. 2017 scores one model: comparing arms by their own training losses would
    compare different rulers. Runs saved before the logits were kept (no ``pos_logit``) are drawn with their own
    loss instead, in a single row, and said so in a note."""
    fractions = np.linspace(0.0, 1.0, CDF_POINTS)
    by_arm = finished_by_arm(runs)
    common = any(r.objectness is not None and "pos_logit" in r.objectness for rs in by_arm.values() for r in rs)
    scorers = SCORERS if common else (("own", "each run's own loss"),)
    data: dict = {"fraction": fractions, "scorers": [name for name, _ in scorers]}
    for scorer, _ in scorers:
        data[scorer] = {"pos": {}, "neg": {}}
    for arm, arm_runs in by_arm.items():
        for scorer, _ in scorers:
            for kind in ("pos", "neg"):
                curves = []
                for run in arm_runs:
                    if run.objectness is None:
                        continue
                    if scorer == "own":
                        losses = run.objectness[kind]
                    elif f"{kind}_logit" in run.objectness:
                        losses = common_objectness_losses(run.objectness[f"{kind}_logit"], kind == "pos", scorer)
                    else:
                        if scorer == scorers[0][0] and kind == "pos":
                            notes.append(f"{run.run_name}: objectness_losses.npz has no logits (an older run); left "
                                         "out of the common-loss distribution plot")
                        continue
                    curve = cumulative_loss_curve(losses, fractions)
                    if curve is None:
                        notes.append(f"{run.run_name}: no {kind} objectness losses with a positive total; "
                                     f"left out of the {kind} distribution")
                        continue
                    curves.append(curve)
                if curves:
                    data[scorer][kind][arm] = np.mean(curves, axis=0)
    from matplotlib.figure import Figure  # (see _figure)

    fig = Figure(figsize=(10.0, 4.0 * len(scorers)), layout="constrained")
    axes = fig.subplots(len(scorers), 2, squeeze=False)
    arms = list(dict.fromkeys(a for scorer, _ in scorers for kind in ("pos", "neg") for a in data[scorer][kind]))
    colors = dict(zip(arms, _colors(len(arms))))
    for row, (scorer, scorer_title) in enumerate(scorers):
        for col, (kind, title) in enumerate((("pos", "positives"), ("neg", "negatives"))):
            ax = axes[row][col]
            for arm, curve in data[scorer][kind].items():
                ax.plot(fractions, curve, color=colors[arm], label=arm)
            ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)  # equal loss per sample
            ax.set_xlabel(f"fraction of {title} (sorted by loss, ascending)")
            ax.set_ylabel("cumulative normalised loss")
            ax.set_title(f"{title}, scored with {scorer_title}", fontsize=10)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
    fig.suptitle("objectness loss of each arm's final model on the validation set (Lin et al. 2017, Fig. 4)",
                 fontsize=11)
    handles = next((axes[r][c].get_legend_handles_labels() for r in range(len(scorers)) for c in range(2)
                    if axes[r][c].get_legend_handles_labels()[0]), None)
    if handles:
        fig.legend(*handles, loc="outside right upper", fontsize=7)
    _save(fig, path)
    return data


def plot_first_epoch(runs: Sequence[RunResult], path: Union[str, Path], notes: list) -> Optional[dict]:
    """(f) the first epoch step by step (diagnostics.csv, log x), per arm the mean over seeds of the object loss,
    the no-object loss (both as weighted in the total) and the share of the objectness-logit gradient that comes
    from negatives: the direct picture of whether, and for how long, the no-object term swamps the object term.
    None (nothing drawn) when no finished run has diagnostics."""
    panels = (("obj", "object loss (weighted, per step)"), ("noobj", "no-object loss (weighted, per step)"),
              ("neg_grad_share", "share of the objectness gradient from negatives"))
    data: dict = {name: {} for name, _ in panels}
    missing: list = []
    for arm, arm_runs in finished_by_arm(runs).items():
        tables = []
        for run in arm_runs:
            steps = run.steps
            if steps is None or "epoch" not in steps or "iteration" not in steps:
                continue
            first = steps["epoch"] == 1
            tables.append({name: dict(zip(steps["iteration"][first].tolist(), steps[name][first].tolist()))
                           for name, _ in panels if name in steps})
        if not tables:
            missing.append(arm)
            continue
        for name, _ in panels:
            iterations = sorted({i for t in tables for i in t.get(name, {})})
            if not iterations:
                continue
            values = np.array([[t.get(name, {}).get(i, np.nan) for i in iterations] for t in tables], dtype=float)
            with np.errstate(all="ignore"):
                data[name][arm] = {"step": np.asarray(iterations) + 1, "mean": np.nanmean(values, axis=0)}
    if not any(data.values()):
        notes.append("no finished run has diagnostics.csv (runs made before 2026-12-01); first-epoch plot skipped")
        return None
    notes += [f"{arm}: no diagnostics.csv in its finished runs; left out of the first-epoch plot" for arm in missing]
    fig, axes = _figure(3)
    arms = list(dict.fromkeys(a for panel in data.values() for a in panel))
    colors = dict(zip(arms, _colors(len(arms))))
    for ax, (name, title) in zip(axes, panels):
        for arm, curve in data[name].items():
            ax.plot(curve["step"], curve["mean"], color=colors[arm], label=arm, linewidth=1)
        ax.set_xscale("log")
        if name != "neg_grad_share":
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1)
            ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)  # negatives and positives pull alike
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step of epoch 1 (log)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("the first epoch, step by step (mean over seeds)", fontsize=11)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    _save(fig, path)
    return data
