"""Image augmentation for detection: letterbox, HSV jitter, random affine, horizontal flip, 4-image mosaic.

Every function is pure or documents that it works in place, takes a ``numpy.random.Generator`` for its randomness
(so one seeded generator per sample makes a whole pipeline reproducible), and works on

  * images: ``numpy`` arrays ``(H, W, 3)``, BGR, ``uint8`` (what ``cv2.imread`` returns);
  * labels: ``numpy`` arrays ``(n, 5)`` float32 rows ``[class, x1, y1, x2, y2]`` in **pixels** of the image they
    travel with (xyxy corners). The dataset converts to and from the normalised ``cx cy w h`` of label files
    (see ``yolov3.data``); nothing in this module uses normalised boxes.

Degenerate boxes after a geometric transform are dropped by :func:`box_candidates`, whose thresholds are the named
constants below. One function works on a whole batch instead: :func:`random_rescale` (train.py's multi-scale
training, on the torch batch ``(B, 3, H, W)``).
"""
from __future__ import annotations

import math
import random
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from yolov3.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

PAD_COLOR = (114, 114, 114)  # neutral grey: the mean-ish value of natural images, so padding carries no signal

# Thresholds deciding which boxes survive a geometric transform (crop, scale, rotate):
MIN_BOX_SIDE_PX = 2.0  # a box thinner than 2 px has no pixels a stride-8 detector could learn from
MIN_AREA_RATIO = 0.1  # keeping < 10% of its (scaled) area means the object was cut away; the label would lie
MAX_ASPECT_RATIO = 20.0  # slivers left by clipping an object at the border are not objects any more


