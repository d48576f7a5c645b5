"""Detection metrics that agree with the COCO reference (pycocotools' COCOeval, iouType 'bbox', area 'all').

What is reproduced, and why it matters for agreement:
  * Per image and category, detections are sorted by score (stable, so ties keep input order) and only the best
    ``max_dets`` (COCO: 100) are kept.
  * Greedy matching in that order: each detection takes the not-yet-matched ground truth of its class with the
    highest IoU, provided IoU >= the threshold (pycocotools compares with ``>=``; IoU without the +1-pixel
    convention); equal IoUs go to the later truth, as in pycocotools' loop. Ten thresholds .50:.05:.95.
  * Per class, all detections are sorted by score (stable over images in id order), cumulative TP/FP give the PR
    curve, the precision envelope is taken, and AP is its mean at 101 recall points found with
    ``searchsorted(..., 'left')``. Classes without any ground truth get NaN and are left out of the mean (COCOeval
    marks them -1). Truths are never 'ignore'/'crowd' here, and area 'all' excludes nothing.

Options: ``method='voc11'`` (VOC2007 11-point) and ``method='voc_all'`` (VOC2010+ area under the envelope) change
only how AP is read from the same PR curve.

Also: precision/recall at the confidence of best mean F1 (per-class curves on a common confidence grid), a
confusion matrix with a background row/column, and converters to COCO JSON (results and dataset) for checks
against pycocotools.

COCO ids in the JSON helpers: class index ``k`` becomes category id ``k + 1`` (1-based, as COCO files number their
categories) unless an explicit ``category_ids`` list maps it (e.g. to the official 80-of-91 COCO ids); annotation
ids start at 1 because COCOeval stores the matched truth id and reads 0 as "unmatched".
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Hashable, Optional, Sequence, Union

import numpy as np
import torch

from yolov3.boxes import box_iou
from yolov3.files import atomic_write_text

# Same expressions as pycocotools' Params.setDetParams, so thresholds compare bit-for-bit identically.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
VOC11_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 11)
AP_METHODS = ("coco101", "voc11", "voc_all")
# Confidence grid on which per-class precision/recall curves are resampled to find the best mean F1.
CONF_GRID = np.linspace(0.0, 1.0, 1000)

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def _as_float64(array: ArrayLike, columns: int, what: str) -> np.ndarray:
    """Any (n, columns) array-like -> float64 numpy; empty inputs of any shape become (0, columns)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, columns), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != columns:
        raise ValueError(f"{what}: expected an array of shape (n, {columns}), got {array.shape}")
    return array


