"""Typed configuration: every default lives here, once, with the reason for it.

YAML files (``cfg/hyp.*.yaml``, ablation specs) hold *overrides only*. A config is built as

    defaults (these dataclasses) <- YAML file(s) <- dotted command-line overrides (``loss.objectness.gamma=1.5``)

Unknown keys and values of the wrong type are errors that name the full dotted key and the source (file or
command line), so a typo never silently trains the wrong model.

A field added later defaults to what the code did before it existed (train.save_period 0, train.freeze 0, ...):
an older run's config.yaml that lacks it is read, resumed and compared (ablate.py) as having that default.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import math
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from yolov3.files import atomic_write_text


class ConfigError(ValueError):
    """A configuration problem; the message names the key and where it came from."""


# --------------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------------
# The loss choices, beside the fields that select them (yolov3.loss implements each; validate_loss_config checks them)
LOSS_NAMES = ("bce", "focal", "varifocal")  # per-element losses: the keys of yolov3.loss.OBJECTNESS_LOSSES (objectness and class)
BOX_LOSSES = ("mse", "darknet", "giou", "ciou")
OBJ_TARGETS = ("one", "iou")
NORMALIZERS = ("batch", "positives")


@dataclass
class ObjectnessLossConfig:
    """The loss used by *both* confidence terms (object cells and no-object cells)."""

    name: str = "bce"  # plain BCE is what Darknet and the YOLOv3 paper use; "focal" is the variant under study; "varifocal" (VFNet)
    gamma: float = 2.0  # focal focusing parameter; 2 was best in Lin et al. 2017 (ignored by bce)
    alpha: Optional[float] = 0.25  # focal alpha on positives, 1-alpha on negatives; .25 paired with gamma=2 in RetinaNet; null = off


@dataclass
class ClassLossConfig:
    """The class term has its own loss choice, independent of objectness (one axis per field)."""

    name: str = "bce"  # YOLOv3 uses independent logistic classifiers with BCE
    gamma: float = 2.0  # focal focusing parameter when name=focal
    alpha: Optional[float] = None  # no alpha balancing by default: classes are not dominated by negatives the same way
    label_smoothing: float = 0.0  # off by default, as in the paper; eps gives targets 1-eps/2 and eps/2


@dataclass
class LossConfig:
    """YOLOv3 loss in four terms: box + object confidence + no-object confidence + class."""

    objectness: ObjectnessLossConfig = field(default_factory=ObjectnessLossConfig)  # both confidence terms share one loss choice
    cls: ClassLossConfig = field(default_factory=ClassLossConfig)  # the class term is chosen independently
    box: str = "darknet"  # darknet's exact deltas scaled by (2 - w*h) (docs/studies/box_loss.md); alternatives: mse, giou, ciou
    obj_target: str = "one"  # "one" as in darknet; "iou" uses the predicted box's IoU with its truth (soft target)
    normalizer: str = "batch"  # "batch": sum / batch size (darknet-like); "positives": sum / #positives (RetinaNet)
    lambda_box: float = 1.0  # term weights: 1 everywhere reproduces the unweighted darknet sum
    lambda_obj: float = 1.0  # object-cell confidence term
    lambda_noobj: float = 1.0  # no-object confidence term: the one that can swamp the others
    lambda_cls: float = 1.0  # class term
    ignore_thresh: Optional[float] = None  # null = take each [yolo] layer's ignore_thresh from the model cfg (.7 in yolov3.cfg)
    extra_positive_iou: Optional[float] = None  # anchors whose shape IoU with a truth exceeds this are positives too; null = best anchor only (darknet)
    obj_prior: Optional[float] = None  # pi: objectness bias starts at -log((1-pi)/pi); RetinaNet uses .01; null = keep default init
    record_elementwise: bool = False  # keep per-element objectness losses for distribution plots; off in the hot path


@dataclass
class AugmentConfig:
    """Training-time augmentation. Validation never augments (letterbox only)."""

    hsv_h: float = 0.015  # hue jitter as a fraction of the full circle; small, shape colour is a cue
    hsv_s: float = 0.7  # saturation gain range (+-); darknet uses saturation=1.5
    hsv_v: float = 0.4  # value gain range (+-); darknet uses exposure=1.5
    degrees: float = 0.0  # rotation range; off: rotated axis-aligned boxes get loose
    translate: float = 0.1  # translation as a fraction of the image size
    scale: float = 0.5  # scale gain range (+-); stands in for darknet's jitter
    shear: float = 0.0  # shear range in degrees; off by default for the same reason as rotation
    fliplr: float = 0.5  # horizontal flip probability; the world is mostly left-right symmetric
    mosaic: float = 1.0  # probability of a 4-image mosaic; more objects and context per image


@dataclass
class TrainConfig:
    """Optimiser, schedule and loop settings."""

    epochs: int = 10  # the small model reaches mAP@.5 ~0.8 on the built-in data in 10 epochs (~11 min on 2 CPU cores)
    batch_size: int = 16  # images per step; fits a 2-core CPU at the small model's size
    nominal_batch: int = 16  # images per optimiser step (accumulated); darknet uses 64, 16 gives 4x the updates in short CPU runs
    img_size: int = 256  # training and validation size; a multiple of 32
    optimizer: str = "sgd"  # "sgd" (darknet) or "adamw"
    lr0: float = 0.01  # initial learning rate
    lrf: float = 0.01  # final learning rate as a fraction of lr0
    momentum: float = 0.937  # SGD momentum / Adam beta1
    nesterov: bool = True  # Nesterov momentum converges a little faster with warmup
    weight_decay: float = 0.0005  # darknet's decay; never applied to BN weights or biases
    warmup_epochs: float = 1.0  # darknet burn_in: ramp lr from 0 to avoid early divergence; 1 of 10 epochs suffices here
    warmup_momentum: float = 0.8  # momentum during warmup
    warmup_bias_lr: float = 0.1  # bias lr starts high during warmup and falls to lr0
    schedule: str = "cosine"  # "cosine" or "step"
    step_milestones: list = field(default_factory=lambda: [0.8, 0.9])  # fractions of training for the step schedule
    step_gamma: float = 0.1  # lr factor at each step milestone (darknet scales=.1,.1)
    ema: bool = True  # validate and save an exponential moving average of the weights
    ema_decay: float = 0.9999  # EMA decay, ramped up over the first updates
    ema_tau: float = 2000.0  # ramp constant of the EMA decay, in updates
    multi_scale: bool = False  # vary the size by +-50% per batch (darknet random=1)
    seed: int = 0  # everything random is seeded from this
    workers: int = 2  # dataloader worker processes
    cache: str = "auto"  # decoded images in RAM: "ram", "off", or "auto" (when they fit in 10% of free memory)
    amp: str = "auto"  # bf16 autocast where the CPU/GPU has native bf16 (2-2.7x faster steps), else fp32; off|bf16|fp16
    channels_last: bool = True  # NHWC activations: oneDNN's convolutions run ~1.4x faster than in NCHW on CPU
    sync_bn: bool = False  # synchronise BatchNorm across DDP processes
    grad_clip: Optional[float] = 10.0  # max gradient norm; here it rescales every step (normalised SGD); null = off
    grad_clip_epochs: Optional[int] = None  # clip only in the first N epochs (e.g. the warmup); null = every epoch
    diagnostics_every: int = 20  # diagnostics.csv: every step of epoch 1, then every N steps; 0 = epoch 1 only
    patience: int = 0  # stop after this many epochs without fitness gain; 0 = never
    save_period: int = 0  # also keep weights/epoch<N>.pt (lean, as best.pt) every N epochs; 0 = off: last.pt and best.pt suffice
    freeze: Union[int, list] = 0  # layers whose weights stay fixed: N = the first N (yolov5's --freeze 10), or a list of indices; 0 = none
    single_cls: bool = False  # train every box as one class 'object' (a detector of things, not kinds); off: the data's classes


@dataclass
class ValConfig:
    """Validation / post-processing settings used during training and by val.py."""

    conf_thres: float = 0.001  # low threshold for mAP: the PR curve needs the low-score tail
    iou_thres: float = 0.6  # NMS IoU threshold
    max_det: int = 300  # detections kept per image
    interval: int = 1  # validate every N epochs (and always after the last)
    test: bool = False  # also score the final model once on the data's test split (summary.json "test")


@dataclass
class Config:
    """Everything a training run needs; saved resolved as ``config.yaml`` in every run folder."""

    cfg: str = "cfg/yolov3-small.cfg"  # Darknet model cfg
    data: str = "data/shapes.yaml"  # dataset YAML
    weights: str = ""  # initial weights: .pt, Darknet .weights, or a backbone file; empty = random init
    cutoff: Optional[int] = None  # load only the first N layers of a Darknet weights file (backbones)
    loss: LossConfig = field(default_factory=LossConfig)  # the four-term YOLOv3 loss
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation only
    train: TrainConfig = field(default_factory=TrainConfig)  # optimiser, schedule, loop
    val: ValConfig = field(default_factory=ValConfig)  # validation during and after training


# --------------------------------------------------------------------------------------------------------------------
# Conversion between dataclasses and plain dicts, with type checking
# --------------------------------------------------------------------------------------------------------------------
def to_dict(obj: Any) -> dict:
    """A plain-dict copy of a config dataclass (for YAML / checkpoints)."""
    return dataclasses.asdict(obj)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; int is accepted for float. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: '{key}' expects {_type_name(tp)}, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; accept what parses as a number
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{source}: '{key}' expects a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' expects a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{source}: '{key}' expects a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{source}: '{key}' expects an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' expects true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' expects a string, got {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' expects a list, got {value!r}")
        return list(value)
    raise ConfigError(f"{source}: '{key}' has an unsupported type {tp!r}")  # pragma: no cover - programming error


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


# keys that were booleans before they took modes: (mode for true, mode for false), so older config.yaml files load
_FORMER_SWITCHES = {"train.amp": ("auto", "off"), "train.cache": ("ram", "off")}


def merge_dict(obj: Any, updates: dict, source: str, prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``updates`` (a nested dict) applied, type-checked."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' expects a mapping, got {updates!r}")
    hints = _hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            choices = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{dotted}' (valid keys here: {choices})")
        current = getattr(obj, key)
        if dotted in _FORMER_SWITCHES and isinstance(value, bool):  # a config written when this was on/off
            value = _FORMER_SWITCHES[dotted][0 if value else 1]
        if dataclasses.is_dataclass(current):
            changes[key] = merge_dict(current, value, source, dotted + ".")
        else:
            changes[key] = _coerce(value, hints[key], dotted, source)
    return dataclasses.replace(obj, **changes)


def from_dict(data: dict, source: str = "<dict>", base: Optional[Config] = None) -> Config:
    """Build a Config from a nested dict of overrides on top of ``base`` (defaults if None)."""
    return merge_dict(base if base is not None else Config(), data or {}, source)


def parse_override(text: str) -> tuple:
    """Split ``a.b.c=value`` into (['a','b','c'], parsed value); the value is read as YAML (1.5, true, null, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"command line: override '{text}' must look like key=value (e.g. loss.objectness.gamma=2)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"command line: override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"command line: cannot parse the value of '{key}': {exc}") from None
    return key.split("."), value


