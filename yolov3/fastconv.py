"""The CPU inference fast path: a plain fused Darknet's convolutions swapped for ones that run as Winograd or oneDNN.

:meth:`yolov3.model.Darknet.optimize_for_inference` fuses the model, then calls :func:`speed_up`, which replaces
every fused :class:`~yolov3.layers.ConvLayer` by a :class:`FastConvLayer` on the same conv (same weights, nothing
copied). For float32 CPU input without autograd or autocast a FastConvLayer runs one of:

* ``winograd2`` / ``winograd4``: Winograd F(2x2, 3x3) / F(4x4, 3x3) (:mod:`yolov3.winograd`) for 3x3 stride-1 convs;
* ``onednn``: one oneDNN convolution with the activation applied inside and the weights reordered once into
  oneDNN's layout instead of on every call;
* ``plain``: the conv and activation as in training.

Which one: ``select="measure"`` times each candidate on the conv's own calls at each input shape (every call
still computes its real output, so measuring costs only the slower candidates' extra time) and keeps the fastest on
this machine, in memory and in the on-disk preparation cache (:mod:`yolov3.prepcache`), so the next process here
starts with it. Both pay only over enough calls (:func:`start_calls`): a job announced shorter than
``USE_KNOWN_MIN_CALLS`` calls runs plain, as ``--no-optimize`` would; one shorter than ``JOB_MIN_CALLS`` uses known
choices but never measures; a job of unknown length (a stream, the Python API) starts plain and turns to a known
choice after ``USE_KNOWN_MIN_CALLS`` calls of a shape, to measuring after ``MEASURE_AFTER_CALLS``.
``select="rule"`` applies fixed thresholds (the tests use it to reach every kind of conv). Any other call takes
the plain path, so training, autograd and other dtypes and devices see the ordinary layer.

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

from yolov3 import memory, prepcache
from yolov3.layers import LEAKY_SLOPE, ConvLayer, activate
from yolov3.prepcache import PrepCache
from yolov3.winograd import transform_weights, winograd_conv3x3

# select="rule": Winograd for 3x3 stride-1 convs with H * W * C_in * C_out >= WINOGRAD_MIN_WORK on maps of at least
# WINOGRAD_MIN_SIZE cells a side; F(4x4, 3x3) from WINOGRAD_F4_MIN_SIZE cells, F(2x2, 3x3) below
WINOGRAD_MIN_WORK = 10_000_000
WINOGRAD_MIN_SIZE = 8
WINOGRAD_F4_MIN_SIZE = 26
# select="measure": each candidate path runs once untimed (its weights are prepared, oneDNN builds its primitive), then
# MEASURE_REPEATS timed calls; the fastest call decides (the least disturbed by other processes). A candidate whose
# untimed call already took ABANDON_FACTOR x the best timed one so far is dropped without its timed calls: no
# preparation makes a path that much slower, and every call spent on a loser is time the job loses
MEASURE_REPEATS = 2  # one timed call alone let noise pick plain over Winograd for tiny's biggest conv (8 ms a photo)
ABANDON_FACTOR = 3.0
# the most calls one conv's measurement at one shape takes: its 4 paths at most (plain, onednn, winograd4, winograd2)
MOST_MEASURING_CALLS = 4 * (1 + MEASURE_REPEATS)
# Winograd's matrix products have C_in rows and C_out columns per tile position: below this many channels they are
# too thin to beat one direct convolution (2-core AVX2 and AVX-512 CPUs alike), so they are not even measured
WINOGRAD_MIN_CHANNELS = 64
# A job announced with fewer calls than this never measures. Measuring costs the losing candidates' extra time and
# every candidate's preparation (weights re-laid out, oneDNN primitives built). Measured in fresh processes
# (benchmarks/bench_prep.py, 2-core AMD EPYC Zen 4; docs/speed.md), a cold model's time caught up with the plain
# model's after ~25-30 calls for yolov3-tiny at detect.py's batch (4 x 320x416), ~20 at val.py's (16 x 416x416),
# ~10-16 for yolov3 at detect.py's
JOB_MIN_CALLS = 30
# A job of unknown length measures a shape after this many plain calls at it (pay once what was already spent)
MEASURE_AFTER_CALLS = 30
# A choice already known (stored on disk, or measured in this process) is used only by a job of at least this many
# calls: the first call of a fast path prepares its weights and oneDNN its primitive, which the same runs won back
# within 4-10 calls (yolov3-tiny, batch 4; sooner at batch 16 and for yolov3); an unknown length uses it after this
# many calls
USE_KNOWN_MIN_CALLS = 10
SELECTIONS = ("measure", "rule")
_MEASURED_METHODS: Dict[str, str] = {}  # choice per shape key, shared by every model of this process
_PREP_CACHE: Optional[PrepCache] = None  # the on-disk choices, opened at first need (use_prep_cache)

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
             select: str = "measure", expected_calls: Optional[int] = None) -> None:
    """Replace every fused conv of ``layers`` (a fused Darknet's ``module_list``) by a :class:`FastConvLayer` on the
    same conv, allowed the given paths; a FastConvLayer already there is replaced too (its choices forgotten).
    ``expected_calls``: how many forward calls the job will make, if known (see :func:`start_calls`)."""
    onednn = check_options(onednn, select)
    for index, layer in enumerate(layers):
        if isinstance(layer, ConvLayer) and layer.bn is None:
            fast = FastConvLayer(layer.conv, layer.activation, onednn, bool(winograd), select, expected_calls)
            layers[index] = fast.train(layer.training)  # a fresh module is in training mode


def start_calls(expected_calls: Optional[int]) -> Tuple[Optional[int], Optional[int]]:
    """(the call of a new shape from which a conv runs a choice already known (stored or measured in this process),
    the call from which it measures one); None: never, for a job too short to pay for it.

    Known choices: from the first call for a job of at least USE_KNOWN_MIN_CALLS calls, never for a shorter one (a
    fast path's first call prepares its weights and oneDNN its primitive, which a few calls cannot win back), after
    USE_KNOWN_MIN_CALLS calls when the length is unknown. Measuring likewise with JOB_MIN_CALLS and
    MEASURE_AFTER_CALLS."""
    if expected_calls is None:
        return USE_KNOWN_MIN_CALLS, MEASURE_AFTER_CALLS
    return (1 if expected_calls >= USE_KNOWN_MIN_CALLS else None, 1 if expected_calls >= JOB_MIN_CALLS else None)


def fast_path_can_pay(expected_calls: Optional[int]) -> bool:
    """False for a job announced too short for any fast path to pay (fewer than USE_KNOWN_MIN_CALLS calls): it runs
    the plain model, as ``--no-optimize`` does, without a FastConvLayer or the preparation cache in the way."""
    return any(start is not None for start in start_calls(expected_calls))


def use_prep_cache(mode: str = "use") -> Optional[PrepCache]:
    """Open the preparation cache for this process: ``use`` (the default file), ``off`` (no file: measure, keep
    in memory), ``clear`` (delete the file, then measure and write it anew). Returns it (None when off)."""
    global _PREP_CACHE
    if mode not in prepcache.MODES:
        raise ValueError(f"--prep-cache must be one of {', '.join(prepcache.MODES)}, got {mode!r}")
    path = None if mode == "off" else prepcache.default_path()
    if mode == "clear":
        prepcache.clear(path)
    _MEASURED_METHODS.clear()  # what this process measured under another cache setting is not reused either
    _PREP_CACHE = PrepCache(path)
    return _PREP_CACHE if path is not None else None


def use_prep_cache_for_job(mode: str, expected_calls: Optional[int]) -> None:
    """detect.py's and val.py's ``--prep-cache`` for a job of ``expected_calls`` forward calls: the cache opened
    (:func:`use_prep_cache`) where a fast path can pay; a job too short for one (:func:`fast_path_can_pay`) leaves the
    file unread, except that ``clear`` still deletes it."""
    if fast_path_can_pay(expected_calls) or mode == "clear":
        use_prep_cache(mode)


def add_fast_path_flags(parser: Any) -> None:
    """detect.py's and val.py's switches for this module: ``--no-optimize`` and ``--prep-cache``."""
    parser.add_argument("--no-optimize", action="store_true",
                        help="run the plain fused channels_last model instead of optimize_for_inference()'s "
                             "Winograd/oneDNN convs (those are timed per conv on a job long enough to pay for it, "
                             "kept only where faster on this machine, and remembered for the next run)")
    parser.add_argument("--prep-cache", default="use", choices=prepcache.MODES,
                        help="the fast path's measured choices on disk ($YOLOV3_PREP_CACHE, else "
                             "~/.cache/yolov3-focal/prep-cache.json): use them, 'off' for this run, or 'clear' "
                             "them first")


def _prep_cache() -> PrepCache:
    if _PREP_CACHE is None:
        use_prep_cache("use")
    return _PREP_CACHE


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

    def __init__(self, conv: nn.Conv2d, activation: str, onednn: bool, winograd: bool, select: str,
                 expected_calls: Optional[int] = None) -> None:
        nn.Module.__init__(self)  # not ConvLayer's: the fused layer's own conv is taken over, no weights are made
        self.conv, self.bn, self.activation = conv, None, activation
        self._use_onednn, self._use_winograd, self._select = onednn, winograd, select
        # the call of a new shape from which a known choice is used / measuring starts; None: never
        self._use_stored_after, self._measure_after = start_calls(expected_calls)

    def forward(self, x: Tensor) -> Tensor:
        if (self._use_onednn or self._use_winograd) and self._fast_path_applies(x):
            if self._select == "rule":
                return self._run_method(self._rule_method(x), x)
            return self._measured_forward(x)
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
        if self._winograd_fits(x) and min(self.conv.in_channels, self.conv.out_channels) >= WINOGRAD_MIN_CHANNELS:
            found += ["winograd4", "winograd2"]
        return found

    def _shape_key(self, x: Tensor) -> str:
        """What a measured choice holds for: the conv's geometry, the input (shape, layout, dtype), the threads, and
        whether this process keeps freed memory (:mod:`yolov3.memory`: without it each large Winograd temporary is
        mapped and zero-filled anew on every call, which turns the measurement against Winograd). Convs of other
        models with the same key share the choice, in memory and in the preparation cache."""
        conv = self.conv
        pair = lambda values: "x".join(str(v) for v in values)  # noqa: E731
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) else "nchw"
        return (f"conv {conv.in_channels}>{conv.out_channels} k{pair(conv.kernel_size)} s{pair(conv.stride)} "
                f"p{pair(conv.padding)} g{conv.groups} {self.activation} | input {pair(x.shape)} {layout} "
                f"{str(x.dtype).replace('torch.', '')} | threads {torch.get_num_threads()} | malloc {memory.state}")

    def _measured_forward(self, x: Tensor) -> Tensor:
        """This call computed by the path chosen for its shape; while none is chosen, by plain (before the job is
        known to be long enough) or by the candidate whose turn it is in the measurement (module docstring)."""
        key = self._shape_key(x)
        methods: Dict[str, str] = self.__dict__.setdefault("_methods", {})  # this conv's choice per shape key
        method = methods.get(key)
        if method is not None:
            return self._run_method(method, x)
        trials: Dict[str, _Trial] = self.__dict__.setdefault("_trials", {})
        plain_calls = self.__dict__.setdefault("_plain_calls", {})
        calls = plain_calls[key] = plain_calls.get(key, 0) + (key not in trials)  # this shape's calls so far
        if self._use_stored_after is not None and calls >= self._use_stored_after:
            method = _MEASURED_METHODS.get(key)  # another conv of the same key chose (perhaps during our trial)
            if method is None:
                stored = _prep_cache().get(key)
                if stored is not None and stored in self._candidates(x):  # a path this build lacks: measured again
                    method = _MEASURED_METHODS[key] = stored
            if method is not None:
                trials.pop(key, None)
                methods[key] = method
                self._drop_losers(method)
                return self._run_method(method, x)
        trial = trials.get(key)
        if trial is None:
            if self._measure_after is None or calls < self._measure_after:
                return self._run_method("plain", x)
            trial = trials[key] = _Trial(self._candidates(x))
        method = trial.method
        out, seconds = self._timed_run(method, x)
        trial.record(seconds)
        if trial.done:
            winner = _MEASURED_METHODS[key] = methods[key] = trial.winner()
            del trials[key]
            _prep_cache().put(key, winner)
            self._drop_losers(winner)
        return out

    def _timed_run(self, method: str, x: Tensor) -> Tuple[Tensor, float]:
        start = time.perf_counter()
        out = self._run_method(method, x)
        return out, time.perf_counter() - start

    def _drop_losers(self, winner: str) -> None:
        """Forget the prepared weights of paths no shape of this conv chose."""
        chosen = self.__dict__.setdefault("_chosen_methods", set())
        chosen.add(winner)
        cache = self.__dict__.get("_fast_cache", {})
        for loser in [m for m in cache if m not in chosen]:
            del cache[loser]

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
        state.pop("_trials", None)  # a measurement half done holds timings of this process only
        state.pop("_methods", None)  # the copy looks its choices up again (another process may lack this one's)
        return state


class _Trial:
    """One conv's measurement at one input shape: each candidate in turn computes the next 1 + MEASURE_REPEATS real
    calls, the first untimed (or only that one: ABANDON_FACTOR); ``winner()`` is the candidate with the fastest timed
    call."""

    def __init__(self, candidates: List[str]) -> None:
        self.candidates, self.index, self.runs = list(candidates), 0, 0
        self.best: Dict[str, float] = {}

    @property
    def method(self) -> str:
        return self.candidates[self.index]

    @property
    def done(self) -> bool:
        return self.index >= len(self.candidates)

    def record(self, seconds: float) -> None:
        if self.runs > 0:
            self.best[self.method] = min(self.best.get(self.method, math.inf), seconds)
        elif self.best and seconds > ABANDON_FACTOR * min(self.best.values()):
            self.index, self.runs = self.index + 1, 0  # hopeless: not timed further (see ABANDON_FACTOR)
            return
        self.runs += 1
        if self.runs > MEASURE_REPEATS:
            self.index, self.runs = self.index + 1, 0

    def winner(self) -> str:
        return min(self.best, key=self.best.get)