def _as_hw(new_shape: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(new_shape, (int, np.integer)):
        return int(new_shape), int(new_shape)
    height, width = new_shape
    return int(height), int(width)


def letterbox(img: np.ndarray, new_shape: Union[int, Sequence[int]] = 640, color: Tuple[int, int, int] = PAD_COLOR,
              scaleup: bool = True, stride: int = 32, auto: bool = False, interpolation: Optional[int] = None):
    """Resize ``img`` keeping its aspect ratio and pad it, centred, to ``new_shape``.

    Args:
        img: ``(H, W, 3)`` uint8 image.
        new_shape: target size, an int (square) or ``(height, width)``.
        color: padding colour.
        scaleup: allow enlarging; False only shrinks (better mAP for val at large sizes, no blur).
        stride: with ``auto``, pad only up to the next multiple of ``stride`` instead of to ``new_shape``.
        auto: minimal rectangle padding (see ``stride``).
        interpolation: an OpenCV ``INTER_*`` flag; None: ``INTER_AREA`` when shrinking (no aliasing, what training
            and validation use), ``INTER_LINEAR`` when enlarging.

    Returns:
        ``(img, (ratio_w, ratio_h), (pad_w, pad_h))`` with ``x_net = x_orig * ratio_w + pad_w`` and
        ``y_net = y_orig * ratio_h + pad_h`` exactly: the ratios are those of the rounded resized size and the pads
        are the integer left/top offsets actually used.
    """
    height0, width0 = img.shape[:2]
    (resized_w, resized_h), ratio, (left, top, right, bottom) = letterbox_geometry((height0, width0), new_shape,
                                                                                  scaleup, stride, auto)
    if (resized_w, resized_h) != (width0, height0):
        # INTER_AREA averages when shrinking (no aliasing); INTER_LINEAR is the fast, smooth choice when enlarging
        if interpolation is None:
            interpolation = cv2.INTER_AREA if resized_w < width0 or resized_h < height0 else cv2.INTER_LINEAR
        img = cv2.resize(img, (resized_w, resized_h), interpolation=interpolation)
    if left or top or right or bottom:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, ratio, (float(left), float(top))


def letterbox_geometry(shape_hw: Tuple[int, int], new_shape: Union[int, Sequence[int]] = 640, scaleup: bool = True,
                       stride: int = 32, auto: bool = False):
    """What :func:`letterbox` does to an image of ``shape_hw``, without touching pixels:
    ``((resized_w, resized_h), (ratio_w, ratio_h), (left, top, right, bottom) pads)``."""
    height0, width0 = shape_hw
    target_h, target_w = _as_hw(new_shape)
    gain = min(target_h / height0, target_w / width0)
    if not scaleup:
        gain = min(gain, 1.0)
    resized_w, resized_h = max(1, int(round(width0 * gain))), max(1, int(round(height0 * gain)))
    pad_total_w, pad_total_h = target_w - resized_w, target_h - resized_h
    if auto:
        pad_total_w, pad_total_h = pad_total_w % stride, pad_total_h % stride
    left, top = pad_total_w // 2, pad_total_h // 2
    return ((resized_w, resized_h), (resized_w / width0, resized_h / height0),
            (left, top, pad_total_w - left, pad_total_h - top))


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hue: float = 0.015, saturation: float = 0.7,
                value: float = 0.4) -> np.ndarray:
    """Random hue shift and saturation / value gains, **in place**, through 256-entry lookup tables (fast).

    Hue moves by ``U(-hue, hue)`` of the full circle; saturation and value are multiplied by ``1 + U(-g, g)``.
    Returns ``img`` (the same array) for chaining. ``(H, W, 3)`` BGR uint8.
    """
    if not (hue or saturation or value):
        return img
    hue_shift = rng.uniform(-hue, hue) * 180  # OpenCV's 8-bit hue runs over 0..179
    sat_gain, val_gain = 1 + rng.uniform(-1, 1, 2) * (saturation, value)
    levels = np.arange(256, dtype=np.float32)
    lut_hue = np.mod(levels + hue_shift, 180).astype(np.uint8)
    lut_sat = np.clip(levels * sat_gain, 0, 255).astype(np.uint8)
    lut_val = np.clip(levels * val_gain, 0, 255).astype(np.uint8)
    hue_ch, sat_ch, val_ch = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    hsv = cv2.merge((cv2.LUT(hue_ch, lut_hue), cv2.LUT(sat_ch, lut_sat), cv2.LUT(val_ch, lut_val)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)
    return img


def box_candidates(before_xyxy: np.ndarray, after_xyxy: np.ndarray, min_side: float = MIN_BOX_SIDE_PX,
                   min_area_ratio: float = MIN_AREA_RATIO, max_aspect: float = MAX_ASPECT_RATIO) -> np.ndarray:
    """Which boxes survived a transform: ``(n, 4)`` xyxy before (already scaled by the transform's gain) and after
    clipping -> ``(n,)`` bool. See the module constants for the reasons behind each threshold."""
    width_before = before_xyxy[:, 2] - before_xyxy[:, 0]
    height_before = before_xyxy[:, 3] - before_xyxy[:, 1]
    width_after = after_xyxy[:, 2] - after_xyxy[:, 0]
    height_after = after_xyxy[:, 3] - after_xyxy[:, 1]
    eps = 1e-9
    aspect = np.maximum(width_after / (height_after + eps), height_after / (width_after + eps))
    area_ratio = width_after * height_after / (width_before * height_before + eps)
    return (width_after > min_side) & (height_after > min_side) & (area_ratio > min_area_ratio) & (aspect < max_aspect)


def random_affine(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, degrees: float = 0.0,
                  translate: float = 0.1, scale: float = 0.5, shear: float = 0.0,
                  border: Tuple[int, int] = (0, 0)) -> Tuple[np.ndarray, np.ndarray]:
    """Random rotation, scale, shear and translation of an image and its boxes.

    Args:
        img: ``(H, W, 3)`` uint8.
        labels: ``(n, 5)`` ``[class, x1, y1, x2, y2]`` pixels of ``img``.
        rng: source of randomness.
        degrees: rotation drawn from ``U(-degrees, degrees)``.
        translate: shift of the centre by ``U(-t, t)`` of the output size (plus the centring, see below).
        scale: zoom drawn from ``U(1 - scale, 1 + scale)``.
        shear: x and y shear angles drawn from ``U(-shear, shear)`` degrees.
        border: ``(border_h, border_w)`` added on each side of the output; negative values crop — a mosaic uses
            ``(-s/2, -s/2)`` to cut the central ``s x s`` region out of its ``2s x 2s`` canvas.

    Returns:
        ``(img, labels)``: output ``(H + 2*border_h, W + 2*border_w, 3)`` and the surviving boxes ``(m, 5)``, each
        the axis-aligned hull of its four transformed corners, clipped to the output (loose when rotated or sheared,
        which is why both are off by default).
    """
    in_h, in_w = img.shape[:2]
    out_h, out_w = in_h + 2 * border[0], in_w + 2 * border[1]
    # Compose right to left: move the input centre to the origin, rotate/scale, shear, then move to the output
    # position. Working about the centre keeps the crop centred when nothing else moves.
    to_origin = np.array([[1, 0, -in_w / 2], [0, 1, -in_h / 2], [0, 0, 1]], dtype=np.float64)
    angle = rng.uniform(-degrees, degrees)
    zoom = rng.uniform(1 - scale, 1 + scale)
    rotate = np.eye(3)
    rotate[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)
    shear_m = np.eye(3)
    shear_m[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    shear_m[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    to_output = np.eye(3)
    to_output[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    to_output[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    matrix = to_output @ shear_m @ rotate @ to_origin  # (3, 3)

    if (out_h, out_w) != (in_h, in_w) or not np.allclose(matrix, np.eye(3)):
        img = cv2.warpAffine(img, matrix[:2], dsize=(out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=PAD_COLOR)
    if len(labels) == 0:
        return img, labels.reshape(0, 5).astype(np.float32)

    boxes_xyxy = labels[:, 1:5].astype(np.float64)
    corners = boxes_xyxy[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)  # (4n, 2): tl, tr, br, bl of every box
    corners = np.concatenate([corners, np.ones((len(corners), 1))], axis=1) @ matrix[:2].T  # (4n, 2)
    corners = corners.reshape(-1, 4, 2)  # (n, 4 corners, xy)
    hull_xyxy = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)  # (n, 4)
    clipped_xyxy = hull_xyxy.copy()
    clipped_xyxy[:, 0::2] = clipped_xyxy[:, 0::2].clip(0, out_w)
    clipped_xyxy[:, 1::2] = clipped_xyxy[:, 1::2].clip(0, out_h)
    keep = box_candidates(boxes_xyxy * zoom, clipped_xyxy)
    out = np.concatenate([labels[keep, :1], clipped_xyxy[keep]], axis=1).astype(np.float32)
    return img, out


def fliplr(img: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``(H, W, 3)`` image and ``(n, 5)`` pixel xyxy labels -> new (contiguous) arrays."""
    width = img.shape[1]
    flipped = np.ascontiguousarray(img[:, ::-1])
    out = labels.astype(np.float32, copy=True)
    out[:, 1], out[:, 3] = width - labels[:, 3], width - labels[:, 1]
    return flipped, out


def filled_canvas(shape_hw: Tuple[int, int], color: Tuple[int, int, int]) -> np.ndarray:
    """A ``(h, w, 3)`` uint8 image of one colour. Broadcasting a 3-tuple into an array is ~50x slower than a scalar
    fill (2 ms against 0.04 ms for a 640x640 canvas), and the usual grey pad is one value in every channel."""
    if color[0] == color[1] == color[2]:
        return np.full((*shape_hw, 3), color[0], dtype=np.uint8)
    return np.tile(np.asarray(color, dtype=np.uint8), (*shape_hw, 1))


def mosaic4(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], img_size: int, rng: np.random.Generator,
            color: Tuple[int, int, int] = PAD_COLOR) -> Tuple[np.ndarray, np.ndarray]:
    """Tile four images around a random centre on a ``2s x 2s`` canvas (``s = img_size``).

    Image 0 goes top-left of the centre, 1 top-right, 2 bottom-left, 3 bottom-right; each touches the centre with
    one corner and is cut where it leaves the canvas. The centre is drawn from ``U(s/2, 3s/2)`` on both axes so the
    central ``s x s`` window (what :func:`random_affine` with ``border=(-s//2, -s//2)`` keeps) always shows parts of
    all four images. The caller follows with that affine call to get an ``s x s`` training image.

    Args:
        images: four ``(h_i, w_i, 3)`` uint8 images, typically resized so that their long side is ``s``.
        labels: four ``(n_i, 5)`` pixel xyxy label arrays, one per image.
    Returns:
        ``(canvas (2s, 2s, 3) uint8, labels (m, 5) pixel xyxy on the canvas, clipped to it)``.
    """
    if len(images) != 4 or len(labels) != 4:
        raise ValueError(f"mosaic4 needs exactly 4 images and 4 label arrays, got {len(images)} and {len(labels)}")
    size = int(img_size)
    canvas = filled_canvas((2 * size, 2 * size), color)
    centre_x, centre_y = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    placed = []
    for position, (img, img_labels) in enumerate(zip(images, labels)):
        height, width = img.shape[:2]
        # canvas window of this image (may extend past the canvas; the overlap is what gets copied)
        x_start = centre_x - width if position in (0, 2) else centre_x
        y_start = centre_y - height if position in (0, 1) else centre_y
        cx1, cy1 = max(x_start, 0), max(y_start, 0)
        cx2, cy2 = min(x_start + width, 2 * size), min(y_start + height, 2 * size)
        canvas[cy1:cy2, cx1:cx2] = img[cy1 - y_start:cy2 - y_start, cx1 - x_start:cx2 - x_start]
        shifted = img_labels.astype(np.float32, copy=True).reshape(-1, 5)
        shifted[:, [1, 3]] += x_start
        shifted[:, [2, 4]] += y_start
        placed.append(shifted)
    all_labels = np.concatenate(placed, axis=0)
    all_labels[:, 1:5] = all_labels[:, 1:5].clip(0, 2 * size)
    return canvas, all_labels


def normalised_to_pixels(labels_cxcywh: np.ndarray, width: float, height: float, pad_w: float = 0.0,
                         pad_h: float = 0.0) -> np.ndarray:
    """``(n, 5)`` ``[class, cx, cy, w, h]`` normalised to an image of ``width x height`` -> ``[class, x1, y1, x2, y2]``
    pixels, shifted by ``(pad_w, pad_h)`` (the letterbox offsets)."""
    boxes = torch.from_numpy(np.ascontiguousarray(labels_cxcywh[:, 1:5], dtype=np.float32))
    boxes_xyxy = cxcywh_to_xyxy(boxes).numpy() * np.float32((width, height, width, height))
    boxes_xyxy += np.float32((pad_w, pad_h, pad_w, pad_h))
    return np.concatenate([labels_cxcywh[:, :1].astype(np.float32), boxes_xyxy], axis=1)


def pixels_to_normalised(labels_xyxy: np.ndarray, width: float, height: float) -> np.ndarray:
    """``(n, 5)`` ``[class, x1, y1, x2, y2]`` pixels -> ``[class, cx, cy, w, h]`` normalised to ``width x height``."""
    boxes = torch.from_numpy(np.ascontiguousarray(labels_xyxy[:, 1:5], dtype=np.float32))
    boxes_cxcywh = xyxy_to_cxcywh(boxes).numpy() / np.float32((width, height, width, height))
    return np.concatenate([labels_xyxy[:, :1].astype(np.float32), boxes_cxcywh], axis=1)


def random_rescale(images: torch.Tensor, img_size: int, seed: int) -> torch.Tensor:
    """Multi-scale training: resize the batch to a random multiple of 32 in [0.5, 1.5] x img_size (darknet random=1).

    Seeded by the iteration so a resumed run draws the same sizes.
    """
    rng = random.Random(seed)
    size = max(32, int(rng.uniform(0.5, 1.5) * img_size) // 32 * 32)
    if size == images.shape[-1] and size == images.shape[-2]:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
