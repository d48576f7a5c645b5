#!/usr/bin/env python
"""Detect objects in images, folders, globs, .txt lists, videos, webcams and streams.

    python detect.py --weights runs/train/exp/best.pt --source path/to/images/
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

from yolov3.cli import CommandParser, sleep_idle_omp_threads

sleep_idle_omp_threads()  # before torch loads OpenMP

import argparse
import glob
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

import yaml

from yolov3.boxes import yolo_label_rows
from yolov3.config import MAX_IMG_SIZE, ConfigError
from yolov3.data import IMAGE_SUFFIXES, load_data_yaml, read_image
from yolov3.detector import Detector, default_names
from yolov3.draw import draw_boxes, write_image
from yolov3.errors import user_errors
from yolov3.model import default_img_size, load_model, prepare_for_inference
from yolov3.postprocess import check_inference_args
from yolov3.precision import bf16_inference_note
from yolov3.runs import find_weights
from yolov3.threads import parse_threads
from yolov3.utils import atomic_write_text, increment_path, select_device
from yolov3.weights import WeightsError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".asf", ".ts"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
JSON_FLUSH_S = 30.0  # rewrite detections.json at least this often: a killed run (not just Ctrl-C) loses little,
# and a long video does not spend its time re-serialising a growing list after every frame
FRAME_TAG = re.compile(r"^(.*)_(\d+)$")  # "<video stem>_<frame>": the names a video's frames take


class SourceError(ValueError):
    """A --source that cannot be used (missing path, unknown extension, empty folder)."""


@dataclass
class Source:
    kind: str  # "image", "video" or "stream"
    location: str  # a path, a webcam index or a URL


def resolve_sources(source: str) -> tuple[list, list]:
    """Expand --source into a list of Source items, plus warnings for files that were skipped."""
    warnings = []
    source = str(source).strip()
    if source.isdigit():
        return [Source("stream", source)], warnings
    if source.lower().startswith(STREAM_PREFIXES):
        suffix = Path(source.split("?")[0]).suffix.lower()
        return [Source("image" if suffix in IMAGE_SUFFIXES else "stream", source)], warnings
    if any(ch in source for ch in "*?["):
        paths = sorted(glob.glob(source, recursive=True))
        if not paths:
            raise SourceError(f"--source {source}: the pattern matched no file")
    else:
        path = Path(source)
        if not path.exists():
            raise SourceError(f"--source {source}: no such file or folder")
        if path.is_dir():
            paths = sorted(str(p) for p in path.iterdir() if p.is_file())
        elif path.suffix.lower() == ".txt":
            # surrogateescape: a listed name that is not UTF-8 (Linux allows any bytes) still names its file
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
            paths = [str((path.parent / ln) if not Path(ln).is_absolute() and not Path(ln).exists() else ln)
                     for ln in lines]
            missing = [p for p in paths if not Path(p).exists()]
            warnings += [f"{source}: listed file not found: {p}" for p in missing]
            paths = [p for p in paths if p not in missing]
        else:
            paths = [str(path)]
    items = []
    for p in paths:
        suffix = Path(p).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            items.append(Source("image", p))
        elif suffix in VIDEO_SUFFIXES:
            items.append(Source("video", p))
        elif len(paths) == 1:
            raise SourceError(f"--source {p}: unknown extension '{suffix}' (images: "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}; videos: {', '.join(sorted(VIDEO_SUFFIXES))})")
        else:
            warnings.append(f"skipped {p}: unknown extension '{suffix}'")
    if not items:
        raise SourceError(f"--source {source}: no image or video found")
    return items, warnings


def display(path: str | Path) -> str:
    """A path as text that can be printed and stored in JSON or YAML.

    Linux file names are bytes; Python decodes the bytes that are not UTF-8 to lone surrogates, which a strict
    stdout, JSON readers and YAML cannot take. Those bytes are shown as ``\\xNN`` escapes instead; any other name is
    returned unchanged.
    """
    text = os.fspath(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def opencv_can_open(path: str | Path) -> bool:
    """OpenCV's video reader and writer take a path as UTF-8 and crash (segfault) on one that is not."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def natural_stem(item: Source, index: int) -> str:
    """The name an input's outputs take when no other input claims it: the file's stem, or stream<index>."""
    return f"stream{index}" if item.kind == "stream" else Path(item.location).stem


