"""The Darknet network built from a ``.cfg``, layer for layer, and its ``[yolo]`` decode.

Layer semantics follow Darknet (and OpenCV's Darknet importer, which the tests use as an oracle):
  * ``[convolutional]``: padding ``size // 2`` when ``pad=1``; BatchNorm eps 1e-5; leaky slope 0.1.
  * ``[maxpool]``: Darknet pads ``padding`` (default ``size - 1``) cells, ``padding // 2`` on the top/left and the rest
    on the bottom/right, and a window takes the max over the cells that exist. Padding with -inf reproduces that
    exactly (a zero pad would be wrong wherever activations are negative): tiny's size-2 stride-1 pool keeps the
    size, SPP's stride-1 pools of size 5/9/13 keep the size with (size-1)//2 on each side.
  * ``[upsample]``: nearest neighbour; ``[route]``: channel concat; ``[shortcut]``: sum with an earlier layer.
  * ``[yolo]``: ``cx = (sigmoid(tx) + grid_x) * stride``, ``w = exp(tw) * anchor_w`` (input pixels).

Public API: ``Darknet(cfg, num_classes=None)``, ``load_model(weights, cfg=None, num_classes=None, device='cpu')``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cfgparse import CfgBlock, DarknetCfg, parse_cfg, with_num_classes
from .runs import find_weights
from .weights import WeightsError, first_non_finite, load_darknet_weights, read_checkpoint, save_darknet_weights
from .winograd import transform_weights, winograd_conv3x3

__all__ = ["Darknet", "YOLOLayer", "ConvLayer", "MaxPoolLayer", "load_model", "prepare_for_inference"]

BN_EPS = 1e-5  # Darknet's cuDNN path and OpenCV's importer use 1e-5
BN_MOMENTUM = 0.03  # torch convention (weight of the new batch); Darknet uses .01, .03 tracks faster in short CPU runs
LEAKY_SLOPE = 0.1  # Darknet's leaky activation
# optimize_for_inference: Winograd for 3x3 stride-1 convs with H * W * C_in * C_out >= WINOGRAD_MIN_WORK on maps of
# at least WINOGRAD_MIN_SIZE cells a side; F(4x4, 3x3) from WINOGRAD_F4_MIN_SIZE cells, F(2x2, 3x3) below
WINOGRAD_MIN_WORK = 10_000_000
WINOGRAD_MIN_SIZE = 8
WINOGRAD_F4_MIN_SIZE = 26
# optimize_for_inference(select="measure"): timed runs per candidate path (after one untimed), and the choices made
MEASURE_REPEATS = 3
_MEASURED_METHODS: Dict[tuple, str] = {}


def _activate(x: Tensor, activation: str) -> Tensor:
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

    # set by Darknet.optimize_for_inference(): which fast inference paths this conv may take, and how it picks one
    _use_onednn: bool = False
    _use_winograd: bool = False
    _select: str = "rule"

    def forward(self, x: Tensor) -> Tensor:
        if (self._use_onednn or self._use_winograd) and self._fast_path_applies(x):
            return self._fast_forward(x)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return _activate(x, self.activation)

    # inference paths ------------------------------------------------------------------------------------------------
    def _fast_path_applies(self, x: Tensor) -> bool:
        """Fused conv, CPU float32, no autograd, no autocast: the fast paths give the plain path's numbers (within
        float32 rounding, tests/test_model.py checks it); otherwise the plain path runs."""
        return (self.bn is None and not self.training and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.conv.weight.dtype == torch.float32
                and self.conv.weight.device.type == "cpu" and not _cpu_autocast_enabled())

    def _fast_method(self, x: Tensor) -> str:
        """The path for this input: measured (``select='measure'``, see :meth:`_measured_method`) or by the rule."""
        return self._measured_method(x) if self._select == "measure" else self._rule_method(x)

    def _candidates(self, x: Tensor) -> List[str]:
        """Every path that can compute this conv on ``x``: plain always; oneDNN for its activations; Winograd for
        3x3 stride-1 convs on maps of at least WINOGRAD_MIN_SIZE cells a side."""
        conv = self.conv
        found = ["plain"]
        if self._use_onednn and self.activation in _ONEDNN_ACTIVATIONS:
            found.append("onednn")
        if (self._use_winograd and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and min(x.shape[-2:]) >= WINOGRAD_MIN_SIZE):
            found += ["winograd2", "winograd4"]
        return found

    def _measured_method(self, x: Tensor) -> str:
        """The fastest candidate for this conv's shape on this machine, timed once per process and shape.

        Each candidate runs once untimed (its weights are prepared, oneDNN builds its primitive), then
        MEASURE_REPEATS times; the fastest run decides (the least disturbed by other processes). The choice is kept
        in ``_MEASURED_METHODS``, keyed by the conv's geometry, the input's shape and layout and the thread count, so
        other models with the same layers reuse it; the losers' prepared weights are dropped. The rule's thresholds
        came from one AVX2 CPU and picked paths 1.4-1.6x slower than plain on an AVX-512 one: measuring cannot."""
        conv = self.conv
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.groups,
               self.activation, tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last),
               torch.get_num_threads())
        method = _MEASURED_METHODS.get(key)
        if method is None:
            timings = {candidate: self._time_method(candidate, x) for candidate in self._candidates(x)}
            method = _MEASURED_METHODS[key] = min(timings, key=timings.get)
            chosen = self.__dict__.setdefault("_chosen_methods", set())
            chosen.add(method)
            cache = self.__dict__.get("_fast_cache", {})
            for loser in [m for m in cache if m not in chosen]:
                del cache[loser]
        return method

    def _time_method(self, method: str, x: Tensor) -> float:
        self._run_method(method, x)  # untimed: prepares the weights and warms the primitive
        best = math.inf
        for _ in range(MEASURE_REPEATS):
            start = time.perf_counter()
            self._run_method(method, x)
            best = min(best, time.perf_counter() - start)
        return best

    def _rule_method(self, x: Tensor) -> str:
        """'winograd2' / 'winograd4' (F(2x2) / F(4x4, 3x3)), 'onednn' or 'plain' for this input, by thresholds.

        Winograd pays for 3x3 stride-1 convs big enough that its three large matrix products beat one direct
        convolution: H * W * C_in * C_out >= 1e7 on a map of at least 8 x 8 cells; F(4x4) when the map is at least
        26 cells on each side, F(2x2) (less work lost to padded tiles) below. Measured per shape against oneDNN's
        direct convolution on 2 AVX2 cores (see benchmarks/README.md); a miss costs speed, never accuracy."""
        conv = self.conv
        height, width = x.shape[-2:]
        if (self._use_winograd and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and min(height, width) >= WINOGRAD_MIN_SIZE
                and height * width * conv.in_channels * conv.out_channels >= WINOGRAD_MIN_WORK):
            return "winograd4" if min(height, width) >= WINOGRAD_F4_MIN_SIZE else "winograd2"
        return "onednn" if self._use_onednn and self.activation in _ONEDNN_ACTIVATIONS else "plain"

    def _weights_key(self) -> tuple:
        """What the derived weights were built from: the tensors themselves (held, so a replaced weight's memory
        cannot be reused by its successor) and their version counters (bumped by in-place edits; tensors made
        under inference_mode have none). Edits through ``.data`` bypass the counter and are not seen."""
        return tuple((tensor, None if tensor.is_inference() else tensor._version)
                     for tensor in (self.conv.weight, self.conv.bias) if tensor is not None)

    def _prepared_weight(self, method: str, x: Tensor) -> Tensor:
        """The weights in the layout ``method`` wants, rebuilt when the conv's weights changed since last time."""
        cache: Dict[str, Tuple[Tensor, tuple]] = self.__dict__.setdefault("_fast_cache", {})
        key = self._weights_key()
        entry = cache.get(method)
        if entry is None or not _same_key(entry[1], key):
            conv = self.conv
            if method == "onednn":  # reordered once into oneDNN's blocked layout instead of on every call
                weight = conv.weight.detach().contiguous(memory_format=torch.channels_last)
                prepared = torch.ops.mkldnn._reorder_convolution_weight(
                    weight, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape))
            else:
                prepared = transform_weights(conv.weight, int(method[-1]))
            entry = cache[method] = (prepared, key)
        return entry[0]

    def _fast_forward(self, x: Tensor) -> Tensor:
        return self._run_method(self._fast_method(x), x)

    def _run_method(self, method: str, x: Tensor) -> Tensor:
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.detach()
        if method.startswith("winograd"):
            return _activate(winograd_conv3x3(x, self._prepared_weight(method, x), bias, int(method[-1])),
                             self.activation)
        if method == "onednn":
            attr, scalars = _ONEDNN_ACTIVATIONS[self.activation]  # applied inside the convolution
            return torch.ops.mkldnn._convolution_pointwise(x, self._prepared_weight(method, x), bias,
                                                           list(conv.padding), list(conv.stride),
                                                           list(conv.dilation), conv.groups, attr, scalars, "")
        return _activate(conv(x), self.activation)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_fast_cache", None)  # derived weights (oneDNN's have no storage to copy or pickle): rebuilt on demand
        return state

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


