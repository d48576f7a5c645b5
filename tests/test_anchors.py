"""Anchor fit and k-means anchors (yolov3/anchors.py): hand-computed IoUs, recovered clusters, the cfg copy."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov3.anchors import (POOR_IOU, AnchorError, anchor_fit, best_iou, box_sizes, cfg_anchors, cfg_with_anchors,
                            kmeans_anchors, main)
from yolov3.cfgparse import parse_cfg
from yolov3.model import Darknet

ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = ROOT / "cfg" / "yolov3-tiny.cfg"


def test_best_iou_is_the_shape_iou_of_the_best_anchor():
    best, index = best_iou(np.array([[10.0, 20.0]]), np.array([[20.0, 10.0]]))
    assert best[0] == pytest.approx(100 / 300) and index[0] == 0  # overlap 10 x 10, union 200 + 200 - 100
    best, index = best_iou(np.array([[10.0, 20.0]]), np.array([[20.0, 10.0], [10.0, 20.0]]))
    assert best[0] == pytest.approx(1.0) and index[0] == 1


def test_anchor_fit_by_hand():
    fit = anchor_fit(np.array([[10.0, 10.0], [20.0, 20.0], [100.0, 100.0]]), np.array([[10.0, 10.0], [20.0, 20.0]]))
    assert fit["mean_best_iou"] == pytest.approx((1 + 1 + 400 / 10000) / 3)
    assert fit["poor_share"] == pytest.approx(1 / 3) and 400 / 10000 < POOR_IOU
    assert fit["boxes_per_anchor"] == [1, 2]  # the 100 x 100 box goes to the larger anchor


def test_kmeans_recovers_three_box_shapes_sorted_by_area_and_is_seeded():
    rng = np.random.default_rng(1)
    truth = np.array([[120.0, 150.0], [12.0, 10.0], [40.0, 20.0]])
    sizes = np.concatenate([c * rng.uniform(0.95, 1.05, size=(200, 2)) for c in truth])
    anchors = kmeans_anchors(sizes, 3, seed=0)
    np.testing.assert_allclose(anchors, truth[[1, 2, 0]], rtol=0.03)
    assert np.array_equal(anchors, kmeans_anchors(sizes, 3, seed=0))
    assert anchor_fit(sizes, anchors)["mean_best_iou"] > 0.9


def test_kmeans_refuses_fewer_distinct_boxes_than_anchors():
    with pytest.raises(AnchorError, match="4 boxes with 2 distinct sizes cannot give 3 anchors"):
        kmeans_anchors(np.array([[5.0, 5.0], [5.0, 5.0], [9.0, 3.0], [9.0, 3.0]]), 3)


def test_cfg_copy_changes_only_the_anchors_lines_and_builds_the_same_model_shape():
    crlf = TINY_CFG.read_text(encoding="utf-8").replace("\n", "\r\n")  # a cfg saved on Windows stays one
    new = np.array([[24.4, 23.0], [30.0, 29.0], [61.0, 62.0], [72.0, 65.0], [77.0, 75.0], [142.0, 128.6]])
    out = cfg_with_anchors(crlf, new)
    changed = [(a, b) for a, b in zip(crlf.splitlines(keepends=True), out.splitlines(keepends=True)) if a != b]
    assert len(changed) == 2 and len(out.splitlines()) == len(crlf.splitlines())
    assert [b for _, b in changed] == ["anchors = 24,23,  30,29,  61,62,  72,65,  77,75,  142,129\r\n"] * 2
    np.testing.assert_array_equal(cfg_anchors(out), np.round(new))
    old_model, new_model = Darknet(str(TINY_CFG), num_classes=3), Darknet(out, num_classes=3)
    assert [p.shape for p in old_model.parameters()] == [p.shape for p in new_model.parameters()]
    assert torch.equal(new_model.yolo_layers[0].anchors, torch.tensor([[72.0, 65.0], [77.0, 75.0], [142.0, 129.0]]))
    with pytest.raises(AnchorError, match="<cfg>: no 'anchors =' line to replace"):
        cfg_with_anchors("[net]\nwidth=416\n", new)


@pytest.fixture
def box_data(tmp_path):
    """Two 200 x 100 photos: at --img-size 100 the gain is 0.5, so a 0.5 x 0.5 box is 50 x 25 px."""
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
    rows = {"a": "0 0.5 0.5 0.5 0.5\n0 0.2 0.2 0.1 0.2\n0 0.5 0.5 0.05 0.1\n0 0.5 0.5 0.9 0.9\n",
            "b": "0 0.5 0.5 0.25 1.0\n0 0.7 0.7 0.3 0.3\n0 0.5 0.5 0.02 0.04\n0 0.5 0.5 0.6 0.2\n"}
    for stem, text in rows.items():
        cv2.imwrite(str(tmp_path / "images" / "train" / f"{stem}.jpg"), np.zeros((100, 200, 3), np.uint8))
        (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)
    cv2.imwrite(str(tmp_path / "images" / "val" / "c.jpg"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labels" / "val" / "c.txt").write_text("")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [x]\n")
    return tmp_path


def test_box_sizes_are_measured_after_the_letterbox(box_data):
    sizes = box_sizes(box_data / "data.yaml", "train", 100)
    expected = [(50, 25), (10, 10), (5, 5), (90, 45), (25, 50), (30, 15), (2, 2), (60, 10)]
    np.testing.assert_allclose(sorted(map(tuple, sizes)), sorted(expected), atol=1e-5)


def test_cli_writes_a_cfg_with_the_fitted_anchors_and_refuses_what_it_cannot_do(box_data, tmp_path, capsys):
    out = tmp_path / "fitted.cfg"
    argv = ["--data", str(box_data / "data.yaml"), "--cfg", str(TINY_CFG), "--img-size", "100"]
    assert main(argv + ["--write", str(out)]) == 0
    printed = capsys.readouterr().out
    fitted = kmeans_anchors(box_sizes(box_data / "data.yaml", "train", 100), 6)
    np.testing.assert_array_equal(cfg_anchors(out), np.maximum(np.round(fitted), 1))
    assert "8 boxes of" in printed and "fitted (k-means, 1 - IoU)" in printed and f"wrote {out}" in printed
    assert [b.options for b in parse_cfg(out).layers if b.type != "yolo"] == \
        [b.options for b in parse_cfg(TINY_CFG).layers if b.type != "yolo"]
    assert main(argv + ["--split", "val"]) == 2
    assert "split 'val' has no labelled box" in capsys.readouterr().err
    assert main(argv + ["--write", str(TINY_CFG)]) == 2
    assert "that is the cfg being read; give a new file name" in capsys.readouterr().err
    assert main(argv + ["--img-size", "8"]) == 2
    assert "--img-size must be at least 32, got 8" in capsys.readouterr().err
