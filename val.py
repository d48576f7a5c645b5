#!/usr/bin/env python
"""Validate a detector on a dataset split: per-class table, summary line, metrics.json, plots.

    python val.py --data data/shapes.yaml --weights runs/train/exp
    python val.py --data data/coco.yaml --weights weights/yolov3.weights --cfg cfg/yolov3.cfg --img-size 416 \\
                  --save-json          # predictions.json + annotations.json, readable by pycocotools' COCOeval
    python val.py --data my.yaml --weights best.pt --save-txt --save-conf --single-cls

--save-json uses COCO's ids, so the official instances_val2017.json scores predictions.json too: image ids from
numeric file names (000000397133.jpg -> 397133; else the images are numbered 1, 2, ... in split order), category
ids 1..90 for a model of the 80 COCO classes. For data converted by `python -m yolov3.convert coco`, the ids of
its coco_ids.json (the original JSON's) instead.

Metrics: COCO 101-point AP at IoU .50:.05:.95 (mAP@.5 and mAP@.5:.95), precision and recall at the best-F1
confidence. This is the same evaluation code that train.py runs after every epoch.
"""
from __future__ import annotations

import gc

from yolov3.cli import CommandParser, sleep_idle_omp_threads

# the imports below make ~10^5 objects that live for the whole run: collecting garbage among them while importing
# is wasted start-up time (~0.15 s of ~1.5), and once frozen no later collection walks them again
gc.disable()
sleep_idle_omp_threads()  # before torch loads OpenMP

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from yolov3.boxes import yolo_label_rows
from yolov3.coco_ids import COCO80_TO_91, find_ids_record, is_coco_classes, numeric_image_ids, read_ids_record
from yolov3.config import MAX_IMG_SIZE, ConfigError
from yolov3.data import create_dataloader, label_path_for, load_data_yaml
from yolov3.errors import user_errors
from yolov3.evaluate import EvalOptions, evaluate, format_table  # format_table: the per-class table
from yolov3.fastconv import add_fast_path_flags, use_prep_cache_for_job
from yolov3.memory import keep_freed_memory
from yolov3.metrics import to_coco_json
from yolov3.model import default_img_size, load_for_inference, prepare_for_inference
from yolov3.postprocess import check_inference_args
from yolov3.precision import bf16_inference_note
from yolov3.sources import Source, output_stems
from yolov3.threads import ThreadGovernor, parse_threads
from yolov3.utils import atomic_write_text, increment_path, select_device

gc.freeze()
gc.enable()

SINGLE_CLASS_NAME = "object"  # the one class of --single-cls


class ValError(ValueError):
    """A validation set-up that cannot work (class count mismatch, missing split)."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__)  # defaults in --help; foreign flags get their nearest
    parser.add_argument("--data", required=True, help="dataset YAML")
    parser.add_argument("--weights", required=True, help="a .pt from train.py (or its run folder: its "
                                                          "weights/best.pt), or a Darknet .weights with --cfg")
    parser.add_argument("--cfg", help="Darknet cfg (needed with .weights)")
    parser.add_argument("--img-size", type=int, default=None, help="letterbox size (default: the training size "
                                                                    "stored in a .pt, else the cfg's width)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--conf-thres", type=float, default=0.001, help="low: the PR curve needs the low-score tail")
    parser.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--task", default="val", choices=["val", "test"], help="which split of the data YAML")
    parser.add_argument("--save-json", action="store_true",
                        help="write predictions.json (COCO results, COCO's image and category ids) and "
                             "annotations.json (the ground truth as a COCO dataset, same ids)")
    parser.add_argument("--save-txt", action="store_true",
                        help="the detections of each image as YOLO rows (class cx cy w h, normalised to the "
                             "original image) in labels/<image stem>.txt")
    parser.add_argument("--save-conf", action="store_true", help="add the score to each --save-txt row")
    parser.add_argument("--single-cls", action="store_true",
                        help="score boxes only: every prediction and label counts as one class 'object' (NMS "
                             "across classes); the model's and the data's class counts need not match")
    parser.add_argument("--device", default="", help="'' (auto), cpu, 0 or cuda:0")
    add_fast_path_flags(parser)  # --no-optimize, --prep-cache
    parser.add_argument("--bf16", action="store_true",
                        help="run the network in bfloat16 autocast (plain fused channels_last model, boxes decoded "
                             "in float32): faster only on CPUs with native bf16 (AVX512_BF16/AMX) or a GPU")
    parser.add_argument("--threads", type=parse_threads, default="auto",
                        help="CPU threads: 'auto' uses the cores other processes leave idle when val.py starts, "
                             "so a busy machine slows it in proportion to its load; or a number")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--project", default="runs/val")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")
    return parser.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    """The flags that need no model or data, checked before loading either; one ConfigError naming the flag."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise ConfigError(f"--workers must be 0 (load in this process) or more, got {args.workers}")
    if args.save_conf and not args.save_txt:
        raise ConfigError("--save-conf adds the score to --save-txt rows: give --save-txt too")
    if args.img_size is not None and args.img_size > MAX_IMG_SIZE:
        raise ConfigError(f"--img-size must be at most {MAX_IMG_SIZE} (a positive multiple of the model's stride), "
                          f"got {args.img_size}")


