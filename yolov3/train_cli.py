"""train.py's command line: its flags and the config keys they set, the resolved configuration, --print-config.

Configuration is resolved as defaults (yolov3/config.py) <- --hyp YAML (ours, or a yolov5 hyp.*.yaml, translated by
yolov3.yolov5_hyp) <- the flags <- dotted ``key=value`` overrides. The flags are yolov5's where it has one
(``--imgsz``, ``--optimizer``, ``--patience``, ``--freeze``, ...); each sets one config key, named with its default
in ``--help``. A flag of yolov5, Darknet or PyTorch-YOLOv3 that is not here is answered with the nearest one
(yolov3.cli).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

from yolov3 import config as config_lib
from yolov3.cfgparse import parse_cfg
from yolov3.cli import CommandParser
from yolov3.config import OPTIMIZERS, Config, ConfigError
from yolov3.paths import resolve_path, tried
from yolov3.yolov5_hyp import load_hyp

RESUME_FLAGS = ("workers", "device", "noval", "nosave", "project")  # what may change when a run continues
# flag (argparse dest) -> the config key it sets; a flag not given (None) leaves the key to --hyp and the defaults
FLAG_KEYS = {"cfg": "cfg", "data": "data", "weights": "weights", "cutoff": "cutoff", "epochs": "train.epochs",
             "batch_size": "train.batch_size", "img_size": "train.img_size", "workers": "train.workers",
             "seed": "train.seed", "multi_scale": "train.multi_scale", "cache": "train.cache",
             "optimizer": "train.optimizer", "patience": "train.patience", "sync_bn": "train.sync_bn",
             "label_smoothing": "loss.cls.label_smoothing", "cos_lr": "train.schedule",
             "save_period": "train.save_period", "freeze": "train.freeze", "single_cls": "train.single_cls"}
CACHE_MODES = ("ram", "auto", "off")


def _default(key: str, text: str = "") -> str:
    """Help text ending in the config key the flag sets and its default there."""
    value = config_lib.get_dotted(Config(), key)
    return f"{text} (default: {config_lib.yaml_text(value) if value != '' else 'none'}; config key {key})".strip()


def _optimizer(text: str) -> str:
    name = text.lower()
    if name == "adam":
        raise argparse.ArgumentTypeError("Adam is not offered here; the nearest is AdamW (Adam with decoupled "
                                         "weight decay): --optimizer AdamW")
    if name not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"expected SGD or AdamW, got {text!r}")
    return name


def _cache(text: str) -> str:
    if text == "disk":
        raise argparse.ArgumentTypeError("'disk' is not offered (no cache files beside the images); the nearest is "
                                         "--cache ram: the decoded images in memory")
    if text not in CACHE_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(CACHE_MODES)}, got {text!r}")
    return text


def parse_args(argv=None, description: Optional[str] = None) -> argparse.Namespace:
    parser = CommandParser(description=description)
    add = parser.add_argument
    add("overrides", nargs="*", metavar="key=value",
        help="dotted config overrides, e.g. loss.objectness.name=focal train.lr0=0.005 (train.py --print-config "
             "lists every key)")
    add("--cfg", help=_default("cfg", "Darknet model cfg; another than the default also sets --img-size to its "
                                      "[net] width unless that is given"))
    add("--data", help=_default("data", "dataset YAML (yolov5/Roboflow style) or Darknet .data file; the built-in "
                                        "one is generated on first use"))
    add("--hyp", help="YAML of config overrides, or a yolov5 hyp.*.yaml (translated; keys without an equivalent "
                      "are named) (default: none)")
    add("--weights", help=_default("weights", "initial weights: a .pt from train.py, a Darknet .weights, or a "
                                              "backbone such as darknet53.conv.74 (with --cutoff)"))
    add("--cutoff", type=int, help=_default("cutoff", "load only the first N layers of a Darknet weights file"))
    add("--allow-partial-weights", action="store_true",
        help="accept a --weights .pt that fits fewer than half of the model's tensors")
    add("--epochs", type=int, help=_default("train.epochs"))
    add("--batch-size", "--batch", type=int, help=_default("train.batch_size", "total batch size over all processes"))
    add("--img-size", "--imgsz", "--img", type=int, dest="img_size",
        help=_default("train.img_size", "train and val image size (multiple of 32)"))
    add("--device", default="", help="'' (auto: a GPU if there is one), cpu, 0 or cuda:0; under torchrun each "
                                     "process takes the GPU of its LOCAL_RANK (or cpu)")
    add("--workers", type=int, help=_default("train.workers", "dataloader workers per process"))
    add("--project", default="runs/train", help="parent folder of run folders")
    add("--name", default="exp", help="run folder name (exp, exp2, ... unless --exist-ok)")
    add("--exist-ok", action="store_true", help="reuse an existing run folder instead of a new one")
    add("--resume", nargs="?", const="", default=None, metavar="PATH",
        help="continue a run from its weights/last.pt: a run folder or the file (default without PATH: the most "
             "recent run under --project)")
    add("--seed", type=int, help=_default("train.seed"))
    add("--multi-scale", action="store_true", default=None, help=_default("train.multi_scale", "vary image size "
                                                                                               "+-50%% per batch"))
    add("--cache", nargs="?", const="ram", type=_cache, metavar="{ram,auto,off}",
        help=_default("train.cache", "decoded images in RAM: --cache (or --cache ram), auto (when they fit in 10%% "
                                     "of free memory) or off"))
    add("--optimizer", type=_optimizer, metavar="{SGD,AdamW}", help=_default("train.optimizer"))
    add("--patience", type=int, help=_default("train.patience", "stop after this many validated epochs without "
                                                                "improvement (0 = never)"))
    add("--sync-bn", action="store_true", default=None,
        help=_default("train.sync_bn", "SyncBatchNorm across DDP processes on GPUs"))
    add("--label-smoothing", type=float, help=_default("loss.cls.label_smoothing", "class targets 1-eps/2 and eps/2"))
    add("--cos-lr", action="store_true", default=None,
        help=_default("train.schedule", "cosine learning-rate schedule (already the default; train.schedule=step is "
                                        "the other)"))
    add("--save-period", type=int, help=_default("train.save_period", "also keep weights/epoch<N>.pt every N "
                                                                      "epochs (0 = off)"))
    add("--freeze", type=int, nargs="+", metavar="N",
        help=_default("train.freeze", "one number: freeze the first N layers (--freeze 10); several: those layer "
                                      "indices (--freeze 0 1 2)"))
    add("--single-cls", action="store_true", default=None,
        help=_default("train.single_cls", "train every box as one class 'object'"))
    add("--noval", action="store_true", help="validate only after the final epoch")
    add("--nosave", action="store_true", help="save only the final checkpoint")
    add("--print-config", action="store_true",
        help="list every config key with its value (as resolved from the other flags), default and reason; exit")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for train.log
    if args.freeze is not None:  # yolov5's convention: one number is a count of leading layers
        args.freeze = args.freeze[0] if len(args.freeze) == 1 else args.freeze
    if args.cos_lr:
        args.cos_lr = "cosine"
    return args


def cfg_width(cfg_path: str) -> Optional[int]:
    """The ``[net] width`` of a model cfg, or None when the file is missing (the existence check reports it)."""
    path = resolve_path(cfg_path)
    return parse_cfg(path).input_size[1] if path.is_file() else None


def check_weights_file(weights: str) -> Path:
    """The file ``weights`` names (a run folder: its best.pt, as val.py and detect.py take it), checked to be a
    checkpoint or Darknet weights by its first bytes: a wrong file is an error now, not after the data scan."""
    import zipfile

    from yolov3.runs import find_weights
    from yolov3.weights import looks_like_darknet_weights

    try:
        path = find_weights(weights)
    except FileNotFoundError as exc:
        raise ConfigError(f"'weights': {exc}") from None
    if not path.is_file():
        raise ConfigError(f"'weights': file not found: {weights}")
    # the rule the loader follows: a .pt is read as a checkpoint (torch.save writes a zip archive; before torch 1.6,
    # a pickle, whose first byte is 0x80), any other file as Darknet weights
    if path.suffix == ".pt":
        with open(path, "rb") as fh:
            first = fh.read(1)
        if not (zipfile.is_zipfile(path) or first == b"\x80"):
            raise ConfigError(f"'weights': {path} is named .pt but is not a PyTorch checkpoint (neither a zip "
                              "archive nor a pickle)")
    elif not looks_like_darknet_weights(path):
        raise ConfigError(f"'weights': {path} is not Darknet weights (its first bytes are not a Darknet header; "
                          "only a file named .pt is read as a PyTorch checkpoint)")
    return path


def resolve_config(args: argparse.Namespace) -> tuple[Config, list]:
    """``(config, notes)``: defaults <- --hyp <- flags <- dotted overrides; every path checked here so errors come
    before any work. The notes (for the terminal and train.log) say what was translated or chosen on the way."""
    base, notes = Config(), []
    width = cfg_width(args.cfg) if args.cfg and args.cfg != base.cfg else None
    if width:  # another model's own size, as a default that --hyp, --img-size and overrides may still change
        base = config_lib.merge_dict(base, {"train": {"img_size": width}}, f"{args.cfg} [net] width")
    if args.hyp:
        base, notes = load_hyp(resolve_path(args.hyp), base)
    flags = {key: getattr(args, dest) for dest, key in FLAG_KEYS.items() if getattr(args, dest) is not None}
    cfg = base
    for key, value in flags.items():
        cfg = config_lib.merge_dict(cfg, config_lib.nest(key.split("."), value), "command line")
    cfg = config_lib.apply_overrides(cfg, args.overrides)
    for key in ("cfg", "data"):
        if not resolve_path(getattr(cfg, key)).is_file():  # as given, else the file shipped with the package
            raise ConfigError(f"'{key}': file not found: {getattr(cfg, key)} ({tried(getattr(cfg, key))})")
    if cfg.weights:
        weights = check_weights_file(cfg.weights)
        if Path(cfg.weights).is_dir():
            notes.append(f"weights: {cfg.weights} is a run folder: its {weights}")
            cfg = config_lib.merge_dict(cfg, {"weights": str(weights)}, "--weights run folder")
    if width and args.img_size is None and cfg.train.img_size == width:
        notes.append(f"img size {width}: the [net] width of {args.cfg} (give --img-size to train at another)")
    return config_lib.validate(cfg), notes


def check_resume_flags(args: argparse.Namespace) -> None:
    """--resume takes the run's saved config: any flag or override that would change it is an error."""
    changed = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
               if k not in RESUME_FLAGS + ("resume", "overrides", "name", "exist_ok", "allow_partial_weights",
                                           "print_config", "argv")
               and v is not None]
    changed += ["--name"] * (args.name != "exp") + ["--exist-ok"] * args.exist_ok
    changed += ["--allow-partial-weights"] * args.allow_partial_weights
    if args.overrides or changed:
        raise ConfigError(f"--resume continues a run with its saved config; {', '.join(changed + args.overrides)}"
                          f" cannot change it (allowed with --resume: "
                          f"{', '.join('--' + f for f in RESUME_FLAGS)})")