def output_stems(items: list) -> list:
    """One output stem per input, in input order, so that no two inputs write the same file.

    An input keeps its stem unless an earlier one took it; then it gets ``<stem>_2``, ``<stem>_3``... skipping every
    stem some input has of its own, so a later ``x_2.jpg`` still keeps its name. Stems compare case-folded (x.jpg and
    X.JPG would overwrite each other on macOS and Windows). An image and a video may share a stem (x.jpg, x.mp4,
    labels/x.txt vs labels/x_<frame>.txt); but a video's frames are named ``<stem>_<frame>``, so an image stem of
    that form beside that video is taken too, and an image renamed next to a video of its stem becomes
    ``<stem>-<n>`` (every ``<stem>_<n>`` is one of that video's frames).
    """
    natural = [natural_stem(item, index) for index, item in enumerate(items, 1)]
    own_stems = {stem.casefold() for stem in natural}
    image_stems, video_stems = set(), set()  # claimed so far, case-folded
    frame_like = set()  # <p> of every claimed image stem <p>_<digits>: a video stem <p> would reuse its names

    def is_frame_name(key: str) -> bool:
        match = FRAME_TAG.match(key)
        return match is not None and match.group(1) in video_stems

    def is_taken(key: str, is_video: bool, renamed: bool) -> bool:
        if renamed and key in own_stems:
            return True
        if is_video:
            return key in video_stems or key in frame_like
        return key in image_stems or is_frame_name(key)

    stems = []
    for item, stem in zip(items, natural):
        is_video = item.kind != "image"
        candidate, n = stem, 1
        while is_taken(candidate.casefold(), is_video, n > 1):
            n += 1
            candidate = f"{stem}_{n}"
            if not is_video and is_frame_name(candidate.casefold()):
                candidate = f"{stem}-{n}"
        key = candidate.casefold()
        if is_video:
            video_stems.add(key)
        else:
            image_stems.add(key)
            match = FRAME_TAG.match(key)
            if match is not None:
                frame_like.add(match.group(1))
        stems.append(candidate)
    return stems


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
    return names


def save_image(path: Path, image_bgr: np.ndarray) -> bool:
    """:func:`yolov3.draw.write_image`; False (after a warning) when OpenCV cannot encode the suffix."""
    try:
        write_image(path, image_bgr)
    except ValueError:
        print(f"warning: {display(path)}: OpenCV cannot encode '{path.suffix}' images, not saved", file=sys.stderr)
        return False
    return True


