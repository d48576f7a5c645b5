"""NMS against OpenCV's cv2.dnn.NMSBoxes (an independent implementation), and letterbox inversion by hand.

OpenCV 4.x NMSBoxes on float boxes (Rect2d, given as x, y, w, h) computes IoU without the +1-pixel convention and
keeps a box while its overlap with every kept box is <= the threshold — the same rule as ours (IoU > thr
suppresses). Boxes are float64 so both sides compute the same doubles, and scores are distinct so the visiting
order is unambiguous: the kept index lists must be identical, not just close.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import yolov3.postprocess as postprocess
from yolov3.boxes import box_iou
from yolov3.postprocess import nms, non_max_suppression, scale_boxes


def random_boxes(rng: np.random.Generator, n: int, extent: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """n float64 xyxy boxes clustered enough to overlap often, and n distinct scores."""
    centres = rng.uniform(0, extent, (n, 2))
    sizes = rng.uniform(5, extent / 3, (n, 2))
    boxes = np.concatenate((centres - sizes / 2, centres + sizes / 2), 1)
    scores = (rng.permutation(n) + 1 + rng.uniform(0, 0.5, n)) / (n + 1)  # distinct by construction, in (0, 1)
    return boxes, scores


def cv2_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Kept indices from OpenCV, best score first (it drops scores <= score_threshold; ours are all > 0)."""
    if len(boxes_xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.concatenate((boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]), 1)
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold=0.0, nms_threshold=iou_thres)
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def test_cv2_uses_iou_without_plus_one():
    # The premise of the oracle: boxes (0,0,10,10) and (5,0,10,10) as x,y,w,h overlap 50 / (100 + 100 - 50) = 1/3
    # without +1; with the +1 convention it would be 6*11 / (121 + 121 - 66) = 0.375.
    boxes = [(0.0, 0.0, 10.0, 10.0), (5.0, 0.0, 10.0, 10.0)]
    assert list(np.asarray(cv2.dnn.NMSBoxes(boxes, [0.9, 0.8], 0.0, 0.33)).ravel()) == [0]
    assert list(np.asarray(cv2.dnn.NMSBoxes(boxes, [0.9, 0.8], 0.0, 0.34)).ravel()) == [0, 1]
    ours = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert nms(ours, scores, 0.33).tolist() == [0]
    assert nms(ours, scores, 0.34).tolist() == [0, 1]


@pytest.mark.parametrize("block_size", [postprocess.NMS_BLOCK_SIZE, 7])
def test_nms_matches_opencv_on_random_sets(monkeypatch, block_size):
    # A small block size forces the cross-block suppression path on every set.
    monkeypatch.setattr(postprocess, "NMS_BLOCK_SIZE", block_size)
    rng = np.random.default_rng(0)
    for trial in range(150 if block_size > 100 else 40):  # tiny blocks are slow (per-block torch overhead)
        n = int(rng.integers(0, 120))
        iou_thres = float(rng.choice([0.0, 0.1, 0.3, 0.45, 0.5, 0.65, 0.9, 1.0]))
        boxes, scores = random_boxes(rng, n)
        ours = nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_thres).numpy()
        np.testing.assert_array_equal(ours, cv2_nms(boxes, scores, iou_thres), err_msg=f"trial {trial}")


def test_nms_matches_opencv_across_blocks_with_many_boxes():
    # 2500 candidates > NMS_BLOCK_SIZE: kept boxes of earlier blocks must suppress later blocks.
    rng = np.random.default_rng(1)
    boxes, scores = random_boxes(rng, 2500, extent=600.0)
    ours = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.45).numpy()
    reference = cv2_nms(boxes, scores, 0.45)
    assert len(reference) > postprocess.NMS_BLOCK_SIZE // 4  # enough kept boxes to make the test meaningful
    np.testing.assert_array_equal(ours, reference)


def test_nms_max_keep_is_a_prefix_of_the_full_result(monkeypatch):
    monkeypatch.setattr(postprocess, "NMS_BLOCK_SIZE", 16)
    rng = np.random.default_rng(2)
    boxes, scores = random_boxes(rng, 300)
    full = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    for max_keep in (1, 5, 17, 40, len(full), len(full) + 10):
        assert torch.equal(nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5, max_keep=max_keep),
                           full[:max_keep])


