"""The YOLOv3 loss in four terms (box + object + no-object + class) with a switchable objectness loss.

Per-element losses (:func:`bce_loss`, :func:`focal_loss`) take logits and return a loss of the same shape
(``reduction="none"``); :class:`YOLOLoss` alone applies the masks, reductions, normaliser and term weights.

Focal loss: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov3.boxes import cxcywh_to_xyxy, elementwise_iou
from yolov3.config import ConfigError, LossConfig, require_range, validate_loss_config
from yolov3.layers import decode_boxes
from yolov3.targets import assign_targets, ignore_mask, pad_truths_per_image

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------------------------------
# Per-element losses
# --------------------------------------------------------------------------------------------------------------------
def _check_pair(logits: Tensor, targets: Tensor, name: str) -> None:
    if logits.shape != targets.shape:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape"
        )


def _check_gamma_alpha(gamma: float, alpha: Optional[float], name: str) -> None:
    if gamma < 0:
        raise ValueError(f"{name}: gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name}: alpha must be in [0, 1] or None, got {alpha}")


def _compute_dtype(logits: Tensor) -> torch.dtype:
    # half-precision inputs are computed in float32 (as autocast does for these ops) and cast back at the end
    return torch.promote_types(logits.dtype, torch.float32)


def _bce_from_logits(x: Tensor, y: Tensor) -> Tensor:
    # (1-y)*softplus(x) + y*softplus(-x): equal to BCE(sigmoid(x), y), and accurate in the far tail, where torch's
    # fused binary_cross_entropy_with_logits returns exactly 0 (float32 at logit -20, where the loss is 2.06e-9;
    # even float64 at -50). Its gradient is sigmoid(x) - y, as for the fused op.
    return (1 - y) * F.softplus(x) + y * F.softplus(-x)


def bce_loss(logits: Tensor, targets: Tensor, positive: Optional[Tensor] = None) -> Tensor:
    """Binary cross-entropy on logits, per element: ``-(y log p + (1-y) log(1-p))`` with ``p = sigmoid(logits)``.

    Args:
        logits: any shape, any float dtype.
        targets: same shape, values in [0, 1] (soft targets such as IoU are allowed).
        positive: accepted for a common signature with the weighted losses and unused (BCE weights nothing).

    Returns:
        Loss of the same shape and dtype (``reduction="none"``). Computed in log space from the logits
        (``(1-y) softplus(x) + y softplus(-x)``), so values and gradients stay finite at logits of +-100 and the
        far tail keeps its relative accuracy (a negative at logit -20 has loss 2.06e-9, not 0), in float32 and
        bfloat16 (half inputs are computed in float32).
    """
    _check_pair(logits, targets, "bce_loss")
    x = logits.to(_compute_dtype(logits))
    return _bce_from_logits(x, targets.to(x.dtype)).to(logits.dtype)


def _positive_mask(targets: Tensor, positive: Optional[Tensor], name: str) -> Tensor:
    if positive is None:
        return targets > 0
    if positive.shape != targets.shape:
        raise ValueError(f"{name}: positive mask {tuple(positive.shape)} and targets {tuple(targets.shape)} differ")
    return positive.bool()


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: Optional[float] = 0.25,
               positive: Optional[Tensor] = None) -> Tensor:
    """Focal loss (Lin et al., ICCV 2017), per element: ``FL = -alpha_t (1 - p_t)^gamma log(p_t)``.

    Written as ``alpha_t * |y - p|^gamma * BCE(logits, y)`` with ``p = sigmoid(logits)``, which is the textbook FL for
    hard targets (``|y - p| = 1 - p_t``) and its usual generalisation to soft targets ``y`` in [0, 1] (as in the
    Quality Focal Loss of Li et al. 2020): the modulating factor vanishes when ``p`` equals the target, even for an
    IoU-valued target. ``alpha_t`` is ``alpha`` on positives and ``1 - alpha`` on negatives, chosen by the positive
    mask and never interpolated by a soft target's value (a positive whose IoU target is 0.3 still gets ``alpha``).

    Args:
        logits: any shape, any float dtype.
        targets: same shape, values in [0, 1].
        gamma: focusing parameter >= 0; 2 was best in Lin et al. 2017. ``gamma=0`` skips the factor entirely.
        alpha: balance weight in [0, 1], or ``None`` for no alpha weighting. ``gamma=0, alpha=None`` is
            :func:`bce_loss` exactly, in value and gradient.
        positive: boolean mask of the positives (same shape); default ``targets > 0``. Pass it when negatives
            carry soft targets (label smoothing gives them eps/2) or positives may have target 0 (IoU 0).

    Returns:
        Loss of the same shape and dtype (``reduction="none"``). Finite values and gradients at logits of +-100
        in float32 and bfloat16 (half inputs are computed in float32). The modulating factor is differentiated
        (not detached), as in the paper.
    """
    _check_pair(logits, targets, "focal_loss")
    _check_gamma_alpha(gamma, alpha, "focal_loss")
    x = logits.to(_compute_dtype(logits))
    y = targets.to(x.dtype)
    loss = _bce_from_logits(x, y)
    if gamma != 0:
        # |y - p| as y*sigmoid(-x) - (1-y)*sigmoid(x): algebraically equal, but for hard targets it is sigmoid(-+x)
        # itself, with no cancellation in 1 - p, so the factor stays accurate for confident predictions
        distance = (y * torch.sigmoid(-x) - (1 - y) * torch.sigmoid(x)).abs()
        # the clamp keeps pow's gradient finite (gamma < 1) where p == y exactly; it changes the value by < 1e-38
        loss = loss * distance.clamp(min=torch.finfo(x.dtype).tiny).pow(gamma)
    if alpha is not None:
        loss = loss * torch.where(_positive_mask(targets, positive, "focal_loss"), alpha, 1 - alpha)
    return loss.to(logits.dtype)


def varifocal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: Optional[float] = 0.75,
                   positive: Optional[Tensor] = None) -> Tensor:
    """Varifocal loss (Zhang, Wang, Dayoub, Sunderhauf, "VarifocalNet", CVPR 2021, eq. 2), per element.

    Positives: ``q * BCE(p, q)`` with ``q`` the target (an IoU with ``loss.obj_target: iou``; 1 otherwise), so a
    well-localised positive weighs more and nothing down-weights positives. Negatives: ``alpha * p^gamma *
    BCE(p, 0)``, focal-style down-weighting of the easy ones only. The paper uses ``alpha=0.75, gamma=2``.

    Args:
        logits, targets: as :func:`focal_loss`.
        gamma: exponent on ``p`` for negatives, >= 0.
        alpha: weight of negatives in [0, 1], or ``None`` for 1.
        positive: boolean mask of the positives; default ``targets > 0`` (the paper's rule, q > 0).

    Returns:
        Loss of the same shape and dtype (``reduction="none"``); the factors ``q`` and ``p^gamma`` are
        differentiated through ``p`` only (``q`` is a target).
    """
    _check_pair(logits, targets, "varifocal_loss")
    _check_gamma_alpha(gamma, alpha, "varifocal_loss")
    x = logits.to(_compute_dtype(logits))
    y = targets.to(x.dtype)
    is_positive = _positive_mask(targets, positive, "varifocal_loss")
    negative_weight = torch.sigmoid(x).clamp(min=torch.finfo(x.dtype).tiny).pow(gamma) if gamma != 0 else 1.0
    if alpha is not None:
        negative_weight = negative_weight * alpha
    weight = torch.where(is_positive, y, negative_weight)
    return (weight * _bce_from_logits(x, torch.where(is_positive, y, torch.zeros_like(y)))).to(logits.dtype)


OBJECTNESS_LOSSES: Dict[str, Callable[..., Tensor]] = {"bce": bce_loss, "focal": focal_loss,
                                                       "varifocal": varifocal_loss}

# keyword parameters each loss understands; the config always carries gamma/alpha, so bce accepts and drops them
_LOSS_PARAMETERS: Dict[str, Tuple[str, ...]] = {"bce": (), "focal": ("gamma", "alpha"),
                                                "varifocal": ("gamma", "alpha")}
_KNOWN_PARAMETERS = ("gamma", "alpha")


def get_loss_fn(name: str, **params) -> LossFn:
    """The per-element loss ``name`` from :data:`OBJECTNESS_LOSSES` with its parameters bound.

    ``get_loss_fn("focal", gamma=2, alpha=.25)(logits, targets)``. Parameters a loss does not use (``gamma`` and
    ``alpha`` for ``bce``) are dropped, so switching a config's ``name`` alone is enough; a parameter no loss knows
    is an error. An unknown ``name`` raises ``ValueError`` listing the choices.
    """
    if name not in OBJECTNESS_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from: {', '.join(sorted(OBJECTNESS_LOSSES))}")
    unknown = sorted(set(params) - set(_KNOWN_PARAMETERS))
    if unknown:
        raise ValueError(f"loss {name!r}: unknown parameter(s) {unknown}; known: {', '.join(_KNOWN_PARAMETERS)}")
    used = {key: value for key, value in params.items() if key in _LOSS_PARAMETERS[name]}
    fn = OBJECTNESS_LOSSES[name]
    if name != "bce":  # validate now, at construction, rather than on the first training step
        fn(torch.zeros(1), torch.zeros(1), **used)
    return functools.partial(fn, **used) if used else fn


def darknet_box_distance(pred_t: Tensor, target_t: Tensor) -> Tensor:
    """Darknet's box loss per positive, before the ``(2 - w*h)`` weight: ``(P, 4)`` logits and targets -> ``(P,)``.

    Darknet's yolo layer writes the delta ``tx* - sigmoid(tx)`` straight into the gradient of the logit ``tx`` (its
    backward copies the delta without the logistic derivative), and ``tw* - tw`` for ``tw``. The loss with exactly
    these gradients is BCE between ``sigmoid(tx)`` and the in-cell offset ``tx*`` for x and y, and ``(tw - tw*)^2 / 2``
    for w and h. The BCE's minimum (the target's entropy) is subtracted, so a perfect box scores 0; the gradient
    is unchanged by that constant.
    """
    txy, twh = pred_t[:, 0:2], pred_t[:, 2:4]
    target_xy = target_t[:, 0:2]
    entropy = -(torch.special.xlogy(target_xy, target_xy) + torch.special.xlogy(1 - target_xy, 1 - target_xy))
    xy = (_bce_from_logits(txy, target_xy) - entropy).sum(1)
    return xy + 0.5 * ((twh - target_t[:, 2:4]) ** 2).sum(1)


# --------------------------------------------------------------------------------------------------------------------
# YOLOLoss
# --------------------------------------------------------------------------------------------------------------------
class YOLOLoss(nn.Module):
    """YOLOv3 loss: ``total = l_box*box + l_obj*obj + l_noobj*noobj + l_cls*cls``, each term a sum / normaliser.

    Terms (sums over all layers; ``P`` = positives from :func:`yolov3.targets.assign_targets`):

    * **box** (positives): ``(2 - w*h) * d`` with ``w, h`` the truth's size normalised to the input and ``d``:
      ``mse``: ``(sigmoid(tx)-tx*)^2 + (sigmoid(ty)-ty*)^2 + (tw-tw*)^2 + (th-th*)^2``, with ``tx*`` the truth centre's
      offset in its cell and ``tw* = log(w_px / anchor_w)`` (darknet's parametrisation; the gradient is twice
      darknet's delta for w and h only, which ``lambda_box = 0.5`` matches; for x and y the squared error carries a
      sigmoid' factor darknet's delta lacks); ``darknet``: darknet's exact deltas (:func:`darknet_box_distance`: BCE
      between ``sigmoid(tx)`` and ``tx*`` for x, y and ``(tw-tw*)^2 / 2`` for w, h); ``giou`` / ``ciou``: ``1 - GIoU`` / ``1 - CIoU``
      of the decoded predicted box with the truth. The ``(2 - w*h)`` small-box weight is kept for every box loss,
      so ``box`` switches only the distance, not the weighting (one axis per field).
    * **obj** (positives): objectness loss against target 1 (``obj_target: one``) or the detached IoU (clamped >= 0)
      of the decoded predicted box with its truth (``obj_target: iou``).
    * **noobj** (negatives: not positive and not ignored): objectness loss against target 0. Ignored predictions
      (decoded box IoU > ignore_thresh with a truth of the same image) contribute exactly zero, value and gradient.
    * **cls** (positives): class loss summed over the ``C`` classes; targets ``1 - eps/2`` for the truth's class and
      ``eps/2`` otherwise (``eps`` = label_smoothing).

    The normaliser is the batch size (``normalizer: batch``) or ``max(1, P)`` with ``P`` the number of positive
    predictions after collisions (``normalizer: positives``, as RetinaNet), applied to all four terms.
    ``cfg.obj_prior`` is validated here but applied to the model by :func:`apply_objectness_prior` (train.py).

    ``forward`` returns ``(total, terms)``: ``terms['box'|'obj'|'noobj'|'cls']`` are detached 0-d tensors, weighted
    and normalised exactly as summed into ``total``; ``num_pos``, ``num_neg``, ``num_ignored`` are Python ints
    (ignored counts only non-positive predictions); with ``record_elementwise``, ``terms['obj_elementwise']`` is
    ``{'pos': (P,), 'neg': (num_neg,)}`` unweighted, unnormalised per-element objectness losses (detached).
    """

    def __init__(
        self,
        anchors: Sequence[Tensor],
        strides: Sequence[int],
        num_classes: int,
        cfg: Optional[LossConfig] = None,
        ignore_thresh: Union[float, Sequence[float], None] = None,
    ) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else LossConfig()
        validate_loss_config(cfg)
        if len(anchors) != len(strides):
            raise ValueError(f"YOLOLoss: {len(anchors)} anchor groups but {len(strides)} strides; need one per layer")
        self.cfg = cfg
        self.num_layers = len(strides)
        self.strides = [int(s) for s in strides]
        self.num_classes = int(num_classes)
        for layer, anchors_wh in enumerate(anchors):
            anchors_wh = torch.as_tensor(anchors_wh, dtype=torch.float32)
            if anchors_wh.ndim != 2 or anchors_wh.shape[1] != 2:
                raise ValueError(
                    f"YOLOLoss: anchors of layer {layer} must be (A, 2) pixels, got {tuple(anchors_wh.shape)}"
                )
            self.register_buffer(f"anchors_{layer}", anchors_wh.clone(), persistent=False)
        # cfg.ignore_thresh wins when set; otherwise each layer's own value (from the model cfg)
        if cfg.ignore_thresh is not None:
            thresholds = [cfg.ignore_thresh] * self.num_layers
        elif ignore_thresh is None:
            raise ConfigError("loss config: 'loss.ignore_thresh' is null and no per-layer ignore_thresh was given")
        elif isinstance(ignore_thresh, (int, float)):
            thresholds = [float(ignore_thresh)] * self.num_layers
        else:
            thresholds = [float(t) for t in ignore_thresh]
        if len(thresholds) != self.num_layers:
            raise ValueError(f"YOLOLoss: {len(thresholds)} ignore thresholds for {self.num_layers} layers")
        for t in thresholds:
            require_range("ignore_thresh", t, 0.0, 1.0)
        self.ignore_thresh = thresholds
        self.obj_loss_fn = get_loss_fn(cfg.objectness.name, gamma=cfg.objectness.gamma, alpha=cfg.objectness.alpha)
        self.cls_loss_fn = get_loss_fn(cfg.cls.name, gamma=cfg.cls.gamma, alpha=cfg.cls.alpha)

    @classmethod
    def from_model(cls, model: nn.Module, cfg: Optional[LossConfig] = None) -> "YOLOLoss":
        """Build from a ``Darknet`` (anchors, strides, classes and ignore thresholds of its ``[yolo]`` layers)."""
        layers = list(model.yolo_layers)
        loss = cls(
            anchors=[layer.anchors.detach().float().cpu() for layer in layers],
            strides=list(model.strides),
            num_classes=model.num_classes,
            cfg=cfg,
            ignore_thresh=[float(layer.ignore_thresh) for layer in layers],
        )
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return loss.to(device)

    def anchors(self, layer: int) -> Tensor:
        """``(A_l, 2)`` anchor widths/heights in input pixels of layer ``layer``."""
        return getattr(self, f"anchors_{layer}")

    # ----------------------------------------------------------------------------------------------------------------
    def _check_inputs(self, raw_maps: Sequence[Tensor], targets: Tensor) -> Tuple[int, Tuple[int, int]]:
        if len(raw_maps) != self.num_layers:
            raise ValueError(
                f"YOLOLoss: got {len(raw_maps)} raw maps, expected {self.num_layers} (one per [yolo] layer)"
            )
        batch = raw_maps[0].shape[0]
        image_size = None
        for layer, raw in enumerate(raw_maps):
            expected = (batch, len(self.anchors(layer)), "H", "W", 5 + self.num_classes)
            if raw.ndim != 5 or raw.shape[0] != batch or raw.shape[1] != expected[1] or raw.shape[4] != expected[4]:
                raise ValueError(f"YOLOLoss: raw map {layer} has shape {tuple(raw.shape)}, expected {expected}")
            size = (raw.shape[2] * self.strides[layer], raw.shape[3] * self.strides[layer])
            if image_size is not None and size != image_size:
                raise ValueError(
                    f"YOLOLoss: raw map {layer} implies a {size} input but earlier maps imply {image_size}"
                )
            image_size = size
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(
                f"YOLOLoss: targets must be (N, 6) [image, class, cx, cy, w, h], got {tuple(targets.shape)}"
            )
        if targets.shape[0]:
            image_index, class_index, sizes = targets[:, 0], targets[:, 1], targets[:, 4:6]
            bad_index = (image_index < 0) | (image_index >= batch)
            bad_index |= (class_index < 0) | (class_index >= self.num_classes)
            bad_size = (sizes <= 0).any(1)  # log(w / anchor) of an empty box is -inf: refuse it, never train on NaN
            bad_index, bad_size = torch.stack([bad_index.any(), bad_size.any()]).tolist()  # one device sync
            if bad_index:
                raise ValueError(
                    f"YOLOLoss: targets hold an image index outside [0, {batch}) or a class outside "
                    f"[0, {self.num_classes}); check the data loader and the model's num_classes"
                )
            if bad_size:
                raise ValueError("YOLOLoss: targets hold a box with zero or negative width/height; drop such labels")
        return batch, image_size

    def forward(self, raw_maps: Sequence[Tensor], targets: Tensor, masks: bool = False) -> Tuple[Tensor, dict]:
        """``raw_maps``: list of ``(B, A_l, H_l, W_l, 5+C)`` logits; ``targets``: ``(N, 6)``. See the class doc.

        With ``masks``, ``terms['masks']`` holds per layer the ``(positive, negative)`` boolean ``(B, A, H, W)`` maps
        (for :mod:`yolov3.diagnostics`).
        """
        cfg = self.cfg
        batch, image_size = self._check_inputs(raw_maps, targets)
        device = raw_maps[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        grid_sizes = [(raw.shape[2], raw.shape[3]) for raw in raw_maps]
        assignments = assign_targets(
            targets, [self.anchors(i) for i in range(self.num_layers)], grid_sizes, image_size, batch,
            cfg.extra_positive_iou,
        )
        truths_xyxy = pad_truths_per_image(targets, batch, image_size)  # (B, T, 4) pixels
        image_h, image_w = image_size
        smoothing = cfg.cls.label_smoothing

        zero = torch.zeros((), device=device)
        box_sum, obj_sum, noobj_sum, cls_sum = zero, zero, zero, zero
        num_pos = 0
        neg_counts: List[Tensor] = []  # counted on the device and read once at the end: one sync, not one per layer
        ignored_counts: List[Tensor] = []
        pos_elements: List[Tensor] = []
        neg_elements: List[Tensor] = []
        layer_masks: List[Tuple[Tensor, Tensor]] = []
        for layer, raw in enumerate(raw_maps):
            raw = raw.float()  # (B, A, H, W, 5+C); the loss is computed in float32 even under mixed precision
            grid_h, grid_w = raw.shape[2:4]
            stride = self.strides[layer]
            anchors_wh = self.anchors(layer).to(device)  # (A, 2) pixels
            found = assignments[layer]
            b, a, gy, gx = found.image_index, found.anchor_index, found.grid_y, found.grid_x
            truths = targets[found.truth_index]  # (P, 6)

            # ignore mask from decoded predictions (no gradient flows through the decision)
            with torch.no_grad():
                grid_y, grid_x = torch.meshgrid(
                    torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij"
                )
                # decode_boxes + cxcywh_to_xyxy on contiguous planes: elementwise ops on the (..., 5+C)-strided logits
                # cannot vectorise (benchmarks/results/2026-12-06-comment-timings.md); values equal up to float
                # rounding (the vectorised exp rounds some last bits differently)
                tx, ty, tw, th = raw[..., :4].permute(4, 0, 1, 2, 3).contiguous()  # each (B, A, H, W)
                centre_x = (tx.sigmoid_() + grid_x) * stride
                centre_y = (ty.sigmoid_() + grid_y) * stride
                half_w = tw.exp_().mul_(anchors_wh[:, 0, None, None]).div_(2)  # (B, A, H, W) pixels
                half_h = th.exp_().mul_(anchors_wh[:, 1, None, None]).div_(2)
                pred_xyxy = torch.stack((centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h),
                                        dim=-1)  # (B, A, H, W, 4)
                ignored = ignore_mask(pred_xyxy, truths_xyxy, self.ignore_thresh[layer])
                positive = torch.zeros_like(ignored)
                positive[b, a, gy, gx] = True
                negative = ~positive & ~ignored  # (B, A, H, W)

            pred = raw[b, a, gy, gx]  # (P, 5+C)
            truth_wh_norm = truths[:, 4:6]
            small_box_weight = 2.0 - truth_wh_norm[:, 0] * truth_wh_norm[:, 1]  # (P,) darknet's (2 - w*h)
            # decoded positives (pixels), for giou/ciou and IoU-valued objectness targets
            pred_pos_cxcywh = decode_boxes(pred[:, :4], torch.stack((gx, gy), dim=1), anchors_wh[a], stride)  # (P, 4)
            truth_cxcywh = truths[:, 2:6] * truths.new_tensor([image_w, image_h, image_w, image_h])  # (P, 4) pixels
            if cfg.box in ("mse", "darknet"):
                target_txy = truths[:, 2:4] * truths.new_tensor([grid_w, grid_h]) - torch.stack((gx, gy), 1)  # in-cell
                target_twh = torch.log(truth_cxcywh[:, 2:4] / anchors_wh[a])  # (P, 2)
                if cfg.box == "mse":
                    distance = ((pred[:, 0:2].sigmoid() - target_txy) ** 2).sum(1)
                    distance = distance + ((pred[:, 2:4] - target_twh) ** 2).sum(1)
                else:  # darknet's deltas: d/dtx = sigmoid(tx) - tx* (no sigmoid' factor), d/dtw = tw - tw*
                    distance = darknet_box_distance(pred[:, 0:4], torch.cat((target_txy, target_twh), 1))
            else:
                distance = 1.0 - elementwise_iou(
                    cxcywh_to_xyxy(pred_pos_cxcywh), cxcywh_to_xyxy(truth_cxcywh), kind=cfg.box
                )
            box_sum = box_sum + (small_box_weight * distance).sum()

            # objectness: one loss map over every prediction, targets 0 except at positives
            if cfg.obj_target == "iou":
                with torch.no_grad():
                    pos_obj_target = elementwise_iou(
                        cxcywh_to_xyxy(pred_pos_cxcywh), cxcywh_to_xyxy(truth_cxcywh), kind="iou"
                    ).clamp(min=0)
            else:
                pos_obj_target = torch.ones_like(small_box_weight)
            obj_target_map = torch.zeros_like(raw[..., 4])  # (B, A, H, W)
            obj_target_map[b, a, gy, gx] = pos_obj_target
            obj_loss_map = self.obj_loss_fn(raw[..., 4], obj_target_map, positive=positive)  # (B, A, H, W)
            pos_obj_losses = obj_loss_map[b, a, gy, gx]  # (P,)
            obj_sum = obj_sum + pos_obj_losses.sum()
            # where (not a multiply) so ignored and positive cells contribute exactly zero value and gradient
            noobj_sum = noobj_sum + torch.where(negative, obj_loss_map, torch.zeros_like(obj_loss_map)).sum()

            # classes: independent logistic outputs, smoothed targets
            cls_target = torch.full_like(pred[:, 5:], smoothing / 2)  # (P, C)
            cls_positive = torch.zeros_like(cls_target, dtype=torch.bool)
            cls_positive[torch.arange(len(truths), device=device), truths[:, 1].long()] = True
            cls_target[cls_positive] = 1.0 - smoothing / 2
            cls_sum = cls_sum + self.cls_loss_fn(pred[:, 5:], cls_target, positive=cls_positive).sum()

            num_pos += found.num_positives
            neg_counts.append(negative.sum())
            ignored_counts.append((ignored & ~positive).sum())
            if masks:
                layer_masks.append((positive, negative))
            if cfg.record_elementwise:
                pos_elements.append(pos_obj_losses.detach())
                neg_elements.append(obj_loss_map.detach()[negative])

        num_neg, num_ignored = torch.stack([torch.stack(neg_counts), torch.stack(ignored_counts)]).sum(1).tolist()
        normaliser = float(batch) if cfg.normalizer == "batch" else float(max(1, num_pos))
        box = cfg.lambda_box * box_sum / normaliser
        obj = cfg.lambda_obj * obj_sum / normaliser
        noobj = cfg.lambda_noobj * noobj_sum / normaliser
        cls = cfg.lambda_cls * cls_sum / normaliser
        total = box + obj + noobj + cls
        terms: dict = {
            "box": box.detach(),
            "obj": obj.detach(),
            "noobj": noobj.detach(),
            "cls": cls.detach(),
            "num_pos": num_pos,
            "num_neg": num_neg,
            "num_ignored": num_ignored,
        }
        if masks:
            terms["masks"] = layer_masks
        if cfg.record_elementwise:
            terms["obj_elementwise"] = {"pos": torch.cat(pos_elements), "neg": torch.cat(neg_elements)}
        return total, terms


def apply_objectness_prior(model: nn.Module, prior: float) -> None:
    """Set every head conv's objectness bias (all anchors) to ``-log((1 - prior) / prior)`` (Lin et al. 2017).

    With ``prior = 0.01`` (RetinaNet) the bias is ``-log(99) = -4.595``: every prediction starts at objectness 0.01,
    so the many easy negatives do not swamp the first updates. Needs ``model.head_convs`` and ``model.yolo_layers``
    (CONTRACTS.md). Raises ``ValueError`` unless ``0 < prior < 1``.
    """
    if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0.0 < prior < 1.0:
        raise ValueError(
            f"apply_objectness_prior: the prior pi must satisfy 0 < pi < 1 (loss.obj_prior), got {prior!r}"
        )
    bias_value = -math.log((1.0 - prior) / prior)
    for index, (conv, layer) in enumerate(zip(model.head_convs, model.yolo_layers)):
        num_anchors = len(layer.anchors)
        if conv.bias is None or conv.bias.numel() != num_anchors * (5 + layer.num_classes):
            raise ValueError(
                f"apply_objectness_prior: head conv {index} needs a bias of {num_anchors} x (5 + {layer.num_classes}) "
                f"values, found {None if conv.bias is None else conv.bias.numel()}"
            )
        with torch.no_grad():
            # head channels are (A, 5+C) with order tx ty tw th obj cls..., as the [yolo] layer reshapes them
            conv.bias.view(num_anchors, 5 + layer.num_classes)[:, 4] = bias_value
