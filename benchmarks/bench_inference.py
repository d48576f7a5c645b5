"""Forward pass of our Darknet against OpenCV DNN reading the same cfg and the same .weights file.

For each cfg (default yolov3.cfg and yolov3-tiny.cfg) at 416x416, batch 1, float32:
  1. build the model with random weights whose activations stay O(1) (BatchNorm statistics from one batch),
  2. save them with ``save_darknet_weights`` to a temporary ``.weights``; our model and
     ``cv2.dnn.readNetFromDarknet`` (DNN_BACKEND_OPENCV, DNN_TARGET_CPU) both load that file,
  3. time each of our modes interleaved with OpenCV, one pair at a time, and report ``ours / OpenCV`` per mode (target <= 1.0 for
     ``optimized``, the headline; the other modes are context, showing what each step is worth):
       eager     model.eval() under torch.inference_mode
       fused     model.fuse() (BatchNorm folded into the convs)
       fused_cl  fused + channels_last weights and input
       optimized model.optimize_for_inference(): fused_cl + Winograd F(4x4)/F(2x2) 3x3 convs + oneDNN convs with
                 prepacked weights and the activation inside; what detect.py and val.py run
       jit       torch.jit.trace of the fused model, frozen (and optimize_for_inference when it works)
       compile   torch.compile of the fused model (compile time reported separately)
     Modes that fail to build are reported as errors, they do not stop the run.
     ``--bf16`` adds fused_cl under torch.autocast(bfloat16), reported apart from the fp32 headline.

Before timing, every mode's objectness output is compared with eager's and eager's with OpenCV's, so a fast but
wrong mode cannot pass unnoticed.

    python benchmarks/bench_inference.py [--cfgs yolov3.cfg yolov3-tiny.cfg] [--img-size 416] [--bf16] [--out x.json]
"""
from __future__ import annotations

import copy
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Dict, Tuple

import common  # first: puts the repository root on sys.path
import numpy as np
import torch

import cv2
from yolov3.model import Darknet

FP32_MODES = ("eager", "fused", "fused_cl", "optimized", "jit", "compile")
TARGET = 1.0  # the issue: our forward no slower than OpenCV DNN on the same weights and threads
OUTPUT_TOLERANCE = 1e-2  # objectness agreement (abs) that counts as "same network"; OpenCV's BN eps is 1e-6, ours 1e-5


def parse_args(argv=None):
    parser = common.base_parser(__doc__, repeats=15, warmup=3)
    parser.add_argument("--cfgs", nargs="+", default=["yolov3.cfg", "yolov3-tiny.cfg"],
                        help="cfg files (names are looked up in cfg/)")
    parser.add_argument("--img-size", type=int, default=416, help="square input size (default 416)")
    parser.add_argument("--modes", nargs="+", default=list(FP32_MODES), choices=FP32_MODES,
                        help="our fp32 modes to time (default: all)")
    parser.add_argument("--bf16", action="store_true", help="also time fused_cl under autocast(bfloat16)")
    args = parser.parse_args(argv)
    # smoke: tiny only, small input, no torch.compile (compiling alone takes minutes on 2 cores)
    common.apply_smoke(parser, args, cfgs=["yolov3-tiny.cfg"], img_size=128,
                       modes=[m for m in FP32_MODES if m != "compile"], repeats=2, warmup=1)
    if args.img_size % 32:
        parser.error(f"--img-size must be a multiple of 32, got {args.img_size}")
    return args


def opencv_net(cfg_path: Path, weights_path: Path):
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net, net.getUnconnectedOutLayersNames()


def opencv_objectness_in_our_order(model: Darknet, cv_outputs) -> np.ndarray:
    """OpenCV emits rows ordered (y, x, anchor) per [yolo] layer, ours (anchor, y, x): objectness ``(N,)`` reordered."""
    parts = []
    for layer, cv_out in zip(model.yolo_layers, cv_outputs):
        anchors = layer.num_anchors
        cells = cv_out.shape[0] // anchors
        parts.append(cv_out[:, 4].reshape(cells, anchors).T.reshape(-1))  # (H*W, A) -> (A, H*W)
    return np.concatenate(parts)