def make_pred(boxes_xyxy: np.ndarray, objectness: np.ndarray, class_probs: np.ndarray) -> torch.Tensor:
    """(1, n, 5 + C) eval-mode model output from xyxy boxes."""
    cxcywh = np.concatenate(((boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2, boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]), 1)
    return torch.from_numpy(np.concatenate((cxcywh, objectness[:, None], class_probs), 1))[None]


def random_pred(rng: np.random.Generator, n: int, num_classes: int):
    boxes, _ = random_boxes(rng, n)
    objectness = rng.uniform(0.05, 1.0, n)
    class_probs = rng.uniform(0.0, 1.0, (n, num_classes))
    return boxes, objectness, class_probs


def test_per_class_nms_is_opencv_nms_within_each_class():
    rng = np.random.default_rng(3)
    conf_thres, iou_thres = 0.2, 0.45
    for trial in range(20):
        boxes, objectness, class_probs = random_pred(rng, 150, 3)
        (out,) = non_max_suppression(make_pred(boxes, objectness, class_probs), conf_thres, iou_thres, max_det=1000)
        scores = objectness[:, None] * class_probs  # (n, C)
        best_class, best_score = scores.argmax(1), scores.max(1)
        expected = []
        for c in range(3):
            index = np.flatnonzero((best_class == c) & (best_score > conf_thres))
            for k in cv2_nms(boxes[index], best_score[index], iou_thres):
                expected.append((*boxes[index[k]], best_score[index[k]], c))
        expected = np.array(sorted(expected, key=lambda row: -row[4]))
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-9, err_msg=f"trial {trial}")
        # same-class boxes never overlap above the threshold afterwards; other classes may
        for c in range(3):
            same = out[out[:, 5] == c, :4]
            iou = box_iou(same, same).fill_diagonal_(0)
            assert (iou <= iou_thres).all()


def test_agnostic_nms_is_opencv_nms_over_all_classes():
    rng = np.random.default_rng(4)
    boxes, objectness, class_probs = random_pred(rng, 200, 4)
    (out,) = non_max_suppression(make_pred(boxes, objectness, class_probs), 0.1, 0.5, agnostic=True, max_det=1000)
    scores = objectness[:, None] * class_probs
    best_class, best_score = scores.argmax(1), scores.max(1)
    index = np.flatnonzero(best_score > 0.1)
    kept = index[cv2_nms(boxes[index], best_score[index], 0.5)]
    np.testing.assert_allclose(out[:, :4].numpy(), boxes[kept], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out[:, 5].numpy(), best_class[kept])
    # and agnostic keeps no more than per-class NMS (which only suppresses within a class)
    (per_class,) = non_max_suppression(make_pred(boxes, objectness, class_probs), 0.1, 0.5, max_det=1000)
    assert len(out) < len(per_class)


def test_score_is_objectness_times_class_probability_and_multi_label():
    boxes = np.array([[10.0, 10.0, 50.0, 50.0]])
    objectness = np.array([0.8])
    class_probs = np.array([[0.5, 0.25, 0.9]])  # scores 0.4, 0.2, 0.72
    pred = make_pred(boxes, objectness, class_probs)
    (single,) = non_max_suppression(pred, conf_thres=0.3, iou_thres=0.5)
    np.testing.assert_allclose(single.numpy(), [[10, 10, 50, 50, 0.72, 2]])
    (multi,) = non_max_suppression(pred, conf_thres=0.3, iou_thres=0.5, multi_label=True)
    # 0.72 (class 2) and 0.4 (class 0) pass 0.3; 0.2 (class 1) does not; the same box survives once per class
    np.testing.assert_allclose(multi.numpy(), [[10, 10, 50, 50, 0.72, 2], [10, 10, 50, 50, 0.4, 0]])
    (agnostic_multi,) = non_max_suppression(pred, 0.3, 0.5, multi_label=True, agnostic=True)
    np.testing.assert_allclose(agnostic_multi.numpy(), [[10, 10, 50, 50, 0.72, 2]])  # identical boxes: IoU 1 > .5
    (only_class_0,) = non_max_suppression(pred, 0.3, 0.5, multi_label=True, classes=[0, 1])
    np.testing.assert_allclose(only_class_0.numpy(), [[10, 10, 50, 50, 0.4, 0]])


