"""Export a model to the formats other tools read: Darknet (.cfg + .weights + .names + .data) and ONNX.

    from yolov3 import export_darknet, export_onnx
    export_darknet("runs/train/exp/weights/best.pt", "exported/")   # exported/best.cfg, .weights, .names, .data
    export_onnx("runs/train/exp/weights/best.pt", "exported/best.onnx")  # needs the `onnx` extra

Darknet: the cfg is the checkpoint's own (its heads rewritten for its classes) with ``[net] width/height`` set to the
inference size, the weights are written exactly as :meth:`Darknet.save_darknet_weights` writes them (OpenCV's
``cv2.dnn.readNetFromDarknet`` and darknet read them; tests/test_export.py checks OpenCV's outputs against ours).
BatchNorm's ε: ours is PyTorch's 1e-5, as darknet's cuDNN path; OpenCV's importer adds 1e-6 to the variance. On a
trained model with channels of small variance that moved boxes by 0.3 % (tests/test_export.py), so
``bn_eps=OPENCV_BN_EPS`` (export.py ``--target opencv``) writes running variances shifted by the difference, with
which OpenCV reproduces our outputs exactly (within float32 rounding) instead.

ONNX: the fused model in eval mode, input ``images`` (1, 3, H, W) RGB in [0, 1], output ``output`` (1, N, 5 + C)
decoded as the eval-mode forward (cx, cy, w, h in input pixels, objectness, class probabilities; NMS not
included); class names, strides and the input size are stored in the file's metadata.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

from yolov3.detector import default_names
from yolov3.model import Darknet, default_img_size, load_for_inference
from yolov3.utils import atomic_write_bytes, atomic_write_text, ensure_dir

ONNX_OPSET = 17  # every onnxruntime since 1.11 runs it
BN_EPS = {"darknet": 1e-5, "opencv": 1e-6}  # the BatchNorm epsilon of each reader (darknet: its cuDNN path)
OPENCV_BN_EPS = BN_EPS["opencv"]


class ExportError(ValueError):
    """An export that cannot be done as asked (missing optional package, bad size); names what is wrong."""


def with_input_size(cfg_text: str, height: int, width: int) -> str:
    """``cfg_text`` with ``[net] height`` and ``width`` set (their lines replaced in place, or added under the
    ``[net]`` header); everything else, comments included, unchanged."""
    lines = cfg_text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.strip().startswith("[")]
    if not headers or lines[headers[0]].strip().lower() not in ("[net]", "[network]"):
        raise ExportError("the cfg does not start with a [net] block")
    end = headers[1] if len(headers) > 1 else len(lines)
    for key, value in (("height", height), ("width", width)):
        found = [i for i in range(headers[0] + 1, end) if lines[i].split("=")[0].strip().lower() == key]
        old = lines[found[0] if found else headers[0]]
        newline = old[len(old.rstrip("\r\n")):] or "\n"
        if found:
            lines[found[0]] = f"{key}={int(value)}{newline}"
        else:
            lines[headers[0]] = old.rstrip("\r\n") + newline
            lines.insert(headers[0] + 1, f"{key}={int(value)}{newline}")
            end += 1
    return "".join(lines)


def _load(weights: Union[str, Path, Darknet], cfg: Union[str, Path, None], names: Optional[Sequence[str]],
          img_size: Optional[int]) -> tuple:
    """(unfused model on the CPU, class names, inference size) for a weights file or a Darknet module."""
    if isinstance(weights, Darknet):
        model, checkpoint = weights, None
    else:
        model, checkpoint = load_for_inference(weights, cfg, len(names) if names is not None else None, "cpu")
    names = list(names) if names is not None else default_names(model.num_classes, checkpoint)
    if len(names) != model.num_classes:
        raise ExportError(f"{len(names)} class names for a model with {model.num_classes} classes")
    size = int(img_size) if img_size is not None else default_img_size(model, checkpoint)
    if size <= 0 or size % model.max_stride:
        raise ExportError(f"img_size must be a positive multiple of the model's stride {model.max_stride}, got {size}")
    return model, names, size


def _shift_bn_variance(model: Darknet, bn_eps: float) -> Darknet:
    """A copy whose running variances are ``var + eps - bn_eps``: a reader normalising with ``var' + bn_eps`` then
    divides by the same ``sqrt(var + eps)`` as the model."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.add_(module.eps - bn_eps).clamp_(min=0)
    return model


