"""detect.py's per-image path end to end against the forward pass alone.

End to end is exactly what ``detect.py`` does per image once it is read from disk: its ``Detector`` (letterbox,
BGR->RGB, to tensor, forward of the model after ``optimize_for_inference()``, ``non_max_suppression``, ``scale_boxes``) and its ``annotate``
(``draw_boxes`` with the default line thickness and labels), on a fresh copy of a 640x480 image. The peer is the
forward pass alone on the tensor the Detector feeds the model. Ratio end-to-end / forward, target <= 1.25: the
work around the network must stay a small fraction of it.

Weights: a trained model gives a realistic number of boxes; random weights give either none or thousands. So by
default the random model's objectness biases are shifted until about ``--detections`` boxes (20, a busy photo)
survive detect.py's NMS on this image, or pass ``--weights`` (.pt, or .weights with one --cfg).
The image: ``--image`` or a generated 640x480 scene (``yolov3.synthetic.render_image``), since the repository
ships no photo.

    python benchmarks/bench_detect.py [--cfgs yolov3-tiny.cfg yolov3-small.cfg] [--img-sizes 416 256] [--out x.json]
"""
from __future__ import annotations

import time
from pathlib import Path

import common  # first: puts the repository root on sys.path
import numpy as np
import torch

import cv2
from detect import Detector, load_names
from detect import parse_args as detect_defaults
from yolov3.detect_outputs import DrawStyle, annotate
from yolov3.model import Darknet, load_model
from yolov3.postprocess import non_max_suppression
from yolov3.synthetic import render_image

TARGET = 1.25  # the issue: pre-processing, NMS, rescaling and drawing add at most 25 % to the forward pass
IMAGE_HW = (480, 640)  # a typical camera frame (VGA)
DEFAULT_SIZES = {"yolov3-tiny.cfg": 416, "yolov3-small.cfg": 256}  # detect.py's size for each: .weights / .pt


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=30, warmup=5)
    parser.add_argument("--cfgs", nargs="+", default=["yolov3-tiny.cfg", "yolov3-small.cfg"])
    parser.add_argument("--img-sizes", nargs="+", type=int, default=None,
                        help="inference size per cfg (default: 416 for yolov3-tiny, as detect.py for .weights; 256, "
                             "the training size, for yolov3-small; 416 for any other cfg)")
    parser.add_argument("--weights", type=Path, help="trained weights instead of calibrated random ones "
                                                     "(.pt, or .weights with a single --cfgs entry)")
    parser.add_argument("--image", type=Path, help="a photo to use instead of the generated 640x480 scene")
    parser.add_argument("--detections", type=int, default=20,
                        help="random weights: boxes left after NMS, i.e. drawn (default 20, a busy photo)")
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, repeats=2, warmup=1)
    args.img_sizes_given = args.img_sizes is not None
    if args.img_sizes is None:
        args.img_sizes = [128 if args.smoke else DEFAULT_SIZES.get(Path(cfg).name, 416) for cfg in args.cfgs]
    if len(args.img_sizes) != len(args.cfgs):
        parser.error(f"--img-sizes needs one size per cfg: {len(args.cfgs)} cfgs, {len(args.img_sizes)} sizes")
    if args.weights is not None and args.weights.suffix != ".pt" and len(args.cfgs) != 1:
        parser.error("--weights with a Darknet .weights file needs exactly one --cfgs entry")
    return args


def scene_image(args) -> np.ndarray:
    """(480, 640, 3) BGR uint8: the --image, or a generated scene of shapes on clutter."""
    if args.image is not None:
        image = cv2.imread(str(args.image))
        if image is None:
            raise SystemExit(f"error: --image {args.image}: cannot be read as an image")
        return image
    square = render_image(np.random.default_rng(args.seed), IMAGE_HW[1], min_objects=4, max_objects=8)[0]
    return np.ascontiguousarray(square[: IMAGE_HW[0]])  # (480, 640, 3)


@torch.no_grad()
def calibrate_objectness(model: Darknet, tensor: torch.Tensor, nms_options: dict, detections: int) -> float:
    """Shift every head's objectness bias by one ``delta`` so that about ``detections`` boxes of ``tensor`` survive
    ``non_max_suppression(**nms_options)``. Returns delta.

    The objectness logit is the head conv output plus its bias, so a bias shift moves every logit alike and the
    count can be solved for by bisection on one forward pass (the count grows with delta, nearly monotonically).
    """
    decoded, raw_maps = model(tensor, return_raw=True)
    logits = torch.cat([raw[0, ..., 4].reshape(-1) for raw in raw_maps])  # (N,), the order of decoded's rows

    def surviving(delta: float) -> int:
        shifted = decoded.clone()
        shifted[0, :, 4] = torch.sigmoid(logits + delta)
        return len(non_max_suppression(shifted, **nms_options)[0])

    low, high = -50.0, 50.0
    for _ in range(40):
        delta = (low + high) / 2
        low, high = (delta, high) if surviving(delta) < detections else (low, delta)
    delta = high  # the smallest shift found that reaches the wanted count
    for conv, layer in zip(model.head_convs, model.yolo_layers):
        channels = 5 + layer.num_classes
        conv.bias[4::channels] += delta  # the objectness channel of each anchor: a * (5 + C) + 4
    return delta