def test_multi_label_matches_opencv_per_class():
    rng = np.random.default_rng(5)
    boxes, objectness, class_probs = random_pred(rng, 120, 3)
    (out,) = non_max_suppression(make_pred(boxes, objectness, class_probs), 0.25, 0.45, multi_label=True,
                                 max_det=10_000)
    scores = objectness[:, None] * class_probs
    expected = 0
    for c in range(3):
        index = np.flatnonzero(scores[:, c] > 0.25)
        kept = index[cv2_nms(boxes[index], scores[index, c], 0.45)]
        mine = out[out[:, 5] == c].numpy()
        np.testing.assert_allclose(mine[:, :5], np.concatenate((boxes[kept], scores[kept, c, None]), 1), atol=1e-9)
        expected += len(kept)
    assert len(out) == expected
    assert len(np.unique(out[:, :4].numpy(), axis=0)) < len(out)  # some boxes do appear under several classes


def test_classes_filter_max_det_and_candidate_cap():
    rng = np.random.default_rng(6)
    boxes, objectness, class_probs = random_pred(rng, 300, 5)
    pred = make_pred(boxes, objectness, class_probs)
    (full,) = non_max_suppression(pred, 0.05, 0.6, max_det=10_000)
    (filtered,) = non_max_suppression(pred, 0.05, 0.6, classes=[1, 3], max_det=10_000)
    assert set(filtered[:, 5].tolist()) == {1.0, 3.0}
    # per-class NMS: filtering classes leaves the surviving boxes of those classes unchanged
    assert torch.equal(filtered, full[(full[:, 5] == 1) | (full[:, 5] == 3)])
    (capped,) = non_max_suppression(pred, 0.05, 0.6, max_det=7)
    assert torch.equal(capped, full[:7])
    assert torch.all(full[:-1, 4] >= full[1:, 4])  # sorted by score
    # candidate cap: only the 10 best (box, class) pairs enter NMS -> at most 10 come out, all among the 10 best
    (few,) = non_max_suppression(pred, 0.05, 0.6, max_det=10_000, max_candidates=10)
    scores = (objectness[:, None] * class_probs).max(1)
    assert 0 < len(few) <= 10 and few[:, 4].min() >= np.sort(scores)[-10] - 1e-12


def test_empty_inputs_give_empty_outputs():
    pred = torch.rand(3, 50, 5 + 4, dtype=torch.float64)
    pred[..., 4] = 0.0005  # every objectness below the threshold
    out = non_max_suppression(pred, conf_thres=0.001, iou_thres=0.6)
    assert len(out) == 3 and all(o.shape == (0, 6) for o in out)
    out = non_max_suppression(torch.zeros(2, 0, 7), conf_thres=0.001, iou_thres=0.6)
    assert [o.shape for o in out] == [(0, 6), (0, 6)]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    with pytest.raises(ValueError, match=r"\(B, N, 5 \+ C\)"):
        non_max_suppression(torch.zeros(10, 85), 0.1, 0.5)


def test_scale_boxes_undoes_a_hand_computed_letterbox():
    # A 200 (w) x 100 (h) image letterboxed to 416 x 416: ratio = 416 / 200 = 2.08, resized to 416 x 208,
    # pad_h = (416 - 208) / 2 = 104, pad_w = 0.
    # Net box (20.8, 124.8, 416, 312) -> x1 = 20.8 / 2.08 = 10, y1 = (124.8 - 104) / 2.08 = 10,
    # x2 = 416 / 2.08 = 200, y2 = (312 - 104) / 2.08 = 100.
    # Net box (-10, 50, 100, 400) -> x1 = -4.8 -> clipped 0; y1 = (50 - 104) / 2.08 < 0 -> 0;
    # x2 = 100 / 2.08 = 48.0769...; y2 = (400 - 104) / 2.08 = 142.3 -> clipped to 100.
    boxes = torch.tensor([[20.8, 124.8, 416.0, 312.0], [-10.0, 50.0, 100.0, 400.0]], dtype=torch.float64)
    out = scale_boxes(boxes, ratio=(2.08, 2.08), pad=(0.0, 104.0), orig_shape=(100, 200))
    np.testing.assert_allclose(out.numpy(), [[10, 10, 200, 100], [0, 0, 100 / 2.08, 100]], atol=1e-12)
    assert boxes[0, 0] == 20.8  # the input is not modified