def _same_key(old: tuple, new: tuple) -> bool:
    """Two ``ConvLayer._weights_key`` results name the same tensors (identity, not values) at the same versions."""
    return len(old) == len(new) and all(a is b and va == vb for (a, va), (b, vb) in zip(old, new))


# Darknet activations oneDNN applies inside the convolution: name -> (oneDNN post-op, its scalars)
_ONEDNN_ACTIVATIONS: Dict[str, Tuple[str, List[float]]] = {
    "leaky": ("leaky_relu", [LEAKY_SLOPE]), "linear": ("none", []), "relu": ("relu", []), "logistic": ("sigmoid", []),
}


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled()


def onednn_available() -> bool:
    """True when this torch build has oneDNN (MKL-DNN) and the packed-weight convolution ops the inference path uses."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise
        torch.ops.mkldnn._reorder_convolution_weight
    except (AttributeError, RuntimeError):  # a build without them: the plain path is used
        return False
    return True


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


class Darknet(nn.Module):
    """A Darknet cfg as a torch module.

    Args:
        cfg: path to a ``.cfg`` or the cfg text (contains ``[net]``), or a parsed :class:`DarknetCfg`.
        num_classes: if given, rewrites every ``[yolo] classes`` and the filters of the conv feeding each head.

    ``forward(x)`` with ``x`` float (B, 3, H, W), H and W multiples of the largest stride (32 for YOLOv3):
      * train mode: list of raw maps, one per ``[yolo]`` layer in cfg order, each (B, A, H_l, W_l, 5+C) logits;
      * eval mode: (B, N, 5+C) decoded (see :meth:`YOLOLayer.decode`), N = sum over layers of A*H_l*W_l;
        ``forward(x, return_raw=True)`` in eval mode returns ``(decoded, raw_maps)`` (validation losses).
    """

    def __init__(self, cfg: Union[str, Path, DarknetCfg], num_classes: Optional[int] = None) -> None:
        super().__init__()
        parsed = parse_cfg(cfg)
        if num_classes is not None:
            parsed = with_num_classes(parsed, num_classes)
        self.cfg = parsed
        self.cfg_text: str = parsed.text
        self.cfg_name: str = Path(parsed.source).name
        self.input_size: Tuple[int, int] = parsed.input_size
        self.in_channels: int = parsed.net.options["channels"]
        # Darknet .weights header (major, minor, revision, seen), kept so load -> save is byte for byte
        self.darknet_header: Tuple[int, int, int, int] = (0, 2, 0, 0)
        self.module_list = nn.ModuleList()
        self.layer_channels: List[int] = []  # output channels per layer
        self.layer_strides: List[int] = []  # output downsampling factor per layer (input size / output size)
        self._build(parsed)
        self.yolo_layers: List[YOLOLayer] = [m for m in self.module_list if isinstance(m, YOLOLayer)]
        self.yolo_indices: List[int] = [i for i, m in enumerate(self.module_list) if isinstance(m, YOLOLayer)]
        self.num_classes: int = self.yolo_layers[0].num_classes
        if any(layer.num_classes != self.num_classes for layer in self.yolo_layers):
            raise parsed.error(parsed.layers[self.yolo_indices[0]], "classes", "all [yolo] layers must have the same classes")
        self.strides: List[int] = [layer.stride for layer in self.yolo_layers]
        self.max_stride: int = max(self.layer_strides)
        # set by prepare_for_inference(bf16=True): eval-mode forward under autocast to this dtype (None: float32)
        self.inference_dtype: Optional[torch.dtype] = None
        # outputs that a later route/shortcut reads again; the rest are dropped as soon as they are used
        self._saved_outputs = set()
        for module in self.module_list:
            if isinstance(module, RouteLayer):
                self._saved_outputs.update(module.layers)
            elif isinstance(module, ShortcutLayer):
                self._saved_outputs.add(module.source)

    # ----------------------------------------------------------------------------------------------------------------
    def _build(self, parsed: DarknetCfg) -> None:
        channels, stride = self.in_channels, 1
        for block in parsed.layers:
            opts = block.options
            if block.type == "convolutional":
                padding = opts["size"] // 2 if opts["pad"] else opts["padding"]
                module = ConvLayer(channels, opts["filters"], opts["size"], opts["stride"], padding,
                                   bool(opts["batch_normalize"]), opts["activation"])
                channels, stride = opts["filters"], stride * opts["stride"]
            elif block.type == "maxpool":
                module = MaxPoolLayer(opts["size"], opts["stride"], opts["padding"])
                stride *= opts["stride"]
            elif block.type == "upsample":
                if stride % opts["stride"]:
                    raise parsed.error(block, "stride", f"upsampling by {opts['stride']} a map at stride {stride} "
                                                        "would not land on a whole stride")
                module = UpsampleLayer(opts["stride"])
                stride //= opts["stride"]
            elif block.type == "route":
                sources = opts["layers"]
                source_strides = {self.layer_strides[i] for i in sources}
                if len(source_strides) != 1:
                    detail = ", ".join(f"layer {i} at stride {self.layer_strides[i]}" for i in sources)
                    raise parsed.error(block, "layers", f"routed layers must have the same spatial size: {detail}")
                module = RouteLayer(sources)
                channels, stride = sum(self.layer_channels[i] for i in sources), source_strides.pop()
            elif block.type == "shortcut":
                source = opts["from"]
                if (self.layer_channels[source], self.layer_strides[source]) != (channels, stride):
                    raise parsed.error(block, "from", f"layer {source} has {self.layer_channels[source]} channels at "
                                                      f"stride {self.layer_strides[source]}, the previous layer "
                                                      f"{channels} at stride {stride}; a shortcut needs both equal")
                module = ShortcutLayer(source, opts["activation"])
            elif block.type == "yolo":
                module = YOLOLayer(block, stride)
            else:  # the parser rejects unknown blocks; reaching here means the two disagree
                raise parsed.error(block, None, f"block type [{block.type}] is parsed but not built")
            self.module_list.append(module)
            self.layer_channels.append(channels)
            self.layer_strides.append(stride)

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def head_convs(self) -> List[nn.Conv2d]:
        """The (biased) ``nn.Conv2d`` feeding each ``[yolo]`` layer, cfg order."""
        return [self.module_list[i - 1].conv for i in self.yolo_indices]

    def forward(self, x: Tensor, return_raw: bool = False) -> Union[List[Tensor], Tensor, Tuple[Tensor, List[Tensor]]]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.max_stride or width % self.max_stride:
            raise ValueError(f"input height {height} and width {width} must be multiples of {self.max_stride} "
                             f"(the largest stride of {self.cfg_name})")
        if self.inference_dtype is not None and not self.training:
            # bf16 inference (prepare_for_inference(bf16=True)): the network under autocast, the decode in float32
            with torch.autocast(x.device.type, dtype=self.inference_dtype):
                raw_maps = self._run_layers(x)
            raw_maps = [raw.float() for raw in raw_maps]
        else:
            raw_maps = self._run_layers(x)
        if self.training:
            return raw_maps
        decoded = torch.cat([layer.decode(raw) for layer, raw in zip(self.yolo_layers, raw_maps)], dim=1)  # (B, N, 5+C)
        return (decoded, raw_maps) if return_raw else decoded

    def _run_layers(self, x: Tensor) -> List[Tensor]:
        """The layers in cfg order; returns the raw map of each [yolo] layer."""
        saved: Dict[int, Tensor] = {}
        raw_maps: List[Tensor] = []
        for index, module in enumerate(self.module_list):
            if isinstance(module, RouteLayer):
                x = saved[module.layers[0]] if len(module.layers) == 1 else torch.cat([saved[i] for i in module.layers], 1)
            elif isinstance(module, ShortcutLayer):
                x = _activate(x + saved[module.source], module.activation)
            elif isinstance(module, YOLOLayer):
                raw_maps.append(module(x))
            else:
                x = module(x)
            if index in self._saved_outputs:
                saved[index] = x
        return raw_maps

    # ----------------------------------------------------------------------------------------------------------------
    def fuse(self) -> "Darknet":
        """Fold every BatchNorm into its conv (inference only: the BN layers are gone afterwards). Returns self."""
        for module in self.module_list:
            if isinstance(module, ConvLayer):
                module.fuse()
        return self

    def optimize_for_inference(self, onednn: Optional[bool] = None, winograd: bool = True,
                               select: str = "measure") -> "Darknet":
        """Make this model as fast as it gets for inference; it cannot be trained or saved as Darknet weights after.

        Folds BatchNorm into the convs (:meth:`fuse`), switches to eval mode and to the channels_last memory format
        (NHWC: faster convolutions on CPU and on tensor-core GPUs; feed channels_last input to avoid a copy). Then,
        for float32 CPU input without autograd or autocast (any other call takes the plain path):
          * ``winograd``: the large 3x3 stride-1 convs run as Winograd F(4x4, 3x3) or F(2x2, 3x3)
            (:mod:`yolov3.winograd`, choice in ``ConvLayer._fast_method``): 2.25-4x fewer multiplies, float32
            results within ~1e-5 of the direct conv;
          * ``onednn`` (default: when :func:`onednn_available`): every other conv runs as one oneDNN convolution
            with its activation applied inside and its weights reordered once into oneDNN's layout instead of on
            every call.
        ``select``: ``"measure"`` (default) times every path a conv can take (plain included) at its first input of
        each shape and keeps the fastest on this machine (``ConvLayer._measured_method``; ~1-3 s once per process
        for yolov3), so the result is never slower than the plain fused model but for timing noise; ``"rule"``
        applies fixed thresholds measured once on a 2-core AVX2 CPU (``ConvLayer._rule_method``).
        The derived weights are built on first use, rebuilt if the conv's weights are replaced or edited in place
        (not through ``.data``), and kept beside the originals, one copy per path a conv has taken: 2.2x the
        weights' size for yolov3 at 416 (+550 MB), 2.1x for tiny (measured); more when input sizes vary enough
        that a conv takes both Winograd and oneDNN. Returns self. benchmarks/bench_inference.py measures the effect against
        OpenCV DNN on the same weights.
        """
        if onednn is None:
            onednn = onednn_available()
        elif onednn and not onednn_available():
            raise RuntimeError("optimize_for_inference(onednn=True): this torch build has no oneDNN convolution ops")
        if select not in ("measure", "rule"):
            raise ValueError(f"optimize_for_inference: select must be 'measure' or 'rule', got {select!r}")
        self.fuse().eval()
        self.to(memory_format=torch.channels_last)
        for module in self.module_list:
            if isinstance(module, ConvLayer):
                module._use_onednn = bool(onednn)
                module._use_winograd = bool(winograd)
                module._select = select
                module.__dict__.pop("_fast_cache", None)
                module.__dict__.pop("_chosen_methods", None)
        return self

    @property
    def is_fused(self) -> bool:
        """True when some conv that the cfg gives batch_normalize has lost its BatchNorm to :meth:`fuse`."""
        return any(isinstance(m, ConvLayer) and m.bn is None and block.options["batch_normalize"]
                   for m, block in zip(self.module_list, self.cfg.layers))

    def load_darknet_weights(self, path: Union[str, Path], cutoff: Optional[int] = None) -> Tuple[int, int, int, int]:
        """Load a Darknet ``.weights`` file (see :func:`yolov3.weights.load_darknet_weights`)."""
        return load_darknet_weights(self, path, cutoff)

    def save_darknet_weights(self, path: Union[str, Path], cutoff: Optional[int] = None) -> None:
        """Save a Darknet ``.weights`` file (see :func:`yolov3.weights.save_darknet_weights`)."""
        save_darknet_weights(self, path, cutoff)

    # ----------------------------------------------------------------------------------------------------------------
    def layer_output_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """(H, W) of every layer's output for an input of ``height`` x ``width``, by Darknet's size formulas."""
        sizes: List[Tuple[int, int]] = []
        h, w = height, width
        for module in self.module_list:
            if isinstance(module, ConvLayer):
                conv = module.conv
                h = (h + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
                w = (w + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
            elif isinstance(module, MaxPoolLayer):
                h = (h + module.padding - module.size) // module.stride + 1
                w = (w + module.padding - module.size) // module.stride + 1
            elif isinstance(module, UpsampleLayer):
                h, w = h * module.stride, w * module.stride
            elif isinstance(module, RouteLayer):
                h, w = sizes[module.layers[0]]
            sizes.append((h, w))
        return sizes

    def info(self, img_size: Union[int, Tuple[int, int], None] = None, verbose: bool = False) -> Tuple[int, float]:
        """(number of trainable parameters, GFLOPs for one image of ``img_size``; default the [net] size).

        FLOPs count 2 per multiply-add over the conv layers, like Darknet's "BFLOPs" (yolov3-416: 65.9).
        """
        if img_size is None:
            height, width = self.input_size
        elif isinstance(img_size, int):
            height = width = img_size
        else:
            height, width = img_size
        sizes = self.layer_output_sizes(height, width)
        flops = 0
        for module, (h, w) in zip(self.module_list, sizes):
            if isinstance(module, ConvLayer):
                conv = module.conv
                macs_per_output = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
                flops += 2 * macs_per_output * conv.out_channels * h * w
        num_params = sum(p.numel() for p in self.parameters() if p.requires_grad)
        gflops = flops / 1e9
        if verbose:
            print(f"{self.cfg_name}: {len(self.module_list)} layers, {num_params:,} parameters, "
                  f"{gflops:.1f} GFLOPs at {height}x{width}")
        return num_params, gflops


# --------------------------------------------------------------------------------------------------------------------
def prepare_for_inference(model: "Darknet", optimize: bool = True, bf16: bool = False) -> "Darknet":
    """What detect.py and val.py run: :meth:`Darknet.optimize_for_inference` (fast paths chosen by measurement), or
    with ``optimize=False`` the plain fused channels_last model (``--no-optimize``): the same numbers either way.

    ``bf16=True`` (``--bf16``): the plain fused channels_last model run under bfloat16 autocast, the boxes decoded
    in float32. The float32 fast paths do not apply to it (``optimize`` is then ignored). It pays only where bf16 is
    native (AVX512_BF16 / AMX, or a GPU); elsewhere oneDNN converts to and from float32 and it is slower. It keeps 8
    mantissa bits: scores move by up to a few hundredths (README "Speed" gives its measured mAP effect)."""
    model.inference_dtype = torch.bfloat16 if bf16 else None
    if optimize and not bf16:
        return model.optimize_for_inference()
    model.fuse().eval()
    return model.to(memory_format=torch.channels_last)


def default_img_size(model: "Darknet", checkpoint: Optional[Dict[str, Any]]) -> int:
    """Inference size when none is given: the training size stored in a train.py checkpoint, else the cfg's width."""
    if checkpoint and isinstance(checkpoint.get("config"), dict):
        return int(checkpoint["config"].get("train", {}).get("img_size", model.input_size[1]))
    return int(model.input_size[1])


