"""Datasets in the YOLO convention: the data YAML, label validation with a cache, the Dataset and its loader.

Data YAML (the common YOLO convention)::

    path: ../datasets/coco       # dataset root; relative to the YAML's folder (default: that folder); for the
                                 # YAMLs installed with the package, relative to ./data (yolov3.paths)
    train: images/train2017      # relative to `path`: a folder of images, a .txt list of image paths, or a list
    val: images/val2017
    test: test-dev2017.txt       # optional
    nc: 80                       # optional; must equal len(names)
    names: [person, bicycle, ...]  # or {0: person, 1: bicycle, ...}
    download: ...                # optional: text telling a person how to get the data (never run), or a mapping
                                 # that builds the dataset when it is missing (yolov3.fetch; data/bccd.yaml)
    generate: {...}              # optional, built-in dataset only: see yolov3.synthetic

Lines of a .txt list are image paths relative to ``path`` (or absolute). Any other top-level key (a Roboflow
export's ``roboflow:`` block, yolov5's ``download`` scripts are fine) is warned about and ignored. A relative ``path``
that does not exist relative to the YAML's folder is also looked for relative to the working directory and the
repository root, as yolov5 resolves it (``path: ../datasets/coco128`` beside the clone); when none exists, the error
about the first missing split says where it looked.

Darknet / PyTorch-YOLOv3 ``.data`` files are read too: ``classes``, ``train``, ``valid``, optional ``test`` (image
folders or ``.txt`` lists) and ``names`` (a ``.names`` file, one class per line); paths relative to the working
directory as darknet takes them (else to the ``.data`` file's folder); other keys (``backup``, ``eval``) are ignored.

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

Batches are ``(images, targets, paths, shapes)`` as in CONTRACTS.md. Workers send ``uint8`` images (4x less
inter-process traffic than float); :class:`YOLODataLoader` converts to float ``[0, 1]`` in the main process.

Reproducibility: every sample draws its augmentation from ``numpy.random.default_rng((seed, epoch, index))``, so a
batch depends on the seed, the epoch and the sampler order only — not on worker count or timing. The samplers hand
the epoch to the workers with each index, so call ``dataset.set_epoch(epoch)`` before iterating an epoch (this also
reshuffles, like ``DistributedSampler.set_epoch``); resuming at epoch ``e`` replays epoch ``e`` exactly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from yolov3 import synthetic
from yolov3.augment import (PAD_COLOR, augment_hsv, fliplr, letterbox, letterbox_geometry, mosaic4,
                            normalised_to_pixels, pixels_to_normalised, random_affine)
from yolov3.config import AugmentConfig, read_yaml
from yolov3 import paths as project_paths
from yolov3.paths import data_yaml_base, resolve_path
from yolov3.fetch import FetchError, ensure_dataset, parse_download_spec
from yolov3.files import IMAGE_SUFFIXES
from yolov3.utils import atomic_write_text

LOGGER = logging.getLogger("yolov3.data")

YAML_KEYS = ("path", "train", "val", "test", "nc", "names", "download", "generate")
SPLIT_KEYS = ("train", "val", "test")
CACHE_VERSION = 3  # bump when the scan's rules or the cache layout change (3: label_files in the summary)
COORD_TOLERANCE = 1e-3  # label writers round; a coordinate further than this outside [0, 1] is wrong, not rounded
MAX_LOGGED_PROBLEMS = 30  # beyond this many problems in a split, only the count is logged
SCAN_THREADS = 8  # image decoding releases the GIL; threads overlap file reads with decoding


class DataError(ValueError):
    """A dataset problem; the message names the YAML, key, split, file or line involved."""


class _FallbackHandler(logging.StreamHandler):
    """Prints to stderr only while the application has configured no root handler, so messages are never lost
    (the command lines configure nothing) and never doubled (when an application calls ``logging.basicConfig``)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def _ensure_log_output() -> None:
    package_logger = logging.getLogger("yolov3")
    if not any(isinstance(h, _FallbackHandler) for h in package_logger.handlers):
        handler = _FallbackHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)  # the scan summary is INFO and must show by default


