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

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cfgparse import CfgBlock, DarknetCfg, parse_cfg, with_num_classes

__all__ = ["Darknet", "YOLOLayer", "ConvLayer", "MaxPoolLayer", "load_model"]

BN_EPS = 1e-5  # Darknet's cuDNN path and OpenCV's importer use 1e-5
BN_MOMENTUM = 0.03  # torch convention (weight of the new batch); Darknet uses .01, .03 tracks faster in short CPU runs
LEAKY_SLOPE = 0.1  # Darknet's leaky activation


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

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return _activate(x, self.activation)

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
        if self.padding:
            x = F.pad(x, self.pad, value=float("-inf"))  # -inf: a window's max is over the cells that exist
        return F.max_pool2d(x, self.size, self.stride)


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
        if self.training:
            return raw_maps
        decoded = torch.cat([layer.decode(raw) for layer, raw in zip(self.yolo_layers, raw_maps)], dim=1)  # (B, N, 5+C)
        return (decoded, raw_maps) if return_raw else decoded

    # ----------------------------------------------------------------------------------------------------------------
    def fuse(self) -> "Darknet":
        """Fold every BatchNorm into its conv (inference only: the BN layers are gone afterwards). Returns self."""
        for module in self.module_list:
            if isinstance(module, ConvLayer):
                module.fuse()
        return self

    @property
    def is_fused(self) -> bool:
        """True when some conv that the cfg gives batch_normalize has lost its BatchNorm to :meth:`fuse`."""
        return any(isinstance(m, ConvLayer) and m.bn is None and block.options["batch_normalize"]
                   for m, block in zip(self.module_list, self.cfg.layers))

    def load_darknet_weights(self, path: Union[str, Path], cutoff: Optional[int] = None) -> Tuple[int, int, int, int]:
        """Load a Darknet ``.weights`` file (see :func:`yolov3.weights.load_darknet_weights`)."""
        from .weights import load_darknet_weights

        return load_darknet_weights(self, path, cutoff)

    def save_darknet_weights(self, path: Union[str, Path], cutoff: Optional[int] = None) -> None:
        """Save a Darknet ``.weights`` file (see :func:`yolov3.weights.save_darknet_weights`)."""
        from .weights import save_darknet_weights

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
      Loaded with ``weights_only=False`` because checkpoints hold RNG states: only load checkpoints you trust.
    * anything else is read as a Darknet ``.weights`` file and needs ``cfg``.
    Problems with the file or the arguments raise ``yolov3.weights.WeightsError`` (a ValueError) naming the file.
    """
    from .weights import WeightsError, read_checkpoint

    weights = Path(weights)
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
        if isinstance(state, nn.Module):
            state = state.state_dict()
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
    return model.to(device).eval(), checkpoint
