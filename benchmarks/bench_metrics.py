"""mAP with our DetectionEvaluator against pycocotools' COCOeval, on the same synthetic detections.

Data: ``--images`` (default 5000) images of 640x480, seeded. Per image ~7 ground truths (Poisson) of 8 classes with
uneven frequencies and log-uniform sizes from 8 to 300 px; each truth is found with probability .85 by one to three
jittered detections (a duplicate or two, as before a loose NMS), 10 % of them with a wrong class; plus ~25 false
positives (Poisson) with lower scores. About 35 detections per image: what a model at a low confidence threshold
hands to mAP evaluation.

Both sides start from the same per-image numpy arrays and are timed end to end, building their inputs included:
  ours   DetectionEvaluator(C); update(preds, truths, image_id) per image; compute()
  coco   ``ground_truth_to_coco`` / ``detections_to_coco`` (in memory; ``--via-files``: ``to_coco_json`` to temp
         files, then ``COCO(path)`` as a user of val.py --save-json would), ``loadRes``, ``COCOeval(..., 'bbox')``
         evaluate, accumulate, summarize
Figure: COCOeval time / our time (a speed-up, target >= 5). The APs must agree (mAP@.5 and mAP@.5:.95 within
1e-6), otherwise the figure is an error: a fast wrong answer does not count.

Warmup: ``--warmup`` untimed rounds of both on the first 100 images; then ``--repeats`` full rounds, interleaved.

    python benchmarks/bench_metrics.py [--images 5000] [--classes 8] [--via-files] [--out x.json]
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import common  # first: puts the repository root on sys.path
import numpy as np

from yolov3.metrics import DetectionEvaluator, detections_to_coco, ground_truth_to_coco, to_coco_json

TARGET = 5.0  # the issue: at least 5x faster than pycocotools on the same data
AP_TOLERANCE = 1e-6  # both implement the same COCO procedure; anything more than rounding noise is a bug
IMAGE_HW = (480, 640)
WARMUP_IMAGES = 100


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=3, warmup=1)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--via-files", action="store_true",
                        help="pycocotools reads JSON files written by to_coco_json instead of in-memory dicts")
    args = parser.parse_args(argv)
    common.apply_smoke(parser, args, images=200, repeats=2, warmup=1)
    return args


def synthetic_dataset(num_images: int, num_classes: int, seed: int):
    """Per image: predictions ``(n, 6)`` ``[x1, y1, x2, y2, score, class]`` and truths ``(m, 5)`` ``[class, x1, y1,
    x2, y2]`` (float64 pixels). Returns ``(preds list, truths list)``."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_HW
    frequencies = 1.0 / np.arange(1, num_classes + 1)  # Zipf-like: a few common classes, a long tail
    frequencies /= frequencies.sum()
    preds_per_image, truths_per_image = [], []
    for _ in range(num_images):
        num_truths = rng.poisson(7)
        truth_classes = rng.choice(num_classes, num_truths, p=frequencies)
        wh = np.exp(rng.uniform(np.log(8), np.log(300), (num_truths, 2)))  # (m, 2)
        wh = np.minimum(wh, [width - 1, height - 1])
        top_left = rng.uniform(0, 1, (num_truths, 2)) * ([width, height] - wh)
        truth_boxes = np.concatenate([top_left, top_left + wh], axis=1)  # (m, 4) xyxy
        truths_per_image.append(np.column_stack([truth_classes, truth_boxes]).astype(np.float64))

        found = rng.random(num_truths) < 0.85
        copies = np.where(found, rng.integers(1, 4, num_truths), 0)  # detections per truth
        source = np.repeat(np.arange(num_truths), copies)  # (k,) which truth each detection follows
        jitter = rng.normal(0, 0.12, (len(source), 4)) * np.tile(wh[source], 2)  # noise grows with the box
        hit_boxes = truth_boxes[source] + jitter
        hit_classes = np.where(rng.random(len(source)) < 0.9, truth_classes[source],
                               rng.integers(0, num_classes, len(source)))
        hit_scores = rng.beta(5, 2, len(source))  # mostly confident

        num_false = rng.poisson(25)
        false_wh = np.exp(rng.uniform(np.log(8), np.log(300), (num_false, 2)))
        false_top_left = rng.uniform(0, 1, (num_false, 2)) * np.maximum([width, height] - false_wh, 1)
        false_boxes = np.concatenate([false_top_left, false_top_left + false_wh], axis=1)
        false_scores = rng.beta(1.2, 5, num_false)  # mostly low
        false_classes = rng.choice(num_classes, num_false, p=frequencies)

        boxes = np.concatenate([hit_boxes, false_boxes])
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)  # at least 1 px wide and tall
        scores = np.round(np.concatenate([hit_scores, false_scores]), 5)  # like detect.py's JSON: ties happen
        classes = np.concatenate([hit_classes, false_classes])
        preds_per_image.append(np.column_stack([boxes, scores, classes]).astype(np.float64))
    return preds_per_image, truths_per_image


