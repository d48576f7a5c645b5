"""Anchor fit and k-means anchors (yolov3/anchors.py): hand-computed IoUs, recovered clusters, the cfg copy."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov3.anchors import (POOR_IOU, AnchorError, anchor_fit, best_iou, box_sizes, cfg_anchors, cfg_with_anchors,
                            kmeans_anchors, main, whole_pixels)
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
    sizes = np.array([[10.0, 10.0], [20.0, 20.0], [100.0, 100.0], [10.0, 30.0]])
    fit = anchor_fit(sizes, np.array([[10.0, 10.0], [20.0, 20.0]]))
    # 100 x 100 on 20 x 20: 400 / 10000; 10 x 30 on 20 x 20: 200 / (300 + 400 - 200) = 0.4, on 10 x 10: 1/3
    assert fit["mean_best_iou"] == pytest.approx((1 + 1 + 400 / 10000 + 0.4) / 4)
    assert fit["poor_share"] == pytest.approx(1 / 4) and 400 / 10000 < POOR_IOU < 0.4
    assert fit["boxes_per_anchor"] == [1, 3]


def three_shapes(seed: int = 1, per_cluster: int = 200) -> tuple:
    truth = np.array([[120.0, 150.0], [12.0, 10.0], [40.0, 20.0]])
    rng = np.random.default_rng(seed)
    return truth, np.concatenate([c * rng.uniform(0.95, 1.05, size=(per_cluster, 2)) for c in truth])


def test_kmeans_recovers_three_box_shapes_sorted_by_area_from_any_seed():
    truth, sizes = three_shapes()
    for seed in range(10):  # a start with two centres in one cluster would end with two anchors there
        anchors = kmeans_anchors(sizes, 3, seed=seed)
        np.testing.assert_allclose(anchors, truth[[1, 2, 0]], rtol=0.03)
    assert np.array_equal(kmeans_anchors(sizes, 3, seed=4), kmeans_anchors(sizes, 3, seed=4))
    assert anchor_fit(sizes, anchors)["mean_best_iou"] > 0.9


def test_kmeans_centres_are_the_medians_of_their_boxes_so_a_few_huge_boxes_do_not_drag_them():
    rng = np.random.default_rng(2)
    sizes = np.concatenate([[20.0, 20.0] * rng.uniform(0.9, 1.1, size=(100, 2)),
                            [100.0, 50.0] * rng.uniform(0.9, 1.1, size=(100, 2)), [[400.0, 400.0]] * 6])
    anchors = kmeans_anchors(sizes, 2)
    _, nearest = best_iou(sizes, anchors)
    assert nearest[-6:].tolist() == [1] * 6  # the huge boxes join the larger cluster ...
    for cluster in range(2):  # ... whose centre is still its boxes' median, near 100 x 50 (a mean would be 116 x 66)
        np.testing.assert_allclose(anchors[cluster], np.median(sizes[nearest == cluster], axis=0))
    np.testing.assert_allclose(anchors[1], [100, 50], rtol=0.05)
    lognormal = np.exp(np.random.default_rng(3).normal(3.5, 0.8, size=(500, 2)))
    anchors = kmeans_anchors(lognormal, 6)  # no clusters to find: still a fixed point of the median update
    _, nearest = best_iou(lognormal, anchors)
    for cluster in range(6):
        np.testing.assert_allclose(anchors[cluster], np.median(lognormal[nearest == cluster], axis=0))


def test_kmeans_refuses_what_cannot_be_clustered():
    with pytest.raises(AnchorError, match="4 boxes with 2 distinct sizes cannot give 3 anchors"):
        kmeans_anchors(np.array([[5.0, 5.0], [5.0, 5.0], [9.0, 3.0], [9.0, 3.0]]), 3)
    for bad in (np.nan, 0.0, -1.0):
        with pytest.raises(AnchorError, match="box widths and heights must be finite and > 0"):
            kmeans_anchors(np.array([[5.0, 5.0], [9.0, 3.0], [bad, 3.0]]), 2)


def test_cfg_copy_changes_only_the_anchors_lines_and_builds_the_same_model_shape():
    crlf = TINY_CFG.read_text(encoding="utf-8").replace("\n", "\r\n")  # a cfg saved on Windows stays one
    new = np.array([[24.4, 23.0], [30.0, 29.0], [61.0, 62.0], [72.0, 65.0], [77.0, 75.0], [142.0, 128.6]])
    out = cfg_with_anchors(crlf, new)
    changed = [(a, b) for a, b in zip(crlf.splitlines(keepends=True), out.splitlines(keepends=True)) if a != b]
    assert len(changed) == 2 and len(out.splitlines()) == len(crlf.splitlines())
    assert [b for _, b in changed] == ["anchors = 24,23,  30,29,  61,62,  72,65,  77,75,  142,129\r\n"] * 2
    np.testing.assert_array_equal(cfg_anchors(out)[0], np.round(new))
    assert cfg_anchors(out)[1]
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
    crlf_cfg = tmp_path / "windows.cfg"
    crlf_cfg.write_bytes(TINY_CFG.read_bytes().replace(b"\n", b"\r\n"))
    argv = ["--data", str(box_data / "data.yaml"), "--img-size", "100"]
    assert main(argv + ["--cfg", str(crlf_cfg), "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    fitted = np.round(kmeans_anchors(box_sizes(box_data / "data.yaml", "train", 100), 6))
    np.testing.assert_array_equal(cfg_anchors(out)[0], fitted)
    assert "8 boxes of" in printed and f"wrote {out}" in printed
    assert "fitted (k-means, 1 - IoU): " + "  ".join(f"{w:.0f},{h:.0f}" for w, h in fitted) in printed
    written, original = out.read_bytes().split(b"\r\n"), crlf_cfg.read_bytes().split(b"\r\n")
    assert len(written) == len(original) and b"\n" not in b"".join(written)  # CRLF kept, line for line
    coco = b"anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319"
    assert [a for a, b in zip(original, written) if a != b] == [coco] * 2
    argv += ["--cfg", str(TINY_CFG)]
    assert main(argv + ["--split", "val"]) == 2
    assert "split 'val' has no labelled box" in capsys.readouterr().err
    assert main(argv + ["--write", str(TINY_CFG)]) == 2
    assert "that is the cfg being read; give a new file name" in capsys.readouterr().err
    assert main(argv + ["--img-size", "8"]) == 2
    assert "--img-size must be at least 32, got 8" in capsys.readouterr().err


def test_anchors_are_scored_as_the_masks_use_them_and_such_a_cfg_is_not_rewritten(box_data, tmp_path, capsys):
    # AlexeyAB's yolov3-tiny: masks 3,4,5 and 1,2,3, so anchor 0 is never used and anchor 3 serves both layers
    cfg = tmp_path / "masks.cfg"
    cfg.write_text(TINY_CFG.read_text().replace("mask = 0,1,2", "mask = 1,2,3"))
    used, writable = cfg_anchors(cfg)
    np.testing.assert_array_equal(used, [[23, 27], [37, 58], [81, 82], [81, 82], [135, 169], [344, 319]])
    assert not writable
    argv = ["--data", str(box_data / "data.yaml"), "--img-size", "100", "--cfg", str(cfg)]
    assert main(argv) == 0
    assert "(as its masks use them): 23,27  37,58  81,82  81,82  135,169  344,319" in capsys.readouterr().out
    assert main(argv + ["--write", str(tmp_path / "new.cfg")]) == 2
    assert "masks that do not use each anchor once" in capsys.readouterr().err and not (tmp_path / "new.cfg").exists()


def test_fit_counts_every_anchor_k_distinct_sizes_give_k_anchors_and_anchors_are_whole_pixels():
    assert anchor_fit(np.array([[10.0, 10.0]]), np.array([[10.0, 10.0], [100.0, 100.0]]))["boxes_per_anchor"] == [1, 0]
    np.testing.assert_array_equal(kmeans_anchors(np.array([[5.0, 5.0], [9.0, 3.0]]), 2), [[5, 5], [9, 3]])
    np.testing.assert_array_equal(whole_pixels(np.array([[0.4, 3.6], [2.5, 0.5]])), [[1, 4], [2, 1]])


def test_cli_scores_the_fitted_anchors_on_their_own_line(box_data, capsys):
    assert main(["--data", str(box_data / "data.yaml"), "--img-size", "100", "--cfg", str(TINY_CFG)]) == 0
    printed = capsys.readouterr().out
    sizes = box_sizes(box_data / "data.yaml", "train", 100)
    fitted = whole_pixels(kmeans_anchors(sizes, 6))
    current = cfg_anchors(TINY_CFG)[0]
    fitted_line = printed.split("fitted (k-means, 1 - IoU)")[1]
    assert f"mean best IoU {anchor_fit(sizes, fitted)['mean_best_iou']:.3f}" in fitted_line
    assert anchor_fit(sizes, fitted)["mean_best_iou"] != pytest.approx(anchor_fit(sizes, current)["mean_best_iou"],
                                                                       abs=1e-3)


def test_a_cfg_whose_layers_list_different_anchors_is_not_rewritten(box_data, tmp_path):
    head, last = TINY_CFG.read_text().rsplit("344,319", 1)
    cfg = tmp_path / "odd.cfg"
    cfg.write_text(head + "344,320" + last)
    assert cfg_anchors(cfg)[1] is False
    assert main(["--data", str(box_data / "data.yaml"), "--img-size", "100", "--cfg", str(cfg),
                 "--write", str(tmp_path / "new.cfg")]) == 2
    assert not (tmp_path / "new.cfg").exists()


def test_fitted_anchors_sort_by_area_and_the_seed_reaches_k_means(box_data, monkeypatch):
    import yolov3.anchors as anchors_module

    np.testing.assert_array_equal(kmeans_anchors(np.array([[10.0, 100.0], [50.0, 10.0]]), 2), [[50, 10], [10, 100]])
    seen, real = [], anchors_module.kmeans_anchors
    monkeypatch.setattr(anchors_module, "kmeans_anchors",
                        lambda sizes, k, seed=0, **kw: (seen.append(seed), real(sizes, k, seed=seed, **kw))[1])
    assert main(["--data", str(box_data / "data.yaml"), "--img-size", "100", "--cfg", str(TINY_CFG),
                 "--seed", "7"]) == 0
    assert seen == [7]
