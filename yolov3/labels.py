"""Label files: where each image's labels are, what a valid row is, and the scan of a split with its cache.

Labels: the label file of ``.../images/<rest>/x.jpg`` is ``.../labels/<rest>/x.txt`` (the *last* ``images`` folder in
the path becomes ``labels``; an image path without one has its label file beside it). One row per object,
``class cx cy w h``, box normalised to [0, 1] by the image width and height. A missing label file means an image
with no objects; when no image of a split has one (a missing or misnamed ``labels`` folder), a warning says where
they were expected. Label files and .txt lists are UTF-8 (a byte-order mark is fine); file names may be any bytes.

Validation (once, then cached in ``<split>.yolov3-focal.cache`` beside the label folder, a name of our own so that
a yolov5 checkout on the same data keeps its ``<split>.cache``; keyed by a hash over every image and label path,
size and mtime, plus the cache version and ``nc``):

  * an image that cannot be decoded is reported and skipped;
  * a polygon row (``class x1 y1 x2 y2 x3 y3 ...``, 3 or more points: yolov5 / ultralytics segmentation labels) is
    taken as the bounding box of its points;
  * a label row must hold exactly five numbers, an integer class in ``[0, nc)``, coordinates in [0, 1] within
    ``COORD_TOLERANCE`` (then clipped), and positive width and height. Any bad row is reported as
    ``file:line: problem`` and **the whole image is skipped**: a file with one wrong row is not trustworthy, and
    keeping the image without that row would teach the model that the object is background;
  * exact duplicate rows are dropped (with a warning) and the image is kept;
  * boxes whose corners stick out of the image are clipped to it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from yolov3.data_yaml import LOGGER, SPLIT_KEYS, DataError
from yolov3.files import IMAGE_SUFFIXES
from yolov3.images import read_image
from yolov3.utils import atomic_write_text

CACHE_VERSION = 3  # bump when the scan's rules or the cache layout change (3: label_files in the summary)
COORD_TOLERANCE = 1e-3  # label writers round; a coordinate further than this outside [0, 1] is wrong, not rounded
MAX_LOGGED_PROBLEMS = 30  # beyond this many problems in a split, only the count is logged
SCAN_THREADS = 8  # image decoding releases the GIL; threads overlap file reads with decoding


def label_path_for(image_path: Union[str, Path]) -> str:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (the last ``images`` component, or Darknet's VOC layout's
    ``JPEGImages``); beside the image otherwise."""
    parts = list(Path(image_path).parts)
    for i in range(len(parts) - 2, -1, -1):  # the file name itself is never the folder to swap
        if parts[i] in ("images", "JPEGImages"):
            parts[i] = "labels"
            break
    return str(Path(*parts).with_suffix(".txt"))


