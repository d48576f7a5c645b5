"""Dataset statistics: the counts that explain a detection task, in particular its object : no-object imbalance.

    python -m yolov3.datastats --stats                       # the built-in dataset (generated on first use)
    python -m yolov3.datastats --data data/voc.yaml --stats --img-size 416

Works on any data YAML (through :func:`yolov3.data.load_data_yaml`, which generates the built-in dataset when the
YAML asks for it).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from yolov3.data_yaml import load_data_yaml
from yolov3.labels import scan_split
from yolov3.model import Darknet

SMALL_AREA_PX = 32 ** 2  # COCO's size buckets, applied to boxes at the network input size
MEDIUM_AREA_PX = 96 ** 2


def letterboxed_wh(labels: np.ndarray, shape_hw: Sequence[int], img_size: int) -> np.ndarray:
    """``(n, 2)`` widths and heights in pixels of an image's ``(n, 5)`` normalised label rows once the image
    (``shape_hw``) is letterboxed so that its long side is ``img_size``, as training sees the boxes."""
    height, width = shape_hw
    gain = img_size / max(height, width)
    return np.stack([labels[:, 3] * width * gain, labels[:, 4] * height * gain], axis=1)


def dataset_statistics(data: Union[str, Path, dict], split: str = "train", img_size: int = 256,
                       strides: Sequence[int] = (8, 16, 32),
                       anchors_per_layer: Union[int, Sequence[int]] = 3) -> Dict[str, object]:
    """Counts that explain the task, in particular the object : no-object imbalance the focal loss is about.

    ``cells`` per image = ``sum over layers of A * (img_size / stride)^2`` (3 * (32² + 16² + 8²) = 4032 at 256 px);
    object cells ~= boxes (one positive anchor per truth), the rest are no-object cells.
    Box sizes are measured after letterboxing to ``img_size``. ``anchors_per_layer``: one count for every layer, or
    one per stride.
    """
    data_dict = load_data_yaml(data) if not isinstance(data, dict) else data
    entries = scan_split(data_dict, split)
    num_images = len(entries.paths)
    per_class = np.zeros(data_dict["nc"], dtype=np.int64)
    sizes = {"small": 0, "medium": 0, "large": 0}
    total_boxes = empty = 0
    for labels, (height, width) in zip(entries.labels, entries.shapes):
        if len(labels) == 0:
            empty += 1
            continue
        total_boxes += len(labels)
        per_class += np.bincount(labels[:, 0].astype(np.int64), minlength=data_dict["nc"])
        wh = letterboxed_wh(labels, (height, width), img_size)
        area_px = wh[:, 0] * wh[:, 1]
        sizes["small"] += int((area_px < SMALL_AREA_PX).sum())
        sizes["medium"] += int(((area_px >= SMALL_AREA_PX) & (area_px < MEDIUM_AREA_PX)).sum())
        sizes["large"] += int((area_px >= MEDIUM_AREA_PX).sum())
    anchors = [anchors_per_layer] * len(strides) if isinstance(anchors_per_layer, int) else list(anchors_per_layer)
    cells_per_image = sum(a * math.ceil(img_size / s) ** 2 for a, s in zip(anchors, strides))
    total_cells = cells_per_image * num_images
    return {
        "split": split,
        "images": num_images,
        "boxes": total_boxes,
        "boxes_per_image": total_boxes / max(num_images, 1),
        "per_class": {name: int(n) for name, n in zip(data_dict["names"], per_class)},
        "empty_images": empty,
        "sizes": sizes,
        "cells_per_image": cells_per_image,
        "object_cells": total_boxes,
        "noobject_cells": total_cells - total_boxes,
        "noobject_per_object": (total_cells - total_boxes) / max(total_boxes, 1),
    }


def model_statistics(data: Union[str, Path, dict], cfg: Union[str, Path], img_size: int,
                     split: str = "train") -> Dict[str, object]:
    """:func:`dataset_statistics` with the strides and anchors of the model ``cfg`` describes (read on the meta
    device: the layers' shapes, no weights), so the cells are the ones its loss sees."""
    data_dict = load_data_yaml(data) if not isinstance(data, dict) else data
    with torch.device("meta"):
        model = Darknet(str(cfg), num_classes=len(data_dict["names"]))
    return dataset_statistics(data_dict, split, img_size, model.strides, [len(layer.anchors) for layer in model.yolo_layers])


def format_statistics(stats: dict) -> str:
    """Human-readable lines for :func:`dataset_statistics`."""
    lines = [
        f"split {stats['split']}: {stats['images']} images, {stats['boxes']} boxes "
        f"({stats['boxes_per_image']:.2f} per image), {stats['empty_images']} empty images",
        "boxes per class: " + ", ".join(f"{k} {v}" for k, v in stats["per_class"].items()),
        "box sizes (COCO buckets at the input size): " + ", ".join(f"{k} {v}" for k, v in stats["sizes"].items()),
        f"cells per image (A * sum H*W): {stats['cells_per_image']}; object : no-object = 1 : "
        f"{stats['noobject_per_object']:.0f} ({stats['object_cells']} object, {stats['noobject_cells']} no-object)",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the built-in shapes dataset and print its statistics.")
    parser.add_argument("--data", default="data/shapes.yaml", help="dataset YAML (generated on first use)")
    parser.add_argument("--stats", action="store_true", help="print dataset statistics for every split")
    parser.add_argument("--img-size", type=int, default=256, help="network input size for the statistics")
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 16, 32], help="detection layer strides")
    parser.add_argument("--anchors-per-layer", type=int, default=3)
    args = parser.parse_args(argv)
    data = load_data_yaml(args.data)  # generates when the YAML has a generate: block
    if args.stats:
        for split in ("train", "val"):
            if data.get(split):
                print(format_statistics(dataset_statistics(data, split, args.img_size, args.strides,
                                                           args.anchors_per_layer)))


if __name__ == "__main__":
    main()