class Writer:
    """Everything detect.py saves for one run folder, which it creates on first use (a run that cannot process
    any input leaves no folder behind)."""

    def __init__(self, run_dir: Path, args, names: list, config: dict):
        self.run_dir, self.args, self.names, self.config = run_dir, args, names, config
        self.save_dir: Optional[Path] = None
        self.json_entries = []  # one per image or frame, in processing order
        self.json_written_at = time.monotonic()

    def open(self) -> Path:
        """The run folder, created (with config.yaml) on the first call."""
        if self.save_dir is None:
            save_dir = increment_path(self.run_dir, exist_ok=self.args.exist_ok)
            save_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(save_dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
            self.save_dir = save_dir
        return self.save_dir

    def txt_rows(self, detections: torch.Tensor, shape: tuple) -> str:
        height, width = shape
        return yolo_label_rows(detections, width, height, with_score=self.args.save_conf)

    def record(self, detections: torch.Tensor, image_bgr: np.ndarray, tag: str, source: str,
               frame: Optional[int], annotated: Optional[str]) -> None:
        """Save txt rows and crops of one image or frame (before drawing on it) and keep its JSON entry.

        ``tag`` names its outputs (unique in the run); ``annotated`` is the annotated image or video it goes to,
        relative to the run folder (None when not saved).
        """
        save_dir = self.open()
        rows = detections.tolist()
        labels = None
        if self.args.save_txt:
            labels = f"labels/{tag}.txt"
            atomic_write_text(save_dir / labels, self.txt_rows(detections, image_bgr.shape[:2]))
        crops = [None] * len(rows)
        if self.args.save_crop:
            per_class = Counter()
            for k, (x1, y1, x2, y2, _score, cls) in enumerate(rows):
                crop = image_bgr[max(int(y1), 0):max(int(y2), 0), max(int(x1), 0):max(int(x2), 0)]
                if crop.size:
                    name = self.names[int(cls)]
                    per_class[name] += 1
                    relative = f"crops/{name}/{tag}_{per_class[name]}.jpg"
                    crops[k] = relative if save_image(save_dir / relative, crop) else None
        if self.args.save_json:
            found = [{"class_id": int(cls), "class": self.names[int(cls)], "score": round(score, 5),
                      "bbox_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)],
                      "crop": display(crop) if crop else None}
                     for (x1, y1, x2, y2, score, cls), crop in zip(rows, crops)]
            self.json_entries.append({"source": display(source), "frame": frame,
                                      "outputs": {"annotated": display(annotated) if annotated else None,
                                                  "labels": display(labels) if labels else None},
                                      "detections": found})
            if time.monotonic() - self.json_written_at > JSON_FLUSH_S:
                self.write_json()

    def write_json(self) -> None:
        # atomic: an interrupted write leaves the previous complete file, never half of one
        atomic_write_text(self.save_dir / "detections.json", json.dumps(self.json_entries, indent=1))
        self.json_written_at = time.monotonic()

    def close(self) -> None:
        if self.args.save_json and self.save_dir is not None:
            self.write_json()


def describe(detections: torch.Tensor, names: list) -> str:
    if not len(detections):
        return "no detections"
    counts = Counter(int(c) for c in detections[:, 5].tolist())
    return ", ".join(f"{n} {names[c]}" for c, n in sorted(counts.items()))


def annotate(image_bgr: np.ndarray, detections: torch.Tensor, names: list, args) -> np.ndarray:
    draw_boxes(image_bgr, detections[:, :4].numpy(), detections[:, 5].numpy().astype(int),
               scores=detections[:, 4].numpy(), names=names, line_thickness=args.line_thickness,
               hide_labels=args.hide_labels, hide_conf=args.hide_conf)
    return image_bgr


def show(window: str, image_bgr: np.ndarray, state: dict) -> None:
    """--view-img: show a frame if a display is available; warn once otherwise."""
    if state.get("disabled"):
        return
    try:
        cv2.imshow(window, image_bgr)
        cv2.waitKey(1)
    except cv2.error:
        state["disabled"] = True
        print("warning: --view-img: no display available, not showing results", file=sys.stderr)


def image_suffix(location: str) -> str:
    """The image's suffix as written (x.JPG stays .JPG), without a URL's query string."""
    path = location.split("?")[0] if location.lower().startswith(STREAM_PREFIXES) else location
    return Path(path).suffix


def run_image(item: Source, index: int, total: int, tag: str, detector: Detector, writer: Writer, args,
              view: dict) -> int:
    shown = display(item.location)
    image = read_image(item.location)
    if image is None:
        print(f"warning: image {index}/{total} {shown}: cannot be read, skipped", file=sys.stderr)
        return 0
    warmed = detector.warmup_s
    detections, net_shape, ms = detector(image)
    warmed = detector.warmup_s - warmed  # > 0: first image at this input size, run once untimed before timing
    annotated = None if args.nosave else f"{tag}{image_suffix(item.location)}"
    writer.record(detections, image, tag, item.location, None, annotated)
    annotate(image, detections, writer.names, args)
    if annotated is not None and not save_image(writer.save_dir / annotated, image):
        annotated = None
    if args.view_img:
        show(shown, image, view)
    renamed = f" -> {display(annotated)}" if annotated and annotated != Path(item.location).name else ""
    print(f"image {index}/{total} {shown}: {net_shape[0]}x{net_shape[1]} "
          f"{describe(detections, writer.names)}, {ms[0]:.1f}ms pre, {ms[1]:.1f}ms inference, {ms[2]:.1f}ms NMS"
          + (f" (after a {warmed * 1000:.0f}ms warm-up at this size, not included)" if warmed else "") + renamed)
    return 1


def run_video(item: Source, index: int, total: int, tag: str, detector: Detector, writer: Writer, args,
              view: dict) -> int:
    """Read frames until the video ends (or breaks off, for a truncated file); returns frames processed.

    Ctrl-C closes the annotated video (keeping the frames written) and is raised again to stop the run.
    """
    shown = display(item.location)
    if not opencv_can_open(item.location):
        print(f"warning: {item.kind} {index}/{total} {shown}: OpenCV cannot open a file whose name is not UTF-8; "
              f"rename it to process it, skipped", file=sys.stderr)
        return 0
    capture = cv2.VideoCapture(int(item.location) if item.location.isdigit() else item.location)
    if not capture.isOpened():
        print(f"warning: {item.kind} {index}/{total} {shown}: cannot be opened, skipped", file=sys.stderr)
        return 0
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 0 < fps < 1000 else 30.0
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if item.kind == "video" else 0
    annotated = None if args.nosave else f"{tag}.mp4"
    out_path = None  # known once the first frame is read and the run folder exists
    video_writer = None
    frames = 0
    counts = Counter()
    bar = tqdm(total=frame_count or None, desc=f"{item.kind} {index}/{total} {shown}", unit="frame",
               dynamic_ncols=True)
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            if out_path is None:
                out_path = writer.open() / f"{tag}.mp4"
                if annotated is not None and not opencv_can_open(out_path):
                    print(f"warning: {display(out_path)}: OpenCV cannot write a video whose path is not UTF-8; "
                          f"not saving the annotated video", file=sys.stderr)
                    annotated = None
            detections, _net_shape, _ms = detector(frame)
            writer.record(detections, frame, f"{tag}_{frames}", item.location, frames, annotated)
            counts.update(writer.names[int(c)] for c in detections[:, 5].tolist())
            annotate(frame, detections, writer.names, args)
            if annotated is not None:
                if video_writer is None:
                    height, width = frame.shape[:2]
                    video_writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                   (width, height))
                video_writer.write(frame)
            if args.view_img:
                show(shown, frame, view)
            frames += 1
            bar.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: keeping the {frames} frames of {shown} written so far", file=sys.stderr)
        raise
    finally:
        bar.close()
        capture.release()
        if video_writer is not None:
            video_writer.release()
    if frame_count and frames < frame_count:
        print(f"warning: {shown}: stopped after {frames} of {frame_count} frames (truncated or unreadable); "
              f"kept what was written", file=sys.stderr)
    found = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "no detections"
    print(f"{item.kind} {index}/{total} {shown}: {frames} frames, {found}"
          + (f" -> {display(out_path)}" if frames and annotated is not None else ""))
    return frames


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
    parser.add_argument("--no-optimize", action="store_true",
                        help="run the plain fused channels_last model instead of optimize_for_inference()'s "
                             "Winograd/oneDNN convs (those are timed per conv at the first image and kept only "
                             "where faster on this machine)")
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


