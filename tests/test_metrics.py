"""Detection metrics: pycocotools as the oracle, plus hand-computed AP, matching and confusion-matrix cases."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from yolov3.metrics import (
    DetectionEvaluator,
    average_precision,
    ground_truth_to_coco,
    greedy_match,
    to_coco_json,
)



# --------------------------------------------------------------------------------------------------------------------
# Oracle: random detections and truths through both implementations
# --------------------------------------------------------------------------------------------------------------------
def random_dataset(seed: int, num_images: int, num_classes: int, round_scores: bool = False):
    """Per image: (n, 6) detections, (m, 5) truths, (h, w).

    Covers misses (truths with no detection), duplicates (up to 3 detections on a truth), wrong-class detections,
    false positives, a class (the last) with detections but never a truth, images without truths, and a few images
    with >100 detections of one class (COCO keeps the best 100 per image and class). True positives score higher
    on average so APs land mid-range rather than near zero.
    """
    rng = np.random.default_rng(seed)
    preds, truths, sizes = [], [], []
    for _ in range(num_images):
        height, width = (int(v) for v in rng.integers(200, 640, 2))
        num_truths = int(rng.integers(0, 9)) if rng.random() > 0.15 else 0
        truth_classes = rng.integers(0, num_classes - 1, num_truths)  # the last class never has a truth
        corners = rng.random((num_truths, 2)) * [width * 0.8, height * 0.8]
        sizes_wh = rng.random((num_truths, 2)) * [width * 0.3, height * 0.3] + 4
        image_truths = np.concatenate((truth_classes[:, None], corners, corners + sizes_wh), 1)
        dets = []
        for truth in image_truths:
            for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
                w, h = truth[3] - truth[1], truth[4] - truth[2]
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = truth[0] if rng.random() > 0.1 else rng.integers(0, num_classes)
                dets.append([*(truth[1:] + jitter), rng.uniform(0.2, 1.0), cls])
        num_fp = int(rng.integers(0, 6)) if rng.random() > 0.08 else int(rng.integers(100, 160))
        many_one_class = num_fp > 50
        fp_corners = rng.random((num_fp, 2)) * [width * 0.8, height * 0.8]
        fp_sizes = rng.random((num_fp, 2)) * [width * 0.3, height * 0.3] + 4
        for corner, size in zip(fp_corners, fp_sizes):
            cls = 0 if many_one_class else rng.integers(0, num_classes)
            dets.append([*corner, *(corner + size), rng.uniform(0.0, 0.8), cls])
        image_preds = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
        # jitter may swap corners: order them
        x = np.sort(image_preds[:, [0, 2]], 1); y = np.sort(image_preds[:, [1, 3]], 1)
        image_preds[:, [0, 2]], image_preds[:, [1, 3]] = x, y
        if round_scores:  # many exact ties: exercises tie-breaking by image id, then by position in the image
            image_preds[:, 4] = np.round(image_preds[:, 4], 2)
        preds.append(image_preds)
        truths.append(image_truths)
        sizes.append((height, width))
    return preds, truths, sizes


def pycocotools_eval(tmp_path, preds, truths, sizes, image_ids, names):
    """COCOeval (iouType bbox) run on the same detections and truths; skips the calling test without pycocotools
    (the only tests here that need it)."""
    COCO = pytest.importorskip("pycocotools.coco").COCO
    COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    to_coco_json(preds, truths, image_ids, sizes, names, tmp_path / "pred.json", tmp_path / "gt.json")
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress
        gt = COCO(str(tmp_path / "gt.json"))
        dt = gt.loadRes(str(tmp_path / "pred.json"))
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.mark.parametrize(
    "seed, num_images, num_classes, round_scores, shuffle",
    [(0, 120, 4, False, False), (1, 60, 3, False, True), (2, 200, 5, True, True), (3, 80, 4, True, False)],
)
def test_map_matches_pycocotools(tmp_path, seed, num_images, num_classes, round_scores, shuffle):
    preds, truths, sizes = random_dataset(seed, num_images, num_classes, round_scores)
    names = [f"class{k}" for k in range(num_classes)]
    image_ids = list(range(1, num_images + 1))
    evaluator = DetectionEvaluator(num_classes)
    order = np.random.default_rng(seed).permutation(num_images) if shuffle else range(num_images)
    for i in order:  # a shuffled update order must not matter (ties are broken by image id, as COCO does)
        evaluator.update(preds[i], truths[i], image_ids[i])
    result = evaluator.compute()
    coco_eval = pycocotools_eval(tmp_path, preds, truths, sizes, image_ids, names)
    assert sum(len(p) > 100 for p in preds) >= 1  # the maxDets=100 cut is exercised
    assert result["mAP50_95"] == pytest.approx(coco_eval.stats[0], abs=1e-3)
    assert result["mAP50"] == pytest.approx(coco_eval.stats[1], abs=1e-3)
    # stronger than required: per class and threshold, exactly the same AP
    coco_precision = coco_eval.eval["precision"][:, :, :, 0, 2]  # (T, R, K) area 'all', maxDets 100
    for k in range(num_classes):
        if (coco_precision[:, :, k] > -1).any():
            np.testing.assert_allclose(result["ap"][k], coco_precision[:, :, k].mean(1), atol=1e-12)
        else:  # no ground truth: -1 in COCOeval, NaN here, excluded from the mean
            assert np.isnan(result["ap"][k]).all()
    assert np.isnan(result["ap50"][num_classes - 1])
    assert result["mAP50_95"] == pytest.approx(np.nanmean(result["ap50_95"]), abs=1e-15)


# --------------------------------------------------------------------------------------------------------------------
# Hand-computed AP
# --------------------------------------------------------------------------------------------------------------------
# One class, 4 truths, 5 detections by decreasing score: TP, FP, TP, FP, TP.
#   cumulative TP 1 1 2 2 3, FP 0 1 1 2 2 -> precision 1, 1/2, 2/3, 1/2, 3/5; recall .25 .25 .5 .5 .75
#   envelope (max to the right): 1, 2/3, 2/3, 3/5, 3/5
# COCO 101-point: recall points 0..0.25 (26 points) -> 1; 0.26..0.50 (25) -> 2/3; 0.51..0.75 (25) -> 3/5;
#   0.76..1 (25) -> 0 (never reached).  AP = (26 + 25 * 2/3 + 25 * 3/5) / 101 = 57.6667 / 101 = 0.570957
# VOC 11-point: 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> 3/5; .8, .9, 1 -> 0.  AP = (3 + 2 + 1.2) / 11 = 0.563636
# VOC all-point: recall steps .25 at detections 1, 3, 5: .25 * 1 + .25 * 2/3 + .25 * 3/5 = 0.566667
HAND_AP = {
    "coco101": (26 + 25 * 2 / 3 + 25 * 3 / 5) / 101,
    "voc11": (3 + 3 * 2 / 3 + 2 * 3 / 5) / 11,
    "voc_all": 0.25 * (1 + 2 / 3 + 3 / 5),
}
HAND_PRECISION = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
HAND_RECALL = np.array([0.25, 0.25, 0.5, 0.5, 0.75])


@pytest.mark.parametrize("method", ["coco101", "voc11", "voc_all"])
def test_average_precision_of_a_known_pr_sequence(method):
    assert average_precision(HAND_RECALL, HAND_PRECISION, method) == pytest.approx(HAND_AP[method], abs=1e-12)


def hand_image():
    """The TP, FP, TP, FP, TP sequence as boxes: TPs sit exactly on truths (IoU 1), FPs far from everything."""
    truths = np.array([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [0, 40, 0, 50, 10], [0, 60, 0, 70, 10]], float)
    preds = np.array([
        [0, 0, 10, 10, 0.9, 0],  # TP truth 0
        [100, 100, 110, 110, 0.8, 0],  # FP
        [20, 0, 30, 10, 0.7, 0],  # TP truth 1
        [200, 200, 210, 210, 0.6, 0],  # FP
        [40, 0, 50, 10, 0.5, 0],  # TP truth 2 (truth 3 is missed)
    ], float)
    return preds, truths


@pytest.mark.parametrize("method", ["coco101", "voc11", "voc_all"])
def test_evaluator_reproduces_the_hand_computed_ap(method):
    preds, truths = hand_image()
    evaluator = DetectionEvaluator(1, method=method)
    evaluator.update(preds[::-1].copy(), truths)  # input order does not matter: sorted by score inside
    result = evaluator.compute()
    # IoU is 1 for every TP, so every threshold sees the same sequence
    assert result["mAP50"] == pytest.approx(HAND_AP[method], abs=1e-12)
    assert result["mAP50_95"] == pytest.approx(HAND_AP[method], abs=1e-12)
    # best F1: at any confidence <= .5 the curve ends at P = 3/5, R = 3/4, F1 = 2 * .45 / 1.35 = 2/3, the maximum
    # (earlier points: P 1 R .25 -> .4; P 2/3 R .5 -> .571; P .5 R .5 -> .5)
    assert result["precision"] == pytest.approx(0.6)
    assert result["recall"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx(2 / 3)


def test_perfect_detector_scores_one_everywhere():
    rng = np.random.default_rng(0)
    evaluator = DetectionEvaluator(3)
    for image_id in range(20):
        m = int(rng.integers(1, 6))
        xy = rng.uniform(0, 300, (m, 2))
        truths = np.concatenate((rng.integers(0, 3, (m, 1)), xy, xy + rng.uniform(5, 80, (m, 2))), 1)
        preds = np.concatenate((truths[:, 1:], rng.uniform(0.3, 1.0, (m, 1)), truths[:, :1]), 1)
        evaluator.update(preds, truths, image_id)
    result = evaluator.compute()
    assert result["mAP50"] == pytest.approx(1.0, abs=1e-12) and result["mAP50_95"] == pytest.approx(1.0, abs=1e-12)
    assert result["precision"] == pytest.approx(1.0) and result["recall"] == pytest.approx(1.0)
    np.testing.assert_allclose(result["pr_curve"][result["num_instances"] > 0], 1.0)


def test_max_dets_keeps_the_best_100_per_image_and_class():
    # 149 false positives outscore the only true positive of class 0; a class-1 detection is unaffected by them.
    truths = np.array([[0, 0, 0, 10, 10], [1, 50, 50, 60, 60]], float)
    fps = np.array([[100 + i, 100, 110 + i, 110, 0.9 - i * 1e-3, 0] for i in range(149)], float)
    tp = np.array([[0, 0, 10, 10, 0.01, 0], [50, 50, 60, 60, 0.005, 1]], float)
    preds = np.concatenate((fps, tp))
    capped = DetectionEvaluator(2)
    capped.update(preds, truths)
    # class 0: the TP is rank 150 > 100 -> dropped -> AP 0; class 1: AP 1; mean 0.5
    # (1.0 up to the np.spacing(1) pycocotools adds to precision denominators)
    np.testing.assert_allclose(capped.compute()["ap50"], [0.0, 1.0], atol=1e-12)
    uncapped = DetectionEvaluator(2, max_dets=None)
    uncapped.update(preds, truths)
    # class 0 without the cap: recall reaches 1 at precision 1/150 -> envelope 1/150 at all 101 points
    assert uncapped.compute()["ap50"][0] == pytest.approx(1 / 150, abs=1e-12)


def test_classes_without_truth_are_left_out_of_the_mean():
    preds, truths = hand_image()
    base = DetectionEvaluator(3)
    base.update(preds, truths)
    extra = DetectionEvaluator(3)
    class_2_only = np.array([[0, 0, 10, 10, 0.95, 2], [5, 5, 9, 9, 0.3, 2]], float)  # class 2 has no truth
    extra.update(np.concatenate((preds, class_2_only)), truths)
    result = extra.compute()
    assert result["mAP50_95"] == pytest.approx(base.compute()["mAP50_95"])
    assert np.isnan(result["ap50"][1:]).all() and np.isnan(result["precision_per_class"][2])


# --------------------------------------------------------------------------------------------------------------------
# Matching rule
# --------------------------------------------------------------------------------------------------------------------
def test_greedy_match_takes_best_free_truth_per_threshold():
    # det0 (best score) vs truths A, B: .6, .7; det1: .8, .75.
    # t=.50: det0 -> B (.7 best), det1 -> A (.8)       -> [T, T]
    # t=.65: det0 -> B (.7), det1 -> A (.8)            -> [T, T]
    # t=.75: det0: .6 and .7 < .75 -> none; det1 -> A  -> [F, T]
    # t=.80: det0 none; det1 -> A (.8 >= .8)           -> [F, T]
    iou = np.array([[0.6, 0.7], [0.8, 0.75]])
    matched = greedy_match(iou, np.array([0.5, 0.65, 0.75, 0.8]))
    assert matched.tolist() == [[True, True], [True, True], [False, True], [False, True]]
    # If det0 had taken A (not the best IoU), det1 could still take B at .5; but at .85 nothing matches.
    assert not greedy_match(iou, np.array([0.85])).any()


def test_greedy_match_ties_go_to_the_later_truth_like_pycocotools():
    # det0 sees IoU .7 with both truths -> pycocotools keeps the later one (accepts ">= best so far"), so det1,
    # whose only overlap is truth 0, still matches. Had det0 taken truth 0, det1 would be a false positive.
    iou = np.array([[0.7, 0.7], [0.7, 0.0]])
    assert greedy_match(iou, np.array([0.5])).tolist() == [[True, True]]


def test_greedy_match_duplicates_and_threshold_equality():
    # three detections on one truth: only the first matches; IoU exactly at the threshold counts (>=)
    iou = np.array([[0.5], [0.9], [0.95]])
    assert greedy_match(iou, np.array([0.5, 0.9])).tolist() == [[True, False, False], [False, True, False]]
    # negative IoU marks pairs of different classes: never matched
    assert not greedy_match(np.array([[-1.0]]), np.array([0.5])).any()


# --------------------------------------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------------------------------------
def test_confusion_matrix_hand_counts():
    truths = np.array([[0, 0, 0, 10, 10], [1, 20, 0, 30, 10], [2, 40, 0, 50, 10]], float)
    preds = np.array([
        [0, 0, 10, 10, 0.9, 0],  # right class on truth 0          -> [pred 0, true 0]
        [20, 0, 30, 10, 0.8, 0],  # wrong class on truth 1 (class 1) -> [pred 0, true 1]
        [40, 0, 50, 10, 0.1, 2],  # below conf .25: ignored         -> truth 2 missed: [background, true 2]
        [100, 100, 110, 110, 0.7, 1],  # nothing there              -> [pred 1, background]
        [0, 0, 10, 9, 0.6, 0],  # duplicate on truth 0 (taken)       -> [pred 0, background]
    ], float)
    evaluator = DetectionEvaluator(3)
    evaluator.update(preds, truths)
    expected = np.zeros((4, 4), dtype=np.int64)  # rows predicted, columns true, index 3 = background
    expected[0, 0] = expected[0, 1] = expected[3, 2] = expected[1, 3] = expected[0, 3] = 1
    np.testing.assert_array_equal(evaluator.compute()["confusion_matrix"], expected)


@pytest.mark.parametrize("height, paired", [(4.7, True), (4.4, False)])
def test_confusion_matrix_iou_between_the_pairing_and_the_match_thresholds(height, paired):
    # a right-class detection [0, 0, 10, h] on the truth [0, 0, 10, 10] has IoU h / 10. At .47 it pairs with the
    # truth in the confusion matrix (IoU > confusion_iou = .45) although it is a false positive for AP (IoU < .5);
    # at .44 it pairs with nothing: a false positive (background column) and a missed truth (background row)
    evaluator = DetectionEvaluator(2)
    evaluator.update(np.array([[0, 0, 10, height, 0.9, 1]]), np.array([[1, 0, 0, 10, 10]], float))
    result = evaluator.compute()
    expected = np.zeros((3, 3), dtype=np.int64)
    if paired:
        expected[1, 1] = 1
    else:
        expected[1, 2] = expected[2, 1] = 1
    np.testing.assert_array_equal(result["confusion_matrix"], expected)
    assert result["ap50"][1] == 0.0 and result["mAP50"] == 0.0


def test_a_detection_exactly_at_the_match_threshold_is_a_true_positive():
    # one detection [0, 0, 10, 5] on one truth [0, 0, 10, 10]: IoU 50 / 100 = .5 exactly, matched at .50 (>=) and at
    # no higher threshold -> AP 1 at .50 and 0 at .55 ... .95: mAP50 = 1, mAP50_95 = 1/10
    evaluator = DetectionEvaluator(1)
    evaluator.update(np.array([[0, 0, 10, 5, 0.8, 0]], float), np.array([[0, 0, 0, 10, 10]], float))
    result = evaluator.compute()
    np.testing.assert_allclose(result["ap"][0], [1.0] + [0.0] * 9, atol=1e-12)
    assert result["mAP50"] == pytest.approx(1.0, abs=1e-12) and result["mAP50_95"] == pytest.approx(0.1, abs=1e-12)
    assert greedy_match(np.array([[0.5]]), np.array([0.5, 0.55])).tolist() == [[True], [False]]


# --------------------------------------------------------------------------------------------------------------------
# COCO JSON and errors
# --------------------------------------------------------------------------------------------------------------------
def test_coco_json_layout(tmp_path):
    preds = [np.array([[1.0, 2.0, 11.0, 22.0, 0.5, 1]]), np.zeros((0, 6))]
    truths = [np.array([[1, 1.0, 2.0, 11.0, 22.0], [0, 0, 0, 4, 5]]), np.zeros((0, 5))]
    to_coco_json(preds, truths, [7, 9], [(100, 200), (50, 60)], ["cat", "dog"], tmp_path / "p.json",
                 tmp_path / "g.json", file_names=["a.jpg", "b.jpg"])
    results = json.loads((tmp_path / "p.json").read_text())
    assert results == [{"image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]
    dataset = json.loads((tmp_path / "g.json").read_text())
    assert dataset["images"] == [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 100},
                                 {"id": 9, "file_name": "b.jpg", "width": 60, "height": 50}]
    assert dataset["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    first, second = dataset["annotations"]
    assert (first["id"], first["category_id"], first["bbox"], first["area"]) == (1, 2, [1.0, 2.0, 10.0, 20.0], 200.0)
    assert (second["id"], second["category_id"], second["area"], second["iscrowd"]) == (2, 1, 20.0, 0)
    custom = ground_truth_to_coco(truths, [7, 9], [(100, 200), (50, 60)], ["cat", "dog"], category_ids=[17, 18])
    assert [a["category_id"] for a in custom["annotations"]] == [18, 17]


def test_bad_inputs_raise_clear_errors():
    evaluator = DetectionEvaluator(2)
    with pytest.raises(ValueError, match=r"class id 2.0 is not an integer in \[0, 2\)"):
        evaluator.update(np.array([[0, 0, 1, 1, 0.5, 2]]), np.zeros((0, 5)))
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        evaluator.update(np.zeros((0, 6)), np.zeros((3, 4)))
    evaluator.update(np.zeros((0, 6)), np.zeros((0, 5)), image_id=5)
    with pytest.raises(ValueError, match="image_id 5 was already added"):
        evaluator.update(np.zeros((0, 6)), np.zeros((0, 5)), image_id=5)
    with pytest.raises(ValueError, match="unknown AP method 'voc12'"):
        DetectionEvaluator(2, method="voc12")
    # nothing with ground truth: metrics are NaN, not a made-up 0
    assert np.isnan(evaluator.compute()["mAP50"])


# ---- planted-bug checks: the confusion matrix's pairing, classes without detections or without truths -----------------
def test_confusion_pairs_the_highest_iou_first_and_headline_precision_counts_missed_classes():
    pairing = DetectionEvaluator(2)
    # one class-0 detection on a class-0 truth (IoU 1) and a class-1 truth (IoU 50 / 100 = .5 > .45)
    pairing.update([[0, 0, 10, 10, 0.9, 0]], [[0, 0, 0, 10, 10], [1, 0, 0, 10, 5]])
    assert pairing.compute()["confusion_matrix"].tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    missed = DetectionEvaluator(2)  # class 1 has a truth and no detection: precision 0 for it, not 1
    missed.update([[0, 0, 10, 10, 0.9, 0]], [[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]])
    result = missed.compute()
    assert result["precision"] == pytest.approx(0.5) and result["recall"] == pytest.approx(0.5)


def test_a_class_without_truths_does_not_move_the_best_f1_confidence():
    preds, truths = hand_image()
    extra = np.array([[300, 300, 310, 310, 0.1, 0], [0, 0, 5, 5, 0.95, 1]], float)  # an FP; a class with no truth
    evaluator = DetectionEvaluator(2)
    evaluator.update(np.concatenate([preds, extra]), truths)
    result = evaluator.compute()
    # best F1 at the grid's 499/999: P between .6 (score .5) and .5 (score .1): .6 - (.0005 / .4) x .1; R .75
    assert result["best_conf"] == pytest.approx(499 / 999) and result["precision"] == pytest.approx(0.599875, abs=1e-4)
    assert result["recall"] == pytest.approx(0.75)


def test_confusion_thresholds_are_strict_and_the_pr_curve_is_the_iou_05_envelope():
    at_iou = DetectionEvaluator(2)
    at_iou.update([[0, 0, 10, 4.5, 0.9, 1]], [[1, 0, 0, 10, 10]])  # IoU 45 / 100 = .45 exactly: not paired
    matrix = at_iou.compute()["confusion_matrix"]
    assert matrix[1, 2] == 1 and matrix[2, 1] == 1 and matrix.sum() == 2
    at_conf = DetectionEvaluator(1)
    at_conf.update([[0, 0, 10, 10, 0.25, 0]], [[0, 0, 0, 10, 10]])  # a score of exactly .25 is not counted
    assert at_conf.compute()["confusion_matrix"].tolist() == [[0, 0], [1, 0]]
    preds, truths = hand_image()
    evaluator = DetectionEvaluator(1)
    evaluator.update(preds, truths)
    result = evaluator.compute()
    assert np.allclose(result["precision_curve"][0, 900:], 1.0)  # above the top score (.9) precision is 1
    # recall .25 (envelope 1), .5 (2/3), .75 (3/5) and nothing beyond: 26, 25, 25 points, then 25 zeros
    curve = result["pr_curve"][0]
    assert np.allclose(curve[:26], 1) and np.allclose(curve[26:51], 2 / 3) and np.allclose(curve[51:76], 0.6)
    assert (curve[76:] == 0).all() and curve.mean() == pytest.approx(result["ap50"][0])
    half = DetectionEvaluator(1)
    half.update([[0, 0, 10, 5, 0.8, 0]], [[0, 0, 0, 10, 10]])  # IoU .5: a hit at .5, a miss at .95
    assert half.compute()["pr_curve"][0] == pytest.approx(np.ones(101))
