"""Matplotlib figures for validation and training runs: PR curve, F1 curve, confusion matrix, results.csv curves.

Uses matplotlib's object API (``matplotlib.figure.Figure``): no pyplot global state, no display needed, safe in
worker threads. Each function writes one PNG and returns the numbers it drew, so tests can check content without
looking at pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from yolov3.runs import read_results_csv  # the one results.csv reader of the project

# Curves of individual classes are drawn (thin, labelled) only up to this many classes; beyond it the legend
# would hide the plot, so only the class mean is labelled.
MAX_LABELLED_CLASSES = 20

# results.csv panels (CONTRACTS.md columns), in reading order: train losses, val losses, then quality and lr.
RESULTS_PANELS = (
    ("train_box", "train box loss"), ("train_obj", "train obj loss"), ("train_noobj", "train noobj loss"),
    ("train_cls", "train cls loss"), ("train_total", "train total loss"),
    ("val_box", "val box loss"), ("val_obj", "val obj loss"), ("val_noobj", "val noobj loss"),
    ("val_cls", "val cls loss"), ("lr", "learning rate"),
    ("precision", "precision"), ("recall", "recall"), ("mAP50", "mAP@0.5"), ("mAP50_95", "mAP@0.5:0.95"),
)


def _figure(rows: int = 1, cols: int = 1, width: float = 6.0, height: float = 5.0):
    from matplotlib.figure import Figure  # imported when a figure is drawn: matplotlib is slow to import

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, out_png: Union[str, Path], dpi: int = 150) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    return out_png


def plot_pr_curve(recall_grid: np.ndarray, pr_curve: np.ndarray, ap50: np.ndarray, names: Sequence[str],
                  out_png: Union[str, Path]) -> dict:
    """Precision-recall curves at IoU .5, one per class with ground truth, and their mean.

    Args:
        recall_grid: ``(R,)`` recall points (COCO's 101).
        pr_curve: ``(C, R)`` interpolated precision per class; NaN rows (no ground truth) are skipped.
        ap50: ``(C,)`` AP@0.5 per class (legend).
        names: C class names.
        out_png: file to write.

    Returns:
        ``{"mean_precision": (R,) array, "mAP50": float, "classes": [names drawn]}``.
    """
    fig, axes = _figure()
    ax = axes[0, 0]
    shown = [c for c in range(len(names)) if np.isfinite(pr_curve[c]).all()]
    for c in shown if len(shown) <= MAX_LABELLED_CLASSES else []:
        ax.plot(recall_grid, pr_curve[c], linewidth=1, label=f"{names[c]} {ap50[c]:.3f}")
    if len(shown) > MAX_LABELLED_CLASSES:
        for c in shown:
            ax.plot(recall_grid, pr_curve[c], linewidth=0.5, color="grey")
    mean_precision = pr_curve[shown].mean(0) if shown else np.zeros_like(recall_grid)
    map50 = float(np.mean(ap50[shown])) if shown else float("nan")
    ax.plot(recall_grid, mean_precision, linewidth=3, color="blue", label=f"all classes {map50:.3f} mAP@0.5")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, out_png)
    return {"mean_precision": mean_precision, "mAP50": map50, "classes": [names[c] for c in shown]}


def plot_metric_confidence(conf_grid: np.ndarray, curves: np.ndarray, names: Sequence[str], out_png: Union[str, Path],
                           ylabel: str = "F1") -> dict:
    """A metric (F1, precision or recall) against the confidence threshold, per class and averaged.

    Args:
        conf_grid: ``(K,)`` confidence thresholds.
        curves: ``(C, K)`` metric per class; NaN rows (no ground truth) are skipped.
        names: C class names.
        out_png: file to write.
        ylabel: what the curve is.

    Returns:
        ``{"mean": (K,) array, "best_conf": float, "best_value": float}`` (the maximum of the class mean).
    """
    fig, axes = _figure()
    ax = axes[0, 0]
    shown = [c for c in range(len(names)) if np.isfinite(curves[c]).all()]
    for c in shown:
        if len(shown) <= MAX_LABELLED_CLASSES:
            ax.plot(conf_grid, curves[c], linewidth=1, label=names[c])
        else:
            ax.plot(conf_grid, curves[c], linewidth=0.5, color="grey")
    mean = curves[shown].mean(0) if shown else np.zeros_like(conf_grid)
    best = int(np.argmax(mean))
    ax.plot(conf_grid, mean, linewidth=3, color="blue",
            label=f"all classes {mean[best]:.2f} at {conf_grid[best]:.3f}")
    ax.set(xlabel="confidence", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=f"{ylabel}-confidence curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, out_png)
    return {"mean": mean, "best_conf": float(conf_grid[best]), "best_value": float(mean[best])}


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], out_png: Union[str, Path],
                          normalize: bool = True) -> dict:
    """Confusion matrix heat map with a background class.

    Args:
        matrix: ``(C+1, C+1)`` counts, rows predicted class, columns true class, index C = background
            (see :class:`yolov3.metrics.DetectionEvaluator`).
        names: C class names.
        out_png: file to write.
        normalize: show each column as fractions of that true class (column sums 1), which makes rare classes
            readable; counts are still returned.

    Returns:
        ``{"counts": (C+1, C+1) int array, "shown": the array drawn}``.
    """
    counts = np.asarray(matrix)
    if counts.shape != (len(names) + 1, len(names) + 1):
        raise ValueError(f"plot_confusion_matrix: matrix shape {counts.shape} does not fit {len(names)} names "
                         f"plus background; expected {(len(names) + 1, len(names) + 1)}")
    shown = counts.astype(float)
    if normalize:
        column_sums = shown.sum(0, keepdims=True)
        shown = np.divide(shown, column_sums, out=np.zeros_like(shown), where=column_sums > 0)
    labels = list(names) + ["background"]
    size = max(5.0, 0.45 * len(labels) + 2)
    fig, axes = _figure(width=size + 1, height=size)
    ax = axes[0, 0]
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8)
    if len(labels) <= 2 * MAX_LABELLED_CLASSES:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
    if len(labels) <= MAX_LABELLED_CLASSES:  # cell annotations only while they stay legible
        for row in range(len(labels)):
            for col in range(len(labels)):
                if counts[row, col]:
                    text = f"{shown[row, col]:.2f}" if normalize else str(int(counts[row, col]))
                    ax.text(col, row, text, ha="center", va="center", fontsize=7,
                            color="white" if shown[row, col] > 0.5 * (shown.max() or 1) else "black")
    ax.set(xlabel="true", ylabel="predicted",
           title="confusion matrix" + (" (columns normalised)" if normalize else ""))
    _save(fig, out_png)
    return {"counts": counts.copy(), "shown": shown}


def whole_epochs(ax) -> None:
    """Ticks on whole epochs only: a 2-epoch run would otherwise get ticks at 1.25, 1.5, ..."""
    from matplotlib.ticker import MaxNLocator  # (matplotlib is imported lazily, see _figure)

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def readable_epoch_axes(ax) -> None:
    """Whole epochs on x, and y values as they are: a flat curve otherwise gets matplotlib's offset ('+8.125' above
    the axis), and its tick labels no longer read as values."""
    whole_epochs(ax)
    ax.ticklabel_format(axis="y", useOffset=False)


def plot_results_csv(csv_path: Union[str, Path], out_png: Union[str, Path]) -> dict:
    """Per-epoch curves of a training run's ``results.csv`` (columns in CONTRACTS.md), one panel per quantity.

    Blank cells (e.g. epochs without validation) become gaps. A file without the ``epoch`` column or any of the
    panel columns is an error naming the file and the missing columns.

    Returns:
        ``{column: (epochs array, values array)}`` for every panel drawn.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: results.csv not found")
    columns = read_results_csv(csv_path)
    needed = ["epoch"] + [column for column, _ in RESULTS_PANELS]
    missing = [column for column in needed if column not in columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected the results.csv columns of "
                         f"CONTRACTS.md ({', '.join(needed)})")
    epochs = columns["epoch"]
    panel_cols = 5
    panel_rows = -(-len(RESULTS_PANELS) // panel_cols)
    fig, axes = _figure(panel_rows, panel_cols, width=3.2, height=2.6)
    plotted = {}
    for ax, (column, title) in zip(axes.ravel(), RESULTS_PANELS):
        values = columns[column]
        ax.plot(epochs, values, marker=".", markersize=4, linewidth=1.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        readable_epoch_axes(ax)
        plotted[column] = (epochs.copy(), values.copy())
    for ax in axes.ravel()[len(RESULTS_PANELS):]:
        ax.set_visible(False)
    fig.suptitle(str(csv_path.parent.name or csv_path), fontsize=10)
    _save(fig, out_png, dpi=100)  # 15 small panels: 100 dpi is legible and renders faster
    return plotted


LABEL_HISTOGRAM_BINS = 50  # 2 % of the image side per bin: fine enough to show where boxes cluster


def plot_labels(labels: Sequence[np.ndarray], names: Sequence[str], out_path: Union[str, Path]) -> dict:
    """``labels.jpg``: what the training labels hold, drawn once at the start of a run. Boxes per class (bars), box
    centres over the image (a 2-D histogram, x right, y down, as in the image) and box width against height (a 2-D
    histogram), both as fractions of the image side.

    Args:
        labels: per image ``(n, 5)`` ``[class, cx, cy, w, h]`` normalised (a dataset's ``labels``).
        names: class names.

    Returns:
        ``{"counts": (C,) boxes per class, "centres": (bins, bins) counts [y, x], "sizes": (bins, bins) counts
        [h, w]}``, the numbers drawn.
    """
    rows = [np.asarray(r, dtype=np.float64).reshape(-1, 5) for r in labels]
    boxes = np.concatenate(rows) if rows else np.zeros((0, 5))
    counts = np.bincount(boxes[:, 0].astype(np.int64), minlength=len(names))[:len(names)]
    edges = np.linspace(0, 1, LABEL_HISTOGRAM_BINS + 1)
    centres = np.histogram2d(boxes[:, 2], boxes[:, 1], bins=(edges, edges))[0]  # [y, x]
    sizes = np.histogram2d(boxes[:, 4], boxes[:, 3], bins=(edges, edges))[0]  # [h, w]
    fig, axes = _figure(1, 3, width=4.6, height=4.0)
    bars, where, shape = axes[0]
    bars.bar(np.arange(len(names)), counts, color="tab:blue")
    bars.set_xticks(np.arange(len(names)), [str(n) for n in names], rotation=0 if len(names) <= 6 else 90,
                    fontsize=8 if len(names) <= MAX_LABELLED_CLASSES else 4)
    bars.set(ylabel="boxes", title=f"boxes per class ({len(boxes)} in {len(rows)} images)")
    for ax, histogram, origin, title, labels_xy in (
            (where, centres, "upper", "box centres", ("x", "y")),
            (shape, sizes, "lower", "box sizes", ("width", "height"))):
        # log scale: a few crowded bins would otherwise leave the rest of the map blank
        image = ax.imshow(np.log1p(histogram), origin=origin, cmap="Blues", aspect="equal",
                          extent=(0, 1, 1, 0) if origin == "upper" else (0, 1, 0, 1))
        ax.set(xlabel=f"{labels_xy[0]} / image width", ylabel=f"{labels_xy[1]} / image height",
               title=f"{title} (colour: log(1 + count))")
        fig.colorbar(image, ax=ax, shrink=0.8)
    _save(fig, out_path, dpi=100)
    return {"counts": counts, "centres": centres, "sizes": sizes}


def plot_validation(metrics: dict, names: Sequence[str], save_dir: Union[str, Path],
                    prefix: Optional[str] = None) -> list[Path]:
    """All validation figures from :meth:`yolov3.metrics.DetectionEvaluator.compute`'s dict: ``PR_curve.png``,
    ``F1_curve.png``, ``P_curve.png``, ``R_curve.png``, ``confusion_matrix.png`` in ``save_dir``."""
    save_dir = Path(save_dir)
    stem = f"{prefix}_" if prefix else ""
    paths = [save_dir / f"{stem}{name}.png" for name in ("PR_curve", "F1_curve", "P_curve", "R_curve",
                                                         "confusion_matrix")]
    plot_pr_curve(metrics["recall_grid"], metrics["pr_curve"], metrics["ap50"], names, paths[0])
    plot_metric_confidence(metrics["conf_grid"], metrics["f1_curve"], names, paths[1], "F1")
    plot_metric_confidence(metrics["conf_grid"], metrics["precision_curve"], names, paths[2], "precision")
    plot_metric_confidence(metrics["conf_grid"], metrics["recall_curve"], names, paths[3], "recall")
    plot_confusion_matrix(metrics["confusion_matrix"], names, paths[4])
    return paths