def _pairwise_iou(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """(n, 4), (m, 4) float64 xyxy -> (n, m) IoU in float64 (through boxes.box_iou)."""
    return box_iou(torch.from_numpy(boxes1_xyxy), torch.from_numpy(boxes2_xyxy), eps=0.0).nan_to_num_(0.0).numpy()


def greedy_match(iou: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
    """COCO greedy matching of score-sorted detections to truths, for all thresholds at once.

    Each detection, best score first, takes the not-yet-taken truth with the highest IoU among those with
    IoU >= threshold (equal IoUs: the later truth, as pycocotools' ">= best so far" scan does).

    Args:
        iou: ``(n, m)`` IoU of detections (rows, best score first) with truths; pairs that may not match (different
            classes) must hold a negative value.
        iou_thresholds: ``(T,)``.

    Returns:
        ``(T, n)`` bool: detection matched (a true positive) at each threshold.
    """
    num_dets, num_truths = iou.shape
    matched = np.zeros((len(iou_thresholds), num_dets), dtype=bool)
    if num_dets == 0 or num_truths == 0:
        return matched
    # pycocotools caps the threshold just below 1 so IoU == 1 can always match
    thresholds = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)  # (T,)
    candidate = iou >= thresholds.min()  # (n, m): pairs that can match at some threshold
    contested = candidate.sum(0) > 1  # (m,): truths wanted by more than one detection
    needs_order = (candidate & contested[None, :]).any(1)  # (n,)
    # A detection whose candidate truths nobody else wants matches iff its best IoU reaches the threshold.
    free = ~needs_order
    matched[:, free] = iou[free].max(1)[None, :] >= thresholds[:, None]
    if not needs_order.any():
        return matched
    # The rest need the sequential greedy pass. Their candidate lists are short (a few truths), so plain Python
    # over lists beats numpy calls on tiny arrays by an order of magnitude.
    rows = np.flatnonzero(needs_order)
    det_index, truth_index = np.nonzero(candidate[rows])
    values = iou[rows[det_index], truth_index]
    # per detection (in score order): candidates by IoU descending, equal IoUs -> later truth first
    order = np.lexsort((-truth_index, -values, det_index))
    det_list = rows[det_index[order]].tolist()
    truth_list = truth_index[order].tolist()
    value_list = values[order].tolist()
    groups: list[tuple[int, list[tuple[int, float]]]] = []
    for det, truth, value in zip(det_list, truth_list, value_list):
        if not groups or groups[-1][0] != det:
            groups.append((det, []))
        groups[-1][1].append((truth, value))
    for t, threshold in enumerate(thresholds.tolist()):
        taken = [False] * num_truths
        matched_t = matched[t]
        for det, candidates in groups:
            for truth, value in candidates:
                if value < threshold:
                    break  # sorted by IoU: no later candidate reaches the threshold either
                if not taken[truth]:
                    taken[truth] = True
                    matched_t[det] = True
                    break
    return matched


def precision_envelope(precision: np.ndarray) -> np.ndarray:
    """Make precision non-increasing in recall: p[i] <- max(p[i:]) along the last axis."""
    return np.flip(np.maximum.accumulate(np.flip(precision, -1), axis=-1), -1)


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "coco101") -> float:
    """AP of one PR curve (detections in decreasing score order).

    Args:
        recall: ``(d,)`` cumulative recall after each detection (non-decreasing).
        precision: ``(d,)`` cumulative precision after each detection.
        method: ``coco101`` (mean of the envelope at recall 0, .01, ..., 1; a recall point beyond the curve counts
            0), ``voc11`` (the same at 0, .1, ..., 1: VOC2007), ``voc_all`` (area under the envelope where recall
            changes: VOC2010+).

    Returns:
        AP in [0, 1] (0 for an empty curve).
    """
    if method not in AP_METHODS:
        raise ValueError(f"unknown AP method {method!r}; choose from {', '.join(AP_METHODS)}")
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return 0.0
    envelope = precision_envelope(precision)
    if method == "voc_all":
        recall_steps = np.diff(recall, prepend=0.0)  # (d,): recall gained at each detection
        return float((recall_steps * envelope).sum())
    points = COCO_RECALL_THRESHOLDS if method == "coco101" else VOC11_RECALL_THRESHOLDS
    # first detection whose recall reaches the point; the envelope there is the max precision at recall >= point
    index = np.searchsorted(recall, points, side="left")
    sampled = np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)
    return float(sampled.mean())