def build_modes(model: Darknet, image: torch.Tensor, modes, bf16: bool) -> Tuple[Dict[str, Callable], Dict[str, str],
                                                                                  Dict[str, float], Dict[str, str]]:
    """Callables for our modes. Returns (mode -> call, mode -> error for those that failed, mode -> build seconds,
    mode -> how it was built)."""
    calls: Dict[str, Callable] = {}
    errors: Dict[str, str] = {}
    notes: Dict[str, str] = {}
    build_s: Dict[str, float] = {}
    image_cl = image.contiguous(memory_format=torch.channels_last)
    fused = copy.deepcopy(model).fuse().eval()
    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)

    def plain(net, x):
        def call():
            with torch.inference_mode():
                return net(x)
        return call

    builders = {
        "eager": lambda: plain(model, image),
        "fused": lambda: plain(fused, image),
        "fused_cl": lambda: plain(fused_cl, image_cl),
        "optimized": lambda: plain(copy.deepcopy(model).optimize_for_inference(), image_cl),
        "jit": lambda: plain(_jit_frozen(fused, image, notes), image),
        "compile": lambda: plain(torch.compile(copy.deepcopy(fused)), image),
    }
    wanted = list(modes) + (["bf16_fused_cl"] if bf16 else [])
    for mode in wanted:
        start = time.perf_counter()
        try:
            if mode == "bf16_fused_cl":
                def call(net=fused_cl, x=image_cl):
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        return net(x)
            else:
                call = builders[mode]()
            call()  # the first call builds (compile, jit profiling); it counts as build time, not as a sample
            calls[mode] = call
        except Exception as exc:  # any failure of an optional mode is a reported result, not a crash
            errors[mode] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            traceback.print_exc(limit=2)
        build_s[mode] = time.perf_counter() - start
    return calls, errors, build_s, notes


def _jit_frozen(fused: Darknet, image: torch.Tensor, notes: Dict[str, str]):
    """torch.jit.trace + freeze of the fused model, then optimize_for_inference when it works (noted in ``notes``)."""
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks in forward become constants
        traced = torch.jit.trace(copy.deepcopy(fused).eval(), image, check_trace=False)
        frozen = torch.jit.freeze(traced)
    try:
        optimized = torch.jit.optimize_for_inference(frozen)
        notes["jit"] = "trace + freeze + optimize_for_inference"
        return optimized
    except Exception as exc:  # best effort; the frozen module is already a valid mode
        notes["jit"] = f"trace + freeze (optimize_for_inference failed: {type(exc).__name__})"
        return frozen


