"""The layers of a Darknet cfg as torch modules, and the ``[yolo]`` decode; :mod:`yolov3.model` wires them.

Layer semantics follow Darknet (and OpenCV's Darknet importer, which the tests use as an oracle):
  * ``[convolutional]``: padding ``size // 2`` when ``pad=1``; BatchNorm eps 1e-5; leaky slope 0.1.
  * ``[maxpool]``: Darknet pads ``padding`` (default ``size - 1``) cells, ``padding // 2`` on the top/left and the rest
    on the bottom/right, and a window takes the max over the cells that exist. Padding with -inf reproduces that
    exactly (a zero pad would be wrong wherever activations are negative): tiny's size-2 stride-1 pool keeps the
    size, SPP's stride-1 pools of size 5/9/13 keep the size with (size-1)//2 on each side.
  * ``[upsample]``: nearest neighbour; ``[route]``: channel concat; ``[shortcut]``: sum with an earlier layer.
  * ``[yolo]``: ``cx = (sigmoid(tx) + grid_x) * stride``, ``w = exp(tw) * anchor_w`` (input pixels).

The CPU inference fast path of the convolutions lives apart, in :mod:`yolov3.fastconv`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov3.cfgparse import CfgBlock

BN_EPS = 1e-5  # Darknet's cuDNN path and OpenCV's importer use 1e-5
BN_MOMENTUM = 0.03  # torch convention (weight of the new batch); Darknet uses .01, .03 tracks faster in short CPU runs
LEAKY_SLOPE = 0.1  # Darknet's leaky activation


def activate(x: Tensor, activation: str) -> Tensor:
    """Apply a Darknet activation in place where autograd allows it (x is always a fresh tensor here)."""
    if activation == "leaky":
        return F.leaky_relu(x, LEAKY_SLOPE, inplace=True)
    if activation == "linear":
        return x
    if activation == "relu":
        return F.relu(x, inplace=True)
    if activation == "logistic":
        return torch.sigmoid(x)
    raise ValueError(f"unsupported activation {activation!r}")



class ConvLayer(nn.Module):
    """``[convolutional]``: conv (bias only without BN) -> optional BatchNorm -> activation."""

    def __init__(self, in_channels: int, filters: int, size: int, stride: int, padding: int, batch_normalize: bool,
                 activation: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, size, stride, padding, bias=not batch_normalize)
        self.bn: Optional[nn.BatchNorm2d] = (nn.BatchNorm2d(filters, eps=BN_EPS, momentum=BN_MOMENTUM)
                                             if batch_normalize else None)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return activate(x, self.activation)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BatchNorm (running statistics) into the conv: w' = w * g, b' = beta - mean * g, g = gamma/sqrt(var+eps)."""
        if self.bn is None:
            return
        bn = self.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        self.conv.weight.mul_(gain.view(-1, 1, 1, 1))
        self.conv.bias = nn.Parameter(bn.bias - bn.running_mean * gain)
        self.bn = None


class MaxPoolLayer(nn.Module):
    """``[maxpool]`` with Darknet's padding: ``padding // 2`` before, the rest after, padded cells never win."""

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding
        before = padding // 2
        after = padding - before
        self.pad = (before, after, before, after)  # F.pad order: left, right, top, bottom

    def forward(self, x: Tensor) -> Tensor:
        before, after = self.pad[0], self.pad[1]
        height, width = x.shape[-2:]
        if (self.size == self.stride == 2 and before == 0 and height % 2 == 0 and width % 2 == 0
                and not (x.requires_grad and torch.is_grad_enabled())):
            # the stride-2 pools at inference: two elementwise maxima of strided views instead of max_pool2d, which
            # also writes the argmax indices that only its backward needs (no padded cell is read)
            rows = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])  # (B, C, H/2, W)
            return torch.maximum(rows[..., 0::2], rows[..., 1::2])  # (B, C, H/2, W/2)
        if before == after and before <= self.size // 2:
            # symmetric (no padding, SPP's pools): max_pool2d's own padding never wins a window, as Darknet's
            return F.max_pool2d(x, self.size, self.stride, before)
        if before == 0 and all(_ceil_mode_size(n, self.size, self.stride) == (n + after - self.size) // self.stride + 1
                               for n in x.shape[-2:]):
            # pad only after (the stride-2 pools in training, or on odd sizes): ceil_mode's last window hangs over the
            # edge and takes the max of the cells that exist, the same output without writing a padded copy
            return F.max_pool2d(x, self.size, self.stride, ceil_mode=True)
        x = F.pad(x, self.pad, value=float("-inf"))  # -inf: a window's max is over the cells that exist
        return F.max_pool2d(x, self.size, self.stride)