def load_detector(weights: str, cfg: Optional[str], names_arg: Optional[str], device,
                  data_names: Optional[list] = None) -> tuple:
    """load_model, with a Darknet model's heads built for the --names (else --data) count: a .weights file does not
    record its class count, so the cfg's (often COCO's 80) would not fit weights trained on other classes. A .pt
    knows its own; names that disagree with it are reported by load_names."""
    weights = find_weights(weights)  # a run folder: its best.pt
    if not (names_arg or data_names) or weights.suffix == ".pt":
        return load_model(weights, cfg=cfg, device=device)
    num_classes = len(read_names_file(names_arg)) if names_arg else len(data_names)
    try:
        return load_model(weights, cfg=cfg, num_classes=num_classes, device=device)
    except WeightsError as error:
        try:  # do the weights fit the cfg's own class count? then --names is what is wrong
            model, _ = load_model(weights, cfg=cfg, device=device)
        except WeightsError:
            raise error from None
        raise SourceError(f"--names: {num_classes} names for a model with {model.num_classes} classes") from None


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    data_names = load_data_yaml(args.data)["names"] if args.data else None  # builds a dataset that fetches itself
    items, warnings = resolve_sources(args.source)
    for warning in warnings:
        print(f"warning: {display(warning)}", file=sys.stderr)
    tags = output_stems(items)
    device = select_device(args.device)
    model, ckpt = load_detector(args.weights, args.cfg, args.names, device, data_names)
    prepare_for_inference(model, optimize=not args.no_optimize, bf16=args.bf16)
    if args.bf16:
        print(bf16_inference_note(device))
    names = load_names(args.names, ckpt, model.num_classes, data_names)
    img_size = args.img_size if args.img_size is not None else default_img_size(model, ckpt)
    check_inference_args(args.conf_thres, args.iou_thres, args.max_det, img_size, model.max_stride)
    bad_classes = [c for c in args.classes or [] if not 0 <= c < model.num_classes]
    if bad_classes:
        raise SourceError(f"--classes {bad_classes}: the model has classes 0..{model.num_classes - 1}")
    config = {key: display(value) if isinstance(value, str) else value for key, value in vars(args).items()}
    writer = Writer(Path(args.project) / args.name, args, names, {**config, "img_size": img_size})
    detector = Detector(model, device, img_size, args.conf_thres, args.iou_thres, args.max_det, args.classes,
                        args.agnostic_nms, names, threads=args.threads)
    if device.type == "cpu":
        print(detector.governor.describe())
    view = {}
    processed = 0
    interrupted = False
    try:
        for index, (item, tag) in enumerate(zip(items, tags), 1):
            runner = run_image if item.kind == "image" else run_video
            processed += runner(item, index, len(items), tag, detector, writer, args, view)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.close()  # detections.json of everything processed, also after Ctrl-C or an error
    if detector.count:
        per = detector.times / detector.count * 1000
        sizes = len(detector.warmup_shapes)
        print(f"speed: {per[0]:.1f}ms pre-processing, {per[1]:.1f}ms inference, {per[2]:.1f}ms NMS per image "
              f"(max side {img_size}); {detector.count} images/frames; not included: one untimed warm-up pass at "
              f"each of {sizes} input size{'s' * (sizes != 1)} ({detector.warmup_s:.2f}s of one-time preparation)")
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
    sys.exit(main())
