"""How well a model's anchors fit your boxes, and anchors fitted to them (k-means on 1 - IoU).

    python -m yolov3.anchors --data datasets/mine/data.yaml --cfg cfg/yolov3-tiny.cfg --img-size 416
    python -m yolov3.anchors --data datasets/mine/data.yaml --cfg cfg/yolov3-tiny.cfg --img-size 416 --write mine.cfg

Each training box gets its best anchor by shape IoU (box and anchor sharing a centre), as the loss assigns it;
a box far from every anchor is learnt through a large exp(t_w), exp(t_h) stretch. The fit is the mean of those best
IoUs and the share of boxes below POOR_IOU. The proposed anchors are k-means clusters of the boxes' (w, h) with the
distance 1 - IoU (YOLO9000, Redmon & Farhadi 2017, "dimension clusters"), as many as the cfg has, sorted by area so
the cfg's masks keep giving the small ones to the fine strides. ``--write`` saves a copy of the cfg with only the
``anchors =`` lines changed: anchors are not weights, so COCO weights load into it as into the original (when the
classes are new, the heads start new either way). Boxes are measured as training sees them: letterboxed so the long
side of the image is ``--img-size``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from yolov3.boxes import shape_iou
from yolov3.cfgparse import CfgError, parse_cfg
from yolov3.data_yaml import DataError, load_data_yaml
from yolov3.datastats import letterboxed_wh
from yolov3.files import atomic_write_text
from yolov3.labels import scan_split
from yolov3.paths import resolve_path

POOR_IOU = 0.25  # a box whose best anchor overlaps it less than this is 4x off in area (or worse in shape)
ANCHORS_LINE = re.compile(r"^(\s*anchors\s*=\s*)(.*)$")


class AnchorError(ValueError):
    """A problem with the boxes or the cfg; the message names what and where."""


def box_sizes(data: Union[str, Path, dict], split: str, img_size: int) -> np.ndarray:
    """``(n, 2)`` width and height in pixels of every labelled box of ``split``, letterboxed to ``img_size``."""
    data_dict = load_data_yaml(data) if not isinstance(data, dict) else data
    entries = scan_split(data_dict, split)
    sizes = []
    for labels, shape_hw in zip(entries.labels, entries.shapes):
        if len(labels):
            sizes.append(letterboxed_wh(labels, shape_hw, img_size))
    return np.concatenate(sizes).astype(np.float64) if sizes else np.zeros((0, 2))


def best_iou(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(n,)`` shape IoU of each box with its best anchor, and ``(n,)`` that anchor's index."""
    iou = shape_iou(torch.as_tensor(sizes, dtype=torch.float64), torch.as_tensor(anchors, dtype=torch.float64))
    best, index = iou.max(dim=1)
    return best.numpy(), index.numpy()


def anchor_fit(sizes: np.ndarray, anchors: np.ndarray) -> Dict[str, object]:
    """Mean best IoU, the share of boxes under POOR_IOU, and how many boxes each anchor is best for."""
    best, index = best_iou(sizes, anchors)
    return {"mean_best_iou": float(best.mean()), "poor_share": float((best < POOR_IOU).mean()),
            "boxes_per_anchor": np.bincount(index, minlength=len(anchors)).tolist()}


