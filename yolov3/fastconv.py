"""The CPU inference fast path: a plain fused Darknet's convolutions swapped for ones that run as Winograd or oneDNN.

:meth:`yolov3.model.Darknet.optimize_for_inference` fuses the model, then calls :func:`speed_up`, which replaces
every fused :class:`~yolov3.layers.ConvLayer` by a :class:`FastConvLayer` on the same conv (same weights, nothing
copied). For float32 CPU input without autograd or autocast a FastConvLayer runs one of:

* ``winograd2`` / ``winograd4``: Winograd F(2x2, 3x3) / F(4x4, 3x3) (:mod:`yolov3.winograd`) for 3x3 stride-1 convs;
* ``onednn``: one oneDNN convolution with the activation applied inside and the weights reordered once into
  oneDNN's layout instead of on every call;
* ``plain``: the conv and activation as in training.

Which one: ``select="measure"`` times each candidate at a conv's first input of each shape and keeps the fastest
on this machine; ``select="rule"`` applies fixed thresholds (the tests use it to reach every kind of conv). Any
other call takes the plain path, so training, autograd and other dtypes and devices see the ordinary layer.

Torch's private API: the oneDNN ops and the tensors' in-place edit counter are used here and nowhere else in the
project, each through one function of the section below; :func:`missing_private_calls` lists the ones a torch
release has dropped, and tests/test_fastconv.py fails naming them.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from yolov3.layers import LEAKY_SLOPE, ConvLayer, activate
from yolov3.winograd import transform_weights, winograd_conv3x3

# select="rule": Winograd for 3x3 stride-1 convs with H * W * C_in * C_out >= WINOGRAD_MIN_WORK on maps of at least
# WINOGRAD_MIN_SIZE cells a side; F(4x4, 3x3) from WINOGRAD_F4_MIN_SIZE cells, F(2x2, 3x3) below
WINOGRAD_MIN_WORK = 10_000_000
WINOGRAD_MIN_SIZE = 8
WINOGRAD_F4_MIN_SIZE = 26
# select="measure": timed runs per candidate path (after one untimed), and the choices made, shared by every model
# of this process (same layers, same choice)
MEASURE_REPEATS = 3
_MEASURED_METHODS: Dict[tuple, str] = {}
SELECTIONS = ("measure", "rule")

# Darknet activations oneDNN applies inside the convolution: name -> (oneDNN post-op, its scalars)
_ONEDNN_ACTIVATIONS: Dict[str, Tuple[str, List[float]]] = {
    "leaky": ("leaky_relu", [LEAKY_SLOPE]), "linear": ("none", []), "relu": ("relu", []), "logistic": ("sigmoid", []),
}


# --------------------------------------------------------------------------------------------------------------------
# Torch's private API: every use of it in the project is in this section
# --------------------------------------------------------------------------------------------------------------------
PRIVATE_TORCH_CALLS = ("torch.ops.mkldnn._reorder_convolution_weight", "torch.ops.mkldnn._convolution_pointwise",
                       "torch.Tensor._version")


def missing_private_calls() -> List[str]:
    """The entries of PRIVATE_TORCH_CALLS that this torch does not have (a build without oneDNN lacks its ops)."""
    missing = []
    for name in PRIVATE_TORCH_CALLS[:2]:
        try:
            getattr(torch.ops.mkldnn, name.rsplit(".", 1)[1])
        except (AttributeError, RuntimeError):  # torch.ops raises either, depending on the release
            missing.append(name)
    if not hasattr(torch.Tensor, "_version"):  # the class's: an inference tensor refuses to be asked
        missing.append("torch.Tensor._version")
    return missing


def onednn_available() -> bool:
    """True when this torch build has oneDNN (MKL-DNN) and the packed-weight convolution ops the fast path uses."""
    return torch.backends.mkldnn.is_available() and not any(name.startswith("torch.ops.mkldnn")
                                                            for name in missing_private_calls())


def onednn_weight(conv: nn.Conv2d, input_shape: Tuple[int, ...]) -> Tensor:
    """``conv``'s weights reordered into oneDNN's blocked layout for inputs of ``input_shape``."""
    weight = conv.weight.detach().contiguous(memory_format=torch.channels_last)
    return torch.ops.mkldnn._reorder_convolution_weight(weight, list(conv.padding), list(conv.stride),
                                                         list(conv.dilation), conv.groups, list(input_shape))


def onednn_convolution(x: Tensor, weight: Tensor, bias: Optional[Tensor], conv: nn.Conv2d, activation: str) -> Tensor:
    """``conv`` with :func:`onednn_weight`'s weights and the Darknet ``activation`` applied inside the convolution."""
    attr, scalars = _ONEDNN_ACTIVATIONS[activation]
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(conv.padding), list(conv.stride),
                                                   list(conv.dilation), conv.groups, attr, scalars, "")


def edit_count(tensor: Tensor) -> Optional[int]:
    """How many in-place edits ``tensor`` has had (its version counter); None for a tensor made under inference_mode,
    which has none. Edits through ``.data`` bypass the counter."""
    return None if tensor.is_inference() else tensor._version