def list_images(sources: Sequence[str], root: str, split: str, yaml_file: str = "<data>") -> List[str]:
    """Expand folders (recursively) and .txt lists into a sorted, de-duplicated list of image paths."""
    images: List[str] = []
    for source in sources:
        source_path = Path(source)
        if source_path.is_dir():
            images += [str(p) for p in sorted(source_path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif source_path.is_file() and source_path.suffix == ".txt":
            for line in _read_text_list(source_path, yaml_file, split).splitlines():
                line = line.strip()
                if line:
                    line_path = Path(line)
                    images.append(str(line_path if line_path.is_absolute() else Path(root) / line_path))
        elif source_path.is_file() and source_path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(str(source_path))
        elif not source_path.exists():
            raise DataError(f"{yaml_file}: split '{split}': {source} does not exist (expected a folder of images, a "
                            ".txt list or an image)")
        else:
            raise DataError(f"{yaml_file}: split '{split}': {source} is not a folder, a .txt list or an image")
    return list(dict.fromkeys(os.path.normpath(p) for p in images))


def _read_text_list(path: Path, yaml_file: str, split: str) -> str:
    """The text of a .txt image list; one that is not UTF-8 is a one-line DataError naming it (a BOM is fine:
    Windows editors add one)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{yaml_file}: split '{split}': {path} is not UTF-8 text (undecodable byte at offset "
                        f"{exc.start}); save the image list as UTF-8") from None


def parse_label_text(text: str, label_file: str, num_classes: int) -> Tuple[np.ndarray, List[str], List[str]]:
    """Check YOLO label text. Returns ``(labels (n, 5) float32 [class, cx, cy, w, h], errors, warnings)``.

    ``errors`` (the image must be skipped) and ``warnings`` (duplicates dropped) are ``file:line: problem`` strings.
    Coordinates within ``COORD_TOLERANCE`` of [0, 1] are accepted, then each box is clipped to the image.
    """
    errors: List[str] = []
    warnings: List[str] = []
    rows: List[Tuple[float, ...]] = []
    row_lines: List[int] = []
    first_line: Dict[Tuple[float, ...], int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}:{line_no}"
        polygon = len(fields) >= 7 and len(fields) % 2 == 1  # class and 3 or more x y points
        if len(fields) != 5 and not polygon:
            errors.append(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)} (a polygon row has "
                          "the class and 3 or more x y points: an odd count of at least 7)")
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_float(v))
            errors.append(f"{where}: non-numeric value {bad!r}")
            continue
        if not all(math.isfinite(v) for v in values):
            errors.append(f"{where}: non-finite value in {' '.join(fields)}")
            continue
        if polygon:
            xs, ys = values[1::2], values[2::2]
            outside = [f"{'xy'[k % 2]}{k // 2 + 1}={fields[1 + k]}" for k, v in enumerate(values[1:])
                       if not -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE]
            if outside:
                errors.append(f"{where}: polygon point {', '.join(outside)} outside [0, 1]")
                continue
            # the polygon's bounding box, as a box row (its text too, for the messages below)
            values = [values[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs),
                      max(ys) - min(ys)]
            fields = [fields[0]] + [f"{v:g}" for v in values[1:]]
        cls, cx, cy, w, h = values
        row_errors = []
        if not cls.is_integer():
            row_errors.append(f"class {fields[0]} is not an integer")
        elif not 0 <= cls < num_classes:
            row_errors.append(f"class {int(cls)} out of range [0, {num_classes})")
        for name, text, v in zip(("cx", "cy", "w", "h"), fields[1:], (cx, cy, w, h)):
            if not -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE:
                row_errors.append(f"{name}={text} outside [0, 1]")
        if w <= 0 or h <= 0:
            row_errors.append(f"width and height must be positive, got w={fields[3]} h={fields[4]}")
        if row_errors:
            errors.append(f"{where}: " + "; ".join(row_errors))
            continue
        key = tuple(values)
        if key in first_line:
            warnings.append(f"{where}: duplicate of line {first_line[key]}, dropped")
            continue
        first_line[key] = line_no
        rows.append(key)
        row_lines.append(line_no)
    if errors or not rows:
        return np.zeros((0, 5), dtype=np.float32), errors, warnings
    labels = np.asarray(rows, dtype=np.float64)  # (n, 5)
    # clip the corners to the image and rebuild centre and size (boxes straddling the border stay, trimmed)
    x1 = np.clip(labels[:, 1] - labels[:, 3] / 2, 0, 1)
    y1 = np.clip(labels[:, 2] - labels[:, 4] / 2, 0, 1)
    x2 = np.clip(labels[:, 1] + labels[:, 3] / 2, 0, 1)
    y2 = np.clip(labels[:, 2] + labels[:, 4] / 2, 0, 1)
    labels[:, 1:] = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    # a box that only touches the image within the tolerance has no area left: its label is wrong, not trimmed
    for index in np.flatnonzero((labels[:, 3] <= 0) | (labels[:, 4] <= 0)):
        errors.append(f"{label_file}:{row_lines[index]}: the box lies outside the image (no area left after "
                      f"clipping to [0, 1])")
    if errors:
        return np.zeros((0, 5), dtype=np.float32), errors, warnings
    return labels.astype(np.float32), errors, warnings


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class SplitEntries:
    """The usable images of a split after validation, in a stable (sorted) order."""

    paths: List[str]
    labels: List[np.ndarray]  # each (n, 5) float32 [class, cx, cy, w, h] normalised
    shapes: List[Tuple[int, int]]  # original (height, width)
    summary: Dict[str, int] = field(default_factory=dict)
    messages: List[str] = field(default_factory=list)
    cache_path: Optional[str] = None
    from_cache: bool = False


def _stat_signature(path: str) -> Tuple[int, int]:
    try:
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return -1, -1


def _scan_hash(image_paths: Sequence[str], label_paths: Sequence[str], num_classes: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} nc{num_classes} tol{COORD_TOLERANCE}".encode())
    for image_path, label_path in zip(image_paths, label_paths):
        line = f"{image_path}|{_stat_signature(image_path)}|{label_path}|{_stat_signature(label_path)}\n"
        # file names that are not valid UTF-8 arrive as surrogate escapes ('\udcff'); hash the bytes the OS gave
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _scan_one(image_path: str, label_path: str, num_classes: int):
    """Returns ``(shape or None, labels, errors, warnings, duplicates, has_label_file)`` for one image."""
    has_label_file = os.path.isfile(label_path)  # checked first: it counts even for an unreadable image
    img = read_image(image_path)
    if img is None:
        return (None, None, [f"{image_path}: cannot read or decode the image (corrupt or unsupported), skipped"], [],
                0, has_label_file)
    shape = img.shape[:2]
    if not has_label_file:
        return shape, np.zeros((0, 5), np.float32), [], [], 0, False
    try:
        # utf-8-sig: a byte-order mark (Windows editors) must not turn the first row into a bad row
        text = Path(label_path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return shape, None, [f"{label_path}: cannot read the label file ({exc}); image skipped"], [], 0, True
    labels, errors, warnings = parse_label_text(text, label_path, num_classes)
    if errors:
        errors = [f"{e}; image skipped" for e in errors]
        return shape, None, errors, warnings, len(warnings), True
    return shape, labels, [], warnings, len(warnings), True


CACHE_SUFFIX = ".yolov3-focal.cache"  # our own name: a yolov5 checkout on the same data writes labels/train.cache


def _cache_path_for(label_paths: Sequence[str], split: str) -> Path:
    # beside the labels folder in the usual layout (labels/train -> labels/train.yolov3-focal.cache)
    return Path(label_paths[0]).parent.parent / f"{split}{CACHE_SUFFIX}"


def _log_messages(messages: Sequence[str]) -> None:
    for message in messages[:MAX_LOGGED_PROBLEMS]:
        LOGGER.warning("WARNING %s", message)
    if len(messages) > MAX_LOGGED_PROBLEMS:
        LOGGER.warning("WARNING ... and %d more problems", len(messages) - MAX_LOGGED_PROBLEMS)


def split_images(data: dict, split: str) -> List[str]:
    """The image paths of ``split`` (listed, not yet read); a DataError naming the data YAML when the split is not
    defined, does not exist or holds no image."""
    yaml_file = data.get("yaml", "<data>")
    if split not in SPLIT_KEYS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLIT_KEYS)}")
    sources = data.get(split) or []
    if not sources:
        raise DataError(f"{yaml_file}: split '{split}' is not defined")
    try:
        image_paths = list_images(sources, data["path"], split, yaml_file)
    except DataError as exc:
        if not data.get("path_tried"):
            raise
        raise DataError(f"{exc}; the dataset root 'path' was looked for at {' and '.join(data['path_tried'])} and "
                        "none exists" + (f" (to get it: {data['download']})" if data.get("download") else "")) from None
    if not image_paths:
        raise DataError(f"{yaml_file}: split '{split}' has no images in {', '.join(sources)}")
    return image_paths


def scan_split(data: dict, split: str, progress: bool = True) -> SplitEntries:
    """Validate every image and label file of ``split`` (or load the valid cache) and log one summary line."""
    yaml_file = data.get("yaml", "<data>")
    image_paths = split_images(data, split)
    label_paths = [label_path_for(p) for p in image_paths]
    num_classes = int(data["nc"])
    scan_hash = _scan_hash(image_paths, label_paths, num_classes)
    cache_path = _cache_path_for(label_paths, split)

    entries = _load_cache(cache_path, scan_hash)
    if entries is None:
        entries = _scan(image_paths, label_paths, num_classes, split, progress)
        if cache_path.parent.is_dir():  # never create a labels/ folder: next to a misnamed one it would look right
            _save_cache(cache_path, scan_hash, entries)
    entries.cache_path = str(cache_path)
    _log_messages(entries.messages)
    s = entries.summary
    LOGGER.info("%s: %d images, %d boxes, %d empty, %d skipped (%d unreadable, %d bad labels), %d duplicate rows "
                "dropped%s", split, s["images"], s["boxes"], s["empty"], s["skipped"], s["unreadable"],
                s["bad_labels"], s["duplicates"], " [cached]" if entries.from_cache else "")
    if s.get("label_files") == 0:
        # once per split and scan, cached or not: a missing or misnamed labels/ folder would otherwise train every
        # image as background without a word
        LOGGER.warning("WARNING %s: no label file found for any of %d images; expected them at %s (for %s: the last "
                       "'images' folder of the path becomes 'labels'), so every image trains as background",
                       split, len(image_paths), label_paths[0], image_paths[0])
    if not entries.paths:
        raise DataError(f"{yaml_file}: split '{split}' has no usable image ({len(image_paths)} found, all skipped; "
                        "see the warnings above)")
    return entries


def _scan(image_paths, label_paths, num_classes, split, progress) -> SplitEntries:
    entries = SplitEntries([], [], [], messages=[])
    counts = {"images": 0, "boxes": 0, "empty": 0, "skipped": 0, "unreadable": 0, "bad_labels": 0, "duplicates": 0,
              "label_files": 0}
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        results = pool.map(_scan_one, image_paths, label_paths, [num_classes] * len(image_paths))
        for image_path, (shape, labels, errors, warnings, duplicates, has_label_file) in tqdm(
                zip(image_paths, results), total=len(image_paths), desc=f"scanning {split}", disable=not progress,
                unit="img", leave=False):
            entries.messages += errors + warnings
            counts["duplicates"] += duplicates
            counts["label_files"] += int(has_label_file)
            if labels is None:
                counts["skipped"] += 1
                counts["unreadable" if shape is None else "bad_labels"] += 1
                continue
            entries.paths.append(image_path)
            entries.labels.append(labels)
            entries.shapes.append(tuple(int(v) for v in shape))
            counts["images"] += 1
            counts["boxes"] += len(labels)
            counts["empty"] += int(len(labels) == 0)
    entries.summary = counts
    return entries


def _save_cache(cache_path: Path, scan_hash: str, entries: SplitEntries) -> None:
    payload = {
        "version": CACHE_VERSION,
        "hash": scan_hash,
        "summary": entries.summary,
        "messages": entries.messages,
        "paths": entries.paths,
        "shapes": [list(s) for s in entries.shapes],
        "labels": [np.round(l.astype(np.float64), 7).tolist() for l in entries.labels],
    }
    try:
        atomic_write_text(cache_path, json.dumps(payload))
    except OSError as exc:  # a read-only dataset still trains, it just re-scans every time
        LOGGER.warning("WARNING cannot write the label cache %s (%s)", cache_path, exc)


def _load_cache(cache_path: Path, scan_hash: str) -> Optional[SplitEntries]:
    try:
        payload = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION or payload.get("hash") != scan_hash:
        return None
    try:  # a damaged cache is only a reason to scan again
        labels = [np.asarray(l, dtype=np.float32).reshape(-1, 5) for l in payload["labels"]]
        return SplitEntries(list(payload["paths"]), labels, [tuple(s) for s in payload["shapes"]],
                            dict(payload["summary"]), list(payload["messages"]), from_cache=True)
    except (KeyError, TypeError, ValueError):
        return None
