"""Validation loop shared by val.py and train.py: model -> NMS -> original-pixel boxes -> COCO-style metrics.

Predictions *and* ground truths are mapped back through the letterbox of each image (the ``shapes`` of a batch) so
metrics are computed in original-image pixels, as COCO does; both are clipped to the image alike.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from yolov3.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from yolov3.draw import plot_batch
from yolov3.loss import YOLOLoss
from yolov3.metrics import DetectionEvaluator
from yolov3.plots import plot_validation
from yolov3.postprocess import non_max_suppression, scale_boxes

LOSS_TERMS = ("box", "obj", "noobj", "cls")
PLOT_CONF = 0.25  # val_batch0_pred.jpg draws detections above this score: the 0.001 of mAP would bury the image


def _check_batch(batch: Any, batch_index: int) -> tuple:
    if not isinstance(batch, (tuple, list)) or len(batch) != 4:
        raise ValueError(f"evaluate: batch {batch_index} must be (images, targets, paths, shapes) as in CONTRACTS.md, "
                         f"got {type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}")
    images, targets, paths, shapes = batch
    if images.ndim != 4:
        raise ValueError(f"evaluate: batch {batch_index} images must be (B, 3, H, W), got {tuple(images.shape)}")
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"evaluate: batch {batch_index} targets must be (N, 6) [image, class, cx, cy, w, h], "
                         f"got {tuple(targets.shape)}")
    if len(shapes) != images.shape[0] or any(s is None for s in shapes):
        raise ValueError(f"evaluate: batch {batch_index} needs one letterbox shape ((h, w), (ratio_w, ratio_h), "
                         f"(pad_w, pad_h)) per image (un-augmented loader), got {shapes!r:.200}")
    return images, targets, paths, shapes


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate` scores, and what it does besides: plots, a warm-up pass, a progress bar."""

    conf_thres: float = 0.001  # NMS: the low default keeps the PR curve's low-score tail
    iou_thres: float = 0.6
    max_det: int = 300
    single_cls: bool = False  # every prediction and truth as class 0 of one class (one name); NMS across classes
    plot_dir: Optional[Path] = None  # PR/F1/P/R curves, confusion matrix and the first batch drawn here (None: none)
    half: bool = False  # fp16 images (the caller converts the model); CUDA only, ignored on CPU
    warmup: bool = False  # the first batch of each shape is timed apart from the rest (val.py; train.py does not time)
    progress: bool = True  # a tqdm bar


STAGES = ("inference", "loss", "nms", "metrics")


class StageClock:
    """Wall time per stage of :func:`evaluate`, summed over batches, with the first batch of each input shape apart.

    With :attr:`EvalOptions.warmup` the first batch at each shape has its inference timed apart (``warmup_s``): that
    pass pays for one-time preparation (the fast path measuring its convs, oneDNN building primitives), which says
    nothing about the per-image speed. It is not run twice: the job takes no longer for being timed."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.warmup_s = 0.0
        self.first_pass_images = 0
        self.timed_images = 0  # images whose inference is in seconds["inference"]
        self._seen_shapes: set = set()

    def first_at(self, shape: tuple) -> bool:
        """True the first time ``shape`` is seen (and never again)."""
        new = shape not in self._seen_shapes
        self._seen_shapes.add(shape)
        return new

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start

    @contextlib.contextmanager
    def inference(self, images: int, first_pass: bool) -> Iterator[None]:
        """Time one batch's inference, into the per-image figure or (``first_pass``) into ``warmup_s``."""
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        if first_pass:
            self.warmup_s += elapsed
            self.first_pass_images += images
        else:
            self.seconds["inference"] += elapsed
            self.timed_images += images

    def per_image_ms(self, num_images: int) -> dict:
        """Per image: inference over the batches timed as such (over the first passes when there were only those,
        ``first_pass_only`` then True), the other stages over every image."""
        result = {name: 1000.0 * seconds / max(num_images, 1) for name, seconds in self.seconds.items()}
        only_first = self.timed_images == 0 and self.first_pass_images > 0
        timed_s, timed_n = ((self.warmup_s, self.first_pass_images) if only_first
                            else (self.seconds["inference"], self.timed_images))
        result["inference"] = 1000.0 * timed_s / max(timed_n, 1)
        result["first_pass_only"] = only_first
        return result


