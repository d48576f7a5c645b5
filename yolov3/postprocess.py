"""Post-processing of decoded model outputs: confidence filtering, greedy NMS, letterbox inversion.

The model in eval mode returns ``(B, N, 5 + C)`` rows ``cx, cy, w, h, objectness, class probs...`` with boxes in
network-input pixels (see CONTRACTS.md). :func:`non_max_suppression` turns that into one ``(n, 6)`` tensor per image,
rows ``[x1, y1, x2, y2, score, class]`` with ``score = objectness * class probability`` (YOLOv3 paper, sec. 2.2:
class-specific confidence). :func:`scale_boxes` maps boxes back to the original image.

No torchvision: :func:`nms` is a greedy suppression over a precomputed boolean "overlaps too much" matrix, processed
in score-sorted blocks so memory stays bounded for tens of thousands of candidates, and stopping as soon as enough
boxes are kept. The objectness filter runs in torch on the model's device; the candidates that pass (a few to a few
thousand rows) are post-processed in NumPy, where a dozen small array operations cost microseconds instead of the
~10 us dispatch of each torch op (detect.py on a small model spent 0.9 ms per image in torch NMS, ~0.15 ms now).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from yolov3.boxes import clip_boxes_
from yolov3.config import ConfigError

# Candidates compared against each other at once inside nms(): a (block x block) bool matrix plus a float IoU
# matrix of the same size, i.e. ~5 MB at 1024, small enough to stay in cache-friendly territory on a CPU.
NMS_BLOCK_SIZE = 1024


def nms(
    boxes_xyxy: Tensor,
    scores: Tensor,
    iou_thres: float,
    classes: Optional[Tensor] = None,
    max_keep: Optional[int] = None,
) -> Tensor:
    """Greedy non-maximum suppression.

    Boxes are visited in decreasing score order (ties keep input order); a box is kept unless a previously *kept*
    box overlaps it with IoU strictly greater than ``iou_thres`` (the rule of ``cv2.dnn.NMSBoxes``; IoU without
    the +1-pixel convention). With ``classes`` given, only boxes of the same class suppress each other (batched
    NMS, done with a same-class mask rather than the coordinate-offset trick so IoUs stay exact in float32).

    Args:
        boxes_xyxy: ``(N, 4)`` corners.
        scores: ``(N,)``.
        iou_thres: suppression threshold in [0, 1].
        classes: optional ``(N,)`` class ids (any numeric dtype).
        max_keep: stop after this many boxes are kept (the result is then the first ``max_keep`` of the full
            greedy result, since kept boxes come out in score order).

    Returns:
        ``(K,)`` int64 indices into the inputs, in decreasing score order, on the inputs' device.
    """
    keep = _nms_numpy(_to_numpy(boxes_xyxy), _to_numpy(scores), iou_thres,
                      None if classes is None else _to_numpy(classes), max_keep)
    return torch.as_tensor(keep, dtype=torch.long, device=boxes_xyxy.device)


def _to_numpy(tensor: Tensor) -> np.ndarray:
    if tensor.dtype in (torch.bfloat16, torch.float16):  # NumPy has no bfloat16; float16 arithmetic is slow there
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def _iou_matrix(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """Pairwise IoU (N, 4), (M, 4) -> (N, M); the same arithmetic, in the same dtype, as ``boxes.box_iou``."""
    area1 = (boxes1_xyxy[:, 2] - boxes1_xyxy[:, 0]) * (boxes1_xyxy[:, 3] - boxes1_xyxy[:, 1])
    area2 = (boxes2_xyxy[:, 2] - boxes2_xyxy[:, 0]) * (boxes2_xyxy[:, 3] - boxes2_xyxy[:, 1])
    inter_w = (np.minimum(boxes1_xyxy[:, None, 2], boxes2_xyxy[None, :, 2])
               - np.maximum(boxes1_xyxy[:, None, 0], boxes2_xyxy[None, :, 0])).clip(min=0)
    inter_h = (np.minimum(boxes1_xyxy[:, None, 3], boxes2_xyxy[None, :, 3])
               - np.maximum(boxes1_xyxy[:, None, 1], boxes2_xyxy[None, :, 1])).clip(min=0)
    inter = inter_w * inter_h
    with np.errstate(invalid="ignore", divide="ignore"):  # inf/NaN boxes (exp overflow): NaN IoU, never suppresses
        return inter / (area1[:, None] + area2[None, :] - inter + np.asarray(eps, dtype=inter.dtype))


def _nms_numpy(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_thres: float, classes: Optional[np.ndarray],
               max_keep: Optional[int]) -> np.ndarray:
    """:func:`nms` on arrays. NumPy rather than torch: after the confidence filter there are a few to a few thousand
    candidates, where torch's per-op dispatch (~10 us x dozens of ops) would cost more than the arithmetic."""
    num_boxes = boxes_xyxy.shape[0]
    if num_boxes == 0 or (max_keep is not None and max_keep <= 0):
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")  # (N,) decreasing score, ties in input order
    boxes_sorted = boxes_xyxy[order]  # (N, 4)
    classes_sorted = classes[order] if classes is not None else None
    kept_positions: list[np.ndarray] = []  # positions in the sorted order, per block
    kept_count = 0
    for start in range(0, num_boxes, NMS_BLOCK_SIZE):
        stop = min(start + NMS_BLOCK_SIZE, num_boxes)
        block_boxes = boxes_sorted[start:stop]  # (K, 4)
        block_classes = classes_sorted[start:stop] if classes_sorted is not None else None
        removed = np.zeros(stop - start, dtype=bool)  # (K,)
        if kept_count:
            # Boxes already kept in earlier blocks outrank everything here: suppress against them in one shot.
            kept_index = np.concatenate(kept_positions)  # (P,)
            overlaps = _iou_matrix(boxes_sorted[kept_index], block_boxes) > iou_thres  # (P, K)
            if classes_sorted is not None:
                overlaps &= classes_sorted[kept_index][:, None] == block_classes[None, :]
            removed |= overlaps.any(0)
        # Within the block: row i says which later boxes i would suppress if i survives.
        suppresses = _iou_matrix(block_boxes, block_boxes) > iou_thres  # (K, K)
        if block_classes is not None:
            suppresses &= block_classes[:, None] == block_classes[None, :]
        suppresses = np.triu(suppresses, k=1)
        # The greedy pass is sequential; only rows that suppress something need visiting.
        for i in np.flatnonzero(suppresses.any(1)):
            if not removed[i]:
                removed |= suppresses[i]
        block_kept = np.flatnonzero(~removed)
        if max_keep is not None:
            block_kept = block_kept[:max_keep - kept_count]
        kept_positions.append(block_kept + start)
        kept_count += len(block_kept)
        if max_keep is not None and kept_count >= max_keep:
            break
    return order[np.concatenate(kept_positions)]


