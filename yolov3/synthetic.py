"""The built-in dataset: coloured shapes on cluttered backgrounds, written as a real YOLO-format dataset.

``data/shapes.yaml`` holds a ``generate:`` block; :func:`yolov3.data.load_data_yaml` calls
:func:`ensure_shapes_dataset` with it, which writes ``images/{train,val}`` and ``labels/{train,val}`` under the YAML's
``path`` on first use and skips the work when ``manifest.json`` there records the same parameters.

What an image holds (every choice is a named constant below, with its reason):
  * a textured background: a two-colour linear gradient, low-frequency colour blotches, random straight lines and
    random-walk curves (clutter that is *not* one of the classes), and pixel noise over everything;
  * 0 to ``max_objects`` shapes of 5 classes with uneven frequencies, random colours (picked to contrast with the
    background under them) and sizes from ``MIN_OBJECT_PX`` to half the image, log-uniform so small objects are common;
  * partial occlusion: later shapes are drawn over earlier ones; a placement that would leave an earlier shape less
    than ``MIN_VISIBLE_FRACTION`` visible is rejected and re-drawn elsewhere, so every shape in the image is labelled
    and every label box is the shape's true full extent (hidden parts included);
  * about ``EMPTY_IMAGE_FRACTION`` of images hold no object at all.

Every image is drawn from its own generator seeded by ``(seed, split, index)``: same parameters, same bytes.
``python -m yolov3.datastats --stats`` prints the dataset statistics.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from yolov3.utils import atomic_write_text

CLASS_NAMES = ("circle", "rectangle", "triangle", "star", "cross")
CLASS_WEIGHTS = (0.35, 0.25, 0.20, 0.12, 0.08)  # uneven on purpose: rare classes are part of the task
GENERATOR_VERSION = 1  # bump when the drawing code changes so old datasets are regenerated

DEFAULT_PARAMS = {
    "train_images": 1500,  # enough variety for a ~2M-parameter model, small enough to train in minutes on 2 cores
    "val_images": 1000,  # ~3,700 boxes: run-to-run noise of mAP@.5:.95 below the effects the studies resolve (250 gave sd 0.004-0.009)
    "img_size": 256,  # the default training size; images are square
    "min_objects": 1,  # per non-empty image
    "max_objects": 7,  # uniform 1..7 gives ~4 objects per image
    "seed": 0,
}
SPLITS = {"train": 0, "val": 1}  # split -> id mixed into every image's seed

EMPTY_IMAGE_FRACTION = 0.05  # images with no object teach the no-object term on its own
MIN_OBJECT_PX = 10  # smallest shape extent: still recognisable, below the 16 px that stride-8 cells resolve well
MAX_OBJECT_FRACTION = 0.5  # largest shape extent as a fraction of the image side
MIN_VISIBLE_FRACTION = 0.5  # "mostly hidden" = more than half covered; such placements are redrawn, never labelled
PLACEMENT_TRIES = 10  # redraws before an object is left out of the image
MIN_CONTRAST_CANDIDATES = 8  # random colours tried per shape; the one farthest from the background under it wins
JPEG_QUALITY = 95  # near-lossless: compression artefacts are not the subject of this dataset
IMAGE_SUFFIX = ".jpg"
MANIFEST = "manifest.json"


class SyntheticDataError(ValueError):
    """A bad ``generate:`` block or a dataset folder that cannot be written."""


# --------------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 BGR: gradient + low-frequency blotches + straight lines and random-walk curves."""
    colour_a, colour_b = rng.uniform(40, 215, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    coords = np.arange(size, dtype=np.float32) / max(size - 1, 1)
    ramp = coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)  # (size, size)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    img = colour_a + ramp[..., None] * (colour_b - colour_a)  # (size, size, 3)
    blotches = rng.normal(0, rng.uniform(5, 25), (6, 6, 3)).astype(np.float32)
    img += cv2.resize(blotches, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(2, 9))):  # straight lines
        p1, p2 = rng.integers(0, size, (2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), colour, int(rng.integers(1, 3)),
                 cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):  # random-walk curves: clutter with no class shape
        steps = rng.normal(0, size / 25, (int(rng.integers(8, 30)), 2)).cumsum(axis=0)
        points = (steps + rng.uniform(0, size, 2)).round().astype(np.int32)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.polylines(img, [points], False, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _polygon(class_name: str, rng: np.random.Generator, extent: float) -> Optional[np.ndarray]:
    """Vertices ``(k, 2)`` centred on the origin for a polygonal class, or None for a circle."""
    radius = extent / 2
    rotation = rng.uniform(0, 2 * math.pi)
    if class_name == "circle":
        return None
    if class_name == "rectangle":
        # axis-aligned with a random aspect, so that rectangles and their boxes coincide
        aspect = rng.uniform(0.45, 1.0)
        half_w, half_h = (radius, radius * aspect) if rng.random() < 0.5 else (radius * aspect, radius)
        return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    if class_name == "triangle":
        angles = rotation + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3])
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if class_name == "star":
        angles = rotation + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.5))
        return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if class_name == "cross":
        half_arm = radius * rng.uniform(0.14, 0.22)
        outline = np.array([[-half_arm, -radius], [half_arm, -radius], [half_arm, -half_arm], [radius, -half_arm],
                            [radius, half_arm], [half_arm, half_arm], [half_arm, radius], [-half_arm, radius],
                            [-half_arm, half_arm], [-radius, half_arm], [-radius, -half_arm], [-half_arm, -half_arm]])
        rotation = rng.uniform(0, math.pi / 2)  # a plus sign is symmetric under quarter turns
        rot = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
        return outline @ rot.T
    raise ValueError(f"unknown shape class {class_name!r}")  # pragma: no cover - CLASS_NAMES is closed


