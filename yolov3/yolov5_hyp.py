"""A yolov5 ``hyp.*.yaml`` (also ultralytics' yolov3) read as our config: ``--hyp`` takes either kind of file.

    python train.py --hyp hyp.scratch-low.yaml      # yolov5's file: lr0, momentum, hsv_h, mosaic, box, obj, ...

A file is taken for a yolov5 one by its keys: a flat mapping with yolov5's names (``lr0``, ``hsv_h``, ``box``...)
and none of our sections. Each key maps onto the config field that means the same (:data:`SAME_MEANING`); the
loss gains and ``fl_gamma`` map onto what comes nearest and say how it differs (the notes returned); a key with no
equivalent here is an error naming it, unless it holds the value that switches it off (:data:`NEUTRAL`), which is
what we do anyway. Our own hyp files (nested, or dotted keys) go through :func:`yolov3.config.load_config`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Union

from yolov3 import config as config_lib
from yolov3.config import Config, ConfigError

SAME_MEANING = {
    "lr0": "train.lr0", "lrf": "train.lrf", "momentum": "train.momentum", "weight_decay": "train.weight_decay",
    "warmup_epochs": "train.warmup_epochs", "warmup_momentum": "train.warmup_momentum",
    "warmup_bias_lr": "train.warmup_bias_lr", "hsv_h": "augment.hsv_h", "hsv_s": "augment.hsv_s",
    "hsv_v": "augment.hsv_v", "degrees": "augment.degrees", "translate": "augment.translate",
    "scale": "augment.scale", "shear": "augment.shear", "fliplr": "augment.fliplr", "mosaic": "augment.mosaic",
}
# yolov5's loss gains -> our term weights; its objectness BCE covers object and no-object cells alike
GAINS = {"box": ("loss.lambda_box",), "obj": ("loss.lambda_obj", "loss.lambda_noobj"), "cls": ("loss.lambda_cls",)}
FOCAL_ALPHA = 0.25  # yolov5's FocalLoss(alpha=0.25), which fl_gamma > 0 wraps around both its class and objectness BCE
# keys with no equivalent here, accepted at the value that turns them off (what we do anyway), else an error
NEUTRAL = {"fl_gamma": 0.0, "cls_pw": 1.0, "obj_pw": 1.0, "mixup": 0.0, "copy_paste": 0.0, "flipud": 0.0,
           "perspective": 0.0}
NO_EQUIVALENT = {
    "anchor_t": "yolov5's anchor-to-box ratio for positives; here each truth's positive is darknet's best anchor "
                "(loss.extra_positive_iou adds others above a shape IoU)",
    "iou_t": "an IoU threshold for positives; here loss.extra_positive_iou",
    "anchors": "anchors per output layer; here the cfg's [yolo] anchors and masks",
    "cls_pw": "a positive weight in the class BCE; nearest: loss.lambda_cls or loss.cls.alpha (focal)",
    "obj_pw": "a positive weight in the objectness BCE; nearest: loss.lambda_obj (object cells only)",
    "mixup": "no mixup augmentation here",
    "copy_paste": "no copy-paste augmentation here (it needs segment labels)",
    "flipud": "no vertical flip here (augment.fliplr flips left-right)",
    "perspective": "no perspective warp here (augment.degrees, translate, scale, shear)",
}
# target-assignment keys that every stock yolov5 hyp file carries: at yolov5's own values they are ignored with a
# warning (a stock file then trains as the rest of it says); a changed value is refused, since it would do nothing
STOCK_ASSIGNMENT = {"anchor_t": 4.0, "iou_t": 0.2, "anchors": 3}
YOLOV5_KEYS = set(SAME_MEANING) | set(GAINS) | set(NEUTRAL) | set(NO_EQUIVALENT)


def is_yolov5_hyp(data: Any) -> bool:
    """A mapping with a yolov5 hyperparameter name among its top-level keys (none of them is a key of ours)."""
    return isinstance(data, dict) and any(key in YOLOV5_KEYS for key in data)


def translate(data: dict, source: str, base: Optional[Config] = None) -> tuple[Config, list]:
    """``(config, notes)`` for a yolov5 hyp mapping on top of ``base``; a ConfigError names every key that has no
    equivalent (with what it does there and the nearest thing here) or that is neither yolov5's nor ours."""
    ours = {f.name for f in dataclasses.fields(Config)}
    mixed = sorted(key for key in data if key in ours)
    if mixed:
        raise ConfigError(f"{source}: yolov5 hyperparameters mixed with sections of ours ({', '.join(mixed)}); "
                          "write the file in one style")
    unknown = sorted(str(key) for key in data if key not in YOLOV5_KEYS)
    if unknown:
        raise ConfigError(f"{source}: read as a yolov5 hyp file, but {', '.join(unknown)} "
                          f"{'is' if len(unknown) == 1 else 'are'} neither yolov5's nor a key of ours (yolov5 keys "
                          f"known here: {', '.join(sorted(YOLOV5_KEYS))})")
    ignored = [key for key, value in data.items() if key in STOCK_ASSIGNMENT and value == STOCK_ASSIGNMENT[key]]
    refused = [key for key, value in data.items()
               if key in NO_EQUIVALENT and not _is_neutral(key, value) and key not in ignored]
    if refused:
        off = [f"{key}: {NEUTRAL[key]}" for key in refused if key in NEUTRAL]
        raise ConfigError(f"{source}: yolov5 keys with no equivalent here: " +
                          "; ".join(f"{key}: {data[key]!r} ({NO_EQUIVALENT[key]})" for key in refused) +
                          ". Delete " + ("them" if len(refused) > 1 else "it") +
                          (f" (or set {', '.join(off)}, which turns {'them' if len(off) > 1 else 'it'} off)"
                           if off else "") + " to use the rest of the file")
    cfg = base if base is not None else Config()
    updates = [(SAME_MEANING[key], key, value) for key, value in data.items() if key in SAME_MEANING]
    updates += [(target, key, value) for key, value in data.items() if key in GAINS for target in GAINS[key]]
    notes = [f"{source}: read as a yolov5 hyp file: " +
             ", ".join(f"{key} -> {target}" for target, key, _ in updates)]
    if ignored:
        notes.append(f"warning: {source}: {', '.join(f'{k}: {data[k]}' for k in ignored)} ignored (yolov5's stock "
                     "value): positives here are darknet's best anchor per truth, with the cfg's [yolo] anchors "
                     "(loss.extra_positive_iou adds others above a shape IoU)")
    gains = [key for key in data if key in GAINS]
    if gains:
        notes.append(f"warning: {source}: {', '.join(gains)} set the term weights loss.lambda_* (obj: lambda_obj and "
                     "lambda_noobj), but yolov5's gains multiply losses of another scale (its box term is 1 - CIoU "
                     "averaged over positives, its objectness BCE a mean over all cells balanced per layer, times "
                     "the batch size), while ours are sums over the batch divided by loss.normalizer; the same gain "
                     "weighs a term differently here (set loss.lambda_*=1 to keep ours)")
    gamma = data.get("fl_gamma", 0.0)
    if not _is_neutral("fl_gamma", gamma):
        for section in ("objectness", "cls"):
            updates += [(f"loss.{section}.name", "fl_gamma", "focal"), (f"loss.{section}.gamma", "fl_gamma", gamma),
                        (f"loss.{section}.alpha", "fl_gamma", FOCAL_ALPHA)]
        notes.append(f"warning: {source}: fl_gamma {gamma}: focal loss with gamma {gamma} and alpha {FOCAL_ALPHA} "
                     "on objectness AND class, as yolov5 applies it (loss.objectness.* and loss.cls.*; to study "
                     "focal objectness alone, set loss.cls.name=bce)")
    for target, key, value in updates:
        cfg = config_lib.merge_dict(cfg, config_lib.nest(target.split("."), value), f"{source}: {key}")
    return cfg, notes


def _is_neutral(key: str, value: Any) -> bool:
    if key not in NEUTRAL:
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == NEUTRAL[key]


def load_hyp(path: Union[str, Path], base: Optional[Config] = None) -> tuple[Config, list]:
    """``--hyp``: ``(config, notes)`` from a hyp YAML of ours (overrides only) or of yolov5 (translated)."""
    data = config_lib.read_yaml(path) or {}
    if is_yolov5_hyp(data):
        return translate(data, str(path), base)
    return config_lib.from_dict(data, source=str(path), base=base), []
