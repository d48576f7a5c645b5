#!/usr/bin/env python
"""Detect objects in images, folders, globs, .txt lists, videos, webcams and streams.

    python detect.py --weights runs/train/exp/best.pt --source path/to/images/
    python detect.py --weights weights/yolov3.weights --cfg cfg/yolov3.cfg --source video.mp4 --save-txt
    python detect.py --weights best.pt --source 0                       # webcam 0
    python detect.py --weights best.pt --source rtsp://host/stream --view-img

Outputs go to runs/detect/<name>/: annotated images and videos (same fps and size as the source), and on request
YOLO txt rows (labels/), one JSON of all detections, and crops (crops/<class>/).
The exit status is non-zero only when nothing could be processed.
"""
from __future__ import annotations

import argparse
import glob
import json
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

from yolov3.augment import letterbox
from yolov3.boxes import yolo_label_row
from yolov3.data import IMAGE_SUFFIXES, read_image
from yolov3.draw import draw_boxes
from yolov3.model import default_img_size, load_model
from yolov3.postprocess import check_inference_args, non_max_suppression, scale_boxes
from yolov3.utils import atomic_write_text, increment_path, select_device, user_errors

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".asf", ".ts"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
COCO_NAMES = Path(__file__).resolve().parent / "data" / "coco.names"


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
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
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


def load_names(names_arg: Optional[str], ckpt: Optional[dict], num_classes: int) -> list:
    """Class names: from the checkpoint, a --names file, COCO's for an 80-class model, else class0, class1..."""
    if names_arg:
        path = Path(names_arg)
        if not path.is_file():
            raise SourceError(f"--names {names_arg}: file not found")
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    elif ckpt is not None and ckpt.get("names"):
        names = list(ckpt["names"])
    elif num_classes == 80 and COCO_NAMES.is_file():
        names = [ln.strip() for ln in COCO_NAMES.read_text().splitlines() if ln.strip()]
    else:
        names = [f"class{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise SourceError(f"--names: {len(names)} names for a model with {num_classes} classes")
    return names


class Detector:
    """Pre-processing, inference and NMS for one BGR image at a time, timing each stage."""

    def __init__(self, model, device, img_size: int, conf_thres: float, iou_thres: float, max_det: int,
                 classes: Optional[list], agnostic: bool):
        self.model, self.device, self.img_size = model, device, img_size
        self.stride = getattr(model, "max_stride", 32)  # letterbox pads to a multiple of the deepest stride
        self.nms = dict(conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, classes=classes,
                        agnostic=agnostic)
        self.times = np.zeros(3)  # pre-processing, inference, NMS (seconds, summed)
        self.count = 0

    def preprocess(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, float, tuple]:
        """BGR uint8 (H, W, 3) -> ((1, 3, h, w) RGB float in [0, 1] on the device, letterbox ratio, padding)."""
        # bilinear, as Darknet and OpenCV's blobFromImage: INTER_AREA at a non-integer shrink (a 640x480 frame to
        # 256 px) costs 1.7 ms, 15 % of a small model's forward, and buys nothing measurable: the shapes model on
        # its 250 val images blown up to 640 px scored mAP@0.5 0.7674 with INTER_AREA, 0.7678 with INTER_LINEAR
        boxed, ratio, pad = letterbox(image_bgr, self.img_size, auto=True, stride=self.stride,
                                      interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB)  # (h, w, 3) uint8: HWC is already the channels_last layout
        tensor = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w) view, no copy
        return tensor.float().div_(255), ratio, pad  # float() keeps the channels_last strides the model wants

    @torch.inference_mode()
    def __call__(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, tuple, np.ndarray]:
        """-> (detections (n, 6) xyxy score class in original pixels, network input (h, w), per-stage ms)."""
        t0 = time.perf_counter()
        tensor, ratio, pad = self.preprocess(image_bgr)
        t1 = time.perf_counter()
        prediction = self.model(tensor)  # (1, N, 5 + C)
        t2 = time.perf_counter()
        detections = non_max_suppression(prediction, **self.nms)[0]
        detections[:, :4] = scale_boxes(detections[:, :4], ratio, pad, image_bgr.shape[:2])
        detections = detections.cpu()
        t3 = time.perf_counter()
        stage = np.array([t1 - t0, t2 - t1, t3 - t2])
        self.times += stage
        self.count += 1
        return detections, tuple(tensor.shape[2:]), stage * 1000