def evaluate(model: nn.Module, loader: Any, names: Sequence[str], device: Union[str, torch.device] = "cpu",
             options: EvalOptions = EvalOptions(), loss_fn: Optional[Callable] = None,
             records: Optional[list] = None) -> dict:
    """Run ``model`` over ``loader`` and compute detection metrics (and validation losses when ``loss_fn`` is given).

    Args:
        model: a Darknet-like module, already on ``device``; in eval mode it returns ``(B, N, 5 + C)`` decoded
            predictions, and with ``return_raw=True`` also the raw maps (needed only for ``loss_fn``). Its
            train/eval mode is restored afterwards.
        loader: iterable of ``(images, targets, paths, shapes)`` batches (CONTRACTS.md), un-augmented.
        names: class names; ``len(names)`` is the number of classes.
        device: where images go.
        options: NMS settings, single-class scoring, plots, warm-up and progress bar (:class:`EvalOptions`); with
            ``plot_dir`` also the first batch with its labels (``val_batch0_labels.jpg``) and its detections above
            PLOT_CONF (``val_batch0_pred.jpg``).
        loss_fn: ``YOLOLoss``-like ``(raw_maps, targets) -> (total, terms)``; its ``box obj noobj cls`` terms are
            averaged over batches into ``val_box`` ...; without it those are NaN.
        records: if a list is given, one dict per image is appended: ``path``, ``orig_shape`` ``(h, w)``,
            ``preds`` ``(n, 6)`` and ``truths`` ``(m, 5)`` in original pixels — exactly what was scored (val.py
            writes its COCO JSON files from these).

    Returns:
        ``precision, recall, mAP50, mAP50_95`` (floats), ``val_box val_obj val_noobj val_cls``, ``per_class``
        (list of dicts ``name, images, instances, precision, recall, mAP50, mAP50_95`` in class order),
        ``num_images``, ``num_instances``, ``confusion_matrix``, ``speed_ms`` (per image: ``inference``, ``loss``,
        ``nms``, ``metrics``), ``warmup_s``, ``plots`` (written paths) and ``details`` (the full
        :meth:`~yolov3.metrics.DetectionEvaluator.compute` dict).
    """
    device = torch.device(device)
    if loss_fn is not None and "return_raw" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"evaluate: loss_fn needs raw maps, but {type(model).__name__}.forward has no return_raw "
                         "argument (Darknet's forward(x, return_raw=True) returns (decoded, raw_maps) in eval mode)")
    if options.single_cls and len(names) != 1:
        raise ValueError(f"evaluate: single_cls scores every box as one class, but {len(names)} names were given")
    use_half = options.half and device.type != "cpu"
    scoring = _Scoring(len(names), options.single_cls, records)
    clock = StageClock()

    def forward(images: torch.Tensor) -> tuple:
        return model(images, return_raw=True) if loss_fn is not None else (model(images), None)

    was_training = model.training
    model.eval()
    try:
        bar = tqdm(loader, desc="val", unit="batch", disable=not options.progress, leave=False)
        with torch.inference_mode():
            for batch_index, batch in enumerate(bar):
                images, targets, paths, shapes = _check_batch(batch, batch_index)
                images = images.to(device, non_blocking=True)
                images = images.half() if use_half else images.float()
                targets = targets.to(device)
                first_pass = options.warmup and clock.first_at(tuple(images.shape))
                with clock.inference(len(images), first_pass):
                    decoded, raw_maps = forward(images)
                if loss_fn is not None:
                    with clock.stage("loss"):
                        scoring.add_losses(loss_fn([m.float() for m in raw_maps], targets)[1])
                with clock.stage("nms"):
                    detections = non_max_suppression(decoded.float(), options.conf_thres, options.iou_thres,
                                                     max_det=options.max_det, agnostic=options.single_cls)
                with clock.stage("metrics"):
                    targets = targets.float().cpu()
                    if options.single_cls:
                        targets[:, 1] = 0
                    if options.plot_dir is not None and batch_index == 0:
                        plot_first_batch(images, targets, detections, paths, names, Path(options.plot_dir),
                                         options.single_cls)
                    scoring.add_batch(detections, targets, paths, shapes, images.shape[-2:])
    finally:
        model.train(was_training)

    with clock.stage("metrics"):
        metrics = scoring.evaluator.compute()
    result = scoring.result(metrics, names)
    result["plots"] = plot_validation(metrics, names, options.plot_dir) if options.plot_dir is not None else []
    result["speed_ms"] = clock.per_image_ms(scoring.evaluator.num_images)
    result["warmup_s"] = clock.warmup_s
    return result