def bench_cfg(cfg_path: Path, args) -> Tuple[list, dict, dict]:
    torch.manual_seed(args.seed)
    size = args.img_size
    image = torch.rand(1, 3, size, size)  # (1, 3, S, S) RGB in [0, 1]
    calibration = torch.rand(2, 3, size, size)
    source = common.randomize_weights(Darknet(cfg_path), calibration, seed=args.seed)
    info = {"cfg": cfg_path.name, "img_size": size}
    info["params"], info["gflops"] = source.info(size)

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / f"{cfg_path.stem}-random.weights"
        source.save_darknet_weights(weights)
        model = Darknet(cfg_path)
        model.load_darknet_weights(weights)  # ours and OpenCV read the very same file
        model.eval()
        net, out_names = opencv_net(cfg_path, weights)

    blob = image.numpy().copy()  # OpenCV gets the same (1, 3, S, S) float32 array

    def opencv_call():
        net.setInput(blob)
        return net.forward(out_names)

    calls, errors, build_s, notes = build_modes(model, image, args.modes, args.bf16)

    # correctness before speed: objectness of every mode vs eager, eager vs OpenCV
    with torch.inference_mode():
        reference = model(image)[0, :, 4].float().numpy()  # (N,)
    cv_objectness = opencv_objectness_in_our_order(model, opencv_call())
    info["opencv_vs_eager_objectness_max_abs_diff"] = float(np.abs(cv_objectness - reference).max())
    info["mode_vs_eager_objectness_max_abs_diff"] = {}
    for mode, call in calls.items():
        diff = float(np.abs(call()[0, :, 4].float().numpy() - reference).max())
        info["mode_vs_eager_objectness_max_abs_diff"][mode] = diff
        tolerance = OUTPUT_TOLERANCE * (5 if mode.startswith("bf16") else 1)  # bf16 keeps 8 mantissa bits
        if diff > tolerance:
            errors[mode] = f"output differs from eager by {diff:.3g} (> {tolerance:g})"
    for mode in errors:
        calls.pop(mode, None)
    info["build_s"], info["how_built"] = build_s, notes
    info["errors"] = errors

    # each mode is timed in its own interleaved pair with OpenCV (OpenCV, mode, mode, OpenCV, ...), the headline
    # first: in one big round of seven paths, the threads of jit/compile/OpenCV disturbed the short tiny forward of
    # whichever path came next (quartiles 0.98-1.27 for a median of 1.11), which a pair keeps to the two compared
    wanted = list(args.modes) + (["bf16_fused_cl"] if args.bf16 else [])
    times = {}
    for mode in sorted(calls, key=lambda m: (m != "optimized", wanted.index(m))):
        pair = common.interleaved_times({"opencv": opencv_call, mode: calls[mode]}, args.repeats, args.warmup)
        times[mode] = pair[mode]
        times[f"opencv_paired_with_{mode}"] = pair["opencv"]
    figures = []
    for mode in wanted:
        name = f"{cfg_path.stem} {mode} / OpenCV"
        # the headline is the path the tools run; the other modes show what each step is worth
        headline = mode == "optimized"
        note = "context: one step of the way to optimized" if mode in FP32_MODES else ""
        if mode.startswith("bf16"):
            note = "autocast bfloat16: reported apart from the fp32 headline"
        if mode == "optimized":
            note = "what detect.py and val.py run"
        if mode == "compile" and mode in calls:
            note = f"compile + first call took {build_s[mode]:.1f} s"
        note = notes.get(mode, note)
        if mode in errors:
            figures.append(common.failed_figure(name, mode, "opencv", TARGET, "<=", errors[mode], headline))
        else:
            pair = {mode: times[mode], "opencv": times[f"opencv_paired_with_{mode}"]}
            figures.append(common.time_figure(name, pair, mode, "opencv", TARGET, "<=", headline, note))
    return figures, times, info


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.setup_threads(args.threads)
    common.warn_if_busy(args.threads)
    figures, timings, details = [], {}, {}
    for name in args.cfgs:
        cfg_path = common.resolve_cfg(name)
        print(f"{cfg_path.name} at {args.img_size}x{args.img_size}: building, saving and loading random weights...",
              flush=True)
        cfg_figures, times, info = bench_cfg(cfg_path, args)
        print(f"  {info['params']:,} parameters, {info['gflops']:.1f} GFLOPs; objectness |OpenCV - ours| <= "
              f"{info['opencv_vs_eager_objectness_max_abs_diff']:.2e}", flush=True)
        figures += cfg_figures
        timings[cfg_path.stem] = times
        details[cfg_path.stem] = info
    common.print_figures(f"inference: ours / OpenCV DNN, batch 1, {args.img_size}px, fp32, {args.threads} threads "
                         "(time ratio, lower is better)", figures)
    return common.write_results(args.out, "inference", args, figures, timings, {"details": details})


if __name__ == "__main__":
    main()
