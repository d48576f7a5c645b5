"""Assigning ground truths to anchors and cells, and the ignore mask (YOLOv3, Redmon & Farhadi 2018).

Inputs follow CONTRACTS.md: training targets are a float ``(N, 6)`` tensor of rows
``[image_index, class, cx, cy, w, h]`` with the box normalised to the network input; anchors are given per
``[yolo]`` layer as ``(A_l, 2)`` widths/heights in input pixels.

Rules (darknet's released code, written here without loops over boxes or images):

* **Positives.** Each ground truth goes to the single best anchor of *all* layers by shape IoU (centred boxes,
  :func:`yolov3.boxes.shape_iou`), at its centre cell ``(floor(cy * H_l), floor(cx * W_l))`` of the layer that owns
  that anchor. With ``extra_positive_iou`` set, every other anchor whose shape IoU with the truth exceeds it is a
  positive too, at the truth's centre cell of that anchor's own layer.
* **Collisions.** When several truths land on the same (image, anchor, cell) only one may own it (one box and one
  objectness target per prediction). The winner is chosen deterministically: a best-anchor match beats an extra
  positive; among equals the truth with the *later row* in ``targets`` wins, as in darknet, whose loop over truths
  overwrites earlier deltas. The loser gets no prediction at that cell (it keeps its other positives, if any).
* **Ignored.** A prediction whose decoded box overlaps any ground truth of its own image with IoU > ``ignore_thresh``
  is ignored: it is left out of the no-object term (positives are never "ignored"; the loss removes them first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from yolov3.boxes import cxcywh_to_xyxy, elementwise_iou, shape_iou


@dataclass
class LayerAssignment:
    """The positives of one ``[yolo]`` layer; all fields are ``(P,)`` long tensors, one entry per positive.

    ``(image_index, anchor_index, grid_y, grid_x)`` index the layer's raw map ``(B, A, H, W, 5+C)`` directly;
    ``truth_index`` is the row of ``targets`` the positive learns from (its box and class).
    """

    image_index: Tensor
    anchor_index: Tensor  # index within this layer's anchors (0..A_l-1)
    grid_y: Tensor
    grid_x: Tensor
    truth_index: Tensor

    @property
    def num_positives(self) -> int:
        return int(self.truth_index.numel())


def assign_targets(
    targets: Tensor,
    anchors_per_layer: Sequence[Tensor],
    grid_sizes: Sequence[Tuple[int, int]],
    image_size: Tuple[int, int],
    batch_size: int,
    extra_positive_iou: float | None = None,
) -> List[LayerAssignment]:
    """Assign each ground truth to anchors and cells (darknet rule, optional extra positives).

    Args:
        targets: ``(N, 6)`` rows ``[image_index, class, cx, cy, w, h]``, box normalised to the network input.
        anchors_per_layer: one ``(A_l, 2)`` tensor of anchor widths/heights in input pixels per layer.
        grid_sizes: ``(H_l, W_l)`` of each layer's map.
        image_size: ``(height, width)`` of the network input in pixels.
        batch_size: ``B``, the number of images (bounds the collision buffer).
        extra_positive_iou: if set, anchors (other than the best) with shape IoU above it are positives too.

    Returns:
        One :class:`LayerAssignment` per layer, with collisions resolved (see the module docstring), so no
        (image, anchor, cell) appears twice within a layer.
    """
    device = targets.device
    num_truths = targets.shape[0]
    image_h, image_w = image_size
    truths_wh_px = targets[:, 4:6] * targets.new_tensor([image_w, image_h])  # (N, 2)
    all_anchors_wh = torch.cat([a.to(device=device, dtype=targets.dtype) for a in anchors_per_layer])  # (K, 2)
    anchor_counts = torch.tensor([len(a) for a in anchors_per_layer], device=device)
    layer_of_anchor = torch.repeat_interleave(torch.arange(len(anchors_per_layer), device=device), anchor_counts)
    index_in_layer = torch.cat([torch.arange(len(a), device=device) for a in anchors_per_layer])  # (K,)

    shape_ious = shape_iou(truths_wh_px, all_anchors_wh)  # (N, K)
    is_best = torch.zeros_like(shape_ious, dtype=torch.bool)
    if num_truths:
        # argmax returns the first maximal index, so exact ties go to the lower anchor index, deterministically
        is_best[torch.arange(num_truths, device=device), shape_ious.argmax(dim=1)] = True
    is_positive = is_best if extra_positive_iou is None else is_best | (shape_ious > extra_positive_iou)
    pair_truth, pair_anchor = is_positive.nonzero(as_tuple=True)  # (M,), (M,) one entry per (truth, anchor) positive
    pair_is_best = is_best[pair_truth, pair_anchor]
    pair_layer = layer_of_anchor[pair_anchor]

    assignments = []
    for layer, (grid_h, grid_w) in enumerate(grid_sizes):
        in_layer = pair_layer == layer
        truth_index = pair_truth[in_layer]
        anchor_index = index_in_layer[pair_anchor[in_layer]]
        rows = targets[truth_index]  # (P, 6)
        image_index = rows[:, 0].long()
        # centre cell; clamp because a centre exactly on the right/bottom edge (cx == 1) has no cell of its own
        grid_x = (rows[:, 2] * grid_w).floor().long().clamp_(0, grid_w - 1)
        grid_y = (rows[:, 3] * grid_h).floor().long().clamp_(0, grid_h - 1)

        # collisions: keep, per (image, anchor, cell), the pair with the highest priority (best match, then later row)
        num_anchors = len(anchors_per_layer[layer])
        cell_key = ((image_index * num_anchors + anchor_index) * grid_h + grid_y) * grid_w + grid_x  # (P,)
        priority = pair_is_best[in_layer].long() * num_truths + truth_index  # unique per pair within one cell
        winner = torch.full((batch_size * num_anchors * grid_h * grid_w,), -1, dtype=torch.long, device=device)
        winner.scatter_reduce_(0, cell_key, priority, reduce="amax")
        keep = winner[cell_key] == priority
        assignments.append(
            LayerAssignment(image_index[keep], anchor_index[keep], grid_y[keep], grid_x[keep], truth_index[keep])
        )
    return assignments


def pad_truths_per_image(targets: Tensor, batch_size: int, image_size: Tuple[int, int]) -> Tensor:
    """Group ground-truth boxes by image: ``(N, 6)`` targets -> ``(B, T, 4)`` xyxy boxes in input pixels.

    ``T`` is the largest number of truths in one image; the padding rows are all-zero boxes, whose IoU with any box
    is 0, so they can never push a prediction over an ignore threshold (thresholds are >= 0).
    """
    image_h, image_w = image_size
    num_truths = targets.shape[0]
    image_index = targets[:, 0].long()
    counts = torch.bincount(image_index, minlength=batch_size)  # (B,)
    max_per_image = int(counts.max()) if num_truths else 0
    order = torch.argsort(image_index, stable=True)
    first_row_of_image = torch.cumsum(counts, 0) - counts  # (B,)
    sorted_image = image_index[order]
    slot = torch.arange(num_truths, device=targets.device) - first_row_of_image[sorted_image]  # position in its image
    boxes_xyxy = cxcywh_to_xyxy(targets[order, 2:6] * targets.new_tensor([image_w, image_h, image_w, image_h]))
    padded = targets.new_zeros((batch_size, max_per_image, 4))
    padded[sorted_image, slot] = boxes_xyxy
    return padded


# the (B, cells, T) IoU temporaries are processed in slices of at most this many elements (~128 MB in float32) so a
# large batch with many truths (e.g. 608 px, B=64, 100 truths: 1e8 pairs) cannot exhaust memory; results are identical
IGNORE_CHUNK_ELEMENTS = 1 << 25


def ignore_mask(pred_boxes_xyxy: Tensor, truths_xyxy: Tensor, ignore_thresh: float) -> Tensor:
    """Which predictions overlap a ground truth of their own image with IoU > ``ignore_thresh``.

    Args:
        pred_boxes_xyxy: ``(B, A, H, W, 4)`` decoded predicted boxes (any consistent unit, pixels here).
        truths_xyxy: ``(B, T, 4)`` from :func:`pad_truths_per_image` (zero rows are padding).
        ignore_thresh: IoU threshold (darknet: .7 in the released COCO cfg, .5 in the paper).

    Returns:
        ``(B, A, H, W)`` bool. Positives are not excluded here; the loss removes them.

    Memory: ``(B, cells, T)`` IoU temporaries, in slices of at most :data:`IGNORE_CHUNK_ELEMENTS` elements.
    """
    batch, anchors, grid_h, grid_w, _ = pred_boxes_xyxy.shape
    num_cells, max_truths = anchors * grid_h * grid_w, truths_xyxy.shape[1]
    if max_truths == 0:
        return torch.zeros((batch, anchors, grid_h, grid_w), dtype=torch.bool, device=pred_boxes_xyxy.device)
    preds = pred_boxes_xyxy.reshape(batch, num_cells, 1, 4)  # (B, cells, 1, 4)
    truths = truths_xyxy[:, None, :, :]  # (B, 1, T, 4)
    cells_per_slice = max(1, IGNORE_CHUNK_ELEMENTS // (batch * max_truths))
    overlaps = [
        elementwise_iou(preds[:, start : start + cells_per_slice], truths, kind="iou").amax(dim=2) > ignore_thresh
        for start in range(0, num_cells, cells_per_slice)
    ]  # each (B, slice) bool
    return torch.cat(overlaps, dim=1).reshape(batch, anchors, grid_h, grid_w)