def _contrasting_colour(rng: np.random.Generator, background_bgr: np.ndarray) -> Tuple[int, int, int]:
    """The candidate colour farthest (L2 in BGR) from the mean background colour under the shape."""
    hsv = np.stack([rng.integers(0, 180, MIN_CONTRAST_CANDIDATES), rng.integers(90, 256, MIN_CONTRAST_CANDIDATES),
                    rng.integers(60, 256, MIN_CONTRAST_CANDIDATES)], axis=1).astype(np.uint8)  # (K, 3)
    bgr = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0].astype(np.float32)  # (K, 3)
    best = int(np.argmax(((bgr - background_bgr) ** 2).sum(axis=1)))
    return tuple(int(c) for c in bgr[best])


SUBPIXEL_BITS = 4  # cv2 drawing with fractional coordinates: vertices are given in 1/16 px


def _draw_shape(canvas: np.ndarray, class_name: str, centre: np.ndarray, polygon: Optional[np.ndarray],
                extent: float, colour, line_type: int) -> None:
    scale = 1 << SUBPIXEL_BITS
    if polygon is None:
        cv2.circle(canvas, tuple(int(round(v * scale)) for v in centre), int(round(extent / 2 * scale)), colour, -1,
                   line_type, SUBPIXEL_BITS)
    else:
        points = np.round((polygon + centre) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [points], colour, line_type, SUBPIXEL_BITS)