def test_scale_boxes_inverts_the_letterbox_formula():
    # Random anisotropic ratios and pads: x_net = x_orig * ratio_w + pad_w round-trips exactly (boxes inside).
    rng = np.random.default_rng(7)
    for _ in range(20):
        h, w = rng.integers(50, 900, 2)
        ratio, pad = rng.uniform(0.2, 3.0, 2), rng.uniform(0, 60, 2)
        x = rng.uniform(0, w, (10, 2)); y = rng.uniform(0, h, (10, 2))
        orig = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
        net = orig * np.tile(ratio, 2) + np.tile(pad, 2)
        back = scale_boxes(torch.from_numpy(net), tuple(ratio), tuple(pad), (int(h), int(w)))
        np.testing.assert_allclose(back.numpy(), orig, atol=1e-9)
    with pytest.raises(ValueError, match="ratios must be positive"):
        scale_boxes(torch.zeros(1, 4), (0.0, 1.0), (0, 0), (10, 10))


def per_class_cv2_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thres: float) -> np.ndarray:
    """OpenCV NMS run separately on each class; kept indices of all classes, best score first."""
    kept = [np.flatnonzero(classes == c)[cv2_nms(boxes[classes == c], scores[classes == c], iou_thres)]
            for c in np.unique(classes)]
    kept = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")]


@pytest.mark.parametrize("block_size", [7, postprocess.NMS_BLOCK_SIZE])
def test_per_class_nms_across_blocks_matches_opencv_per_class(monkeypatch, block_size):
    # more candidates than one block, in 3 classes: a box kept in an earlier block suppresses later boxes of its own
    # class only (validation at conf 0.001 routinely sends thousands of candidates)
    monkeypatch.setattr(postprocess, "NMS_BLOCK_SIZE", block_size)
    rng = np.random.default_rng(8)
    n = 60 if block_size == 7 else 2600
    boxes, scores = random_boxes(rng, n, extent=200.0 if block_size == 7 else 600.0)
    classes = rng.integers(0, 3, n)
    ours = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.45, classes=torch.from_numpy(classes)).numpy()
    expected = per_class_cv2_nms(boxes, scores, classes, 0.45)
    agnostic = cv2_nms(boxes, scores, 0.45)
    assert len(expected) > len(agnostic)  # classes matter here: some overlapping boxes survive in other classes
    if block_size > 7:
        assert len(expected) > block_size  # kept boxes span several blocks
    np.testing.assert_array_equal(ours, expected)


def test_max_candidates_keeps_exactly_the_best_pairs():
    # 12 disjoint boxes (nothing suppresses anything), one class, objectness .9 - .05 k: with max_candidates = 5
    # exactly the 5 best enter NMS and come out; with 12 or more, all 12
    boxes = np.array([[20.0 * k, 0.0, 20.0 * k + 10, 10.0] for k in range(12)])
    objectness = 0.9 - 0.05 * np.arange(12)
    pred = make_pred(boxes, objectness, np.ones((12, 1)))
    for cap, kept in ((1, 1), (5, 5), (11, 11), (12, 12), (13, 12)):
        (out,) = non_max_suppression(pred, 0.01, 0.5, max_candidates=cap)
        np.testing.assert_allclose(out[:, 4].numpy(), objectness[:kept], err_msg=f"max_candidates={cap}")
        np.testing.assert_allclose(out[:, :4].numpy(), boxes[:kept])


def test_a_score_equal_to_conf_thres_is_not_kept_and_flags_are_checked_at_their_edges():
    from yolov3.config import ConfigError
    from yolov3.postprocess import check_inference_args

    pred = make_pred(np.array([[10.0, 10, 50, 50]]), np.array([0.8]), np.array([[0.5]]))  # score .8 x .5 = .4
    assert non_max_suppression(pred, conf_thres=0.4, iou_thres=0.5)[0].shape == (0, 6)
    kept = non_max_suppression(pred, conf_thres=0.39, iou_thres=0.5)[0]
    assert kept.shape == (1, 6) and kept[0].tolist() == pytest.approx([10, 10, 50, 50, 0.4, 0])
    for size in (0, -32):
        with pytest.raises(ConfigError, match=f"--img-size must be a positive multiple of the model's stride 32, "
                                              f"got {size}"):
            check_inference_args(0.25, 0.45, 300, size, 32)
    with pytest.raises(ConfigError, match=r"--iou-thres must be in \(0, 1\], got 0.0"):
        check_inference_args(0.25, 0.0, 300, 64, 32)
    check_inference_args(0.25, 1e-9, 300, 32, 32)
