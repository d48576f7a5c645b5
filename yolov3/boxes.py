"""Box formats and the IoU family.

Formats used throughout the project:
  * ``xyxy``: (x1, y1, x2, y2), corners.
  * ``cxcywh``: (cx, cy, w, h), centre and size (YOLO labels and model outputs).

All functions are pure, work on the last dimension (``(..., 4)``) and accept any leading shape.
IoU variants follow Rezatofighi et al. 2019 (GIoU) and Zheng et al. 2020 (DIoU, CIoU).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) centre-size -> (..., 4) corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def yolo_label_row(class_index: int, x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> str:
    """One YOLO label line (no newline) for a pixel xyxy box in a ``width`` x ``height`` image:
    ``class cx cy w h``, normalised, 6 decimals (used by detect.py --save-txt and the COCO/VOC converters)."""
    return (f"{int(class_index)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")


def yolo_label_rows(detections, width: float, height: float, with_score: bool = False) -> str:
    """YOLO label text for ``(n, 6)`` detections ``x1 y1 x2 y2 score class`` (pixels of a ``width`` x ``height``
    image): one :func:`yolo_label_row` per line, the score appended (5 decimals) when ``with_score`` (val.py and
    detect.py --save-txt, --save-conf)."""
    rows = [yolo_label_row(cls, x1, y1, x2, y2, width, height) + (f" {score:.5f}" if with_score else "")
            for x1, y1, x2, y2, score, cls in detections.tolist()]
    return "".join(row + "\n" for row in rows)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) corners -> (..., 4) centre-size."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes_xyxy: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) area (zero for degenerate boxes)."""
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1]).clamp(min=0)


def box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor, eps: float = 1e-9) -> Tensor:
    """Pairwise IoU: (N, 4) and (M, 4) xyxy -> (N, M)."""
    area1 = box_area(boxes1_xyxy)
    area2 = box_area(boxes2_xyxy)
    # x and y overlaps as separate (N, M) planes, not an (N, M, 2) stack reduced with prod: NMS calls this in its
    # inner loop and the stack's strided reduction is the slow part (benchmarks/results/2026-12-06-comment-timings.md)
    inter_w = (torch.minimum(boxes1_xyxy[:, None, 2], boxes2_xyxy[None, :, 2])
               - torch.maximum(boxes1_xyxy[:, None, 0], boxes2_xyxy[None, :, 0])).clamp_(min=0)  # (N, M)
    inter_h = (torch.minimum(boxes1_xyxy[:, None, 3], boxes2_xyxy[None, :, 3])
               - torch.maximum(boxes1_xyxy[:, None, 1], boxes2_xyxy[None, :, 1])).clamp_(min=0)  # (N, M)
    inter = inter_w.mul_(inter_h)  # (N, M)
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def elementwise_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor, kind: str = "iou", eps: float = 1e-7) -> Tensor:
    """IoU of matching boxes, ``(..., 4)`` each -> ``(...)``; ``kind`` is one of iou, giou, diou, ciou.

    Differentiable; used for box losses (1 - GIoU, 1 - CIoU) and IoU-valued objectness targets.
    """
    if kind not in ("iou", "giou", "diou", "ciou"):
        raise ValueError(f"unknown IoU kind {kind!r}; choose from iou, giou, diou, ciou")
    b1x1, b1y1, b1x2, b1y2 = boxes1_xyxy.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = boxes2_xyxy.unbind(-1)
    w1, h1 = (b1x2 - b1x1).clamp(min=0), (b1y2 - b1y1).clamp(min=0)
    w2, h2 = (b2x2 - b2x1).clamp(min=0), (b2y2 - b2y1).clamp(min=0)
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    # smallest enclosing box
    enclose_w = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    enclose_h = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    if kind == "giou":
        enclose_area = enclose_w * enclose_h + eps
        return iou - (enclose_area - union) / enclose_area
    diagonal_sq = enclose_w**2 + enclose_h**2 + eps
    centre_dist_sq = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    if kind == "diou":
        return iou - centre_dist_sq / diagonal_sq
    # CIoU: aspect-ratio consistency term v with trade-off alpha (treated as a constant, as in the paper)
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist_sq / diagonal_sq + v * alpha)


def shape_iou(wh1: Tensor, wh2: Tensor, eps: float = 1e-9) -> Tensor:
    """Pairwise IoU of boxes that share a centre: (N, 2) and (M, 2) widths/heights -> (N, M).

    This is how Darknet picks the best anchor for a ground truth (position ignored, shape only).
    """
    inter = torch.minimum(wh1[:, None, 0], wh2[None, :, 0]) * torch.minimum(wh1[:, None, 1], wh2[None, :, 1])
    return inter / (wh1[:, None].prod(-1) + wh2[None, :].prod(-1) - inter + eps)


def clip_boxes_(boxes_xyxy: Tensor, height: int, width: int) -> Tensor:
    """Clip xyxy boxes in place to an image of ``height`` x ``width`` pixels; returns the same tensor."""
    boxes_xyxy[..., 0::2] = boxes_xyxy[..., 0::2].clamp(0, width)
    boxes_xyxy[..., 1::2] = boxes_xyxy[..., 1::2].clamp(0, height)
    return boxes_xyxy
