"""The peer of detect.py as a whole process: a plain OpenCV 4.x DNN script doing the same job on a folder of images.

For each image, in name order: read and decode it, letterbox it to the network size as detect.py does (the long side
to --img-size, the short side padded to a multiple of 32, bilinear), run the Darknet network with OpenCV DNN
(``readNetFromDarknet``, ``DNN_BACKEND_OPENCV``, ``DNN_TARGET_CPU``), keep boxes whose score (objectness x class
probability, as OpenCV's region layer gives it) reaches --conf-thres, non-maximum suppression per class at
--iou-thres, boxes back to the image's pixels, draw each box with a label, write the annotated image to --out.

It is what a user without this project would write; it imports no torch and nothing of this repository, so its
start-up is OpenCV's alone.

    python benchmarks/opencv_detect.py --cfg cfg/yolov3-tiny.cfg --weights weights/yolov3-tiny.weights \
        --source datasets/bccd/images/val --out /tmp/opencv-out [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def letterbox(image: np.ndarray, size: int, stride: int = 32) -> tuple:
    """(boxed image, scale, (left, top) padding): the long side to ``size``, each side padded up to ``stride``."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (width, height) \
        else image
    pad_w, pad_h = (-new_w) % stride, (-new_h) % stride
    left, top = pad_w // 2, pad_h // 2
    boxed = cv2.copyMakeBorder(resized, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT,
                               value=(114, 114, 114))
    return boxed, scale, (left, top)


def detect(net, output_names, image: np.ndarray, size: int, conf_thres: float, iou_thres: float) -> list:
    """[(x1, y1, x2, y2, score, class)] in the image's pixels."""
    boxed, scale, (left, top) = letterbox(image, size)
    net_h, net_w = boxed.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(boxed, 1 / 255.0, (net_w, net_h), swapRB=True, crop=False))
    rows = np.concatenate([out.reshape(-1, out.shape[-1]) for out in net.forward(output_names)])
    scores = rows[:, 5:]
    classes = scores.argmax(1)
    best = scores[np.arange(len(rows)), classes]
    keep = best >= conf_thres
    rows, classes, best = rows[keep], classes[keep], best[keep]
    if not len(rows):
        return []
    cx, cy = rows[:, 0] * net_w, rows[:, 1] * net_h
    w, h = rows[:, 2] * net_w, rows[:, 3] * net_h
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], 1)
    kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), best.tolist(), classes.tolist(), conf_thres, iou_thres)
    found = []
    for k in np.asarray(kept).reshape(-1):
        x, y, bw, bh = xywh[k]
        x1, y1 = (x - left) / scale, (y - top) / scale
        found.append((x1, y1, x1 + bw / scale, y1 + bh / scale, float(best[k]), int(classes[k])))
    return found


def draw(image: np.ndarray, found: list) -> None:
    thickness = max(round(0.003 * (image.shape[0] + image.shape[1]) / 2), 1)
    for x1, y1, x2, y2, score, cls in found:
        colour = (int(37 * cls) % 255, int(17 * cls + 90) % 255, int(97 * cls + 30) % 255)
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
        cv2.putText(image, f"{cls} {score:.2f}", (int(x1), max(int(y1) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    thickness / 3, colour, max(thickness - 1, 1), cv2.LINE_AA)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--source", required=True, help="a folder of images")
    parser.add_argument("--out", required=True, help="folder for the annotated images")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--conf-thres", type=float, default=0.25)
    parser.add_argument("--iou-thres", type=float, default=0.45)
    parser.add_argument("--threads", type=int, default=0, help="OpenCV's threads (0: its default, every core)")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    net = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    output_names = net.getUnconnectedOutLayersNames()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in Path(args.source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    boxes = 0
    for path in paths:
        image = cv2.imread(str(path))
        if image is None:
            print(f"warning: {path}: cannot be read, skipped", file=sys.stderr)
            continue
        found = detect(net, output_names, image, args.img_size, args.conf_thres, args.iou_thres)
        boxes += len(found)
        draw(image, found)
        cv2.imwrite(str(out / path.name), image)
    print(f"{len(paths)} images, {boxes} boxes -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