def kmeans_anchors(sizes: np.ndarray, k: int, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """``(k, 2)`` anchors sorted by area: k-means over the boxes' (w, h) with distance 1 - shape IoU, started
    k-means++-style from a seeded generator (each next centre drawn with probability proportional to the square of
    its distance to the nearest chosen one; Arthur & Vassilvitskii 2007), each centre then moved to the median of
    its boxes until no box changes cluster. The median keeps a few huge boxes from dragging a centre; boxes that
    are all alike are refused rather than given k copies."""
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise AnchorError("box widths and heights must be finite and > 0")
    distinct = np.unique(np.round(sizes, 6), axis=0)
    if len(distinct) < k:
        raise AnchorError(f"{len(sizes)} boxes with {len(distinct)} distinct sizes cannot give {k} anchors")
    rng = np.random.default_rng(seed)
    centres = [distinct[rng.integers(len(distinct))]]
    for _ in range(1, k):
        weight = (1 - best_iou(distinct, np.array(centres))[0]) ** 2
        centres.append(distinct[rng.choice(len(distinct), p=weight / weight.sum())])
    centres = np.array(centres)
    assignment = None
    for _ in range(iterations):
        _, nearest = best_iou(sizes, centres)
        if assignment is not None and np.array_equal(nearest, assignment):
            break
        assignment = nearest
        for cluster in range(k):
            members = sizes[nearest == cluster]
            if len(members):  # an emptied cluster keeps its centre
                centres[cluster] = np.median(members, axis=0)
    return centres[np.argsort(centres.prod(axis=1), kind="stable")]


def cfg_anchors(cfg: Union[str, Path]) -> Tuple[np.ndarray, bool]:
    """The anchors the loss picks from — each ``[yolo]`` layer's ``anchors[mask]``, ``(k, 2)`` sorted by area —
    and whether ``--write`` can replace them: every layer lists the same anchors and the masks use each once
    (then writing the fitted anchors sorted by area keeps the cfg's small-to-fine-stride layout)."""
    layers = [block for block in parse_cfg(cfg).layers if block.type == "yolo"]  # never empty: parse_cfg checks
    used = [np.array(b.options["anchors"], dtype=np.float64).reshape(-1, 2)[b.options["mask"]] for b in layers]
    listed = layers[0].options["anchors"]
    writable = all(b.options["anchors"] == listed for b in layers) and \
        sorted(i for b in layers for i in b.options["mask"]) == list(range(len(listed) // 2))
    used = np.concatenate(used)
    return used[np.argsort(used.prod(axis=1), kind="stable")], writable


def cfg_with_anchors(text: str, anchors: np.ndarray, source: str = "<cfg>") -> str:
    """The cfg text with every ``anchors =`` line listing ``anchors`` (whole pixels, as Darknet writes them); every
    other line is kept as it is, line endings included."""
    values = ",  ".join(f"{int(w)},{int(h)}" for w, h in whole_pixels(anchors))
    lines, changed = [], 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = ANCHORS_LINE.match(body)
        if match:
            changed += 1
            line = f"{match.group(1)}{values}{line[len(body):]}"
        lines.append(line)
    if not changed:
        raise AnchorError(f"{source}: no 'anchors =' line to replace")
    return "".join(lines)


def whole_pixels(anchors: np.ndarray) -> np.ndarray:
    """Anchors as a cfg holds them: rounded to whole pixels, at least 1."""
    return np.maximum(np.round(anchors), 1)


def format_fit(name: str, anchors: np.ndarray, fit: Dict[str, object]) -> str:
    pairs = "  ".join(f"{w:.0f},{h:.0f}" for w, h in anchors)
    return (f"{name}: {pairs}\n  mean best IoU {fit['mean_best_iou']:.3f}; boxes whose best anchor IoU < {POOR_IOU}: "
            f"{100 * fit['poor_share']:.1f} %; boxes per anchor {fit['boxes_per_anchor']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data YAML whose boxes the anchors should fit")
    parser.add_argument("--cfg", default="cfg/yolov3-tiny.cfg", help="model cfg: its anchors are scored and "
                        "--write copies it (default: %(default)s)")
    parser.add_argument("--img-size", type=int, default=416, help="training input size (default: %(default)s)")
    parser.add_argument("--split", default="train", help="the split whose boxes are used (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (default: %(default)s)")
    parser.add_argument("--write", metavar="NEW.cfg", help="write the cfg with the fitted anchors here")
    args = parser.parse_args(argv)
    try:
        if args.img_size < 32:
            raise AnchorError(f"--img-size must be at least 32, got {args.img_size}")
        cfg_path = resolve_path(args.cfg)
        if not cfg_path.is_file():
            raise AnchorError(f"--cfg {args.cfg}: file not found")
        text = cfg_path.read_bytes().decode("utf-8")  # bytes: a cfg saved with CRLF is copied with CRLF
        current, writable = cfg_anchors(cfg_path)
        if args.write and not writable:
            raise AnchorError(f"--write: {cfg_path} gives its [yolo] layers different anchors lists, or masks that "
                              "do not use each anchor once; fit them by hand (the scores above need no --write)")
        sizes = box_sizes(args.data, args.split, args.img_size)
        if len(sizes) == 0:
            raise AnchorError(f"{args.data}: split '{args.split}' has no labelled box")
        fitted = whole_pixels(kmeans_anchors(sizes, len(current), seed=args.seed))
        print(f"{len(sizes)} boxes of {args.data} ({args.split}) at {args.img_size} px, median "
              f"{np.median(sizes[:, 0]):.0f} x {np.median(sizes[:, 1]):.0f} px")
        print(format_fit(f"anchors of {args.cfg} (as its masks use them)", current, anchor_fit(sizes, current)))
        print(format_fit("fitted (k-means, 1 - IoU)", fitted, anchor_fit(sizes, fitted)))
        if args.write:
            out = Path(args.write)
            if out.exists() and out.resolve() == cfg_path.resolve():
                raise AnchorError(f"--write {out}: that is the cfg being read; give a new file name")
            new_text = cfg_with_anchors(text, fitted, str(cfg_path))
            parse_cfg(new_text)  # the copy must load as the original does, checked before anything is written
            atomic_write_text(out, new_text)
            print(f"wrote {out}: train with --cfg {out} (the COCO weights load into it as into {args.cfg})")
    except (AnchorError, CfgError, DataError, OSError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