def _ceil_mode_size(n: int, size: int, stride: int) -> int:
    """Output length of ``max_pool2d(..., ceil_mode=True)`` without padding: the last window must start inside."""
    out = -(-(n - size) // stride) + 1
    if (out - 1) * stride >= n:
        out -= 1
    return out


class UpsampleLayer(nn.Module):
    """``[upsample]``: nearest-neighbour by an integer factor."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="nearest")


class RouteLayer(nn.Module):
    """``[route]``: concatenates earlier outputs along channels (the work happens in ``Darknet.forward``)."""

    def __init__(self, layers: Sequence[int]) -> None:
        super().__init__()
        self.layers = list(layers)


class ShortcutLayer(nn.Module):
    """``[shortcut]``: previous output + output of layer ``source`` (the work happens in ``Darknet.forward``)."""

    def __init__(self, source: int, activation: str) -> None:
        super().__init__()
        self.source = source
        self.activation = activation


def decode_boxes(raw_xywh: Tensor, grid_xy: Tensor, anchors_wh: Tensor, stride: float) -> Tensor:
    """YOLOv3's box decode: logits ``(..., 4)`` (tx, ty, tw, th) -> ``(..., 4)`` cxcywh in input pixels.

    ``cx = (sigmoid(tx) + cell_x) * stride``, ``w = exp(tw) * anchor_w``. ``grid_xy`` (cell x, y) and
    ``anchors_wh`` (pixels) broadcast against ``raw_xywh[..., :2]``; used by the model and by the loss.
    """
    return torch.cat(((torch.sigmoid(raw_xywh[..., :2]) + grid_xy) * stride,
                      torch.exp(raw_xywh[..., 2:4]) * anchors_wh), dim=-1)


class YOLOLayer(nn.Module):
    """``[yolo]``: reshapes the head conv output and, in eval mode, decodes it.

    Attributes: ``anchors`` (A, 2) in input pixels (this layer's masked anchors), ``stride`` (int),
    ``num_classes``, ``ignore_thresh``, ``truth_thresh``, ``mask`` (indices into ``all_anchors`` (num, 2)).
    """

    def __init__(self, block: CfgBlock, stride: int) -> None:
        super().__init__()
        opts = block.options
        all_anchors = torch.tensor(opts["anchors"], dtype=torch.float32).view(-1, 2)  # (num, 2) w, h
        self.mask: List[int] = list(opts["mask"])
        self.register_buffer("all_anchors", all_anchors, persistent=False)  # the cfg, not the checkpoint, owns them
        self.register_buffer("anchors", all_anchors[self.mask].clone(), persistent=False)  # (A, 2)
        self.num_anchors = len(self.mask)
        self.num_classes: int = opts["classes"]
        self.stride = stride
        self.ignore_thresh: float = opts["ignore_thresh"]
        self.truth_thresh: float = opts["truth_thresh"]
        self.jitter: float = opts["jitter"]
        self.random: bool = bool(opts["random"])
        self._grid_cache: Dict[Tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    def _grid(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(1, 1, H, W, 2) cell offsets (x, y), cached per size, device and dtype."""
        key = (height, width, device, dtype)
        grid = self._grid_cache.get(key)
        if grid is None:
            ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                                    torch.arange(width, device=device, dtype=dtype), indexing="ij")
            grid = torch.stack((xs, ys), dim=-1).view(1, 1, height, width, 2)
            self._grid_cache[key] = grid
        return grid

    def raw(self, x: Tensor) -> Tensor:
        """(B, A*(5+C), H, W) head output -> (B, A, H, W, 5+C) logits."""
        batch, _, height, width = x.shape
        x = x.view(batch, self.num_anchors, 5 + self.num_classes, height, width)  # (B, A, 5+C, H, W)
        return x.permute(0, 1, 3, 4, 2).contiguous()  # (B, A, H, W, 5+C)

    def decode(self, raw: Tensor) -> Tensor:
        """(B, A, H, W, 5+C) logits -> (B, A*H*W, 5+C): cx, cy, w, h (input pixels), objectness, class probabilities."""
        batch, _, height, width, channels = raw.shape
        grid = self._grid(height, width, raw.device, raw.dtype)
        anchors_wh = self.anchors.to(raw.dtype).view(1, self.num_anchors, 1, 1, 2)
        boxes_cxcywh = decode_boxes(raw[..., :4], grid, anchors_wh, self.stride)
        decoded = torch.cat((boxes_cxcywh, torch.sigmoid(raw[..., 4:])), dim=-1)  # (B, A, H, W, 5+C)
        return decoded.view(batch, -1, channels)  # (B, A*H*W, 5+C), order (A, H, W)

    def forward(self, x: Tensor) -> Tensor:
        return self.raw(x)