def run(args: argparse.Namespace) -> dict:
    check_flags(args)
    data = load_data_yaml(args.data)
    if not data.get(args.task):
        raise ValError(f"--task {args.task}: {args.data} has no '{args.task}' split")
    device = select_device(args.device)
    # a Darknet .weights file's heads are built for the data's class count; when the weights fit only the cfg's own,
    # that model comes back and the mismatch is reported below
    model, ckpt = load_for_inference(args.weights, args.cfg, len(data["names"]), device)
    names = data["names"]
    if args.single_cls:  # boxes only: the model's classes may differ from the data's in number and meaning
        names = [SINGLE_CLASS_NAME]
    elif model.num_classes != len(data["names"]):
        raise ValError(f"{args.weights} predicts {model.num_classes} classes but {args.data} has nc "
                       f"{len(data['names'])}: use the data YAML the model was trained on, or retrain")
    elif ckpt and ckpt.get("names") and list(ckpt["names"]) != list(data["names"]):
        raise ValError(f"{args.weights} was trained with classes {list(ckpt['names'])} but {args.data} names "
                       f"{list(data['names'])}: same count, different classes or order")
    img_size = args.img_size if args.img_size is not None else default_img_size(model, ckpt)
    check_inference_args(args.conf_thres, args.iou_thres, args.max_det, img_size, model.max_stride)
    loader, _dataset = create_dataloader(data, args.task, img_size, args.batch_size, None, args.workers, seed=0,
                                         shuffle=False, device=device)
    if not (args.no_optimize or args.bf16):
        use_prep_cache_for_job(args.prep_cache, len(loader))
    # the number of batches tells the fast path whether measuring its convs can pay for itself
    prepare_for_inference(model, optimize=not args.no_optimize, bf16=args.bf16, expected_calls=len(loader))
    if args.bf16:
        print(bf16_inference_note(device))
    if device.type == "cpu":
        print(ThreadGovernor(args.threads).describe())
    save_dir = increment_path(Path(args.project) / args.name, exist_ok=args.exist_ok)
    created = not save_dir.exists()
    save_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(save_dir / "config.yaml", yaml.safe_dump({**vars(args), "img_size": img_size},
                                                                sort_keys=False))
    records = [] if args.save_json or args.save_txt else None
    try:
        options = EvalOptions(args.conf_thres, args.iou_thres, args.max_det, single_cls=args.single_cls,
                              plot_dir=save_dir, warmup=True)
        result = evaluate(model, loader, names, device, options, records=records)
    except BaseException:  # an error or Ctrl-C mid-evaluation: no run folder holding nothing but its config
        if created and [p.name for p in save_dir.iterdir()] == ["config.yaml"]:
            shutil.rmtree(save_dir)
        raise
    print(format_table(result))
    speed = result["speed_ms"]
    first = ("every batch was the first of its shape, so inference includes one-time preparation"
             if speed["first_pass_only"] else
             f"inference without the first batch of each shape ({result['warmup_s']:.2f} s, one-time preparation "
             f"included)")
    print(f"speed per image: {speed['inference']:.1f} ms inference, {speed['nms']:.1f} ms NMS, "
          f"{speed['metrics']:.1f} ms metrics at {img_size}; {first}")
    summary = {k: result[k] for k in ("precision", "recall", "mAP50", "mAP50_95", "num_images", "num_instances")}
    summary.update({"per_class": result["per_class"], "weights": str(args.weights), "data": str(args.data),
                    "task": args.task, "img_size": img_size, "conf_thres": args.conf_thres,
                    "iou_thres": args.iou_thres, "max_det": args.max_det})
    atomic_write_text(save_dir / "metrics.json", json.dumps(summary, indent=2, default=_json_default))
    if args.save_txt:
        for record, stem in zip(records, output_stems([Source("image", r["path"]) for r in records])):
            atomic_write_text(save_dir / "labels" / f"{stem}.txt", txt_rows(record, args.save_conf))
        print(f"labels: {len(records)} files in {save_dir / 'labels'}")
    if args.save_json:
        image_ids, category_ids, how = coco_ids(records, names, single_cls=args.single_cls)
        to_coco_json([r["preds"] for r in records], [r["truths"] for r in records],
                     image_ids=image_ids, image_sizes=[r["orig_shape"] for r in records], names=names,
                     pred_json=save_dir / "predictions.json", gt_json=save_dir / "annotations.json",
                     file_names=[Path(r["path"]).name for r in records], category_ids=category_ids)
        print(f"COCO files: {save_dir / 'predictions.json'}, {save_dir / 'annotations.json'} ({how})")
    print(f"{args.task}: {result['num_images']} images, {result['num_instances']} instances: "
          f"P {result['precision']:.3f} R {result['recall']:.3f} mAP@.5 {result['mAP50']:.3f} "
          f"mAP@.5:.95 {result['mAP50_95']:.3f}; results in {save_dir}")
    return summary