class DetectionEvaluator:
    """Accumulates detections and truths image by image; :meth:`compute` returns COCO-style metrics.

    Usage::

        evaluator = DetectionEvaluator(num_classes=3)
        for preds, truths, image_id in ...:
            evaluator.update(preds, truths, image_id)   # preds (n, 6) [x1,y1,x2,y2,score,cls]; truths (m, 5) [cls,x1,y1,x2,y2]
        metrics = evaluator.compute()

    Per image, :meth:`update` does the matching for all IoU thresholds at once and keeps only scores, classes and
    the ``(T, n)`` true-positive flags, so memory stays small and :meth:`compute` is a few sorts per class.
    """

    def __init__(
        self,
        num_classes: int,
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
        max_dets: Optional[int] = 100,
        method: str = "coco101",
        confusion_conf: float = 0.25,
        confusion_iou: float = 0.45,
    ) -> None:
        """
        Args:
            num_classes: C; class ids must lie in [0, C).
            iou_thresholds: matching thresholds; the first one is the "mAP50" threshold (.5 by default).
            max_dets: detections kept per image *and class* (COCO's maxDets=100); None keeps all.
            method: AP integration, one of ``coco101``, ``voc11``, ``voc_all``.
            confusion_conf: detections with a score above this enter the confusion matrix.
            confusion_iou: a detection and a truth pair up in the confusion matrix when IoU exceeds this.
        """
        if num_classes < 1:
            raise ValueError(f"DetectionEvaluator: num_classes must be >= 1, got {num_classes}")
        if method not in AP_METHODS:
            raise ValueError(f"unknown AP method {method!r}; choose from {', '.join(AP_METHODS)}")
        self.num_classes = num_classes
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
        self.max_dets = max_dets
        self.method = method
        self.confusion_conf = confusion_conf
        self.confusion_iou = confusion_iou
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._scores: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._true_positives: list[np.ndarray] = []  # each (T, n)
        self._image_ids: list[Hashable] = []
        self._seen_ids: set = set()
        self.num_instances = np.zeros(self.num_classes, dtype=np.int64)  # truths per class
        self.num_images_with_class = np.zeros(self.num_classes, dtype=np.int64)
        # rows: predicted class, columns: true class; index C is background (row C: missed truths, column C: false
        # positives)
        self.confusion_matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)

    @property
    def num_images(self) -> int:
        return len(self._image_ids)

    def _check_classes(self, classes: np.ndarray, what: str) -> np.ndarray:
        """float class column -> int64, with a clear error for ids that are not integers in [0, C)."""
        as_int = classes.astype(np.int64)
        bad = (as_int != classes) | (as_int < 0) | (as_int >= self.num_classes)
        if bad.any():
            raise ValueError(f"{what}: class id {classes[bad][0]} is not an integer in [0, {self.num_classes})")
        return as_int

    def update(self, preds_xyxy_score_cls: ArrayLike, truths_cls_xyxy: ArrayLike, image_id: Optional[Hashable] = None) -> None:
        """Add one image.

        Args:
            preds_xyxy_score_cls: ``(n, 6)`` detections ``[x1, y1, x2, y2, score, class]`` (any order).
            truths_cls_xyxy: ``(m, 5)`` ground truths ``[class, x1, y1, x2, y2]`` in the same pixel frame.
            image_id: a unique id (ints are ordered like COCO image ids for score tie-breaking); default: the
                number of images seen so far.
        """
        if image_id is None:
            image_id = len(self._image_ids)
        if image_id in self._seen_ids:
            raise ValueError(f"DetectionEvaluator.update: image_id {image_id!r} was already added")
        preds = _as_float64(preds_xyxy_score_cls, 6, "DetectionEvaluator.update preds (x1, y1, x2, y2, score, class)")
        truths = _as_float64(truths_cls_xyxy, 5, "DetectionEvaluator.update truths (class, x1, y1, x2, y2)")
        pred_classes = self._check_classes(preds[:, 5], "DetectionEvaluator.update preds")
        truth_classes = self._check_classes(truths[:, 0], "DetectionEvaluator.update truths")

        # score order, stable like pycocotools' mergesort
        order = np.argsort(-preds[:, 4], kind="stable")
        preds, pred_classes = preds[order], pred_classes[order]
        iou = _pairwise_iou(preds[:, :4], truths[:, 1:])  # (n, m), computed once for matching and confusion
        self._update_confusion(preds[:, 4], pred_classes, truth_classes, iou)

        if self.max_dets is not None and len(preds) > self.max_dets:
            # rank of each detection within its class (already score-sorted) -> keep rank < max_dets
            by_class = np.argsort(pred_classes, kind="stable")  # (n,)
            sorted_classes = pred_classes[by_class]
            group_start = np.searchsorted(sorted_classes, sorted_classes, side="left")
            rank = np.empty(len(preds), dtype=np.int64)
            rank[by_class] = np.arange(len(preds)) - group_start
            keep = rank < self.max_dets
            preds, pred_classes, iou = preds[keep], pred_classes[keep], iou[keep]

        iou = np.where(pred_classes[:, None] == truth_classes[None, :], iou, -1.0)  # only same-class pairs match
        self._true_positives.append(greedy_match(iou, self.iou_thresholds))
        self._scores.append(preds[:, 4])
        self._classes.append(pred_classes)
        self._image_ids.append(image_id)
        self._seen_ids.add(image_id)
        counts = np.bincount(truth_classes, minlength=self.num_classes)
        self.num_instances += counts
        self.num_images_with_class += counts > 0

    def _update_confusion(self, scores: np.ndarray, pred_classes: np.ndarray, truth_classes: np.ndarray,
                          iou: np.ndarray) -> None:
        """Class-agnostic pairing (IoU > confusion_iou, greedy by IoU), then count (predicted, true) pairs.

        ``iou``: ``(n, m)`` of all detections with all truths of the image.
        """
        background = self.num_classes
        confident = scores > self.confusion_conf
        pred_classes, iou = pred_classes[confident], iou[confident]
        det_used = np.zeros(len(pred_classes), dtype=bool)
        truth_used = np.zeros(len(truth_classes), dtype=bool)
        if iou.size:
            det_index, truth_index = np.nonzero(iou > self.confusion_iou)
            for pair in np.argsort(-iou[det_index, truth_index], kind="stable"):  # few pairs per image
                d, t = det_index[pair], truth_index[pair]
                if not det_used[d] and not truth_used[t]:
                    det_used[d] = truth_used[t] = True
                    self.confusion_matrix[pred_classes[d], truth_classes[t]] += 1
        np.add.at(self.confusion_matrix, (background, truth_classes[~truth_used]), 1)
        np.add.at(self.confusion_matrix, (pred_classes[~det_used], background), 1)

    def compute(self) -> dict[str, Any]:
        """Metrics over everything added.

        Returns a dict with (C classes, T thresholds):
          * ``mAP50``, ``mAP50_95``: means over classes that have ground truth of AP at the first threshold and of
            AP averaged over all thresholds (NaN when no class has ground truth).
          * ``precision``, ``recall``: class means at the confidence of best mean F1 (IoU = first threshold);
            ``best_conf``, ``f1``.
          * ``ap`` ``(C, T)``, ``ap50`` ``(C,)``, ``ap50_95`` ``(C,)``, ``precision_per_class``,
            ``recall_per_class`` ``(C,)``: NaN for classes without ground truth.
          * ``num_instances``, ``num_images_with_class`` ``(C,)``, ``num_images``, ``confusion_matrix``
            ``(C+1, C+1)`` (rows predicted, columns true, last = background).
          * curves for plots: ``recall_grid`` (101,), ``pr_curve`` ``(C, 101)`` (enveloped precision at IoU .5),
            ``conf_grid`` (1000,), ``precision_curve``, ``recall_curve``, ``f1_curve`` ``(C, 1000)``.
        """
        num_classes, num_thresholds = self.num_classes, len(self.iou_thresholds)
        if self._scores:
            scores = np.concatenate(self._scores)
            classes = np.concatenate(self._classes)
            true_positives = np.concatenate(self._true_positives, axis=1)  # (T, D)
            image_rank = self._image_rank()
            image_of_det = np.repeat(image_rank, [len(s) for s in self._scores])  # (D,)
            within_image = np.concatenate([np.arange(len(s)) for s in self._scores])
        else:
            scores = np.zeros(0)
            classes = image_of_det = within_image = np.zeros(0, dtype=np.int64)
            true_positives = np.zeros((num_thresholds, 0), dtype=bool)
        # by class, then score descending, ties by image order then position in the image (pycocotools' order)
        order = np.lexsort((within_image, image_of_det, -scores, classes))
        scores, classes, true_positives = scores[order], classes[order], true_positives[:, order]
        class_bounds = np.searchsorted(classes, np.arange(num_classes + 1), side="left")

        nan_row = np.full(num_classes, np.nan)
        ap = np.full((num_classes, num_thresholds), np.nan)
        pr_curve = np.full((num_classes, len(COCO_RECALL_THRESHOLDS)), np.nan)
        precision_curve = np.full((num_classes, len(CONF_GRID)), np.nan)
        recall_curve = np.full((num_classes, len(CONF_GRID)), np.nan)
        for c in np.flatnonzero(self.num_instances > 0):
            lo, hi = class_bounds[c], class_bounds[c + 1]
            tp_cum = np.cumsum(true_positives[:, lo:hi], axis=1, dtype=np.float64)  # (T, d)
            fp_cum = np.arange(1, hi - lo + 1, dtype=np.float64)[None, :] - tp_cum  # (T, d)
            recall = tp_cum / self.num_instances[c]
            # np.spacing(1) as pycocotools, so an all-FP prefix gives 0 rather than 0/0
            precision = tp_cum / (tp_cum + fp_cum + np.spacing(1))
            for t in range(num_thresholds):
                ap[c, t] = average_precision(recall[t], precision[t], self.method)
            if hi > lo:
                envelope = precision_envelope(precision[0])
                index = np.searchsorted(recall[0], COCO_RECALL_THRESHOLDS, side="left")
                pr_curve[c] = np.where(index < hi - lo, envelope[np.minimum(index, hi - lo - 1)], 0.0)
                # curves as functions of confidence (decreasing scores -> increasing -score for np.interp)
                recall_curve[c] = np.interp(-CONF_GRID, -scores[lo:hi], recall[0], left=0.0)
                precision_curve[c] = np.interp(-CONF_GRID, -scores[lo:hi], precision[0], left=1.0)
            else:
                pr_curve[c] = 0.0
                recall_curve[c] = 0.0
                precision_curve[c] = 0.0
        f1_curve = 2 * precision_curve * recall_curve / (precision_curve + recall_curve + 1e-16)
        has_truth = self.num_instances > 0
        if has_truth.any():
            mean_f1 = f1_curve[has_truth].mean(0)  # (K,)
            best = int(np.argmax(mean_f1))
            precision_per_class, recall_per_class = precision_curve[:, best], recall_curve[:, best]
            result_precision = float(precision_per_class[has_truth].mean())
            result_recall = float(recall_per_class[has_truth].mean())
            best_conf, best_f1 = float(CONF_GRID[best]), float(mean_f1[best])
            ap50, ap50_95 = ap[:, 0], ap.mean(1)
            map50, map50_95 = float(np.nanmean(ap50)), float(np.nanmean(ap50_95))
        else:
            precision_per_class = recall_per_class = ap50 = ap50_95 = nan_row
            result_precision = result_recall = best_conf = best_f1 = map50 = map50_95 = float("nan")
        return {
            "precision": result_precision,
            "recall": result_recall,
            "mAP50": map50,
            "mAP50_95": map50_95,
            "best_conf": best_conf,
            "f1": best_f1,
            "ap": ap,
            "ap50": ap50,
            "ap50_95": ap50_95,
            "precision_per_class": precision_per_class,
            "recall_per_class": recall_per_class,
            "num_instances": self.num_instances.copy(),
            "num_images_with_class": self.num_images_with_class.copy(),
            "num_images": self.num_images,
            "confusion_matrix": self.confusion_matrix.copy(),
            "recall_grid": COCO_RECALL_THRESHOLDS.copy(),
            "pr_curve": pr_curve,
            "conf_grid": CONF_GRID.copy(),
            "precision_curve": precision_curve,
            "recall_curve": recall_curve,
            "f1_curve": f1_curve,
        }

    def _image_rank(self) -> np.ndarray:
        """(num_images,) order key of each added image: its rank by id when all ids are ints (COCO sorts image
        ids), else the order of :meth:`update` calls."""
        ids = self._image_ids
        if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            return np.argsort(np.argsort(np.asarray(ids, dtype=np.int64), kind="stable"), kind="stable")
        return np.arange(len(ids))


