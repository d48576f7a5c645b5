"""Drawing boxes on images and saving a batch mosaic (what train.py shows of its first batch)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from yolov3.boxes import cxcywh_to_xyxy
from yolov3.utils import atomic_write_bytes

# 20 well-separated colours (BGR); class c uses entry c mod 20, so the same class keeps its colour in every figure
PALETTE_BGR = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72), (23, 204, 146),
    (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100),
    (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
)
LINE_WIDTH_PER_PX = 0.003  # box line width per pixel of the mean image side: 2 px at 640x480, 3 px at 1280x720
MIN_TEXT_CONTRAST = 4.5  # WCAG 2 "AA" contrast for text; black or white on any colour reaches at least 4.58


def printable(text: str) -> str:
    """``text`` as OpenCV's Hershey fonts can draw it: ASCII only.

    A file name that is not valid UTF-8 reaches Python with surrogate escapes ('\\udcff'), and cv2.putText
    segfaults on those; other non-ASCII characters would be drawn as '?' anyway.
    """
    return os.fsencode(text).decode("ascii", "replace") if isinstance(text, str) else str(text)


MAX_MOSAIC_SIDE_PX = 1920  # larger batch mosaics are shrunk: big enough to read, small enough to open anywhere


def class_colour(class_id: int) -> Tuple[int, int, int]:
    """BGR colour of a class."""
    return PALETTE_BGR[int(class_id) % len(PALETTE_BGR)]


def auto_line_thickness(image_shape: Sequence[int]) -> int:
    """Box line width for an image of ``(H, W, ...)``: LINE_WIDTH_PER_PX x the mean side, rounded, at least 1."""
    height, width = image_shape[:2]
    return max(1, round(LINE_WIDTH_PER_PX * (height + width) / 2))


def relative_luminance(colour_bgr: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an 8-bit sRGB colour given as BGR: 0 for black, 1 for white."""
    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    blue, green, red = (linear(c) for c in colour_bgr)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(colour_a_bgr: Sequence[int], colour_b_bgr: Sequence[int]) -> float:
    """WCAG 2 contrast ratio (L_light + 0.05) / (L_dark + 0.05), from 1 (same) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(colour_a_bgr), relative_luminance(colour_b_bgr)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def text_colour(background_bgr: Sequence[int]) -> Tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background_bgr``: dark text on light colours."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast_ratio(background_bgr, black) >= contrast_ratio(background_bgr, white) else white


def _overlap(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> int:
    """Overlapping area of two (x1, y1, x2, y2) rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(boxes_xyxy: np.ndarray, label_sizes: Sequence[Tuple[int, int]], image_wh: Tuple[int, int],
                 order: Sequence[int]) -> list:
    """Where each box's label rectangle goes, as ``(x1, y1, x2, y2)`` pixels, so that crowded boxes keep readable
    labels: in ``order`` (best score first), each label takes the first of these places that is inside the image
    and overlaps no label placed before it: above the box, inside its top, below it, inside its bottom; when
    every place is taken, the one overlapping least. ``label_sizes`` are (width, height) with the baseline."""
    width, height = image_wh
    placed: list = [None] * len(boxes_xyxy)
    taken: list = []
    for i in order:
        x1, y1, _, y2 = (int(round(v)) for v in boxes_xyxy[i])
        label_w, label_h = label_sizes[i]
        x = max(0, min(x1, width - label_w))  # shifted left at the right edge, so it stays readable
        candidates = [y1 - label_h, y1, y2, y2 - label_h]
        rectangles = [(x, y, x + label_w, y + label_h) for y in candidates if 0 <= y and y + label_h <= height]
        rectangles = rectangles or [(x, max(0, min(y1, height - label_h)), x + label_w,
                                     max(0, min(y1, height - label_h)) + label_h)]
        best = min(rectangles, key=lambda r: sum(_overlap(r, t) for t in taken))  # min keeps the first of ties
        placed[i] = best
        taken.append(best)
    return placed