def ours(preds, truths, num_classes: int) -> dict:
    evaluator = DetectionEvaluator(num_classes)
    for image_id, (image_preds, image_truths) in enumerate(zip(preds, truths)):
        evaluator.update(image_preds, image_truths, image_id)
    result = evaluator.compute()
    return {"mAP50": result["mAP50"], "mAP50_95": result["mAP50_95"]}


def pycocotools_eval(preds, truths, names, via_files: bool) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = list(range(len(preds)))
    sizes = [IMAGE_HW] * len(preds)
    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:  # COCO's progress prints
        if via_files:
            pred_json, gt_json = Path(tmp) / "predictions.json", Path(tmp) / "annotations.json"
            to_coco_json(preds, truths, image_ids, sizes, names, pred_json, gt_json)
            ground_truth = COCO(str(gt_json))
            detections = ground_truth.loadRes(str(pred_json))
        else:
            ground_truth = COCO()
            ground_truth.dataset = ground_truth_to_coco(truths, image_ids, sizes, names)
            ground_truth.createIndex()
            results = [row for image_preds, image_id in zip(preds, image_ids)
                       for row in detections_to_coco(image_preds, image_id)]
            detections = ground_truth.loadRes(results)
        evaluation = COCOeval(ground_truth, detections, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"mAP50": float(evaluation.stats[1]), "mAP50_95": float(evaluation.stats[0])}


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.setup_threads(args.threads)
    common.warn_if_busy(args.threads)
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        raise SystemExit("error: bench_metrics needs pycocotools (pip install pycocotools)") from None
    preds, truths = synthetic_dataset(args.images, args.classes, args.seed)
    names = [f"class{k}" for k in range(args.classes)]
    num_preds, num_truths = sum(len(p) for p in preds), sum(len(t) for t in truths)
    print(f"{args.images} images, {args.classes} classes: {num_truths} truths, {num_preds} detections", flush=True)

    results = {}
    for _ in range(args.warmup):  # untimed, small: imports, allocator, code paths
        ours(preds[:WARMUP_IMAGES], truths[:WARMUP_IMAGES], args.classes)
        pycocotools_eval(preds[:WARMUP_IMAGES], truths[:WARMUP_IMAGES], names, args.via_files)

    def run_ours():
        results["ours"] = ours(preds, truths, args.classes)

    def run_coco():
        results["coco"] = pycocotools_eval(preds, truths, names, args.via_files)

    times = common.interleaved_times({"ours": run_ours, "pycocotools": run_coco}, args.repeats, warmup=0)
    differences = {key: abs(results["ours"][key] - results["coco"][key]) for key in ("mAP50", "mAP50_95")}
    agree = all(d <= AP_TOLERANCE for d in differences.values())
    name = f"COCOeval / DetectionEvaluator ({args.images} images)"
    ap_text = (f"mAP50 ours {results['ours']['mAP50']:.6f} coco {results['coco']['mAP50']:.6f}; "
               f"mAP50-95 ours {results['ours']['mAP50_95']:.6f} coco {results['coco']['mAP50_95']:.6f}")
    # a speed-up: peer time / our time
    figure = common.time_figure(name, times, "pycocotools", "ours", TARGET, ">=",
                                note=ap_text + ("" if agree else "  <-- AP DISAGREES"))
    figure.ours, figure.peer, figure.ours_ms, figure.peer_ms = "ours", "pycocotools", figure.peer_ms, figure.ours_ms
    if not agree:
        figure = common.failed_figure(name, "ours", "pycocotools", TARGET, ">=",
                                      f"AP disagrees ({ap_text}); speed-up was {figure.ratio:.2f}")
    common.print_figures(f"metrics: speed-up over pycocotools, {args.threads} threads "
                         "(ratio of times, higher is better)", [figure])
    details = {"images": args.images, "classes": args.classes, "truths": num_truths, "detections": num_preds,
               "via_files": args.via_files, "ap": results, "ap_abs_diff": differences, "ap_agree": agree}
    return common.write_results(args.out, "metrics", args, [figure], {"metrics": times}, {"details": details})


if __name__ == "__main__":
    main()