def export_darknet(weights: Union[str, Path, Darknet], out_dir: Union[str, Path], stem: Optional[str] = None,
                   cfg: Union[str, Path, None] = None, names: Optional[Sequence[str]] = None,
                   img_size: Optional[int] = None, bn_eps: Optional[float] = None) -> Dict[str, Path]:
    """Write ``<stem>.cfg``, ``<stem>.weights``, ``<stem>.names`` and ``<stem>.data`` into ``out_dir``.

    Args:
        weights: a ``.pt`` from train.py (cfg, names and training size inside), a Darknet ``.weights`` with ``cfg``,
            or an (unfused) :class:`~yolov3.model.Darknet`.
        stem: file names (default: the weights file's stem, or ``model``).
        names: class names (default: the checkpoint's; COCO's for 80 classes; else class0, class1, ...).
        img_size: ``[net] width`` and ``height`` (default: the training size of a ``.pt``, else the cfg's width).
        bn_eps: the BatchNorm epsilon of the program that will read the files; running variances are written
            shifted by (ours - bn_eps) so that it computes our numbers (None: no shift, the file holds exactly the
            model's values; right for darknet and this project, which use 1e-5).

    Returns the written paths by kind (``cfg``, ``weights``, ``names``, ``data``). The ``.data`` file names the
    ``.names`` file by its bare name: run darknet from ``out_dir`` (``darknet detector test <stem>.data
    <stem>.cfg <stem>.weights image.jpg``), or edit the path.
    """
    model, names, size = _load(weights, cfg, names, img_size)
    if model.is_fused:
        raise ExportError("the model has been fused (BatchNorm folded into convs); Darknet weights need the "
                          "unfused model: load it again")
    stem = stem or (Path(weights).stem if not isinstance(weights, Darknet) else "model")
    out_dir = ensure_dir(out_dir)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("cfg", "weights", "names", "data")}
    atomic_write_text(paths["cfg"], with_input_size(model.cfg_text, size, size))
    if bn_eps is not None:
        model = _shift_bn_variance(model, bn_eps)
    model.save_darknet_weights(paths["weights"])
    atomic_write_text(paths["names"], "".join(f"{name}\n" for name in names))
    atomic_write_text(paths["data"], f"classes = {len(names)}\nnames = {paths['names'].name}\n")
    return paths


def export_onnx(weights: Union[str, Path, Darknet], path: Union[str, Path], cfg: Union[str, Path, None] = None,
                names: Optional[Sequence[str]] = None, img_size: Optional[int] = None,
                opset: int = ONNX_OPSET) -> Path:
    """Write the model as ONNX to ``path`` (see the module docstring for its input and output); needs the ``onnx``
    package (``pip install .[onnx]``). Arguments as for :func:`export_darknet`; the input is
    ``img_size`` x ``img_size``."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install onnx (or pip install .[onnx])") from None
    model, names, size = _load(weights, cfg, names, img_size)
    model = model.fuse().eval()  # BatchNorm folded: fewer nodes, the same outputs within float rounding
    path = Path(path)
    ensure_dir(path.parent)
    example = torch.zeros(1, 3, size, size)
    temporary = path.with_name(f".{path.name}.export.tmp")  # the exporter's own output, before the metadata
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: intended
            # the TorchScript exporter (deprecated since torch 2.9, still there in 2.13): no onnxscript dependency,
            # and a fixed-size graph is all this model needs
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export",
                                    category=DeprecationWarning)
            torch.onnx.export(model, (example,), str(temporary), input_names=["images"], output_names=["output"],
                              opset_version=opset, dynamo=False)
        proto = onnx.load(str(temporary))
        metadata = {"names": json.dumps(list(names)), "strides": json.dumps(list(model.strides)),
                    "img_size": json.dumps([size, size]), "producer": "yolov3-focal"}
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        atomic_write_bytes(path, proto.SerializeToString())
    finally:
        temporary.unlink(missing_ok=True)
    return path
