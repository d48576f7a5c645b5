"""What detect.py does with each input: detect, then save, draw, show and report, image by image or frame by frame.

:class:`Writer` owns the run folder (created on first use, so a run that cannot process any input leaves none) and
everything saved there: annotated images and videos, YOLO txt rows (labels/), crops (crops/<class>/) and
detections.json. :func:`run_image` and :func:`run_video` process one input each. What is saved and how boxes are
drawn come in as values (:class:`SaveOptions`, :class:`DrawStyle`), set by detect.py's flags.
"""
from __future__ import annotations

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

from yolov3.boxes import yolo_label_rows
from yolov3.detector import Detector
from yolov3.draw import draw_boxes, write_image
from yolov3.labels import read_image
from yolov3.sources import Source, display, image_suffix, opencv_can_open
from yolov3.utils import atomic_write_text, increment_path

JSON_FLUSH_S = 30.0  # rewrite detections.json at least this often: a killed run (not just Ctrl-C) loses little,
# and a long video does not spend its time re-serialising a growing list after every frame


@dataclass(frozen=True)
class SaveOptions:
    """What a run saves besides its config.yaml (detect.py's --nosave and --save-* flags)."""

    annotated: bool = True  # annotated images and videos (off: --nosave)
    txt: bool = False  # labels/<name>.txt, YOLO rows per image or frame
    conf: bool = False  # the score as a sixth column of those rows
    crop: bool = False  # crops/<class>/<name>_<n>.jpg of each detection
    json: bool = False  # detections.json, one entry per image or frame


@dataclass(frozen=True)
class DrawStyle:
    """How boxes are drawn (detect.py's --line-thickness, --hide-labels, --hide-conf)."""

    line_thickness: Optional[int] = None  # None: yolov3.draw.auto_line_thickness
    hide_labels: bool = False
    hide_conf: bool = False


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

    def __init__(self, run_dir: Path, names: list, config: dict, save: SaveOptions, exist_ok: bool = False):
        self.run_dir, self.names, self.config, self.save, self.exist_ok = run_dir, names, config, save, exist_ok
        self.save_dir: Optional[Path] = None
        self.json_entries = []  # one per image or frame, in processing order
        self.json_written_at = time.monotonic()

    def open(self) -> Path:
        """The run folder, created (with config.yaml) on the first call."""
        if self.save_dir is None:
            save_dir = increment_path(self.run_dir, exist_ok=self.exist_ok)
            save_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(save_dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
            self.save_dir = save_dir
        return self.save_dir

    def record(self, detections: torch.Tensor, image_bgr: np.ndarray, tag: str, source: str,
               frame: Optional[int], annotated: Optional[str]) -> None:
        """Save txt rows and crops of one image or frame (before drawing on it) and keep its JSON entry.

        ``tag`` names its outputs (unique in the run); ``annotated`` is the annotated image or video it goes to,
        relative to the run folder (None when not saved).
        """
        save_dir = self.open()
        rows = detections.tolist()
        labels = None
        if self.save.txt:
            labels = f"labels/{tag}.txt"
            height, width = image_bgr.shape[:2]
            atomic_write_text(save_dir / labels, yolo_label_rows(detections, width, height, with_score=self.save.conf))
        crops = [None] * len(rows)
        if self.save.crop:
            per_class = Counter()
            for k, (x1, y1, x2, y2, _score, cls) in enumerate(rows):
                crop = image_bgr[max(int(y1), 0):max(int(y2), 0), max(int(x1), 0):max(int(x2), 0)]
                if crop.size:
                    name = self.names[int(cls)]
                    per_class[name] += 1
                    relative = f"crops/{name}/{tag}_{per_class[name]}.jpg"
                    crops[k] = relative if save_image(save_dir / relative, crop) else None
        if self.save.json:
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
        if self.save.json and self.save_dir is not None:
            self.write_json()


def describe(detections: torch.Tensor, names: list) -> str:
    if not len(detections):
        return "no detections"
    counts = Counter(int(c) for c in detections[:, 5].tolist())
    return ", ".join(f"{n} {names[c]}" for c, n in sorted(counts.items()))


def annotate(image_bgr: np.ndarray, detections: torch.Tensor, names: list, style: DrawStyle) -> np.ndarray:
    draw_boxes(image_bgr, detections[:, :4].numpy(), detections[:, 5].numpy().astype(int),
               scores=detections[:, 4].numpy(), names=names, line_thickness=style.line_thickness,
               hide_labels=style.hide_labels, hide_conf=style.hide_conf)
    return image_bgr


class Viewer:
    """--view-img: shows each result in a window if a display is available; warns once otherwise."""

    def __init__(self) -> None:
        self.disabled = False

    def show(self, window: str, image_bgr: np.ndarray) -> None:
        if self.disabled:
            return
        try:
            cv2.imshow(window, image_bgr)
            cv2.waitKey(1)
        except cv2.error:
            self.disabled = True
            print("warning: --view-img: no display available, not showing results", file=sys.stderr)


def run_image(item: Source, index: int, total: int, tag: str, detector: Detector, writer: Writer,
              style: DrawStyle, viewer: Optional[Viewer]) -> int:
    """Detect, save, draw and show one image; returns 1, or 0 when it cannot be read."""
    shown = display(item.location)
    image = read_image(item.location)
    if image is None:
        print(f"warning: image {index}/{total} {shown}: cannot be read, skipped", file=sys.stderr)
        return 0
    warmed = detector.warmup_s
    detections, net_shape, ms = detector(image)
    warmed = detector.warmup_s - warmed  # > 0: first image at this input size, run once untimed before timing
    annotated = f"{tag}{image_suffix(item.location)}" if writer.save.annotated else None
    writer.record(detections, image, tag, item.location, None, annotated)
    annotate(image, detections, writer.names, style)
    if annotated is not None and not save_image(writer.save_dir / annotated, image):
        annotated = None
    if viewer is not None:
        viewer.show(shown, image)
    renamed = f" -> {display(annotated)}" if annotated and annotated != Path(item.location).name else ""
    print(f"image {index}/{total} {shown}: {net_shape[0]}x{net_shape[1]} "
          f"{describe(detections, writer.names)}, {ms[0]:.1f}ms pre, {ms[1]:.1f}ms inference, {ms[2]:.1f}ms NMS"
          + (f" (after a {warmed * 1000:.0f}ms warm-up at this size, not included)" if warmed else "") + renamed)
    return 1


def run_video(item: Source, index: int, total: int, tag: str, detector: Detector, writer: Writer,
              style: DrawStyle, viewer: Optional[Viewer]) -> int:
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
    annotated = f"{tag}.mp4" if writer.save.annotated else None
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
            annotate(frame, detections, writer.names, style)
            if annotated is not None:
                if video_writer is None:
                    height, width = frame.shape[:2]
                    video_writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                   (width, height))
                video_writer.write(frame)
            if viewer is not None:
                viewer.show(shown, frame)
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
