"""One image in, boxes out: the pre-processing, inference and NMS that detect.py runs, as a Python API.

    from yolov3 import Detector
    detector = Detector.from_weights("runs/train/exp/weights/best.pt")
    boxes = detector.detect("image.jpg")     # (n, 6) tensor: x1, y1, x2, y2 in the image's pixels, score, class
    [detector.names[int(c)] for c in boxes[:, 5]]

Pre-processing is detect.py's exactly (it uses this class): letterbox to the inference size with bilinear
resizing and padding to a multiple of the model's deepest stride, BGR -> RGB, [0, 1] floats in channels_last.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch

from yolov3.augment import letterbox
from yolov3.images import read_image
from yolov3.model import default_img_size, load_for_inference, prepare_for_inference
from yolov3.paths import ROOT
from yolov3.postprocess import check_inference_args, non_max_suppression, scale_boxes
from yolov3.threads import ThreadGovernor

COCO_NAMES = ROOT / "data" / "coco.names"


def default_names(num_classes: int, checkpoint: Optional[dict] = None) -> list:
    """Class names when none are given: the checkpoint's, COCO's for an 80-class model, else class0, class1..."""
    if checkpoint is not None and checkpoint.get("names"):
        return [str(name) for name in checkpoint["names"]]
    if num_classes == 80 and COCO_NAMES.is_file():
        return [ln.strip() for ln in COCO_NAMES.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [f"class{i}" for i in range(num_classes)]


def _set_threads(threads: int) -> None:
    """torch's and OpenCV's (letterbox resize, colour conversion) thread pools alike."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


