#!/usr/bin/env python
"""Detect objects in images, folders, globs, .txt lists, videos, webcams and streams.

    python detect.py --weights runs/train/exp --source path/to/images/
    python detect.py --weights weights/yolov3.weights --cfg cfg/yolov3.cfg --source video.mp4 --save-txt
    python detect.py --weights best.pt --source 0                       # webcam 0
    python detect.py --weights best.pt --source rtsp://host/stream --view-img

Outputs go to runs/detect/<name>/ (created once the first input is read): annotated images and videos (same fps and
size as the source), and on request YOLO txt rows (labels/), crops (crops/<class>/) and detections.json, one entry
per image or frame naming its source and its output files. Each input's outputs share one name: its stem, or
<stem>_2, <stem>_3... when inputs share a stem (a/x.jpg and b/x.jpg, x.jpg and x.png).
The exit status is non-zero only when nothing could be processed; Ctrl-C stops the run with status 130, keeping
everything written so far (detections.json included).
"""
from __future__ import annotations

import gc

from yolov3.cli import CommandParser, sleep_idle_omp_threads

# the imports below make ~10^5 objects that live for the whole run: collecting garbage among them while importing
# is wasted start-up time (~0.15 s of ~1.5), and once frozen no later collection walks them again
gc.disable()
sleep_idle_omp_threads()  # before torch loads OpenMP

import argparse
import sys
from pathlib import Path
from typing import Optional

from yolov3.config import MAX_IMG_SIZE, ConfigError
from yolov3.detect_outputs import DETECT_BATCH, DrawStyle, SaveOptions, Viewer, Writer, run_inputs
from yolov3.detector import Detector, default_names
from yolov3.errors import user_errors
from yolov3.fastconv import add_fast_path_flags, use_prep_cache_for_job
from yolov3.memory import keep_freed_memory
from yolov3.model import default_img_size, load_for_inference, prepare_for_inference
from yolov3.postprocess import check_inference_args
from yolov3.precision import bf16_inference_note
from yolov3.sources import SourceError, display, output_stems, resolve_sources
from yolov3.threads import parse_threads
from yolov3.utils import select_device

gc.freeze()
gc.enable()


def read_names_file(names_arg: str) -> list:
    """The class names in a --names file, one per line."""
    path = Path(names_arg)
    if not path.is_file():
        raise SourceError(f"--names {display(names_arg)}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"--names {display(names_arg)}: not UTF-8 text (expected one class name per line)") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def load_names(names_arg: Optional[str], ckpt: Optional[dict], num_classes: int,
               data_names: Optional[list] = None) -> list:
    """Class names: a --names file, else --data's, else the checkpoint's, COCO's for an 80-class model, else
    class0, class1..."""
    flag = "--names" if names_arg else "--data"
    names = read_names_file(names_arg) if names_arg else data_names or default_names(num_classes, ckpt)
    if len(names) != num_classes:
        raise SourceError(f"{flag}: {len(names)} names for a model with {num_classes} classes")
    trained = [str(name) for name in (ckpt or {}).get("names") or []]
    if (names_arg or data_names) and trained and list(names) != trained:
        # renaming for display is allowed; a different order would put every box under another class's name
        print(f"warning: {flag} names {list(names)} differ from the classes the model was trained with {trained}; "
              f"the boxes are labelled with {flag}'s", file=sys.stderr)
    return names


def check_inputs_outside(run_dir: Path, items: list, exist_ok: bool) -> None:
    """With --exist-ok the outputs go into an existing folder, where an input of the same name would be
    overwritten by its own annotated copy."""
    if not exist_ok or not run_dir.is_dir():
        return  # without it the run gets a new folder (exp2, exp3, ...): nothing there can be an input
    folder = run_dir.resolve()
    inside = [item.location for item in items if item.kind != "stream"
              and Path(item.location).resolve().is_relative_to(folder)]
    if inside:
        raise SourceError(f"--exist-ok: the run folder {display(str(run_dir))} holds inputs of this run (e.g. "
                          f"{display(inside[0])}), which their outputs could overwrite; choose another "
                          "--project/--name")


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__)  # defaults in --help; foreign flags get their nearest
    parser.add_argument("--weights", required=True, help="a .pt from train.py (or its run folder: its "
                                                          "weights/best.pt), or a Darknet .weights with --cfg")
    parser.add_argument("--cfg", help="Darknet cfg (needed with .weights)")
    parser.add_argument("--names", help="class names, one per line (default: from the .pt, or COCO for 80 classes)")
    parser.add_argument("--data", help="a data YAML: its class names; a dataset with a download: mapping is built "
                                       "first when missing (so --source can be one of its image folders)")
    parser.add_argument("--source", required=True, help="image, folder, glob, .txt list, video, webcam index or URL")
    parser.add_argument("--img-size", type=int, default=None, help="inference size (default: the training size "
                                                                    "for a .pt, else the cfg's width)")
    parser.add_argument("--conf-thres", type=float, default=0.25)
    parser.add_argument("--iou-thres", type=float, default=0.45)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--classes", type=int, nargs="+", help="keep only these class indices")
    parser.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    parser.add_argument("--device", default="", help="'' (auto), cpu, 0 or cuda:0")
    add_fast_path_flags(parser)  # --no-optimize, --prep-cache
    parser.add_argument("--bf16", action="store_true",
                        help="run the network in bfloat16 autocast (plain fused channels_last model, boxes decoded "
                             "in float32): faster only on CPUs with native bf16 (AVX512_BF16/AMX) or a GPU; "
                             "scores move by up to a few hundredths")
    parser.add_argument("--threads", type=parse_threads, default="auto",
                        help="CPU threads: 'auto' uses the cores other processes leave idle, re-measured about once "
                             "a second, so a busy machine slows detection in proportion to its load; or a number")
    parser.add_argument("--view-img", action="store_true", help="show results in a window")
    parser.add_argument("--save-txt", action="store_true", help="YOLO rows per image/frame in labels/")
    parser.add_argument("--save-conf", action="store_true", help="add the score to --save-txt rows")
    parser.add_argument("--save-json", action="store_true", help="all detections in detections.json")
    parser.add_argument("--save-crop", action="store_true", help="crops of each detection in crops/<class>/")
    parser.add_argument("--nosave", action="store_true", help="do not save annotated images/videos")
    parser.add_argument("--project", default="runs/detect")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")
    parser.add_argument("--line-thickness", type=int, default=None,
                        help="box line width in px; the label font follows it (default: 0.003 x the mean image "
                             "side, at least 1: 2 px at 640x480, 3 px at 1280x720)")
    parser.add_argument("--hide-labels", action="store_true")
    parser.add_argument("--hide-conf", action="store_true")
    return parser.parse_args(argv)