def non_max_suppression(
    pred: Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Optional[Sequence[int]] = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_candidates: int = 30000,
) -> list[Tensor]:
    """Confidence filtering and per-class greedy NMS of decoded YOLO outputs.

    Args:
        pred: ``(B, N, 5 + C)`` rows ``cx, cy, w, h, objectness, class probs`` (eval-mode model output; boxes in
            network-input pixels).
        conf_thres: keep (box, class) pairs whose ``objectness * class probability`` exceeds this.
        iou_thres: boxes of the same class overlapping a better one by IoU > this are removed.
        classes: keep only these class ids (None = all).
        agnostic: suppress across classes (one box per location whatever its class).
        multi_label: a box may appear once for every class whose score passes ``conf_thres``; otherwise only its
            best class is considered.
        max_det: detections kept per image, best first.
        max_candidates: at most this many highest-scoring (box, class) pairs enter NMS — a speed cap for the
            low ``conf_thres`` used by mAP evaluation of an untrained model.

    Returns:
        ``B`` tensors ``(n, 6)``: ``[x1, y1, x2, y2, score, class]`` in network-input pixels, sorted by score,
        on ``pred``'s device and in its dtype.

    The objectness filter runs on ``pred``'s device; the few rows that pass continue in NumPy (see :func:`nms`),
    in float32 for float16/bfloat16 predictions (class scores and IoUs are then more exact than in half precision).
    """
    if pred.ndim != 3 or pred.shape[-1] < 6:
        raise ValueError(f"non_max_suppression: expected pred of shape (B, N, 5 + C) with C >= 1, got {tuple(pred.shape)}")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"non_max_suppression: iou_thres must be in [0, 1], got {iou_thres}")
    wanted_classes = np.asarray(list(classes)) if classes is not None else None
    outputs: list[Tensor] = []
    for image_pred in pred:  # (N, 5 + C)
        # Objectness bounds every class score from above, so it is a cheap first filter.
        rows = _to_numpy(image_pred[image_pred[:, 4] > conf_thres])  # (n, 5 + C)
        cx, cy, half_w, half_h = rows[:, 0], rows[:, 1], rows[:, 2] / 2, rows[:, 3] / 2
        boxes_xyxy = np.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), axis=1)  # (n, 4)
        class_scores = rows[:, 5:] * rows[:, 4:5]  # (n, C)
        if multi_label:
            box_index, class_index = np.nonzero(class_scores > conf_thres)
            scores = class_scores[box_index, class_index]
        else:
            class_index = class_scores.argmax(1) if len(rows) else np.zeros(0, dtype=np.int64)
            scores = np.take_along_axis(class_scores, class_index[:, None], 1)[:, 0]
            box_index = np.flatnonzero(scores > conf_thres)
            class_index, scores = class_index[box_index], scores[box_index]
        if wanted_classes is not None:
            in_wanted = np.isin(class_index, wanted_classes)
            box_index, class_index, scores = box_index[in_wanted], class_index[in_wanted], scores[in_wanted]
        if scores.shape[0] > max_candidates:
            top = np.argsort(-scores, kind="stable")[:max_candidates]
            box_index, class_index, scores = box_index[top], class_index[top], scores[top]
        candidate_boxes = boxes_xyxy[box_index]  # (n', 4)
        keep = _nms_numpy(candidate_boxes, scores, iou_thres, None if agnostic else class_index, max_det)
        detections = np.concatenate((candidate_boxes[keep], scores[keep, None],
                                     class_index[keep, None].astype(rows.dtype)), axis=1)  # (k, 6)
        outputs.append(torch.from_numpy(detections).to(pred.device, pred.dtype))
    return outputs