class _Scoring:
    """What :func:`evaluate` scores: every image's predictions against its truths in original pixels, and the
    validation losses; kept apart from the loop's timing."""

    def __init__(self, num_classes: int, single_cls: bool, records: Optional[list]) -> None:
        self.evaluator = DetectionEvaluator(num_classes)
        self.single_cls, self.records = single_cls, records
        self.loss_sums = dict.fromkeys(LOSS_TERMS, 0.0)
        self.loss_batches = 0
        self.image_id = 0

    def add_losses(self, terms: dict) -> None:
        for term in LOSS_TERMS:
            self.loss_sums[term] += float(terms[term])
        self.loss_batches += 1

    def add_batch(self, detections: Sequence[torch.Tensor], targets: torch.Tensor, paths: Sequence[str],
                  shapes: Sequence[tuple], net_size: Sequence[int]) -> None:
        """Map the batch's detections and targets (network pixels / normalised) back through each image's letterbox
        and score them."""
        height, width = net_size
        # normalised cxcywh on the network input -> xyxy network pixels
        target_boxes_xyxy = cxcywh_to_xyxy(targets[:, 2:6] * torch.tensor([width, height, width, height]))
        for i, image_detections in enumerate(detections):
            orig_shape, ratio, pad = shapes[i]
            image_detections = image_detections.cpu()
            if self.single_cls:
                image_detections[:, 5] = 0
            in_image = targets[:, 0] == i
            truths = torch.cat(
                (targets[in_image, 1:2], scale_boxes(target_boxes_xyxy[in_image], ratio, pad, orig_shape)), 1
            )  # (m, 5) [class, x1, y1, x2, y2] original pixels
            preds = torch.cat(
                (scale_boxes(image_detections[:, :4], ratio, pad, orig_shape), image_detections[:, 4:]), 1
            )  # (n, 6) original pixels
            self.evaluator.update(preds, truths, self.image_id)
            if self.records is not None:
                self.records.append({"path": paths[i], "orig_shape": tuple(int(v) for v in orig_shape),
                                     "preds": preds.numpy(), "truths": truths.numpy()})
            self.image_id += 1

    def result(self, metrics: dict, names: Sequence[str]) -> dict:
        per_class = [
            {
                "name": names[c],
                "images": int(metrics["num_images_with_class"][c]),
                "instances": int(metrics["num_instances"][c]),
                "precision": float(metrics["precision_per_class"][c]),
                "recall": float(metrics["recall_per_class"][c]),
                "mAP50": float(metrics["ap50"][c]),
                "mAP50_95": float(metrics["ap50_95"][c]),
            }
            for c in range(len(names))
        ]
        result = {
            "precision": metrics["precision"],
            "recall": metrics["recall"],
            "mAP50": metrics["mAP50"],
            "mAP50_95": metrics["mAP50_95"],
            "per_class": per_class,
            "num_images": self.evaluator.num_images,
            "num_instances": int(metrics["num_instances"].sum()),
            "confusion_matrix": metrics["confusion_matrix"],
            "details": metrics,
        }
        for term in LOSS_TERMS:
            result[f"val_{term}"] = (self.loss_sums[term] / self.loss_batches if self.loss_batches
                                     else float("nan"))
        return result


def plot_first_batch(images: torch.Tensor, targets: torch.Tensor, detections: Sequence[torch.Tensor],
                     paths: Sequence[str], names: Sequence[str], save_dir: Path, single_cls: bool = False) -> None:
    """``val_batch0_labels.jpg`` (the batch's ground truth) and ``val_batch0_pred.jpg`` (its detections above
    PLOT_CONF, with scores) beside each other in ``save_dir``; boxes in network pixels, as the model saw them."""
    height, width = images.shape[-2:]
    rows = []
    for i, image_detections in enumerate(detections):  # (n, 6) xyxy network pixels, score, class
        kept = image_detections[image_detections[:, 4] >= PLOT_CONF].float().cpu()
        boxes = xyxy_to_cxcywh(kept[:, :4]) / torch.tensor([width, height, width, height])
        classes = torch.zeros_like(kept[:, 5:6]) if single_cls else kept[:, 5:6]
        rows.append(torch.cat((torch.full_like(kept[:, :1], i), classes, boxes, kept[:, 4:5]), 1))
    plot_batch(images.float().cpu(), targets, paths, names, save_dir / "val_batch0_labels.jpg")
    plot_batch(images.float().cpu(), torch.cat(rows) if rows else torch.zeros(0, 7), paths, names,
               save_dir / "val_batch0_pred.jpg")


