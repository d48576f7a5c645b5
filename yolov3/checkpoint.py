"""Initial weights for training: a train.py checkpoint, a Darknet .weights file, or a Darknet backbone cutoff.

Fine-tuning on another class count is the common case (COCO weights -> 5 classes): tensors whose shapes match are
transferred and the heads that differ keep their fresh initialisation; the message says how many were transferred.
"""
from __future__ import annotations

from typing import Optional

from torch import nn


def transfer_matching(model: nn.Module, state: dict) -> tuple[int, int]:
    """Copy every tensor of ``state`` whose name and shape match the model's; returns (copied, model total)."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching), len(own)


def load_initial_weights(model: nn.Module, path: str, cutoff: Optional[int] = None,
                         cfg_path: Optional[str] = None) -> str:
    """Load ``path`` into ``model`` (a Darknet); returns a one-line description of what was loaded.

    ``.pt``: the checkpoint's validated weights, matching tensors only. Darknet files: loaded directly (``cutoff``
    layers for backbones); when the file holds heads for another class count, it is read into a model built from
    ``cfg_path`` as written and the matching tensors are transferred.
    """
    from yolov3.model import Darknet
    from yolov3.weights import WeightsError, read_checkpoint

    path = str(path)
    if path.endswith(".pt"):
        ckpt = read_checkpoint(path)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: not a train.py checkpoint or a state dict")
        copied, total = transfer_matching(model, state)
        if copied == 0:  # training from scratch by accident would waste a whole run
            raise WeightsError(f"{path}: no tensor matches this model by name and shape; is it for another cfg?")
        return f"weights: {path}: transferred {copied}/{total} tensors"
    try:
        model.load_darknet_weights(path, cutoff=cutoff)
        return f"weights: {path}: loaded{f' the first {cutoff} layers' if cutoff else ''}"
    except WeightsError:
        if cutoff is not None or cfg_path is None:
            raise
        as_written = Darknet(cfg_path)
        as_written.load_darknet_weights(path)  # raises a clear error if the file fits neither
        copied, total = transfer_matching(model, as_written.state_dict())
        return f"weights: {path}: transferred {copied}/{total} tensors (heads re-initialised for the new classes)"