def nest(path: list, value: Any) -> dict:
    """['a','b'], 3 -> {'a': {'b': 3}}."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def apply_overrides(cfg: Config, overrides: list, source: str = "command line") -> Config:
    """Apply dotted ``key=value`` strings in order."""
    for text in overrides or []:
        path, value = parse_override(text)
        cfg = merge_dict(cfg, nest(path, value), source)
    return cfg


def read_yaml(path: Union[str, Path], error: type = ConfigError, what: str = "file") -> Any:
    """Load a YAML file; a missing file, text that is not UTF-8 or a syntax error raises ``error`` naming the file
    (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (undecodable byte at offset {exc.start}); save it as "
                    "UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None


def load_config(hyp: Union[str, Path, None] = None, overrides: Optional[list] = None,
                base: Optional[Config] = None) -> Config:
    """Defaults <- ``hyp`` YAML (overrides only) <- dotted overrides."""
    cfg = base if base is not None else Config()
    if hyp:
        data = read_yaml(hyp) or {}
        cfg = from_dict(data, source=str(hyp), base=cfg)
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def get_dotted(cfg: Any, key: str) -> Any:
    """Read ``a.b.c`` from a config dataclass; unknown keys raise ConfigError naming the key."""
    obj = cfg
    for part in key.split("."):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"unknown key '{key}'")
        obj = getattr(obj, part)
    return obj