def format_table(result: dict) -> str:
    """The per-class table of :func:`evaluate`'s result (val.py prints it, and train.py at the end of training):
    a row for all classes, then one per class: images, instances, P, R, mAP@.5, mAP@.5:.95."""
    header = f"{'class':>16} {'images':>8} {'instances':>10} {'P':>8} {'R':>8} {'mAP@.5':>8} {'mAP@.5:.95':>11}"
    rows = [header]
    total = {"name": "all", "images": result["num_images"], "instances": result["num_instances"],
             "precision": result["precision"], "recall": result["recall"], "mAP50": result["mAP50"],
             "mAP50_95": result["mAP50_95"]}
    for row in [total] + result["per_class"]:
        cells = [f"{v:8.3f}" if not math.isnan(v) else f"{'-':>8}"
                 for v in (row["precision"], row["recall"], row["mAP50"])]
        last = f"{row['mAP50_95']:11.3f}" if not math.isnan(row["mAP50_95"]) else f"{'-':>11}"
        rows.append(f"{row['name']:>16} {row['images']:8d} {row['instances']:10d} {' '.join(cells)} {last}")
    return "\n".join(rows)


@torch.no_grad()
def objectness_samples(model: nn.Module, loader: Any, loss_cfg: Any, device: Union[str, torch.device] = "cpu",
                       seed: int = 0, max_negatives: int = 20_000) -> dict:
    """The final model's objectness over ``loader``, for loss-distribution plots that compare arms fairly.

    Returns float32 numpy arrays: ``pos`` / ``neg``, the per-element losses of the configured objectness function
    (positives with their target, negatives with target 0), and ``pos_logit`` / ``neg_logit``, the logits of the
    same cells, so that every arm's model can be scored with one common function (Lin et al. 2017, Fig. 4).
    Negatives are subsampled uniformly (seeded) to ``max_negatives``, the same ones in both arrays (aligned element
    by element); the positives are all kept, in a different order in the two arrays. 20,000 negatives put a tail
    quantile of 1e-3 on 20 cells and keep a run's committed record small (the studies before 2026-12-06 kept 250,000).
    """
    recording_cfg = dataclasses.replace(loss_cfg, record_elementwise=True)
    loss_fn = YOLOLoss.from_model(model, recording_cfg)
    was_training = model.training
    model.eval()
    pos_losses, neg_losses, pos_logits, neg_logits = [], [], [], []
    try:
        for images, targets, *_ in loader:
            _decoded, raw_maps = model(images.to(device), return_raw=True)
            raw_maps = [m.float() for m in raw_maps]
            _total, terms = loss_fn(raw_maps, targets.to(device), masks=True)
            pos_losses.append(terms["obj_elementwise"]["pos"].cpu())
            neg_losses.append(terms["obj_elementwise"]["neg"].cpu())
            # negatives in mask order, as the loss took them (so 'neg' and 'neg_logit' align element by element);
            # positives in mask order too, which is not the loss's (assignment) order: 'pos' and 'pos_logit' are the
            # same set of cells, for distributions, not pairs
            for raw, (positive, negative) in zip(raw_maps, terms["masks"]):
                pos_logits.append(raw[..., 4][positive].cpu())
                neg_logits.append(raw[..., 4][negative].cpu())
    finally:
        model.train(was_training)

    def joined(parts: list) -> np.ndarray:
        return torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros(0, np.float32)

    samples = {"pos": joined(pos_losses), "neg": joined(neg_losses), "pos_logit": joined(pos_logits),
               "neg_logit": joined(neg_logits)}
    if samples["neg"].size > max_negatives:
        keep = np.sort(np.random.default_rng(seed).choice(samples["neg"].size, size=max_negatives, replace=False))
        samples["neg"], samples["neg_logit"] = samples["neg"][keep], samples["neg_logit"][keep]
    return samples
