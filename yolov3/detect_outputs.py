"""What detect.py does with each input: detect, then save, draw, show and report, image by image or frame by frame.

Reading and decoding the next images (:class:`ImageReader`) and drawing and encoding the last ones
(:class:`BackgroundSaver`) run in one thread each, beside the model: OpenCV releases the GIL while it decodes,
draws and encodes, so that work overlaps with inference. Outputs are written in input order (one saver thread works
through its queue in order), and closing the saver waits for what was queued, so Ctrl-C keeps every image already
detected.

:class:`Writer` owns the run folder (created on first use, so a run that cannot process any input leaves none) and
everything saved there: annotated images and videos, YOLO txt rows (labels/), crops (crops/<class>/) and
detections.json. :func:`run_inputs` processes detect.py's inputs in order: :func:`run_images` images (consecutive
ones of one size as one batch), :func:`run_video` one video or stream. What is saved and how boxes are
drawn come in as values (:class:`SaveOptions`, :class:`DrawStyle`), set by detect.py's flags.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

import yaml

from yolov3.boxes import yolo_label_rows
from yolov3.detector import Detector
from yolov3.draw import draw_boxes, write_image
from yolov3.images import read_image
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


DETECT_BATCH = 4  # consecutive images of one network size share a forward pass (Detector.run_batch)
READ_AHEAD = 2  # video frames decoded ahead of the model: enough to hide a decode behind one forward pass


class ImageReader:
    """Images read, decoded and (with ``prepare``, e.g. :meth:`Detector.letterbox_rgb`) letterboxed in a thread, up
    to ``ahead`` inputs after the one asked for: by default a whole batch and READ_AHEAD more, so the next batch is
    decoded while the model runs this one (with only READ_AHEAD, the model waited for the last images of every
    batch)."""

    def __init__(self, items: List[Source], read: Callable = read_image, prepare: Optional[Callable] = None,
                 ahead: Optional[int] = None) -> None:
        self.paths = {i: item.location for i, item in enumerate(items) if item.kind == "image"}
        self.read, self.prepare = read, prepare
        self.ahead = DETECT_BATCH + READ_AHEAD if ahead is None else ahead
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect-read")
        self.pending: Dict[int, Future] = {}
        self.next_to_queue = 0

    def _load(self, path: str) -> tuple:
        image = self.read(path)
        return image, (self.prepare(image) if image is not None and self.prepare is not None else None)

    def get(self, index: int) -> tuple:
        """(input ``index``'s image (BGR) or None when it cannot be read, what ``prepare`` made of it or None);
        queues the next ones."""
        while self.next_to_queue <= index + self.ahead:
            position = self.next_to_queue
            if position in self.paths:
                self.pending[position] = self.pool.submit(self._load, self.paths[position])
            self.next_to_queue += 1
        future = self.pending.pop(index, None)
        return future.result() if future is not None else self._load(self.paths[index])

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)


class BackgroundSaver:
    """Draws and saves annotated images in one thread, in the order they were queued; ``close()`` waits for all.

    An error in the thread is raised in the caller at its next ``submit`` or at ``close``. With ``enabled`` False
    (``--view-img``: a window must be drawn from the main thread) each job runs at once."""

    def __init__(self, enabled: bool = True) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect-save") if enabled else None
        self.queued: List[Future] = []

    def submit(self, job: Callable[[], None]) -> None:
        if self.pool is None:
            job()
            return
        done = [future for future in self.queued if future.done()]
        self.queued = [future for future in self.queued if not future.done()]
        for future in done:
            future.result()
        self.queued.append(self.pool.submit(job))

    def drain(self) -> None:
        """Wait until everything queued is saved (raising its first error)."""
        queued, self.queued = self.queued, []
        for future in queued:
            future.result()

    def close(self) -> None:
        if self.pool is None:
            return
        self.pool.shutdown(wait=True)  # Ctrl-C too: what was detected is saved
        self.drain()


def frames_read_ahead(capture: "cv2.VideoCapture") -> Iterator[np.ndarray]:
    """The frames of ``capture`` until it ends or breaks off, read and decoded in a thread up to READ_AHEAD frames
    ahead; the thread stops when the caller stops iterating (Ctrl-C included)."""
    frames: "queue.Queue[Optional[np.ndarray]]" = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def put(value: Optional[np.ndarray]) -> bool:
        while not stop.is_set():
            try:
                frames.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            while not stop.is_set():
                ok, frame = capture.read()
                if not ok or frame is None or not put(frame):
                    break
        finally:
            put(None)

    thread = threading.Thread(target=read, name="detect-video-read", daemon=True)
    thread.start()
    try:
        while True:
            frame = frames.get()
            if frame is None:
                return
            yield frame
    finally:
        stop.set()
        thread.join()


def run_inputs(items: List[Source], tags: List[str], detector: Detector, writer: Writer, style: DrawStyle,
               viewer: Optional[Viewer]) -> int:
    """Every input in order (images in batches of up to DETECT_BATCH, videos and streams frame by frame) while the
    next images are read in a thread and the last ones saved in another; returns the images and frames processed.
    Ctrl-C: what was detected is saved before KeyboardInterrupt goes on."""
    reader = ImageReader(items, prepare=detector.letterbox_rgb)
    saver = BackgroundSaver(enabled=viewer is None)  # a window is drawn from the main thread
    processed = 0
    images: list = []  # (index, item, tag, loaded) of images gathered for one batch
    try:
        for index, (item, tag) in enumerate(zip(items, tags), 1):
            if item.kind == "image":
                images.append((index, item, tag, reader.get(index - 1)))
                if len(images) < DETECT_BATCH and index < len(items):
                    continue
            processed += run_images(images, len(items), detector, writer, style, viewer, saver)
            images = []
            if item.kind != "image":
                processed += run_video(item, index, len(items), tag, detector, writer, style, viewer, saver)
    finally:
        reader.close()
        saver.close()  # every image detected so far is saved, also after Ctrl-C
    return processed


def run_images(entries: list, total: int, detector: Detector, writer: Writer, style: DrawStyle,
               viewer: Optional[Viewer], saver: Optional[BackgroundSaver] = None) -> int:
    """Detect, save, draw and show images, in order; returns how many could be read.

    ``entries``: ``(index, item, tag, (image, letterboxed))`` per image, the last being the result of an
    :class:`ImageReader` made with ``prepare=detector.letterbox_rgb``. Consecutive readable images of one network
    size run as one batch. With a ``saver`` the drawing and saving run in its thread."""
    ready = []  # (index, item, tag, image, letterboxed) of the batch being gathered
    processed = 0
    for index, item, tag, (image, letterboxed) in entries:
        if image is None:
            processed += _detect_and_save(ready, total, detector, writer, style, viewer, saver)
            ready = []
            print(f"warning: image {index}/{total} {display(item.location)}: cannot be read, skipped",
                  file=sys.stderr)
            continue
        if ready and ready[0][4][0].shape != letterboxed[0].shape:
            processed += _detect_and_save(ready, total, detector, writer, style, viewer, saver)
            ready = []
        ready.append((index, item, tag, image, letterboxed))
    return processed + _detect_and_save(ready, total, detector, writer, style, viewer, saver)


def _detect_and_save(ready: list, total: int, detector: Detector, writer: Writer, style: DrawStyle,
                     viewer: Optional[Viewer], saver: Optional[BackgroundSaver]) -> int:
    if not ready:
        return 0
    first_passes = detector.first_passes
    results = detector.run_batch([entry[3] for entry in ready], [entry[4] for entry in ready])
    first = detector.first_passes > first_passes  # the first batch at this input: one-time preparation in it
    for (index, item, tag, image, _), (detections, net_shape, ms) in zip(ready, results):
        shown = display(item.location)
        annotated = f"{tag}{image_suffix(item.location)}" if writer.save.annotated else None
        writer.record(detections, image, tag, item.location, None, annotated)

        def draw_and_save(image=image, detections=detections, annotated=annotated, shown=shown) -> None:
            annotate(image, detections, writer.names, style)
            if annotated is not None:
                save_image(writer.save_dir / annotated, image)
            if viewer is not None:
                viewer.show(shown, image)

        if saver is not None:
            saver.submit(draw_and_save)
        else:
            draw_and_save()
        renamed = f" -> {display(annotated)}" if annotated and annotated != Path(item.location).name else ""
        batch = f", batch of {len(ready)}" if len(ready) > 1 else ""
        print(f"image {index}/{total} {shown}: {net_shape[0]}x{net_shape[1]} "
              f"{describe(detections, writer.names)}, {ms[0]:.1f}ms pre, {ms[1]:.1f}ms inference, {ms[2]:.1f}ms NMS"
              f"{batch}" + (" (first at this size: one-time preparation included)" if first else "") + renamed)
    return len(ready)


def run_video(item: Source, index: int, total: int, tag: str, detector: Detector, writer: Writer,
              style: DrawStyle, viewer: Optional[Viewer], saver: Optional[BackgroundSaver] = None) -> int:
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
    frames = 0
    counts = Counter()
    bar = tqdm(total=frame_count or None, desc=f"{item.kind} {index}/{total} {shown}", unit="frame",
               dynamic_ncols=True)
    saver = saver or BackgroundSaver(enabled=False)
    video: Dict[str, "cv2.VideoWriter"] = {}  # made in the saver's thread at the first frame

    def draw_and_write(frame: np.ndarray, detections: torch.Tensor, path: Optional[Path]) -> None:
        annotate(frame, detections, writer.names, style)
        if path is not None:
            if "writer" not in video:
                height, width = frame.shape[:2]
                video["writer"] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            video["writer"].write(frame)
        if viewer is not None:
            viewer.show(shown, frame)

    try:
        for frame in frames_read_ahead(capture):
            if out_path is None:
                out_path = writer.open() / f"{tag}.mp4"
                if annotated is not None and not opencv_can_open(out_path):
                    print(f"warning: {display(out_path)}: OpenCV cannot write a video whose path is not UTF-8; "
                          f"not saving the annotated video", file=sys.stderr)
                    annotated = None
            detections, _net_shape, _ms = detector(frame)
            writer.record(detections, frame, f"{tag}_{frames}", item.location, frames, annotated)
            counts.update(writer.names[int(c)] for c in detections[:, 5].tolist())
            path = out_path if annotated is not None else None
            saver.submit(lambda frame=frame, detections=detections, path=path: draw_and_write(frame, detections, path))
            frames += 1
            bar.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: keeping the {frames} frames of {shown} written so far", file=sys.stderr)
        raise
    finally:
        bar.close()
        capture.release()
        saver.drain()  # every detected frame is in the video before it is closed, Ctrl-C included
        if "writer" in video:
            video["writer"].release()
    if frame_count and frames < frame_count:
        print(f"warning: {shown}: stopped after {frames} of {frame_count} frames (truncated or unreadable); "
              f"kept what was written", file=sys.stderr)
    found = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "no detections"
    print(f"{item.kind} {index}/{total} {shown}: {frames} frames, {found}"
          + (f" -> {display(out_path)}" if frames and annotated is not None else ""))
    return frames