def render_image(rng: np.random.Generator, img_size: int, min_objects: int, max_objects: int,
                 return_owner: bool = False):
    """Draw one image. Returns ``(img (S, S, 3) BGR uint8, labels (n, 5) [class, cx, cy, w, h] normalised)``;
    with ``return_owner`` also ``owner`` ``(S, S)`` int16 (the object each pixel shows, -1 = background) and the
    full pixel area of each object ``(n,)`` — what the tests use to check visibility and box extents."""
    img = _background(rng, img_size)
    owner = np.full((img_size, img_size), -1, dtype=np.int16)  # which object each pixel shows (-1 = background)
    areas, boxes, classes = [], [], []
    num_objects = 0 if rng.random() < EMPTY_IMAGE_FRACTION else int(rng.integers(min_objects, max_objects + 1))
    max_extent = MAX_OBJECT_FRACTION * img_size
    mask = np.zeros((img_size, img_size), dtype=np.uint8)
    visible = np.zeros(0, dtype=np.int64)  # pixels each placed object still shows
    for _ in range(num_objects):
        class_id = int(rng.choice(len(CLASS_NAMES), p=CLASS_WEIGHTS))
        class_name = CLASS_NAMES[class_id]
        extent = math.exp(rng.uniform(math.log(MIN_OBJECT_PX), math.log(max_extent)))  # log-uniform size
        polygon = _polygon(class_name, rng, extent)
        if polygon is None:
            low, high = np.full(2, -extent / 2), np.full(2, extent / 2)
        else:
            low, high = polygon.min(axis=0), polygon.max(axis=0)
        for _attempt in range(PLACEMENT_TRIES):
            centre = rng.uniform(-low, img_size - 1 - high)  # whole shape inside the image
            # work inside the shape's window only (1 px margin for rounding): drawing and counting stay cheap
            x0, y0 = (np.floor(centre + low).astype(int) - 1).clip(0, img_size)
            x1, y1 = (np.ceil(centre + high).astype(int) + 2).clip(0, img_size)
            _draw_shape(mask, class_name, centre, polygon, extent, 255, cv2.LINE_8)
            covered = mask[y0:y1, x0:x1] > 0  # (h_win, w_win)
            mask[y0:y1, x0:x1] = 0
            owner_window = owner[y0:y1, x0:x1]
            lost = np.bincount(owner_window[covered & (owner_window >= 0)], minlength=len(visible))
            if np.any(visible - lost < MIN_VISIBLE_FRACTION * np.asarray(areas, dtype=np.float64)):
                continue  # would leave an earlier shape mostly hidden
            ys, xs = np.nonzero(covered)
            if len(xs) == 0:
                continue
            colour = _contrasting_colour(rng, img[y0:y1, x0:x1][covered].mean(axis=0))
            _draw_shape(img, class_name, centre, polygon, extent, colour, cv2.LINE_AA)
            owner_window[covered] = len(areas)
            visible = np.append(visible - lost, len(xs))
            areas.append(len(xs))
            # the true pixel extent of the shape: pixel i covers [i, i + 1)
            boxes.append((x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
            classes.append(class_id)
            break
    noise = rng.normal(0, rng.uniform(2, 10), (img_size, img_size, 1))  # sensor-like noise over everything
    img = (img.astype(np.float32) + noise).clip(0, 255).astype(np.uint8)
    labels = np.zeros((len(boxes), 5), dtype=np.float64)
    if boxes:
        boxes_xyxy = np.asarray(boxes, dtype=np.float64) / img_size
        labels[:, 0] = classes
        labels[:, 1] = (boxes_xyxy[:, 0] + boxes_xyxy[:, 2]) / 2
        labels[:, 2] = (boxes_xyxy[:, 1] + boxes_xyxy[:, 3]) / 2
        labels[:, 3] = boxes_xyxy[:, 2] - boxes_xyxy[:, 0]
        labels[:, 4] = boxes_xyxy[:, 3] - boxes_xyxy[:, 1]
    if return_owner:
        return img, labels, owner, np.asarray(areas, dtype=np.int64)
    return img, labels


def format_labels(labels: np.ndarray) -> str:
    """(n, 5) [class, cx, cy, w, h] -> YOLO label text, one row per line."""
    return "".join(f"{int(row[0])} {row[1]:.6f} {row[2]:.6f} {row[3]:.6f} {row[4]:.6f}\n" for row in labels)


# --------------------------------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------------------------------
def check_params(block: Optional[dict], source: str = "generate") -> dict:
    """Defaults <- ``block``; unknown keys and bad values are errors naming ``source`` and the key."""
    params = dict(DEFAULT_PARAMS)
    if block is None:
        return params
    if not isinstance(block, dict):
        raise SyntheticDataError(f"{source}: 'generate' expects a mapping of {sorted(DEFAULT_PARAMS)}, got {block!r}")
    for key, value in block.items():
        if key not in DEFAULT_PARAMS:
            raise SyntheticDataError(f"{source}: unknown key 'generate.{key}' (valid: {', '.join(DEFAULT_PARAMS)})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SyntheticDataError(f"{source}: 'generate.{key}' expects an integer, got {value!r}")
        params[key] = value
    if params["img_size"] < 2 * MIN_OBJECT_PX:
        raise SyntheticDataError(f"{source}: 'generate.img_size' must be >= {2 * MIN_OBJECT_PX}, got {params['img_size']}")
    if not 0 <= params["min_objects"] <= params["max_objects"]:
        raise SyntheticDataError(f"{source}: need 0 <= generate.min_objects <= generate.max_objects, got "
                                 f"{params['min_objects']} and {params['max_objects']}")
    for key in ("train_images", "val_images", "seed"):
        if params[key] < 0:
            raise SyntheticDataError(f"{source}: 'generate.{key}' must be >= 0, got {params[key]}")
    return params


def generate_split(root: Union[str, Path], split: str, params: dict, progress: bool = True) -> None:
    """Write ``images/<split>`` and ``labels/<split>`` under ``root`` (any old content there is removed first)."""
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    for folder in (image_dir, label_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    count = params[f"{split}_images"]
    tasks = [(str(image_dir), str(label_dir), split, index, params) for index in range(count)]
    # serial on purpose: a process pool gained nothing on a busy 2-core machine, and forking after OpenCV has started
    # its thread pool can deadlock
    for task in tqdm(tasks, total=count, desc=f"generating shapes/{split}", disable=not progress, unit="img"):
        _write_one(task)


def _write_one(task) -> None:
    image_dir, label_dir, split, index, params = task
    rng = np.random.default_rng([params["seed"], SPLITS[split], index])
    img, labels = render_image(rng, params["img_size"], params["min_objects"], params["max_objects"])
    ok, encoded = cv2.imencode(IMAGE_SUFFIX, img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise SyntheticDataError(f"could not encode image {index} of {split}")
    stem = f"{split}_{index:05d}"
    Path(image_dir, f"{stem}{IMAGE_SUFFIX}").write_bytes(encoded.tobytes())
    Path(label_dir, f"{stem}.txt").write_text(format_labels(labels))


def ensure_shapes_dataset(root: Union[str, Path], block: Optional[dict] = None, source: str = "generate",
                          names: Optional[Sequence[str]] = None, progress: bool = True) -> bool:
    """Generate the dataset under ``root`` unless its manifest records the same parameters. Returns True if written.

    ``names`` (from the YAML) must match :data:`CLASS_NAMES`. A file lock makes concurrent callers (DDP ranks, parallel
    test runs) wait for one writer instead of writing over each other.
    """
    params = check_params(block, source)
    if names is not None and tuple(names) != CLASS_NAMES:
        raise SyntheticDataError(f"{source}: 'names' must be {list(CLASS_NAMES)} for the generated shapes dataset, "
                                 f"got {list(names)}")
    root = Path(root)
    wanted = {"generator_version": GENERATOR_VERSION, "names": list(CLASS_NAMES), **params}
    manifest_path = root / MANIFEST
    root.mkdir(parents=True, exist_ok=True)
    import fcntl  # POSIX only: imported where the lock is taken, so importing yolov3.data works on Windows

    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if manifest_path.is_file():
                try:
                    if json.loads(manifest_path.read_text(encoding="utf-8")) == wanted:
                        return False
                except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
                    pass  # a damaged manifest means an unknown dataset: regenerate
            manifest_path.unlink(missing_ok=True)  # an interrupted run must not look finished
            for split in SPLITS:
                generate_split(root, split, params, progress)
            for stale in root.glob("labels/*.cache"):
                stale.unlink()  # label caches describe the old files
            atomic_write_text(manifest_path, json.dumps(wanted, indent=2) + "\n")
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