def coco_ids(records: list, names: list, single_cls: bool = False) -> tuple:
    """(image id per record, category id per class or None for class + 1, how they were chosen).

    The converter's coco_ids.json (beside the labels) when it knows every image; else numeric file stems when
    every stem is one; else 1, 2, ... in split order. Categories: the record's, COCO's 1..90 for the 80 COCO
    classes, else class + 1 (and 1 with --single-cls).
    """
    paths = [r["path"] for r in records]
    record_path = find_ids_record(label_path_for(paths[0])) if paths else None
    if record_path is not None:
        record = read_ids_record(record_path)
        folder = record_path.parent.resolve()
        labels = [Path(label_path_for(p)).resolve() for p in paths]
        keys = [label.relative_to(folder).with_suffix("").as_posix() if label.is_relative_to(folder) else None
                for label in labels]
        if all(key in record["image_ids"] for key in keys):
            categories = None if single_cls else record["category_ids"]
            if categories is not None and len(categories) != len(names):
                raise ValError(f"{record_path}: {len(categories)} category ids for {len(names)} classes")
            return ([int(record["image_ids"][key]) for key in keys], categories,
                    f"image and category ids from {record_path}")
        print(f"warning: {record_path} does not list every image; numbering them instead", file=sys.stderr)
    image_ids = numeric_image_ids(paths)
    how = "image ids from the file names" if image_ids else "images numbered 1, 2, ... in split order"
    image_ids = image_ids or list(range(1, len(paths) + 1))
    if not single_cls and is_coco_classes(names):
        return image_ids, COCO80_TO_91, how + ", COCO category ids 1..90"
    return image_ids, None, how + ", category id = class + 1"


def txt_rows(record: dict, save_conf: bool) -> str:
    """An image's detections as YOLO label rows normalised to the original image (``--save-txt``)."""
    height, width = record["orig_shape"]
    return yolo_label_rows(record["preds"], width, height, with_score=save_conf)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (ValError, *user_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no metrics written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # the command's own process only: each batch reuses the same memory (yolov3/memory.py)
    sys.exit(main())