_ensure_log_output()


# --------------------------------------------------------------------------------------------------------------------
# Data YAML
# --------------------------------------------------------------------------------------------------------------------
def _read_yaml_mapping(path: Path) -> dict:
    content = read_yaml(path, error=DataError, what="data YAML")
    if not isinstance(content, dict):
        raise DataError(f"{path}: a data YAML must be a mapping with keys {', '.join(YAML_KEYS)}")
    return content


def _parse_names(names, nc, source: Path) -> List[str]:
    if isinstance(names, dict):
        keys = sorted(names)
        if any(isinstance(k, bool) or not isinstance(k, int) for k in keys) or keys != list(range(len(keys))):
            raise DataError(f"{source}: 'names' as a mapping needs the keys 0..{len(keys) - 1}, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{source}: 'names' must be a non-empty list or a mapping index -> name, got {names!r}")
    names = [str(n) for n in names]
    if nc is not None:
        if isinstance(nc, bool) or not isinstance(nc, int):
            raise DataError(f"{source}: 'nc' must be an integer, got {nc!r}")
        if nc != len(names):
            raise DataError(f"{source}: 'nc' is {nc} but 'names' lists {len(names)} classes")
    return names


def _resolve_split(value, root: Path, source: Path, split: str) -> List[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    resolved = []
    for item in items:
        if not isinstance(item, str):
            raise DataError(f"{source}: '{split}' expects a path or a list of paths, got {item!r}")
        item_path = Path(item).expanduser()
        resolved.append(str(item_path if item_path.is_absolute() else (root / item_path)))
    return resolved


SINGLE_CLASS_NAME = "object"  # the one class of train.single_cls (val.py --single-cls names it the same)


def as_single_class(data: dict) -> dict:
    """``data`` (from :func:`load_data_yaml`) with every box as class 0 of the one class ``object``: a dataset built
    from it reads the same images and boxes with the class column zeroed (train.single_cls, yolov5's --single-cls).
    ``nc`` stays the data's: the label rows are still checked against the classes the data has."""
    return {**data, "names": [SINGLE_CLASS_NAME], "single_cls": True}


def load_data_yaml(path: Union[str, Path], fetch: bool = True, source: Optional[str] = None) -> dict:
    """Read and check a data YAML. Returns ``{'path', 'train', 'val', 'test', 'nc', 'names', 'yaml', 'download'}``:
    ``path`` the resolved root, each split a list of resolved folders / .txt files, ``names`` a list, ``yaml`` the
    YAML's own path (for messages). A ``generate:`` block writes the built-in dataset first when needed; a
    ``download:`` mapping builds a missing dataset (:mod:`yolov3.fetch`; ``source`` a local archive or folder, or a
    URL, instead of its url) unless ``fetch`` is False. A Darknet ``.data`` file gives the same dict (see the module
    docstring)."""
    yaml_path = resolve_path(path).resolve()  # as given, else the data YAML of that name shipped with the package
    if yaml_path.suffix == ".data":
        return _load_darknet_data(yaml_path)
    content = _read_yaml_mapping(yaml_path)
    unknown = [key for key in content if key not in YAML_KEYS]
    if unknown:  # a Roboflow export adds a roboflow: block, other tools their own keys: say so, use the rest
        LOGGER.warning("WARNING %s: ignoring unknown key%s %s (known keys: %s)", yaml_path, "s" * (len(unknown) > 1),
                       ", ".join(f"'{key}'" for key in unknown), ", ".join(YAML_KEYS))
    root_value = content.get("path")
    tried: List[str] = []
    if root_value is None:
        root = data_yaml_base(yaml_path)
    elif isinstance(root_value, str):
        root, tried = _dataset_root(root_value, yaml_path, generated="generate" in content)
    else:
        raise DataError(f"{yaml_path}: 'path' must be a string, got {root_value!r}")
    if "names" not in content:
        raise DataError(f"{yaml_path}: missing key 'names' (the class names, a list or a mapping index -> name)")
    names = _parse_names(content["names"], content.get("nc"), yaml_path)
    if "generate" in content:
        try:
            synthetic.ensure_shapes_dataset(root, content["generate"] or {}, source=str(yaml_path), names=names)
        except synthetic.SyntheticDataError as exc:
            raise DataError(str(exc)) from None
    data = {"path": str(root), "nc": len(names), "names": names, "yaml": str(yaml_path),
            "download": content.get("download"), "path_tried": tried}
    for split in SPLIT_KEYS:
        data[split] = _resolve_split(content.get(split), root, yaml_path, split)
    if isinstance(data["download"], dict):
        data["path_tried"] = []  # built where the YAML says when missing (the first place _dataset_root looks)
        try:
            if fetch:
                ensure_dataset(data, data["download"], source, log=LOGGER.info)
            else:
                parse_download_spec(data["download"], yaml_path)
        except FetchError as exc:
            raise DataError(str(exc)) from None
    return data


def _dataset_root(value: str, yaml_path: Path, generated: bool) -> Tuple[Path, List[str]]:
    """(dataset root, the places looked at when none of them exists) for a YAML's ``path: value``.

    Relative to the YAML's folder first (our convention), then to the working directory and the repository root
    (yolov5's). The built-in dataset is generated where the YAML itself says.
    """
    given = Path(value).expanduser()
    if given.is_absolute():
        return given.resolve(), []
    candidates = [data_yaml_base(yaml_path) / given, Path.cwd() / given]
    if project_paths.ROOT != project_paths.INSTALLED_ROOT:  # a checkout (an installed package is no place for datasets)
        candidates.append(project_paths.ROOT / given)
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))
    if generated:
        return candidates[0], []
    for candidate in candidates:
        if candidate.is_dir():
            return candidate, []
    return candidates[0], [str(c) for c in candidates]