def command_header(args: argparse.Namespace, cfg: Config, resumed: bool) -> list:
    """train.log's first lines for this process: the command as typed and, for a new run, the resolved one (every
    key that differs from the defaults: ``python train.py`` with them trains the same config, --hyp included)."""
    command = ["yolov3-train"] if Path(sys.argv[0]).name == "yolov3-train" else ["python", "train.py"]
    lines = [f"command: {shlex.join([*command, *getattr(args, 'argv', [])])}"]
    if not resumed:
        lines.append("resolved: " + shlex.join([*command, *config_lib.overrides_from_defaults(cfg)]))
    return lines


def format_config(cfg: Config) -> str:
    """--print-config: one line per dotted key, ``key = value  # reason``, the default named where it differs."""
    reasons, defaults = config_lib.field_reasons(), dict(config_lib.flat_items(Config()))
    rows = []
    for key, value in config_lib.flat_items(cfg):
        shown = config_lib.yaml_text(value) if value != "" else "''"
        if value != defaults[key]:
            shown += f" (default {config_lib.yaml_text(defaults[key])})"
        rows.append((key, shown, reasons.get(key, "")))
    width = max(len(key) + len(shown) for key, shown, _ in rows) + 3
    return "\n".join(f"{f'{key} = {shown}':<{width}}# {reason}" for key, shown, reason in rows)
