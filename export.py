#!/usr/bin/env python
"""Export a model for other tools: Darknet (.cfg + .weights + .names + .data) and ONNX.

    python export.py --weights runs/train/exp/weights/best.pt                    # Darknet files beside best.pt
    python export.py --weights best.pt --include darknet onnx --out exported/   # ONNX needs: pip install onnx
    python export.py --weights yolov3.weights --cfg cfg/yolov3.cfg --include onnx --img-size 416

Darknet files: darknet reads them with `darknet detector test best.data best.cfg best.weights image.jpg`, run
from the output folder; OpenCV with cv2.dnn.readNetFromDarknet(cfg, weights) (add --target opencv for its
BatchNorm epsilon, see --help).
ONNX: input `images` (1, 3, S, S) RGB in [0, 1]; output `output` (1, N, 5 + C): cx, cy, w, h in input pixels,
objectness, class probabilities, before NMS (what the model's eval-mode forward returns); class names in the
file's metadata. The module yolov3/exporter.py has the same as functions (export_darknet, export_onnx).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yolov3.cli import CommandParser
from yolov3.exporter import BN_EPS, ExportError, export_darknet, export_onnx
from yolov3.errors import user_errors

FORMATS = ("darknet", "onnx")


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__)  # defaults in --help; foreign flags get their nearest
    parser.add_argument("--weights", required=True, help="a .pt from train.py, or a Darknet .weights with --cfg")
    parser.add_argument("--cfg", help="Darknet cfg (needed with .weights)")
    parser.add_argument("--names", help="class names, one per line (default: from the .pt, or COCO's for 80 "
                                        "classes, else class0, class1, ...)")
    parser.add_argument("--include", nargs="+", default=["darknet"], choices=FORMATS, metavar="FORMAT",
                        help=f"formats to write, of {', '.join(FORMATS)} (default: darknet)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="input size written into the cfg and the ONNX graph (default: the training size "
                             "for a .pt, else the cfg's width)")
    parser.add_argument("--out", default=None, help="output folder (default: the folder of --weights)")
    parser.add_argument("--target", choices=("darknet", "opencv"), default="darknet",
                        help="the program that will read the Darknet files (default: darknet): BatchNorm's epsilon "
                             "is 1e-5 in darknet (cuDNN) and here, 1e-6 in OpenCV's importer; 'opencv' writes the "
                             "variances shifted so OpenCV computes exactly our outputs (a trained model's boxes "
                             "moved by up to 0.3 %% without)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    return parser.parse_args(argv)


def read_names(path: str) -> list:
    names_path = Path(path)
    if not names_path.is_file():
        raise ExportError(f"--names {path}: file not found")
    return [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def run(args: argparse.Namespace) -> dict:
    names = read_names(args.names) if args.names else None
    out_dir = Path(args.out) if args.out else Path(args.weights).parent
    stem = Path(args.weights).stem
    written = {}
    if "darknet" in args.include:
        written.update(export_darknet(args.weights, out_dir, stem=stem, cfg=args.cfg, names=names,
                                      img_size=args.img_size,
                                      bn_eps=BN_EPS["opencv"] if args.target == "opencv" else None))
    if "onnx" in args.include:
        written["onnx"] = export_onnx(args.weights, out_dir / f"{stem}.onnx", cfg=args.cfg, names=names,
                                      img_size=args.img_size, opset=args.opset)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (ExportError, *user_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