def draw_boxes(img_bgr: np.ndarray, boxes_xyxy, classes, scores=None, names: Optional[Sequence[str]] = None,
               line_thickness: Optional[int] = None, hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
    """Draw boxes **in place** on a ``(H, W, 3)`` BGR uint8 image and return it.

    Every box first, then every label, so no box line crosses a label's text. With scores, boxes are drawn from the
    lowest score to the highest (the best box ends on top where boxes overlap) and the best label is placed first;
    labels are laid out by :func:`place_labels`, so crowded boxes (blood cells, a crowd) keep labels that do not
    cover each other. Label text is black or white, whichever contrasts more with the class colour.

    Args:
        boxes_xyxy: ``(n, 4)`` pixel corners (array or tensor).
        classes: ``(n,)`` class indices.
        scores: optional ``(n,)`` confidences, appended to the label unless ``hide_conf``.
        names: class names; the index is shown when missing.
        line_thickness: box line width in pixels; None scales it with the image (:func:`auto_line_thickness`);
            the label font scales with it.
    """
    boxes = np.asarray(boxes_xyxy.detach().cpu() if torch.is_tensor(boxes_xyxy) else boxes_xyxy,
                       dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(classes.detach().cpu() if torch.is_tensor(classes) else classes).reshape(-1).astype(int)
    if scores is not None:
        scores = np.asarray(scores.detach().cpu() if torch.is_tensor(scores) else scores).reshape(-1)
    if line_thickness is None:
        line_thickness = auto_line_thickness(img_bgr.shape)
    font_scale = max(line_thickness / 3, 0.35)
    font_thickness = max(line_thickness - 1, 1)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))  # best drawn last
    for i in order:
        top_left = (int(round(boxes[i][0])), int(round(boxes[i][1])))
        bottom_right = (int(round(boxes[i][2])), int(round(boxes[i][3])))
        cv2.rectangle(img_bgr, top_left, bottom_right, class_colour(class_ids[i]), line_thickness)  # exact pixels
    if hide_labels or not len(boxes):
        return img_bgr
    texts, sizes, baselines = [], [], []
    for i in range(len(boxes)):
        class_id = class_ids[i]
        text = printable(names[class_id]) if names is not None and 0 <= class_id < len(names) else str(class_id)
        if scores is not None and not hide_conf:
            text = f"{text} {scores[i]:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
        texts.append(text)
        sizes.append((text_w, text_h + 2 * baseline))
        baselines.append(baseline)
    rectangles = place_labels(boxes, sizes, (img_bgr.shape[1], img_bgr.shape[0]), order[::-1])
    for i in order:
        colour = class_colour(class_ids[i])
        x1, y1, x2, y2 = rectangles[i]
        cv2.rectangle(img_bgr, (x1, y1), (x2, y2), colour, -1)
        cv2.putText(img_bgr, texts[i], (x1, y2 - baselines[i]), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    text_colour(colour), font_thickness, cv2.LINE_AA)
    return img_bgr


def plot_batch(images, targets, paths: Sequence[str], names: Optional[Sequence[str]], out_path: Union[str, Path],
               max_images: int = 16) -> np.ndarray:
    """Save a grid of a batch with its ground-truth boxes and class names; returns the grid (BGR uint8).

    Args:
        images: ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8 (tensor or array).
        targets: ``(N, 6)`` ``[image_index, class, cx, cy, w, h]`` normalised to ``(W, H)``; an optional 7th column
            is taken as a score.
        paths: image paths (file names are written on the tiles).
        out_path: ``.jpg`` or ``.png``.
    """
    images = images.detach().cpu() if torch.is_tensor(images) else torch.as_tensor(np.asarray(images))
    targets = targets.detach().cpu().float() if torch.is_tensor(targets) else torch.as_tensor(np.asarray(targets))
    targets = targets.float().reshape(-1, targets.shape[-1] if targets.numel() else 6)
    if images.dtype.is_floating_point:
        images = (images.clamp(0, 1) * 255).round()
    images = images.to(torch.uint8)
    batch, _, height, width = images.shape
    count = min(batch, max_images)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    line_thickness = max(1, round(min(height, width) / 200))
    for i in range(count):
        tile = np.ascontiguousarray(images[i].permute(1, 2, 0).numpy()[:, :, ::-1])  # (H, W, 3) RGB -> BGR
        rows_i = targets[targets[:, 0] == i]
        boxes_xyxy = cxcywh_to_xyxy(rows_i[:, 2:6]) * torch.tensor([width, height, width, height])
        scores = rows_i[:, 6] if rows_i.shape[1] > 6 else None
        draw_boxes(tile, boxes_xyxy, rows_i[:, 1].long(), scores, names, line_thickness)
        if i < len(paths):
            cv2.putText(tile, printable(Path(paths[i]).name[:40]), (3, height - 5), cv2.FONT_HERSHEY_SIMPLEX,
                        max(line_thickness / 3, 0.35), (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(tile, (0, 0), (width - 1, height - 1), (255, 255, 255), 1)
        row, col = divmod(i, columns)
        grid[row * height:(row + 1) * height, col * width:(col + 1) * width] = tile
    scale = MAX_MOSAIC_SIDE_PX / max(grid.shape[:2])
    if scale < 1:
        grid = cv2.resize(grid, (int(grid.shape[1] * scale), int(grid.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    write_image(out_path, grid)
    return grid


def write_image(path: Union[str, Path], image_bgr: np.ndarray) -> None:
    """Encode ``image_bgr`` by the suffix of ``path`` and write it atomically; ValueError naming the path when
    OpenCV has no encoder for that suffix.

    Not cv2.imwrite: it takes the path as UTF-8 and crashes (segfault) on a file name that is not; Python writes
    any name, and an interrupted write leaves no half image.
    """
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix.lower(), image_bgr)
    except cv2.error:  # no encoder for that suffix
        ok = False
    if not ok:
        raise ValueError(f"{path}: could not encode the image (use a .jpg or .png name)")
    atomic_write_bytes(path, encoded.tobytes())