class Detector:
    """Pre-processing, inference and NMS for one BGR image at a time, timing each stage.

    The first image (or batch, :meth:`run_batch`) of each network input size has its inference timed apart: that first pass pays for one-time
    preparation (oneDNN builds its primitives, caches fill), which says nothing about the per-image speed. Its time
    goes to ``warmup_s`` (seconds, summed) instead of ``times`` and ``count``, and its size to ``warmup_shapes``; it is not run
    twice, so a job takes no longer for being timed. ``expected_calls`` (the images and frames to come, if known)
    tells the fast path whether measuring its convs can pay (:func:`yolov3.model.prepare_for_inference`).

    ``threads``: None leaves torch's thread count alone; ``"auto"`` (detect.py's default) keeps it at the cores
    other processes leave idle, re-measured about once a second (:class:`yolov3.threads.ThreadGovernor`), so a
    shared CPU slows detection in proportion to the load; a number fixes it.
    """

    def __init__(self, model, device, img_size: int, conf_thres: float, iou_thres: float, max_det: int,
                 classes: Optional[list], agnostic: bool, names: Optional[Sequence[str]] = None,
                 threads: Union[str, int, None] = None):
        self.model, self.device, self.img_size = model, device, img_size
        self.governor = ThreadGovernor(threads if torch.device(device).type == "cpu" else None,
                                       set_threads=_set_threads)
        self.names = list(names) if names is not None else None  # class names, for the caller (from_weights sets them)
        self.stride = getattr(model, "max_stride", 32)  # letterbox pads to a multiple of the deepest stride
        self.nms = dict(conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, classes=classes,
                        agnostic=agnostic)
        self.times = np.zeros(3)  # pre-processing, inference, NMS (seconds, summed over the images in count)
        self.count = 0  # images timed: all but the first at each input size
        self.warmup_s = 0.0
        self.warmup_shapes: list = []  # network input sizes (h, w) seen, in order: their first pass is in warmup_s
        self.first_passes = 0  # images whose inference went to warmup_s (``count`` holds the others)
        self._seen_inputs: set = set()  # (batch, 3, h, w) run so far

    @classmethod
    def from_weights(cls, weights: Union[str, Path], cfg: Union[str, Path, None] = None,
                     names: Optional[Sequence[str]] = None, img_size: Optional[int] = None,
                     conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                     classes: Optional[list] = None, agnostic: bool = False, device: Union[str, torch.device] = "cpu",
                     optimize: bool = True, bf16: bool = False,
                     threads: Union[str, int, None] = None, expected_calls: Optional[int] = None) -> "Detector":
        """A detector for a ``.pt`` from train.py (or its run folder), or a Darknet ``.weights`` with its ``cfg``, with detect.py's
        defaults (the model's class count follows ``names`` for Darknet weights). ``optimize=False`` runs the plain
        fused model (detect.py ``--no-optimize``), ``bf16=True`` runs it under bfloat16 autocast (``--bf16``;
        :func:`yolov3.model.prepare_for_inference`); ``img_size`` defaults to the training size of a ``.pt``, else
        the cfg's width; ``threads`` and ``expected_calls`` as in the class docstring."""
        model, checkpoint = load_for_inference(weights, cfg, len(names) if names is not None else None, device)
        prepare_for_inference(model, optimize=optimize, bf16=bf16, expected_calls=expected_calls)
        names = list(names) if names is not None else default_names(model.num_classes, checkpoint)
        if len(names) != model.num_classes:
            raise ValueError(f"names: {len(names)} names for a model with {model.num_classes} classes")
        size = img_size if img_size is not None else default_img_size(model, checkpoint)
        check_inference_args(conf_thres, iou_thres, max_det, size, model.max_stride)
        return cls(model, torch.device(device), size, conf_thres, iou_thres, max_det, classes, agnostic, names,
                   threads)

    def letterbox_rgb(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, tuple]:
        """BGR uint8 (H, W, 3) -> (letterboxed RGB float32 (h, w, 3) in [0, 1], ratio, padding).

        OpenCV and NumPy only, no torch op: a reader thread can do it while the model runs (detect.py does) without
        waking torch's thread team, which on a busy core waits for its slowest thread."""
        # bilinear, as Darknet and OpenCV's blobFromImage: INTER_AREA costs a sizeable share of a small model's
        # forward at a non-integer shrink and buys no accuracy (benchmarks/results/2026-12-06-comment-timings.md)
        boxed, ratio, pad = letterbox(image_bgr, self.img_size, auto=True, stride=self.stride,
                                      interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB).astype(np.float32)
        rgb /= np.float32(255)  # division, as the training loader does: the same float32 values
        return rgb, ratio, pad  # HWC: already the channels_last layout

    def preprocess(self, image_bgr: np.ndarray,
                   letterboxed: Optional[tuple] = None) -> tuple[torch.Tensor, float, tuple]:
        """BGR uint8 (H, W, 3) -> ((1, 3, h, w) RGB float in [0, 1] on the device, channels_last, letterbox ratio,
        padding); ``letterboxed``: :meth:`letterbox_rgb`'s result for this image, when already made."""
        rgb, ratio, pad = letterboxed if letterboxed is not None else self.letterbox_rgb(image_bgr)
        return self._network_input([rgb]), ratio, pad

    def _network_input(self, rgbs: Sequence[np.ndarray]) -> torch.Tensor:
        """Letterboxed (h, w, 3) arrays of one size -> (B, 3, h, w) on the device, channels_last (a view of the
        arrays for one image on the CPU: no copy)."""
        batch = rgbs[0][None] if len(rgbs) == 1 else np.stack(rgbs)
        return torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)

    def __call__(self, image_bgr: np.ndarray,
                 letterboxed: Optional[tuple] = None) -> tuple[torch.Tensor, tuple, np.ndarray]:
        """-> (detections (n, 6) xyxy score class in original pixels, network input (h, w), per-stage ms);
        ``letterboxed`` as in :meth:`preprocess` (its time is then not in the pre-processing figure)."""
        return self.run_batch([image_bgr], [letterboxed])[0]

    @torch.inference_mode()
    def run_batch(self, images_bgr: Sequence[np.ndarray],
                  letterboxed: Optional[Sequence[Optional[tuple]]] = None) -> list:
        """:meth:`__call__` for several images in one forward pass (they must letterbox to one network size): a
        list of (detections, network (h, w), per-stage ms of each image: the batch's stages shared evenly).

        A batch of 4 takes ~20 % less time per image than single images for yolov3-tiny on 2 cores (the small deep
        maps give the matrix products too few rows at batch 1): detect.py batches consecutive images of a folder."""
        self.governor.update()  # follows the machine's load ("auto"); a no-op otherwise
        letterboxed = list(letterboxed) if letterboxed is not None else [None] * len(images_bgr)
        t0 = time.perf_counter()
        made = [item if item is not None else self.letterbox_rgb(image)
                for image, item in zip(images_bgr, letterboxed)]
        if len({rgb.shape for rgb, _, _ in made}) != 1:
            raise ValueError(f"run_batch: the images letterbox to different sizes "
                             f"({sorted({rgb.shape[:2] for rgb, _, _ in made})}); batch only images of one size")
        tensor = self._network_input([rgb for rgb, _, _ in made])
        t1 = time.perf_counter()
        prediction = self.model(tensor)  # (B, N, 5 + C)
        t2 = time.perf_counter()
        found = non_max_suppression(prediction, **self.nms)
        results = []
        for detections, (_, ratio, pad), image in zip(found, made, images_bgr):
            detections[:, :4] = scale_boxes(detections[:, :4], ratio, pad, image.shape[:2])
            results.append(detections.cpu())
        t3 = time.perf_counter()
        stage = np.array([t1 - t0, t2 - t1, t3 - t2]) / len(made)  # per image
        shape = tuple(tensor.shape[2:])
        if shape not in self.warmup_shapes:
            self.warmup_shapes.append(shape)
        if tuple(tensor.shape) in self._seen_inputs:
            self.times += stage * len(made)
            self.count += len(made)
        else:  # the first pass at this input: its inference apart (class docstring)
            self._seen_inputs.add(tuple(tensor.shape))
            self.warmup_s += stage[1] * len(made)
            self.first_passes += len(made)
        return [(detections, shape, stage * 1000) for detections in results]

    def detect(self, image: Union[str, Path, np.ndarray]) -> torch.Tensor:
        """Detections ``(n, 6)`` ``[x1, y1, x2, y2, score, class]`` in the pixels of ``image``: a path, or a BGR
        uint8 ``(H, W, 3)`` array as OpenCV reads it (convert an RGB array with ``image[..., ::-1]``)."""
        if not isinstance(image, np.ndarray):
            path = image
            image = read_image(str(path))
            if image is None:
                raise ValueError(f"{path}: cannot be read as an image")
        return self(image)[0]