def scale_boxes(
    boxes_xyxy: Tensor,
    ratio: Sequence[float],
    pad: Sequence[float],
    orig_shape: Sequence[int],
) -> Tensor:
    """Undo the letterbox: network-input pixels -> original-image pixels, clipped to the image.

    The letterbox maps ``x_net = x_orig * ratio_w + pad_w`` (CONTRACTS.md), so ``x_orig = (x_net - pad_w) / ratio_w``.

    Args:
        boxes_xyxy: ``(n, 4)`` (or ``(..., 4)``) corners in network-input pixels.
        ratio: ``(ratio_w, ratio_h)``.
        pad: ``(pad_w, pad_h)``.
        orig_shape: ``(orig_h, orig_w)``.

    Returns:
        A new tensor of the same shape, in original pixels.
    """
    ratio_w, ratio_h = float(ratio[0]), float(ratio[1])
    pad_w, pad_h = float(pad[0]), float(pad[1])
    if ratio_w <= 0 or ratio_h <= 0:
        raise ValueError(f"scale_boxes: letterbox ratios must be positive, got {tuple(ratio)}")
    boxes = boxes_xyxy.clone()
    boxes[..., 0::2] = (boxes[..., 0::2] - pad_w) / ratio_w
    boxes[..., 1::2] = (boxes[..., 1::2] - pad_h) / ratio_h
    return clip_boxes_(boxes, int(orig_shape[0]), int(orig_shape[1]))


def check_inference_args(conf_thres: float, iou_thres: float, max_det: int, img_size: int, stride: int) -> None:
    """Command-line sanity for val.py and detect.py: one ConfigError naming the flag, before any work."""

    if not 0.0 <= conf_thres <= 1.0:
        raise ConfigError(f"--conf-thres must be in [0, 1], got {conf_thres}")
    if not 0.0 < iou_thres <= 1.0:
        raise ConfigError(f"--iou-thres must be in (0, 1], got {iou_thres}")
    if max_det < 1:
        raise ConfigError(f"--max-det must be at least 1, got {max_det}")
    if img_size < stride or img_size % stride:
        raise ConfigError(f"--img-size must be a positive multiple of the model's stride {stride}, got {img_size}")