# --------------------------------------------------------------------------------------------------------------------
def check_options(onednn: Optional[bool], select: str) -> bool:
    """The oneDNN switch resolved (None: when available), after checking both arguments of ``speed_up``."""
    if onednn is None:
        onednn = onednn_available()
    elif onednn and not onednn_available():
        raise RuntimeError("optimize_for_inference(onednn=True): this torch build has no oneDNN convolution ops")
    if select not in SELECTIONS:
        raise ValueError(f"optimize_for_inference: select must be 'measure' or 'rule', got {select!r}")
    return bool(onednn)


def speed_up(layers: nn.ModuleList, onednn: Optional[bool] = None, winograd: bool = True,
             select: str = "measure") -> None:
    """Replace every fused conv of ``layers`` (a fused Darknet's ``module_list``) by a :class:`FastConvLayer` on the
    same conv, allowed the given paths; a FastConvLayer already there is replaced too (its choices forgotten)."""
    onednn = check_options(onednn, select)
    for index, layer in enumerate(layers):
        if isinstance(layer, ConvLayer) and layer.bn is None:
            fast = FastConvLayer(layer.conv, layer.activation, onednn, bool(winograd), select)
            layers[index] = fast.train(layer.training)  # a fresh module is in training mode


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled()


def _same_key(old: tuple, new: tuple) -> bool:
    """Two ``FastConvLayer._weights_key`` results name the same tensors (identity, not values) at the same versions."""
    return len(old) == len(new) and all(a is b and va == vb for (a, va), (b, vb) in zip(old, new))


class FastConvLayer(ConvLayer):
    """A fused ``[convolutional]`` layer whose CPU inference runs as the fastest of its paths (module docstring).

    Derived weights are built on first use of a path, rebuilt when the conv's weights are replaced or edited in place
    (not through ``.data``), kept in ``_fast_cache`` (one entry per path taken) and never pickled or copied.
    """

    def __init__(self, conv: nn.Conv2d, activation: str, onednn: bool, winograd: bool, select: str) -> None:
        nn.Module.__init__(self)  # not ConvLayer's: the fused layer's own conv is taken over, no weights are made
        self.conv, self.bn, self.activation = conv, None, activation
        self._use_onednn, self._use_winograd, self._select = onednn, winograd, select

    def forward(self, x: Tensor) -> Tensor:
        if (self._use_onednn or self._use_winograd) and self._fast_path_applies(x):
            method = self._measured_method(x) if self._select == "measure" else self._rule_method(x)
            return self._run_method(method, x)
        return super().forward(x)

    def _fast_path_applies(self, x: Tensor) -> bool:
        """Fused conv, CPU float32, no autograd, no autocast: the fast paths give the plain path's numbers (within
        float32 rounding); otherwise the plain path runs."""
        return (not self.training and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.conv.weight.dtype == torch.float32
                and self.conv.weight.device.type == "cpu" and not _cpu_autocast_enabled())

    def _winograd_fits(self, x: Tensor) -> bool:
        """Winograd computes this conv: 3x3, stride 1, padding 1, no dilation or groups, on a map of at least
        WINOGRAD_MIN_SIZE cells a side (smaller maps are mostly padded tiles)."""
        conv = self.conv
        return (self._use_winograd and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and min(x.shape[-2:]) >= WINOGRAD_MIN_SIZE)

    def _candidates(self, x: Tensor) -> List[str]:
        """Every path that can compute this conv on ``x``: plain always, oneDNN for its activations, Winograd."""
        found = ["plain"]
        if self._use_onednn and self.activation in _ONEDNN_ACTIVATIONS:
            found.append("onednn")
        if self._winograd_fits(x):
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
        height, width = x.shape[-2:]
        if (self._winograd_fits(x)
                and height * width * self.conv.in_channels * self.conv.out_channels >= WINOGRAD_MIN_WORK):
            return "winograd4" if min(height, width) >= WINOGRAD_F4_MIN_SIZE else "winograd2"
        return "onednn" if self._use_onednn and self.activation in _ONEDNN_ACTIVATIONS else "plain"

    def _weights_key(self) -> tuple:
        """What the derived weights were built from: the tensors themselves (held, so a replaced weight's memory
        cannot be reused by its successor) and their edit counts."""
        return tuple((tensor, edit_count(tensor)) for tensor in (self.conv.weight, self.conv.bias)
                     if tensor is not None)

    def _prepared_weight(self, method: str, x: Tensor) -> Tensor:
        """The weights in the layout ``method`` wants, rebuilt when the conv's weights changed since last time."""
        cache: Dict[str, Tuple[Tensor, tuple]] = self.__dict__.setdefault("_fast_cache", {})
        key = self._weights_key()
        entry = cache.get(method)
        if entry is None or not _same_key(entry[1], key):
            if method == "onednn":
                prepared = onednn_weight(self.conv, tuple(x.shape))
            else:
                prepared = transform_weights(self.conv.weight, int(method[-1]))
            entry = cache[method] = (prepared, key)
        return entry[0]

    def _run_method(self, method: str, x: Tensor) -> Tensor:
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.detach()
        if method.startswith("winograd"):
            return activate(winograd_conv3x3(x, self._prepared_weight(method, x), bias, int(method[-1])),
                            self.activation)
        if method == "onednn":
            return onednn_convolution(x, self._prepared_weight(method, x), bias, conv, self.activation)
        return activate(conv(x), self.activation)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_fast_cache", None)  # derived weights (oneDNN's have no storage to copy or pickle): rebuilt on demand
        return state