def check_flags(args: argparse.Namespace) -> None:
    """The flags that need no model, checked before loading one; one ConfigError naming the flag."""
    if args.line_thickness is not None and args.line_thickness < 1:
        raise ConfigError(f"--line-thickness must be at least 1 (pixels), got {args.line_thickness}")
    if args.img_size is not None and args.img_size > MAX_IMG_SIZE:
        raise ConfigError(f"--img-size must be at most {MAX_IMG_SIZE} (a positive multiple of the model's stride), "
                          f"got {args.img_size}")


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    data_names = None
    if args.data:  # imported here: the data modules (datasets, downloads, archives) are start-up time otherwise
        from yolov3.data_yaml import load_data_yaml

        data_names = load_data_yaml(args.data)["names"]  # builds a dataset that fetches itself
    items, warnings = resolve_sources(args.source)
    for warning in warnings:
        print(f"warning: {display(warning)}", file=sys.stderr)
    tags = output_stems(items)
    check_inputs_outside(Path(args.project) / args.name, items, args.exist_ok)
    device = select_device(args.device)
    # a Darknet .weights file's heads are built for the --names (else --data) count; a .pt knows its own
    given_names = read_names_file(args.names) if args.names else data_names
    model, ckpt = load_for_inference(args.weights, args.cfg, len(given_names) if given_names else None, device)
    # how many forward passes are coming tells the fast path whether measuring its convs can pay (videos: unknown)
    calls = -(-len(items) // DETECT_BATCH) if all(item.kind == "image" for item in items) else None
    if not (args.no_optimize or args.bf16):
        use_prep_cache_for_job(args.prep_cache, calls)
    prepare_for_inference(model, optimize=not args.no_optimize, bf16=args.bf16, expected_calls=calls)
    if args.bf16:
        print(bf16_inference_note(device))
    names = load_names(args.names, ckpt, model.num_classes, data_names)
    img_size = args.img_size if args.img_size is not None else default_img_size(model, ckpt)
    check_inference_args(args.conf_thres, args.iou_thres, args.max_det, img_size, model.max_stride)
    bad_classes = [c for c in args.classes or [] if not 0 <= c < model.num_classes]
    if bad_classes:
        raise SourceError(f"--classes {bad_classes}: the model has classes 0..{model.num_classes - 1}")
    config = {key: display(value) if isinstance(value, str) else value for key, value in vars(args).items()}
    save = SaveOptions(annotated=not args.nosave, txt=args.save_txt, conf=args.save_conf, crop=args.save_crop,
                       json=args.save_json)
    writer = Writer(Path(args.project) / args.name, names, {**config, "img_size": img_size}, save, args.exist_ok)
    style = DrawStyle(args.line_thickness, args.hide_labels, args.hide_conf)
    viewer = Viewer() if args.view_img else None
    detector = Detector(model, device, img_size, args.conf_thres, args.iou_thres, args.max_det, args.classes,
                        args.agnostic_nms, names, threads=args.threads)
    if device.type == "cpu":
        print(detector.governor.describe())
    processed = 0
    interrupted = False
    try:
        processed = run_inputs(items, tags, detector, writer, style, viewer)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.close()  # detections.json of everything processed, also after Ctrl-C or an error
    if detector.count:
        per = detector.times / detector.count * 1000
        # a batch of another size is another input to the model: its first pass pays one-time preparation too
        print(f"speed: {per[0]:.1f}ms pre-processing, {per[1]:.1f}ms inference, {per[2]:.1f}ms NMS per image "
              f"(max side {img_size}); {detector.count} images/frames timed; not included: {detector.first_passes} "
              f"in the first pass at each input size and batch size ({detector.warmup_s:.2f}s inference, one-time "
              f"preparation included)")
        if detector.governor.changes:
            print(detector.governor.describe())
    saved = f"results saved to {display(writer.save_dir)}" if writer.save_dir is not None else "nothing saved"
    if interrupted:
        print(f"interrupted: {saved}", file=sys.stderr)
        return 130
    print(saved if processed else "nothing could be processed")
    return 0 if processed else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (SourceError, *user_errors()) as exc:
        print(f"error: {display(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any input was processed (while loading the model)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    keep_freed_memory()  # the command's own process only: each batch reuses the same memory (yolov3/memory.py)
    sys.exit(main())
