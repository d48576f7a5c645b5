"""The Darknet network built from a ``.cfg``, layer for layer, and its ``[yolo]`` decode.

The layers themselves and their Darknet semantics are in :mod:`yolov3.layers`; the CPU inference fast path that
:meth:`Darknet.optimize_for_inference` switches on is in :mod:`yolov3.fastconv`.

Public API: ``Darknet(cfg, num_classes=None)``, ``load_model(weights, cfg=None, num_classes=None, device='cpu')``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from yolov3.cfgparse import DarknetCfg, parse_cfg, with_num_classes
from yolov3.fastconv import check_options, fast_path_can_pay, speed_up
from yolov3.layers import (BN_EPS, BN_MOMENTUM, LEAKY_SLOPE, ConvLayer, MaxPoolLayer, RouteLayer, ShortcutLayer,
                           UpsampleLayer, YOLOLayer, activate, decode_boxes)
from yolov3.runs import find_weights
from yolov3.weights import (WeightsError, first_non_finite, load_darknet_weights, looks_like_darknet_weights,
                            read_checkpoint, save_darknet_weights)

__all__ = ["Darknet", "YOLOLayer", "ConvLayer", "MaxPoolLayer", "load_model", "load_for_inference",
           "prepare_for_inference",
           # the layers' names, for the code that knew them here
           "BN_EPS", "BN_MOMENTUM", "LEAKY_SLOPE", "RouteLayer", "ShortcutLayer", "UpsampleLayer", "decode_boxes"]


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
                x = activate(x + saved[module.source], module.activation)
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
                               select: str = "measure", expected_calls: Optional[int] = None) -> "Darknet":
        """Make this model as fast as it gets for inference; it cannot be trained or saved as Darknet weights after.

        Folds BatchNorm into the convs (:meth:`fuse`), switches to eval mode and to the channels_last memory format
        (NHWC: faster convolutions on CPU and on tensor-core GPUs; feed channels_last input to avoid a copy), then
        gives every conv the CPU fast path of :mod:`yolov3.fastconv` (:func:`~yolov3.fastconv.speed_up`), taken for
        float32 CPU input without autograd or autocast (any other call takes the plain path):
          * ``winograd``: the large 3x3 stride-1 convs run as Winograd F(4x4, 3x3) or F(2x2, 3x3)
            (:mod:`yolov3.winograd`): 2.25-4x fewer multiplies, float32 results within ~1e-5 of the direct conv;
          * ``onednn`` (default: when :func:`yolov3.fastconv.onednn_available`): every other conv runs as one oneDNN
            convolution with its activation applied inside and its weights reordered once into oneDNN's layout
            instead of on every call.
        ``select``: ``"measure"`` (default) times every path a conv can take (plain included) on its own calls at
        each input shape and keeps the fastest on this machine, remembered on disk (:mod:`yolov3.prepcache`) for the
        next process; ``expected_calls`` (the job's forward calls, if known) decides what can pay
        (:func:`yolov3.fastconv.start_calls`): a job shorter than ``fastconv.USE_KNOWN_MIN_CALLS`` runs plain, one
        shorter than ``fastconv.JOB_MIN_CALLS`` uses stored choices but never measures, an unknown length starts
        plain and turns to them later. ``"rule"`` applies fixed thresholds measured once on a 2-core AVX2 CPU.
        The derived weights are built on first use, rebuilt if the conv's weights are replaced or edited in place
        (not through ``.data``), and kept beside the originals, one copy per path a conv has taken: 2.2x the
        weights' size for yolov3 at 416 (+550 MB), 2.1x for tiny (measured); more when input sizes vary enough
        that a conv takes both Winograd and oneDNN. Returns self. benchmarks/bench_inference.py measures the effect against
        OpenCV DNN on the same weights.
        """
        onednn = check_options(onednn, select)  # before anything changes
        self.fuse().eval()
        self.to(memory_format=torch.channels_last)
        speed_up(self.module_list, onednn, winograd, select, expected_calls)
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
def prepare_for_inference(model: "Darknet", optimize: bool = True, bf16: bool = False,
                          expected_calls: Optional[int] = None) -> "Darknet":
    """What detect.py and val.py run: :meth:`Darknet.optimize_for_inference` (fast paths chosen by measurement where
    ``expected_calls`` forward calls can pay for it, or stored from an earlier process), or
    with ``optimize=False`` the plain fused channels_last model (``--no-optimize``): the same numbers either way. A job
    announced too short for a fast path to pay (:func:`yolov3.fastconv.fast_path_can_pay`) gets the plain model too,
    so a single image costs what ``--no-optimize`` costs.

    ``bf16=True`` (``--bf16``): the plain fused channels_last model run under bfloat16 autocast, the boxes decoded
    in float32. The float32 fast paths do not apply to it (``optimize`` is then ignored). It pays only where bf16 is
    native (AVX512_BF16 / AMX, or a GPU); elsewhere oneDNN converts to and from float32 and it is slower. It keeps 8
    mantissa bits: scores move by up to a few hundredths (docs/speed.md gives its measured mAP effect)."""
    model.inference_dtype = torch.bfloat16 if bf16 else None
    if optimize and not bf16 and fast_path_can_pay(expected_calls):
        return model.optimize_for_inference(expected_calls=expected_calls)
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
        if not looks_like_darknet_weights(weights):
            raise WeightsError(f"{weights}: neither a train.py checkpoint (.pt) nor a Darknet .weights file (its first "
                               "bytes are not a Darknet header)")
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


def load_for_inference(weights: Union[str, Path], cfg: Union[str, Path, None] = None,
                       num_classes: Optional[int] = None,
                       device: Union[str, torch.device] = "cpu") -> Tuple[Darknet, Optional[Dict[str, Any]]]:
    """What detect.py, val.py, export.py and :class:`yolov3.detector.Detector` load a model with: :func:`load_model`,
    with a Darknet ``.weights`` model's heads built for ``num_classes`` (the class names' count) when given.

    A ``.weights`` file does not record its class count, so the cfg's (often COCO's 80) would not fit weights trained
    on other classes. When the weights fit only the cfg's own count, that model is returned and the caller reports the
    mismatch with its names; when they fit neither, the error for ``num_classes`` is raised. A ``.pt`` (or a run
    folder) knows its own classes: ``num_classes`` is not used for it.
    """
    weights = find_weights(weights)  # a run folder: its best.pt
    if num_classes is None or weights.suffix == ".pt":
        return load_model(weights, cfg=cfg, device=device)
    try:
        return load_model(weights, cfg=cfg, num_classes=num_classes, device=device)
    except WeightsError as error:
        try:
            return load_model(weights, cfg=cfg, device=device)
        except WeightsError:
            raise error from None
