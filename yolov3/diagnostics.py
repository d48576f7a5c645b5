"""Training diagnostics: does the no-object term swamp the object term, and is gradient clipping active?

Every run records, per recorded step (each step of the first epoch, then every ``train.diagnostics_every`` steps)
in ``diagnostics.csv`` and as epoch means in ``results.csv``:

* ``grad_norm``: the total gradient norm before clipping, at each optimiser step, and ``clipped``: whether clipping
  rescaled it (``train.grad_clip``; the epoch value is the fraction of clipped optimiser steps);
* ``grad_pos`` / ``grad_neg``: sum of |dL/dx| over the objectness logits x of the positive cells and of the
  negative cells (ignored cells get zero gradient), and ``neg_grad_share = grad_neg / (grad_pos + grad_neg)`` — the
  direct measure of swamping: how much of the objectness gradient the no-object cells supply;
* ``p_pos_mean``: mean predicted objectness on positives; ``p_neg_q999``: the 99.9th percentile of predicted
  objectness over negatives; ``neg_over_half``: negatives per image with p > 0.5 (false-positive candidates).

This module knows tensors only; train.py feeds it the loss's masks and the raw maps' gradients.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from yolov3.runs import DIAGNOSTIC_EPOCH_COLUMNS, csv_text

OBJ_CHANNEL = 4  # tx ty tw th obj cls...: the objectness logit's index in the last dimension of a raw map

STEP_COLUMNS = ("epoch", "iteration", "lr", "obj", "noobj", "num_pos", "num_neg", "grad_norm", "clipped",
                "grad_pos", "grad_neg", "neg_grad_share", "p_pos_mean", "p_neg_q999", "neg_over_half")
EPOCH_COLUMNS = DIAGNOSTIC_EPOCH_COLUMNS  # the epoch means written into results.csv (yolov3.runs)


def objectness_statistics(raw_maps: Sequence[Tensor], masks: Sequence[Tuple[Tensor, Tensor]],
                          batch_size: int) -> Dict[str, float]:
    """``p_pos_mean``, ``p_neg_q999``, ``neg_over_half`` (per image) and, when the maps hold gradients (after
    ``backward`` with ``retain_grad``), ``grad_pos``, ``grad_neg``, ``neg_grad_share``.

    Args:
        raw_maps: per layer ``(B, A, H, W, 5+C)`` logits (the tensors given to the loss).
        masks: per layer ``(positive, negative)`` boolean ``(B, A, H, W)`` maps (``YOLOLoss(..., masks=True)``).
        batch_size: images in the batch (``neg_over_half`` is per image).
    """
    if len(raw_maps) != len(masks):
        raise ValueError(f"objectness_statistics: {len(raw_maps)} maps but {len(masks)} mask pairs")
    pos_logits, neg_logits = [], []
    grad_pos = grad_neg = 0.0
    has_grad = all(m.grad is not None for m in raw_maps)
    with torch.no_grad():
        sums = []
        for raw, (positive, negative) in zip(raw_maps, masks):
            logits = raw[..., OBJ_CHANNEL].float()
            pos_logits.append(logits[positive])
            neg_logits.append(logits[negative])
            if has_grad:
                grad = raw.grad[..., OBJ_CHANNEL].float().abs()
                sums.append(torch.stack((grad[positive].sum(), grad[negative].sum())))
        if has_grad:
            grad_pos, grad_neg = torch.stack(sums).sum(0).tolist()
        pos = torch.cat(pos_logits)
        neg = torch.cat(neg_logits)
        stats = {
            "p_pos_mean": float(torch.sigmoid(pos).mean()) if pos.numel() else math.nan,
            "p_neg_q999": float(torch.sigmoid(upper_quantile(neg, 0.999))) if neg.numel() else math.nan,
            "neg_over_half": float((neg > 0).sum()) / max(batch_size, 1),  # p > 0.5 <=> logit > 0
        }
    if has_grad:
        total = grad_pos + grad_neg
        stats.update(grad_pos=grad_pos, grad_neg=grad_neg, neg_grad_share=grad_neg / total if total > 0 else math.nan)
    return stats


def upper_quantile(values: Tensor, q: float) -> Tensor:
    """The ``q`` quantile of a 1-d tensor as its ``ceil(q n)``-th smallest element (no interpolation; kthvalue works
    on any size, where ``torch.quantile`` refuses more than 16M elements)."""
    if values.ndim != 1 or values.numel() == 0 or not 0 < q <= 1:
        raise ValueError(f"upper_quantile: need a non-empty 1-d tensor and 0 < q <= 1, got {tuple(values.shape)}, {q}")
    k = min(values.numel(), max(1, math.ceil(q * values.numel())))
    return values.kthvalue(k).values


class DiagnosticsRecorder:
    """Collects the per-step rows and the epoch means; its state goes into last.pt so a resumed run continues it.

    ``every``: after the first epoch, record every ``every``-th step (0: the first epoch only).
    """

    def __init__(self, every: int, max_norm: Optional[float]) -> None:
        if every < 0:
            raise ValueError(f"DiagnosticsRecorder: every must be >= 0, got {every}")
        self.every = int(every)
        self.max_norm = max_norm
        self.rows: List[dict] = []
        self._epoch = self._empty_epoch()

    @staticmethod
    def _empty_epoch() -> dict:
        return {"norms": [], "clipped": 0, "steps": []}

    def wants(self, epoch: int, iteration: int) -> bool:
        """Whether step ``iteration`` (global, 0-based) of ``epoch`` (0-based) is recorded."""
        return epoch == 0 or (self.every > 0 and iteration % self.every == 0)

    def optimizer_step(self, grad_norm: float, max_norm: Optional[float] = None) -> bool:
        """Note one optimiser step's pre-clipping norm; returns whether clipping rescaled the gradient.

        ``max_norm``: the clip in force at this step (default: the recorder's; ``math.inf`` when clipping is off)."""
        max_norm = self.max_norm if max_norm is None else max_norm
        clipped = max_norm is not None and grad_norm > max_norm
        self._epoch["norms"].append(float(grad_norm))
        self._epoch["clipped"] += int(clipped)
        return clipped

    def record(self, epoch: int, iteration: int, lr: float, terms: dict, stats: Dict[str, float],
               grad_norm: Optional[float], clipped: Optional[bool]) -> dict:
        """One row of diagnostics.csv (``grad_norm``/``clipped`` blank when the step did not step the optimiser)."""
        row = {"epoch": epoch + 1, "iteration": iteration, "lr": float(lr), "obj": float(terms["obj"]),
               "noobj": float(terms["noobj"]), "num_pos": int(terms["num_pos"]), "num_neg": int(terms["num_neg"]),
               "grad_norm": math.nan if grad_norm is None else float(grad_norm),
               "clipped": "" if clipped is None else int(clipped),
               **{key: float(stats.get(key, math.nan)) for key in ("grad_pos", "grad_neg", "neg_grad_share",
                                                                    "p_pos_mean", "p_neg_q999", "neg_over_half")}}
        self.rows.append(row)
        self._epoch["steps"].append(row)
        return row

    def end_epoch(self) -> Dict[str, float]:
        """The epoch means for results.csv (NaN where nothing was recorded); starts the next epoch."""
        epoch, self._epoch = self._epoch, self._empty_epoch()
        norms = epoch["norms"]
        means = {"grad_norm": sum(norms) / len(norms) if norms else math.nan,
                 "clipped_fraction": epoch["clipped"] / len(norms) if norms else math.nan}
        for key in ("neg_grad_share", "p_pos_mean", "p_neg_q999", "neg_over_half"):
            values = [row[key] for row in epoch["steps"] if not math.isnan(row[key])]
            means[key] = sum(values) / len(values) if values else math.nan
        return means

    def state_dict(self) -> dict:
        return {"every": self.every, "rows": [dict(r) for r in self.rows],
                "epoch": {"norms": list(self._epoch["norms"]), "clipped": self._epoch["clipped"],
                          "steps": len(self._epoch["steps"])}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(r) for r in state["rows"]]
        open_steps = state["epoch"]["steps"]
        self._epoch = {"norms": list(state["epoch"]["norms"]), "clipped": int(state["epoch"]["clipped"]),
                       "steps": self.rows[len(self.rows) - open_steps:] if open_steps else []}

    def csv_text(self) -> str:
        return csv_text(self.rows, STEP_COLUMNS)