def field_reasons() -> dict:
    """``{dotted key: reason}``: the comment beside each field in this file, read from the source (tokenize for the
    comments, ast for the fields), so ``train.py --print-config`` shows each default with why it is what it is and
    the text lives once. Empty when the source is not there (a byte-code-only install)."""
    try:
        source = Path(__file__).read_text(encoding="utf-8")
    except OSError:
        return {}
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    by_class = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            by_class[node.name] = {
                statement.target.id: next((comments[line] for line in range(statement.lineno, statement.end_lineno + 1)
                                           if line in comments), "")
                for statement in node.body
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)}
    reasons = {}

    def walk(obj: Any, prefix: str) -> None:
        for item in dataclasses.fields(obj):
            value = getattr(obj, item.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{item.name}.")
            else:
                reasons[prefix + item.name] = by_class.get(type(obj).__name__, {}).get(item.name, "")

    walk(Config(), "")
    return reasons


def flat_items(cfg: Any, prefix: str = "") -> list:
    """``[(dotted key, value)]`` of every leaf field of a config dataclass, in declaration order."""
    items = []
    for item in dataclasses.fields(cfg):
        value = getattr(cfg, item.name)
        items += flat_items(value, f"{prefix}{item.name}.") if dataclasses.is_dataclass(value) else [(prefix + item.name,
                                                                                                       value)]
    return items


def yaml_text(value: Any) -> str:
    """A value as a ``key=value`` override spells it (read back by yaml.safe_load): None -> null, [1, 2] -> [1, 2]."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def overrides_from_defaults(cfg: Config) -> list:
    """``key=value`` for every field where ``cfg`` differs from the defaults: with them, a bare ``train.py``
    resolves to ``cfg`` again (the "resolved command" at the top of train.log)."""
    defaults = dict(flat_items(Config()))
    return [f"{key}={yaml_text(value)}" for key, value in flat_items(cfg) if value != defaults[key]]


OPTIMIZERS = ("sgd", "adamw")  # train.optimizer's choices (yolov3.optim builds them, train.py --optimizer names them)

# The largest image size accepted (train.img_size, and --img-size of val.py and detect.py). YOLO models run at up to
# ~1280-1920 px; at 8192 px yolov3.cfg's first feature map alone (32 channels, float32) takes 8.6 GB per image, so a
# larger value is a typo (an extra zero) that would end in a MemoryError or the OOM killer long after the start.
MAX_IMG_SIZE = 8192
MAX_SEED = 2**32 - 1  # the largest train.seed accepted (see _RANGES)

# (dotted key, check, what is expected): the value ranges that types alone cannot express
_RANGES = [
    ("cutoff", lambda v: v is None or v >= 1, "null or a number of layers, at least 1"),
    ("train.epochs", lambda v: v >= 1, "at least 1"),
    ("train.batch_size", lambda v: v >= 1, "at least 1"),
    ("train.nominal_batch", lambda v: v >= 1, "at least 1"),
    ("train.img_size", lambda v: 32 <= v <= MAX_IMG_SIZE and v % 32 == 0, f"a multiple of 32 in [32, {MAX_IMG_SIZE}]"),
    # numpy seeds (np.random.seed, the loader's SeedSequence) lie in [0, 2**32); a negative one fails deep inside
    ("train.seed", lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
    ("train.optimizer", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    ("train.schedule", lambda v: v in ("cosine", "step"), "one of cosine, step"),
    ("train.lr0", lambda v: v > 0, "greater than 0"),
    ("train.lrf", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.weight_decay", lambda v: v >= 0, "at least 0"),
    ("train.warmup_epochs", lambda v: v >= 0, "at least 0"),
    ("train.warmup_momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.warmup_bias_lr", lambda v: v >= 0, "at least 0"),
    ("train.step_milestones", lambda v: all(isinstance(m, (int, float)) and not isinstance(m, bool)
                                            and 0 < m <= 1 for m in v), "a list of fractions in (0, 1]"),
    ("train.step_gamma", lambda v: v > 0, "greater than 0"),
    ("train.ema_decay", lambda v: 0 < v < 1, "in (0, 1)"),
    ("train.ema_tau", lambda v: v > 0, "greater than 0"),
    ("train.workers", lambda v: v >= 0, "at least 0"),
    ("train.amp", lambda v: v in ("auto", "off", "bf16", "fp16"), "one of auto, off, bf16, fp16"),
    ("train.cache", lambda v: v in ("auto", "ram", "off"), "one of auto, ram, off"),
    ("train.grad_clip", lambda v: v is None or v > 0, "null (off) or greater than 0"),
    ("train.diagnostics_every", lambda v: v >= 0, "at least 0"),
    ("train.grad_clip_epochs", lambda v: v is None or v >= 1, "null (every epoch) or at least 1"),
    ("train.patience", lambda v: v >= 0, "at least 0"),
    ("train.save_period", lambda v: v >= 0, "at least 0 (0 = off)"),
    ("train.freeze", lambda v: v >= 0 if isinstance(v, int) else all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v),
     "a number of leading layers (0 = none) or a list of layer indices, each at least 0"),
    ("val.conf_thres", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("val.iou_thres", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("val.max_det", lambda v: v >= 1, "at least 1"),
    ("val.interval", lambda v: v >= 1, "at least 1"),
    ("augment.hsv_h", lambda v: 0 <= v <= 0.5, "in [0, 0.5]"),
    ("augment.hsv_s", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("augment.hsv_v", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("augment.degrees", lambda v: 0 <= v <= 180, "in [0, 180]"),
    ("augment.translate", lambda v: 0 <= v <= 0.5, "in [0, 0.5]"),
    ("augment.scale", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("augment.shear", lambda v: 0 <= v < 90, "in [0, 90)"),
    ("augment.fliplr", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.mosaic", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
]


def require_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"loss config: '{key}' is {value!r}; choose from: {', '.join(choices)}")


def require_range(key: str, value: Optional[float], low: float, high: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not low <= value <= high:
        raise ConfigError(f"loss config: '{key}' is {value!r}; expected a number in [{low}, {high}]")


def _check_loss_fn(key: str, name: str, gamma: float, alpha: Optional[float]) -> None:
    require_choice(f"{key}.name", name, sorted(LOSS_NAMES))
    if gamma < 0:
        raise ConfigError(f"loss config: '{key}.gamma' is {gamma}; expected >= 0")
    require_range(f"{key}.alpha", alpha, 0.0, 1.0, allow_none=True)


def validate_loss_config(cfg: LossConfig) -> None:
    """Raise :class:`ConfigError` naming the key and the choices for any invalid field of ``cfg``."""
    _check_loss_fn("loss.objectness", cfg.objectness.name, cfg.objectness.gamma, cfg.objectness.alpha)
    _check_loss_fn("loss.cls", cfg.cls.name, cfg.cls.gamma, cfg.cls.alpha)
    require_choice("loss.box", cfg.box, BOX_LOSSES)
    require_choice("loss.obj_target", cfg.obj_target, OBJ_TARGETS)
    require_choice("loss.normalizer", cfg.normalizer, NORMALIZERS)
    for name in ("lambda_box", "lambda_obj", "lambda_noobj", "lambda_cls"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"loss config: 'loss.{name}' is {getattr(cfg, name)}; expected >= 0")
    require_range("loss.cls.label_smoothing", cfg.cls.label_smoothing, 0.0, 1.0)
    require_range("loss.ignore_thresh", cfg.ignore_thresh, 0.0, 1.0, allow_none=True)
    require_range("loss.extra_positive_iou", cfg.extra_positive_iou, 0.0, 1.0, allow_none=True)
    if cfg.obj_prior is not None and not 0.0 < cfg.obj_prior < 1.0:
        raise ConfigError(f"loss config: 'loss.obj_prior' is {cfg.obj_prior}; expected 0 < pi < 1 or null")


def validate(cfg: Config, source: str = "config") -> Config:
    """Check value ranges and choices of every section (types are already checked); returns ``cfg``."""
    for key, check, expected in _RANGES:
        value = get_dotted(cfg, key)
        if not check(value):
            raise ConfigError(f"{source}: '{key}' must be {expected}, got {value!r}")
    validate_loss_config(cfg.loss)
    return cfg