class Writer:
    """Everything detect.py saves for one run folder."""

    def __init__(self, save_dir: Path, args, names: list):
        self.save_dir, self.args, self.names = save_dir, args, names
        self.json_rows = []
        self.crop_counts = Counter()

    def txt_rows(self, detections: torch.Tensor, shape: tuple) -> str:
        height, width = shape
        rows = []
        for x1, y1, x2, y2, score, cls in detections.tolist():
            row = yolo_label_row(cls, x1, y1, x2, y2, width, height)
            rows.append(row + (f" {score:.5f}" if self.args.save_conf else ""))
        return "\n".join(rows) + ("\n" if rows else "")

    def record(self, detections: torch.Tensor, image_bgr: np.ndarray, stem: str, source: str,
               frame: Optional[int]) -> None:
        """Save txt/json/crops for one image or frame (before drawing on it)."""
        tag = stem if frame is None else f"{stem}_{frame}"
        if self.args.save_txt:
            atomic_write_text(self.save_dir / "labels" / f"{tag}.txt", self.txt_rows(detections, image_bgr.shape[:2]))
        if self.args.save_json:
            for x1, y1, x2, y2, score, cls in detections.tolist():
                self.json_rows.append({"source": source, "frame": frame, "class_id": int(cls),
                                       "class": self.names[int(cls)], "score": round(score, 5),
                                       "bbox_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)]})
        if self.args.save_crop:
            for x1, y1, x2, y2, _score, cls in detections.tolist():
                crop = image_bgr[max(int(y1), 0):max(int(y2), 0), max(int(x1), 0):max(int(x2), 0)]
                if crop.size:
                    name = self.names[int(cls)]
                    self.crop_counts[name] += 1
                    folder = self.save_dir / "crops" / name
                    folder.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(folder / f"{tag}_{self.crop_counts[name]}.jpg"), crop)

    def close(self) -> None:
        if self.args.save_json:
            atomic_write_text(self.save_dir / "detections.json", json.dumps(self.json_rows, indent=1))


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


def run_image(item: Source, index: int, total: int, detector: Detector, writer: Writer, args, view: dict) -> int:
    image = read_image(item.location)
    if image is None:
        print(f"warning: image {index}/{total} {item.location}: cannot be read, skipped", file=sys.stderr)
        return 0
    detections, net_shape, ms = detector(image)
    writer.record(detections, image, Path(item.location).stem, item.location, None)
    annotate(image, detections, writer.names, args)
    if not args.nosave:
        cv2.imwrite(str(writer.save_dir / Path(item.location).name), image)
    if args.view_img:
        show(item.location, image, view)
    print(f"image {index}/{total} {item.location}: {net_shape[0]}x{net_shape[1]} "
          f"{describe(detections, writer.names)}, {ms[0]:.1f}ms pre, {ms[1]:.1f}ms inference, {ms[2]:.1f}ms NMS")
    return 1


def run_video(item: Source, index: int, total: int, detector: Detector, writer: Writer, args, view: dict) -> int:
    """Read frames until the video ends (or breaks off, for a truncated file); returns frames processed."""
    capture = cv2.VideoCapture(int(item.location) if item.location.isdigit() else item.location)
    if not capture.isOpened():
        print(f"warning: {item.kind} {item.location}: cannot be opened, skipped", file=sys.stderr)
        return 0
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 0 < fps < 1000 else 30.0
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if item.kind == "video" else 0
    stem = Path(item.location).stem if item.kind == "video" else f"stream{index}"
    out_path = writer.save_dir / f"{stem}.mp4"
    video_writer = None
    frames = 0
    counts = Counter()
    bar = tqdm(total=frame_count or None, desc=f"{item.kind} {index}/{total} {item.location}", unit="frame",
               dynamic_ncols=True)
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            detections, _net_shape, _ms = detector(frame)
            writer.record(detections, frame, stem, item.location, frames)
            counts.update(writer.names[int(c)] for c in detections[:, 5].tolist())
            annotate(frame, detections, writer.names, args)
            if not args.nosave:
                if video_writer is None:
                    height, width = frame.shape[:2]
                    video_writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                   (width, height))
                video_writer.write(frame)
            if args.view_img:
                show(item.location, frame, view)
            frames += 1
            bar.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: keeping the {frames} frames written so far", file=sys.stderr)
    finally:
        bar.close()
        capture.release()
        if video_writer is not None:
            video_writer.release()
    if frame_count and frames < frame_count:
        print(f"warning: {item.location}: stopped after {frames} of {frame_count} frames (truncated or unreadable); "
              f"kept what was written", file=sys.stderr)
    found = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "no detections"
    print(f"{item.kind} {index}/{total} {item.location}: {frames} frames, {found}"
          + (f" -> {out_path}" if frames and not args.nosave else ""))
    return frames


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a .pt from train.py, or a Darknet .weights with --cfg")
    parser.add_argument("--cfg", help="Darknet cfg (needed with .weights)")
    parser.add_argument("--names", help="class names, one per line (default: from the .pt, or COCO for 80 classes)")
    parser.add_argument("--source", required=True, help="image, folder, glob, .txt list, video, webcam index or URL")
    parser.add_argument("--img-size", type=int, default=None, help="inference size (default: the training size "
                                                                    "for a .pt, else the cfg's width)")
    parser.add_argument("--conf-thres", type=float, default=0.25)
    parser.add_argument("--iou-thres", type=float, default=0.45)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--classes", type=int, nargs="+", help="keep only these class indices")
    parser.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    parser.add_argument("--device", default="", help="'' (auto), cpu, 0 or cuda:0")
    parser.add_argument("--view-img", action="store_true", help="show results in a window")
    parser.add_argument("--save-txt", action="store_true", help="YOLO rows per image/frame in labels/")
    parser.add_argument("--save-conf", action="store_true", help="add the score to --save-txt rows")
    parser.add_argument("--save-json", action="store_true", help="all detections in detections.json")
    parser.add_argument("--save-crop", action="store_true", help="crops of each detection in crops/<class>/")
    parser.add_argument("--nosave", action="store_true", help="do not save annotated images/videos")
    parser.add_argument("--project", default="runs/detect")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true")
    parser.add_argument("--line-thickness", type=int, default=2)
    parser.add_argument("--hide-labels", action="store_true")
    parser.add_argument("--hide-conf", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    items, warnings = resolve_sources(args.source)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    device = select_device(args.device)
    model, ckpt = load_model(args.weights, cfg=args.cfg, device=device)
    model.optimize_for_inference()  # fused, channels_last, Winograd/oneDNN convs on CPU (bench_inference.py)
    names = load_names(args.names, ckpt, model.num_classes)
    img_size = args.img_size if args.img_size is not None else default_img_size(model, ckpt)
    check_inference_args(args.conf_thres, args.iou_thres, args.max_det, img_size, model.max_stride)
    bad_classes = [c for c in args.classes or [] if not 0 <= c < model.num_classes]
    if bad_classes:
        raise SourceError(f"--classes {bad_classes}: the model has classes 0..{model.num_classes - 1}")
    save_dir = increment_path(Path(args.project) / args.name, exist_ok=args.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(save_dir / "config.yaml", yaml.safe_dump({**vars(args), "img_size": img_size},
                                                                sort_keys=False))
    detector = Detector(model, device, img_size, args.conf_thres, args.iou_thres, args.max_det, args.classes,
                        args.agnostic_nms)
    writer = Writer(save_dir, args, names)
    view = {}
    processed = 0
    for index, item in enumerate(items, 1):
        runner = run_image if item.kind == "image" else run_video
        processed += runner(item, index, len(items), detector, writer, args, view)
    writer.close()
    if detector.count:
        per = detector.times / detector.count * 1000
        print(f"speed: {per[0]:.1f}ms pre-processing, {per[1]:.1f}ms inference, {per[2]:.1f}ms NMS per image "
              f"(max side {img_size}); {detector.count} images/frames")
    print(f"results saved to {save_dir}" if processed else "nothing could be processed")
    return 0 if processed else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (SourceError, *user_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