DARKNET_DATA_KEYS = {"classes": "nc", "train": "train", "valid": "val", "test": "test", "names": "names"}
DARKNET_IGNORED_KEYS = ("backup", "eval", "results", "map", "top", "labels")  # training/output settings of darknet


def _darknet_path(value: str, data_file: Path) -> Path:
    """A path in a .data file: relative to the working directory (darknet's rule), else to the file's folder."""
    given = Path(value).expanduser()
    if given.is_absolute() or given.exists():
        return given.resolve() if given.is_absolute() else (Path.cwd() / given)
    beside = data_file.parent / given
    return beside if beside.exists() else Path.cwd() / given


def _load_darknet_data(data_file: Path) -> dict:
    """A Darknet / PyTorch-YOLOv3 ``.data`` file as :func:`load_data_yaml`'s dict."""
    try:
        text = data_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{data_file}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{data_file}: not UTF-8 text (undecodable byte at offset {exc.start})") from None
    values: Dict[str, Tuple[str, int]] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise DataError(f"{data_file}:{line_no}: expected 'key = value' (a Darknet .data file), got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if key in DARKNET_DATA_KEYS:
            values[key] = (value, line_no)
        elif key not in DARKNET_IGNORED_KEYS:
            LOGGER.warning("WARNING %s:%d: ignoring unknown key '%s' (known keys: %s)", data_file, line_no, key,
                           ", ".join(DARKNET_DATA_KEYS))
    for key in ("names", "train", "valid"):
        if key not in values:
            raise DataError(f"{data_file}: missing key '{key}' (a .data file needs classes, train, valid, names)")
    names_value, names_line = values["names"]
    names_file = _darknet_path(names_value, data_file)
    if not names_file.is_file():
        raise DataError(f"{data_file}:{names_line}: names file {names_value} not found (looked for "
                        f"{Path.cwd() / names_value} and {data_file.parent / names_value})")
    names = [ln.strip() for ln in names_file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    nc = None
    if "classes" in values:
        classes_value, classes_line = values["classes"]
        if not classes_value.isdigit():
            raise DataError(f"{data_file}:{classes_line}: 'classes' must be a whole number, got {classes_value!r}")
        nc = int(classes_value)
    names = _parse_names(names, nc, data_file)
    data = {"path": str(Path.cwd()), "nc": len(names), "names": names, "yaml": str(data_file), "download": None,
            "path_tried": []}
    for key, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        data[split] = [str(_darknet_path(values[key][0], data_file))] if key in values else []
    return data


# --------------------------------------------------------------------------------------------------------------------
# Listing images and labels
# --------------------------------------------------------------------------------------------------------------------
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


def read_image(path: str) -> Optional[np.ndarray]:
    """BGR uint8 ``(H, W, 3)`` or None when the file cannot be read or decoded (works with non-ASCII paths)."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if raw.size == 0:
        return None
    return cv2.imdecode(raw, cv2.IMREAD_COLOR)


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


def scan_split(data: dict, split: str, progress: bool = True) -> SplitEntries:
    """Validate every image and label file of ``split`` (or load the valid cache) and log one summary line."""
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


# --------------------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------------------
class YOLODataset(Dataset):
    """Images of one split, letterboxed to ``img_size`` and augmented when ``augment`` is given.

    ``dataset[i]`` (or ``dataset[(i, epoch)]``, what the samplers pass) returns
    ``(image uint8 (3, S, S) RGB, labels float32 (n, 5) [class, cx, cy, w, h] normalised to S, path, shapes)``.
    """

    def __init__(self, data: dict, split: str, img_size: int, augment: Optional[AugmentConfig] = None, seed: int = 0,
                 cache: Union[bool, str] = False, progress: bool = True):
        if img_size % 32:
            raise DataError(f"img_size must be a multiple of 32 (the largest stride), got {img_size}")
        entries = scan_split(data, split, progress)
        self.split = split
        self.paths = entries.paths
        self.labels = entries.labels
        if data.get("single_cls"):  # as_single_class: one class; the scan (and its cache) keeps the real ones
            self.labels = [np.concatenate((np.zeros_like(rows[:, :1]), rows[:, 1:]), 1) for rows in self.labels]
        self.shapes = entries.shapes
        self.img_size = int(img_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.names = list(data["names"])
        self._ram_cache: Optional[List[np.ndarray]] = None
        if ram_cache_wanted(cache, len(self.paths), self.img_size):
            self._fill_ram_cache(progress)

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness and shuffling order of ``epoch`` (call before iterating it)."""
        self.epoch = int(epoch)

    def _fill_ram_cache(self, progress: bool) -> None:
        with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
            images = list(tqdm(pool.map(self._read_resized, range(len(self))), total=len(self),
                               desc=f"caching {self.split} images", disable=not progress, unit="img", leave=False))
        LOGGER.info("%s: cached %d images in RAM (%.2f GB)", self.split, len(images), sum(i.nbytes for i in images) / 1e9)
        self._ram_cache = images

    def _read_resized(self, index: int) -> np.ndarray:
        img = read_image(self.paths[index])
        if img is None:  # the scan read it; it changed on disk since
            raise DataError(f"{self.paths[index]}: cannot read the image any more (changed after the scan?)")
        height0, width0 = img.shape[:2]
        gain = self.img_size / max(height0, width0)
        if gain != 1:
            size = (max(1, round(width0 * gain)), max(1, round(height0 * gain)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR)
        return img

    def load_image(self, index: int) -> np.ndarray:
        """BGR uint8 image resized so that its long side is ``img_size`` (from the RAM cache when enabled)."""
        if self._ram_cache is not None:
            return self._ram_cache[index]
        return self._read_resized(index)

    def _pixel_labels(self, index: int, img: np.ndarray) -> np.ndarray:
        height, width = img.shape[:2]
        return normalised_to_pixels(self.labels[index], width, height)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        rng = np.random.default_rng([self.seed, epoch, index])
        size = self.img_size
        aug = self.augment
        img = self.load_image(index)
        height0, width0 = self.shapes[index]
        # the geometry only: mosaic (most training images) never uses the letterboxed pixels
        _, (ratio_w, ratio_h), (pad_left, pad_top, _, _) = letterbox_geometry(img.shape[:2], size, scaleup=True)
        pad_w, pad_h = float(pad_left), float(pad_top)
        # ratios relative to the *original* image: x_net = x_orig * ratio + pad
        resized_h, resized_w = img.shape[:2]
        ratio_w, ratio_h = resized_w * ratio_w / width0, resized_h * ratio_h / height0
        shapes = ((height0, width0), (ratio_w, ratio_h), (pad_w, pad_h))

        if aug is not None and rng.random() < aug.mosaic:
            others = rng.integers(0, len(self), 3)
            indices = [index, *(int(i) for i in others)]
            tiles = [img] + [self.load_image(i) for i in indices[1:]]
            tile_labels = [normalised_to_pixels(self.labels[i], t.shape[1], t.shape[0]) for i, t in zip(indices, tiles)]
            canvas, labels = mosaic4(tiles, tile_labels, size, rng)
            out, labels = random_affine(canvas, labels, rng, aug.degrees, aug.translate, aug.scale, aug.shear,
                                        border=(-size // 2, -size // 2))
        else:
            out, _, _ = letterbox(img, size, PAD_COLOR, scaleup=True, auto=False)
            labels = normalised_to_pixels(self.labels[index], width0 * ratio_w, height0 * ratio_h, pad_w, pad_h)
            if aug is not None:
                out, labels = random_affine(out, labels, rng, aug.degrees, aug.translate, aug.scale, aug.shear)
        if aug is not None:
            if out is img:
                out = out.copy()  # HSV works in place and must never touch the RAM-cached image
            augment_hsv(out, rng, aug.hsv_h, aug.hsv_s, aug.hsv_v)
            if rng.random() < aug.fliplr:
                out, labels = fliplr(out, labels)
        labels = pixels_to_normalised(labels, out.shape[1], out.shape[0])
        # (3, S, S) RGB as a view of HWC memory: no transposing copy here, and collate_batch stacks the pixels as they
        # lie into a channels_last batch, the layout the network trains fastest in
        chw_rgb = torch.from_numpy(cv2.cvtColor(out, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        return chw_rgb, torch.from_numpy(labels), self.paths[index], shapes


def collate_batch(batch):
    """List of samples -> ``(images uint8 (B, 3, S, S), targets (N, 6) [image_index, class, cx, cy, w, h], paths,
    shapes)``. The images are channels_last (NHWC memory) when the samples are HWC views, as the dataset's are.
    The float conversion happens in :class:`YOLODataLoader`, in the main process."""
    images, labels, paths, shapes = zip(*batch)
    image_index = [torch.full((len(l), 1), float(i)) for i, l in enumerate(labels)]
    targets = torch.cat([torch.cat([idx, l], dim=1) for idx, l in zip(image_index, labels)], dim=0)  # (N, 6)
    batch_hwc = torch.stack([image.permute(1, 2, 0) for image in images], dim=0)  # (B, S, S, 3), one copy
    return batch_hwc.permute(0, 3, 1, 2), targets.reshape(-1, 6), list(paths), list(shapes)


class YOLODataLoader(DataLoader):
    """A DataLoader whose batches carry float32 images in [0, 1]: workers ship uint8, the conversion runs here.

    With ``device`` a GPU, the uint8 batch (pinned by the loader) is copied to it first, asynchronously, and
    converted there: a quarter of float32's bytes over the bus and no float conversion on the CPU. Images then
    arrive on ``device``; targets stay on the CPU.
    """

    def __init__(self, *args, device: Optional[Union[str, torch.device]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = None if device is None else torch.device(device)

    def __iter__(self) -> Iterator:
        for images, targets, paths, shapes in super().__iter__():
            if self.device is not None and self.device.type != "cpu":
                images = images.to(self.device, non_blocking=True)  # uint8 from pinned memory
            yield images.float().div_(255.0), targets, paths, shapes


# --------------------------------------------------------------------------------------------------------------------
# Samplers: they run in the main process, read the dataset's epoch and pass it along with each index
# --------------------------------------------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([abs(seed), abs(epoch)]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``; the order is a seeded permutation per epoch when ``shuffle``."""

    def __init__(self, dataset: YOLODataset, shuffle: bool, seed: int):
        self.dataset, self.shuffle, self.seed = dataset, shuffle, seed
        self.skip = 0  # leading samples of this epoch's order to leave out (resuming inside an epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        epoch = self.dataset.epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = range(len(self.dataset))
        return ((i, epoch) for i in list(order)[self.skip:])


class DistributedEpochSampler(DistributedSampler):
    """``DistributedSampler`` (each rank its share, same permutation everywhere) yielding ``(index, epoch)``."""

    skip = 0  # leading samples of this rank's share to leave out (resuming inside an epoch)

    def __iter__(self):
        epoch = self.dataset.epoch
        self.set_epoch(epoch)
        return ((int(i), epoch) for i in list(super().__iter__())[self.skip:])


AUTO_CACHE_RAM_FRACTION = 0.1  # cache: auto keeps decoded images when they take at most this share of free memory


def available_memory_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else None: then cache 'auto' does not cache."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def ram_cache_wanted(cache: Union[bool, str], num_images: int, img_size: int) -> bool:
    """Whether to keep a split's decoded images in RAM: ``ram``/True yes, ``off``/False no, ``auto`` when they fit.

    Decoding a JPEG costs ~1 ms and mosaic reads four per training image: with few loader workers that is the largest
    cost outside the network. ``auto`` caches when the images (at most ``img_size^2 x 3`` bytes each, resized so their
    long side is img_size) take at most AUTO_CACHE_RAM_FRACTION of the memory available now: the built-in dataset
    (1,750 images at 256 px, 0.34 GB) is cached, COCO at 640 px (145 GB) is not. Workers share the cache (fork).
    """
    if cache in (True, "ram"):
        return True
    if cache != "auto":
        return False
    available = available_memory_bytes()
    return available is not None and num_images * img_size * img_size * 3 <= AUTO_CACHE_RAM_FRACTION * available


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a worker from torch's per-worker seed (derived from the loader's seeded generator).

    Workers also ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, and a worker that died of it
    would break the main process, which finishes its batch and saves a checkpoint before it stops.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def create_dataloader(data: dict, split: str, img_size: int, batch_size: int, augment: Optional[AugmentConfig],
                      workers: int, seed: int, shuffle: bool, cache: bool = False, rank: int = -1,
                      world_size: int = 1, progress: bool = True,
                      device: Optional[Union[str, torch.device]] = None) -> Tuple[YOLODataLoader, YOLODataset]:
    """Build the dataset of ``split`` and its loader (see CONTRACTS.md "Data").

    ``device``: where the training/validation runs; on a GPU the images are converted there (see YOLODataLoader).

    ``batch_size`` is per process. With ``world_size > 1`` a :class:`DistributedEpochSampler` splits the data by
    ``rank``. Call ``dataset.set_epoch(epoch)`` before each epoch.
    """
    dataset = YOLODataset(data, split, img_size, augment=augment, seed=seed, cache=cache, progress=progress)
    if world_size > 1:
        sampler: Sampler = DistributedEpochSampler(dataset, num_replicas=world_size, rank=max(rank, 0),
                                                   shuffle=shuffle, seed=seed)
    else:
        sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed)
    workers = max(0, min(int(workers), os.cpu_count() or 1, batch_size if batch_size > 0 else 1))
    if workers > 0:
        # before forking: OpenCV's thread pool does not survive fork() reliably, and the workers already use the cores
        cv2.setNumThreads(0)
    loader = YOLODataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_batch,
        # pinned batches copy to a GPU asynchronously; without a device, pin whenever CUDA is there (the caller may
        # move the batch itself)
        pin_memory=torch.cuda.is_available() if device is None else torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )
    return loader, dataset
