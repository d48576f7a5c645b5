"""Figures are written and draw the right numbers (checked through the data each plot function returns, not pixels)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from yolov3.metrics import DetectionEvaluator
from yolov3.plots import (
    RESULTS_PANELS,
    plot_confusion_matrix,
    plot_labels,
    plot_metric_confidence,
    plot_pr_curve,
    plot_results_csv,
    plot_validation,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def perfect_metrics(num_classes: int = 3) -> dict:
    """compute() of a perfect detector on a few images (every class present)."""
    evaluator = DetectionEvaluator(num_classes)
    for image_id in range(4):
        truths = np.array([[c, 10 + 40 * c, 10, 40 + 40 * c, 50] for c in range(num_classes)], float)
        preds = np.concatenate((truths[:, 1:], np.full((num_classes, 1), 0.9), truths[:, :1]), 1)
        evaluator.update(preds, truths, image_id)
    return evaluator.compute()


def test_pr_curve_of_a_perfect_detector(tmp_path):
    metrics = perfect_metrics()
    drawn = plot_pr_curve(metrics["recall_grid"], metrics["pr_curve"], metrics["ap50"], ["a", "b", "c"],
                          tmp_path / "pr.png")
    assert_png(tmp_path / "pr.png")
    np.testing.assert_allclose(drawn["mean_precision"], 1.0)  # precision 1 at every recall
    assert drawn["mAP50"] == pytest.approx(1.0) and drawn["classes"] == ["a", "b", "c"]


def test_pr_curve_skips_classes_without_truth(tmp_path):
    pr_curve = np.array([np.linspace(1, 0, 101), np.full(101, np.nan), np.full(101, 0.5)])
    drawn = plot_pr_curve(np.linspace(0, 1, 101), pr_curve, np.array([0.5, np.nan, 0.5]), ["x", "y", "z"],
                          tmp_path / "pr.png")
    assert drawn["classes"] == ["x", "z"]
    # mean of the two drawn curves: (1 - r + 0.5) / 2 at recall r
    np.testing.assert_allclose(drawn["mean_precision"], (1.5 - np.linspace(0, 1, 101)) / 2)


def test_f1_curve_reports_the_best_mean(tmp_path):
    conf = np.linspace(0, 1, 11)
    curves = np.array([1 - np.abs(conf - 0.3), 1 - np.abs(conf - 0.5)])  # class means peak at 0.3..0.5: 0.9
    drawn = plot_metric_confidence(conf, curves, ["a", "b"], tmp_path / "f1.png")
    assert_png(tmp_path / "f1.png")
    # mean = 1 - (|c - .3| + |c - .5|) / 2 = 0.9 for c in [.3, .5]; argmax takes the first: 0.3
    assert drawn["best_conf"] == pytest.approx(0.3) and drawn["best_value"] == pytest.approx(0.9)


def test_confusion_matrix_plot_keeps_counts_and_normalises_columns(tmp_path):
    counts = np.array([[5, 1, 2], [0, 3, 1], [1, 0, 0]])  # 2 classes + background
    drawn = plot_confusion_matrix(counts, ["cat", "dog"], tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")
    np.testing.assert_array_equal(drawn["counts"], counts)
    # column "cat": 5, 0, 1 -> 5/6, 0, 1/6; column "dog": 1, 3, 0 -> .25, .75, 0; background column: 2/3, 1/3, 0
    np.testing.assert_allclose(drawn["shown"], [[5 / 6, 0.25, 2 / 3], [0, 0.75, 1 / 3], [1 / 6, 0, 0]])
    with pytest.raises(ValueError, match=r"does not fit 3 names plus background; expected \(4, 4\)"):
        plot_confusion_matrix(counts, ["a", "b", "c"], tmp_path / "bad.png")


def write_results_csv(path, rows: list[dict]) -> None:
    columns = ["epoch", "train_box", "train_obj", "train_noobj", "train_cls", "train_total", "lr", "precision",
               "recall", "mAP50", "mAP50_95", "val_box", "val_obj", "val_noobj", "val_cls", "epoch_time_s"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def test_plot_results_csv_draws_every_panel(tmp_path):
    rows = []
    for epoch in range(3):
        row = {c: 1.0 / (epoch + 1) for c, _ in RESULTS_PANELS}
        row.update(epoch=epoch, lr=0.01 * (3 - epoch), mAP50=0.1 * epoch)
        rows.append(row)
    rows[1]["mAP50"] = ""  # an epoch without validation: a gap, not a zero
    write_results_csv(tmp_path / "results.csv", rows)
    drawn = plot_results_csv(tmp_path / "results.csv", tmp_path / "results.png")
    assert_png(tmp_path / "results.png")
    assert set(drawn) == {c for c, _ in RESULTS_PANELS} and len(drawn) == 14
    epochs, values = drawn["mAP50"]
    np.testing.assert_array_equal(epochs, [0, 1, 2])
    assert values[0] == 0.0 and np.isnan(values[1]) and values[2] == pytest.approx(0.2)
    np.testing.assert_allclose(drawn["lr"][1], [0.03, 0.02, 0.01])
    np.testing.assert_allclose(drawn["train_noobj"][1], [1, 1 / 2, 1 / 3])


def test_plot_results_csv_errors_name_the_file_and_column(tmp_path):
    (tmp_path / "results.csv").write_text("epoch,train_box\n0,1.0\n")
    with pytest.raises(ValueError, match=r"results\.csv: missing column\(s\) train_obj, train_noobj"):
        plot_results_csv(tmp_path / "results.csv", tmp_path / "out.png")
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        plot_results_csv(tmp_path / "nothing.csv", tmp_path / "out.png")


def test_plot_validation_writes_all_figures(tmp_path):
    paths = plot_validation(perfect_metrics(), ["a", "b", "c"], tmp_path / "val")
    assert [p.name for p in paths] == ["PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                                       "confusion_matrix.png"]
    for path in paths:
        assert_png(path)


def test_each_validation_figure_draws_its_own_curve(tmp_path, monkeypatch):
    import yolov3.plots as plots

    drawn = {}
    monkeypatch.setattr(plots, "plot_pr_curve", lambda grid, curve, ap, names, path: drawn.update(
        {path.name: (grid, curve, ap)}))
    monkeypatch.setattr(plots, "plot_metric_confidence", lambda grid, curve, names, path, what: drawn.update(
        {path.name: (grid, curve, what)}))
    monkeypatch.setattr(plots, "plot_confusion_matrix", lambda matrix, names, path: drawn.update(
        {path.name: (matrix,)}))
    metrics = perfect_metrics()
    plots.plot_validation(metrics, ["a", "b", "c"], tmp_path, prefix="final")
    m = metrics
    expected = {"final_PR_curve.png": (m["recall_grid"], m["pr_curve"], m["ap50"]),
                "final_F1_curve.png": (m["conf_grid"], m["f1_curve"], "F1"),
                "final_P_curve.png": (m["conf_grid"], m["precision_curve"], "precision"),
                "final_R_curve.png": (m["conf_grid"], m["recall_curve"], "recall"),
                "final_confusion_matrix.png": (m["confusion_matrix"],)}
    assert drawn.keys() == expected.keys()
    for name, parts in expected.items():  # the very arrays of the metrics dict, each in its figure
        assert all(a is b for a, b in zip(drawn[name], parts) if not isinstance(b, str)), name
        assert [x for x in drawn[name] if isinstance(x, str)] == [x for x in parts if isinstance(x, str)], name


def test_labels_plot_counts_classes_and_bins_centres_and_sizes(tmp_path):
    """labels.jpg: boxes per class, centres over the image, widths against heights (50 bins of 0.02)."""
    labels = [np.array([[0, 0.11, 0.51, 0.2, 0.3], [2, 0.99, 0.01, 0.05, 0.05]]), np.zeros((0, 5)),
              np.array([[0, 0.5, 0.5, 1.0, 0.1]])]
    out = plot_labels(labels, ["a", "b", "c"], tmp_path / "labels.jpg")
    assert out["counts"].tolist() == [2, 0, 1]
    assert out["centres"].sum() == 3 and out["centres"][25, 5] == 1  # y 0.51 -> row 25, x 0.11 -> column 5
    assert out["centres"][0, 49] == 1 and out["centres"][25, 25] == 1
    assert out["sizes"][15, 10] == 1 and out["sizes"][2, 2] == 1  # h 0.3 -> 15, w 0.2 -> 10; 0.05 -> 2
    assert out["sizes"][5, 49] == 1  # w = 1.0 falls in the last bin
    data = (tmp_path / "labels.jpg").read_bytes()
    assert data[:2] == b"\xff\xd8" and len(data) > 5000  # a JPEG


def test_epoch_axes_show_whole_epochs_and_values_without_an_offset():
    from matplotlib.figure import Figure

    from yolov3.plots import readable_epoch_axes

    ax = Figure().subplots()
    ax.plot([1, 2], [8.1250001, 8.1250004])  # two epochs of a flat curve
    readable_epoch_axes(ax)
    ax.figure.canvas.draw()
    xticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
    assert xticks and all(float(t).is_integer() for t in xticks)
    # matplotlib's default labels these ticks 0.5, 1.0, ... under an offset the eye misses
    labels = [float(label.get_text().replace("−", "-")) for label in ax.get_yticklabels() if label.get_text()]
    assert labels and all(abs(v - 8.125) < 1e-3 for v in labels)


def test_classes_without_truths_are_left_out_of_the_means_and_the_maps_keep_their_orientation(tmp_path, monkeypatch):
    import yolov3.plots as plots_module

    recall = np.linspace(0, 1, 101)
    pr = np.array([np.linspace(1, 0, 101), np.full(101, np.nan), np.full(101, 0.5)])
    assert plot_pr_curve(recall, pr, np.array([0.5, np.nan, 0.7]), ["x", "y", "z"], tmp_path / "pr.png")["mAP50"] \
        == pytest.approx(0.6)
    conf = np.linspace(0, 1, 11)
    f1 = plot_metric_confidence(conf, np.array([1 - np.abs(conf - 0.3), np.full(11, np.nan)]), ["a", "b"],
                                tmp_path / "f1.png")
    assert f1["best_conf"] == pytest.approx(0.3) and f1["best_value"] == pytest.approx(1.0)
    shown = plot_confusion_matrix(np.array([[2, 0, 1], [0, 0, 1], [1, 0, 0]]), ["cat", "dog"], tmp_path / "cm.png")
    np.testing.assert_allclose(shown["shown"], [[2 / 3, 0, 0.5], [0, 0, 0.5], [1 / 3, 0, 0]])  # no truth of dog: 0
    figures = []
    real_save = plots_module._save
    monkeypatch.setattr(plots_module, "_save", lambda fig, *a, **k: (figures.append(fig), real_save(fig, *a, **k))[1])
    drawn = plot_labels([np.array([[0, 0.5, 0.5, 0.2, 0.2]])], ["a", "b", "c"], tmp_path / "labels.jpg")
    assert drawn["counts"].tolist() == [1, 0, 0]
    centres = figures[-1].axes[1]
    # y down, as in the image: a centre at y .1 is drawn above one at y .9
    assert centres.transData.transform((0.5, 0.1))[1] > centres.transData.transform((0.5, 0.9))[1]