def bench_model(model: Darknet, label: str, img_size: int, image: np.ndarray, calibrate: bool, ckpt, args):
    defaults = detect_defaults(["--weights", "unused", "--source", "unused"])  # detect.py's own defaults
    model.optimize_for_inference()  # as detect.py
    names = load_names(None, ckpt, model.num_classes)  # as detect.py: the checkpoint's, COCO's or class<i>
    style = DrawStyle(defaults.line_thickness, defaults.hide_labels, defaults.hide_conf)  # detect.py's defaults
    detector = Detector(model, torch.device("cpu"), img_size, defaults.conf_thres, defaults.iou_thres,
                        defaults.max_det, None, defaults.agnostic_nms)
    tensor, _ratio, _pad = detector.preprocess(image)  # exactly what the Detector feeds the model, for the peer
    info = {"model": label, "img_size": img_size, "image_hw": list(image.shape[:2]),
            "network_input_hw": list(tensor.shape[2:])}
    if calibrate:
        nms_options = dict(conf_thres=defaults.conf_thres, iou_thres=defaults.iou_thres, max_det=defaults.max_det,
                           agnostic=defaults.agnostic_nms)
        info["objectness_bias_shift"] = calibrate_objectness(model, tensor, nms_options, args.detections)
    detections, _shape, _ms = detector(image.copy())
    info["detections_after_nms"] = int(len(detections))
    stage_samples = []  # per call: pre-processing, inference, NMS + scale_boxes, drawing (ms)

    def end_to_end():
        frame = image.copy()  # detect.py draws on the frame it read; ~0.1 ms for 640x480
        found, _net_shape, stage_ms = detector(frame)
        start = time.perf_counter()
        annotate(frame, found, names, style)
        stage_samples.append([*stage_ms, (time.perf_counter() - start) * 1000])

    def forward_only():
        with torch.inference_mode():
            model(tensor)

    times = common.interleaved_times({"detect_path": end_to_end, "forward": forward_only}, args.repeats, args.warmup)
    stage_ms = np.median(np.asarray(stage_samples[-args.repeats:]), axis=0)  # timed rounds only
    info["stages_ms_median"] = dict(zip(("pre", "inference", "nms_and_scale", "draw"), map(float, stage_ms)))
    figure = common.time_figure(f"{label} detect path / forward", times, "detect_path", "forward", TARGET, "<=",
                                note=f"{info['detections_after_nms']} detections drawn; median stages (ms): "
                                     f"pre {stage_ms[0]:.2f}, inference {stage_ms[1]:.2f}, "
                                     f"NMS+scale {stage_ms[2]:.2f}, draw {stage_ms[3]:.2f}")
    return figure, times, info


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.setup_threads(args.threads)
    common.warn_if_busy(args.threads)
    image = scene_image(args)
    torch.manual_seed(args.seed)
    figures, timings, details = [], {}, {}
    if args.weights is not None:
        cfg = None if args.weights.suffix == ".pt" else args.cfgs[0]
        model, ckpt = load_model(args.weights, cfg=cfg)
        size = args.img_sizes[0]
        if not args.img_sizes_given:  # as detect.py: the training size of a .pt, else 416
            size = ckpt["config"]["train"]["img_size"] if ckpt and "config" in ckpt else 416
        jobs = [(model, args.weights.stem, size, False, ckpt)]
    else:
        jobs = []
        for name, size in zip(args.cfgs, args.img_sizes):
            path = common.resolve_cfg(name)
            calibration = torch.rand(2, 3, size, size)
            model = common.randomize_weights(Darknet(path), calibration, seed=args.seed)
            jobs.append((model, path.stem, size, True, None))
    for model, label, size, calibrate, ckpt in jobs:
        print(f"{label} at {size}: timing detect.py's per-image path and the forward pass...", flush=True)
        figure, times, info = bench_model(model, label, size, image, calibrate, ckpt, args)
        figures.append(figure)
        timings[label] = times
        details[label] = info
    common.print_figures(f"detect: end-to-end per image / forward alone, {image.shape[1]}x{image.shape[0]} image, "
                         f"{args.threads} threads (time ratio, lower is better)", figures)
    return common.write_results(args.out, "detect", args, figures, timings, {"details": details})


if __name__ == "__main__":
    main()