def load_model(weights: Union[str, Path], cfg: Union[str, Path, None] = None, num_classes: Optional[int] = None,
               device: Union[str, torch.device] = "cpu") -> Tuple[Darknet, Optional[Dict[str, Any]]]:
    """Build a model from a checkpoint or Darknet weights; returns ``(model in eval mode on device, checkpoint|None)``.

    * ``.pt`` (from train.py): a dict with ``model`` (state_dict) and ``cfg_text`` (plus names, config, ...). The cfg
      inside wins; a ``cfg``/``num_classes`` that disagrees with it is an error rather than a silent choice.
      Loaded with ``weights_only=True``: a file that would need to run code to load is refused.
    * a train.py run folder: its best.pt (``<run>/weights/best.pt``, or ``<run>/best.pt`` of an older run).
    * anything else is read as a Darknet ``.weights`` file and needs ``cfg``.
    Problems with the file or the arguments raise ``yolov3.weights.WeightsError`` (a ValueError) naming the file.
    """
    weights = find_weights(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    if weights.suffix == ".pt":
        checkpoint = read_checkpoint(weights)
        if not isinstance(checkpoint, dict) or "model" not in checkpoint or "cfg_text" not in checkpoint:
            found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise WeightsError(f"{weights}: not a yolov3-focal checkpoint; expected a dict with 'model' and 'cfg_text', "
                             f"found {found}")
        model = Darknet(checkpoint["cfg_text"])
        if num_classes is not None and num_classes != model.num_classes:
            raise WeightsError(f"{weights}: the checkpoint has {model.num_classes} classes, but num_classes={num_classes} "
                             "was asked for")
        if cfg is not None:
            given_types = [block.type for block in parse_cfg(cfg).layers]
            if given_types != [block.type for block in model.cfg.layers]:
                raise WeightsError(f"{weights}: the checkpoint was trained with a different cfg than {cfg}; "
                                 "drop the cfg argument to use the checkpoint's own")
        state = checkpoint["model"]
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise WeightsError(f"{weights}: 'model' is not a state dict of tensors")
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            raise WeightsError(f"{weights}: the weights do not fit the checkpoint's own cfg "
                               f"({str(exc).splitlines()[0]})") from None
    else:
        if cfg is None:
            raise WeightsError(f"{weights}: Darknet weights need the model cfg too (pass cfg=... / --cfg path/to/model.cfg)")
        checkpoint = None
        model = Darknet(cfg, num_classes=num_classes)
        model.load_darknet_weights(weights)
    broken = first_non_finite(model.state_dict())
    if broken is not None:  # a diverged run's weights would only give garbage detections or NaN metrics
        raise WeightsError(f"{weights}: the weights hold NaN or infinite values (first in '{broken}'); "
                           "the model is unusable: use an earlier checkpoint or retrain with a lower train.lr0")
    return model.to(device).eval(), checkpoint