# --------------------------------------------------------------------------------------------------------------------
# COCO JSON (for pycocotools)
# --------------------------------------------------------------------------------------------------------------------
def _category_id(class_index: int, category_ids: Optional[Sequence[int]]) -> int:
    return int(category_ids[class_index]) if category_ids is not None else int(class_index) + 1


def detections_to_coco(preds_xyxy_score_cls: ArrayLike, image_id: int,
                       category_ids: Optional[Sequence[int]] = None) -> list[dict]:
    """One image's ``(n, 6)`` detections ``[x1, y1, x2, y2, score, class]`` -> COCO results entries
    ``{image_id, category_id, bbox: [x, y, w, h], score}`` (pixels; category id = class + 1 unless mapped)."""
    preds = _as_float64(preds_xyxy_score_cls, 6, "detections_to_coco")
    return [
        {
            "image_id": int(image_id),
            "category_id": _category_id(int(cls), category_ids),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for x1, y1, x2, y2, score, cls in preds.tolist()
    ]


def ground_truth_to_coco(
    truths_per_image: Sequence[ArrayLike],
    image_ids: Sequence[int],
    image_sizes: Sequence[Sequence[int]],
    names: Sequence[str],
    file_names: Optional[Sequence[str]] = None,
    category_ids: Optional[Sequence[int]] = None,
) -> dict:
    """Ground truth as a COCO dataset dict.

    Args:
        truths_per_image: per image ``(m, 5)`` ``[class, x1, y1, x2, y2]`` in pixels.
        image_ids: COCO image ids (ints), one per image.
        image_sizes: ``(height, width)`` per image.
        names: class names (categories in class order).
        file_names: per image; default ``"<id>.jpg"``.
        category_ids: optional explicit id per class (default class + 1).

    Returns:
        ``{"images", "annotations", "categories"}``; annotation ids start at 1 (COCOeval stores matched truth ids
        and reads 0 as "unmatched"), ``area = w * h``, ``iscrowd = 0``.
    """
    if not (len(truths_per_image) == len(image_ids) == len(image_sizes)):
        raise ValueError(
            f"ground_truth_to_coco: {len(truths_per_image)} truth arrays, {len(image_ids)} ids and "
            f"{len(image_sizes)} sizes; expected one of each per image"
        )
    images, annotations = [], []
    for index, (truths, image_id, (height, width)) in enumerate(zip(truths_per_image, image_ids, image_sizes)):
        file_name = file_names[index] if file_names is not None else f"{image_id}.jpg"
        images.append({"id": int(image_id), "file_name": str(file_name), "width": int(width), "height": int(height)})
        for cls, x1, y1, x2, y2 in _as_float64(truths, 5, "ground_truth_to_coco").tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": int(image_id),
                "category_id": _category_id(int(cls), category_ids),
                "bbox": [x1, y1, w, h],
                "area": w * h,
                "iscrowd": 0,
            })
    categories = [{"id": _category_id(k, category_ids), "name": str(name)} for k, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def to_coco_json(
    preds_per_image: Sequence[ArrayLike],
    truths_per_image: Sequence[ArrayLike],
    image_ids: Sequence[int],
    image_sizes: Sequence[Sequence[int]],
    names: Sequence[str],
    pred_json: Union[str, Path],
    gt_json: Union[str, Path],
    file_names: Optional[Sequence[str]] = None,
    category_ids: Optional[Sequence[int]] = None,
) -> None:
    """Write detections (COCO results list) and ground truth (COCO dataset) for the same images to two files."""
    results = [d for preds, image_id in zip(preds_per_image, image_ids)
               for d in detections_to_coco(preds, image_id, category_ids)]
    dataset = ground_truth_to_coco(truths_per_image, image_ids, image_sizes, names, file_names, category_ids)
    for path, obj in ((pred_json, results), (gt_json, dataset)):
        atomic_write_text(path, json.dumps(obj))
