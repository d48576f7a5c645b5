"""yolov3-focal: YOLOv3 in PyTorch, Darknet-compatible, with BCE or focal objectness loss.

    from yolov3 import Darknet, load_model, Detector, YOLOLoss

The names below are imported on first use (PEP 562), so ``import yolov3.config`` or ``yolov3.boxes`` stays light
and the package's own modules never import this file's names (no import cycle through it).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {  # name -> the module that defines it
    "Darknet": "yolov3.model",
    "load_model": "yolov3.model",
    "Detector": "yolov3.detector",
    "YOLOLoss": "yolov3.loss",
    "export_darknet": "yolov3.exporter",
    "export_onnx": "yolov3.exporter",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'yolov3' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_PUBLIC))
