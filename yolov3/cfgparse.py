"""Darknet ``.cfg`` reader.

A Darknet cfg is a list of ``[block]`` headers, each followed by ``key=value`` lines. The first block is ``[net]``
(input size and training settings); every later block is one layer, numbered from 0 in file order, and ``[route]``
/ ``[shortcut]`` refer to earlier layers by those numbers (negative = relative to the current layer).

This reader is strict on purpose: a typo in a cfg would otherwise build a different network without a word. Every
problem raises :class:`CfgError` whose message names the file, the line and the key, and says what was expected.
Only full-line comments (``#`` or ``;``) are allowed, like Darknet and OpenCV, so a cfg that parses here also loads
in both of them.

Public API:
    parse_cfg(cfg) -> DarknetCfg        path or cfg text (text is recognised by containing "[net]")
    with_num_classes(cfg, n) -> DarknetCfg   rewrites [yolo] classes and the filters of the conv feeding each head
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from yolov3.paths import resolve_path, tried

__all__ = ["CfgError", "CfgBlock", "DarknetCfg", "parse_cfg", "with_num_classes", "ACTIVATIONS"]

TEXT_SOURCE_NAME = "<cfg text>"  # how errors name a cfg given as text rather than as a file
ACTIVATIONS = ("leaky", "linear", "relu", "logistic")  # the activations the model implements


class CfgError(ValueError):
    """A problem in a Darknet cfg; the message reads ``file:line: [block] key: what is wrong``."""


# --------------------------------------------------------------------------------------------------------------------
# Value parsers: each takes the raw string and returns the value or raises ValueError with a short reason
# --------------------------------------------------------------------------------------------------------------------
def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _parse_flag(text: str) -> int:
    value = _parse_int(text)
    if value not in (0, 1):
        raise ValueError(f"expected 0 or 1, got {text!r}")
    return value


def _split_list(text: str) -> List[str]:
    items = [item.strip() for item in text.split(",")]
    if items and items[-1] == "":  # Darknet tolerates a trailing comma ("anchors = 10,13, ... ,326,")
        items = items[:-1]
    if not items or any(item == "" for item in items):
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return items


def _parse_int_list(text: str) -> List[int]:
    try:
        return [int(item) for item in _split_list(text)]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of integers, got {text!r}") from None


def _parse_float_list(text: str) -> List[float]:
    try:
        return [float(item) for item in _split_list(text)]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of numbers, got {text!r}") from None


def _parse_str(text: str) -> str:
    return text


_REQUIRED = object()  # marks a key that has no default

# block type -> key -> (parser, default). Defaults follow Darknet's parser.c where the cfgs rely on them.
_NET_KEYS: Dict[str, Tuple[Callable[[str], Any], Any]] = {
    "width": (_parse_int, _REQUIRED),
    "height": (_parse_int, _REQUIRED),
    "channels": (_parse_int, 3),
    "batch": (_parse_int, 1),
    "subdivisions": (_parse_int, 1),
    "momentum": (_parse_float, 0.9),
    "decay": (_parse_float, 0.0001),
    "angle": (_parse_float, 0.0),
    "saturation": (_parse_float, 1.0),
    "exposure": (_parse_float, 1.0),
    "hue": (_parse_float, 0.0),
    "aspect": (_parse_float, 1.0),
    "jitter": (_parse_float, 0.2),
    "flip": (_parse_flag, 1),
    "min_crop": (_parse_int, None),
    "max_crop": (_parse_int, None),
    "learning_rate": (_parse_float, 0.001),
    "burn_in": (_parse_int, 0),
    "power": (_parse_float, 4.0),
    "max_batches": (_parse_int, 0),
    "policy": (_parse_str, "constant"),
    "step": (_parse_int, 1),
    "gamma": (_parse_float, 1.0),
    "steps": (_parse_int_list, None),
    "scales": (_parse_float_list, None),
    "adam": (_parse_flag, 0),
    "B1": (_parse_float, 0.9),
    "B2": (_parse_float, 0.999),
    "eps": (_parse_float, 1e-7),
}

_BLOCK_KEYS: Dict[str, Dict[str, Tuple[Callable[[str], Any], Any]]] = {
    "net": _NET_KEYS,
    "convolutional": {
        "filters": (_parse_int, _REQUIRED),
        "size": (_parse_int, _REQUIRED),
        "stride": (_parse_int, 1),
        "pad": (_parse_flag, 0),  # pad=1 means padding = size // 2 (Darknet); it wins over `padding`
        "padding": (_parse_int, 0),
        "batch_normalize": (_parse_flag, 0),
        "activation": (_parse_str, _REQUIRED),  # Darknet would default to logistic, OpenCV to linear: be explicit
    },
    "shortcut": {
        "from": (_parse_int, _REQUIRED),
        "activation": (_parse_str, "linear"),
    },
    "route": {
        "layers": (_parse_int_list, _REQUIRED),
    },
    "upsample": {
        "stride": (_parse_int, 2),
    },
    "maxpool": {
        "stride": (_parse_int, 1),
        "size": (_parse_int, None),  # Darknet: defaults to the stride
        "padding": (_parse_int, None),  # Darknet: defaults to size - 1 (keeps ceil(w / stride))
    },
    "yolo": {
        "mask": (_parse_int_list, None),  # default: every anchor
        "anchors": (_parse_float_list, _REQUIRED),
        "classes": (_parse_int, 20),
        "num": (_parse_int, None),  # total number of anchors listed; must match `anchors`
        "jitter": (_parse_float, 0.2),
        "ignore_thresh": (_parse_float, 0.5),
        "truth_thresh": (_parse_float, 1.0),
        "random": (_parse_flag, 0),
    },
}
_BLOCK_ALIASES = {"network": "net", "conv": "convolutional", "max": "maxpool"}  # Darknet's own aliases


@dataclass
class CfgBlock:
    """One ``[type]`` block: parsed values with defaults filled in, and where each key was written."""

    type: str
    line: int  # line number (1-based) of the ``[type]`` header
    options: Dict[str, Any] = field(default_factory=dict)
    key_lines: Dict[str, int] = field(default_factory=dict)  # key -> line number; absent for defaulted keys
    index: int = -1  # layer index (0 = first block after [net]); -1 for [net]

    def line_of(self, key: str) -> int:
        """The line where ``key`` was written, or the block header's line when it was left at its default."""
        return self.key_lines.get(key, self.line)


@dataclass
class DarknetCfg:
    """A parsed cfg: ``net`` (the [net] block), ``layers`` (every later block), the ``source`` name and ``text``."""

    source: str
    text: str
    net: CfgBlock
    layers: List[CfgBlock]

    @property
    def input_size(self) -> Tuple[int, int]:
        """(height, width) from [net]."""
        return self.net.options["height"], self.net.options["width"]

    def error(self, block: CfgBlock, key: Optional[str], message: str) -> CfgError:
        """A CfgError naming this cfg, the line of ``key`` in ``block`` (or its header) and the key."""
        return _error(self.source, block.line_of(key) if key else block.line, block.type, key, message)


def _error(source: str, line: int, block_type: Optional[str], key: Optional[str], message: str) -> CfgError:
    where = f"{source}:{line}:"
    if block_type is not None:
        where += f" [{block_type}]"
    if key is not None:
        where += f" {key}:"
    return CfgError(f"{where} {message}")


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------
def _read_source(cfg: Union[str, Path]) -> Tuple[str, str]:
    """(source name, text) for a path or for cfg text."""
    if isinstance(cfg, str) and "[net]" in cfg:
        return TEXT_SOURCE_NAME, cfg
    path = resolve_path(cfg)  # as given, else the cfg of that name shipped with the package
    if not path.is_file():
        raise FileNotFoundError(f"Darknet cfg not found: {cfg} ({tried(cfg)}; pass a .cfg path or cfg text "
                                "containing '[net]')")
    return str(path), path.read_text(encoding="utf-8")


def _tokenise(source: str, text: str) -> List[Tuple[str, int, List[Tuple[str, str, int]]]]:
    """Split text into blocks: [(type, header line, [(key, raw value, line), ...]), ...]."""
    blocks: List[Tuple[str, int, List[Tuple[str, str, int]]]] = []
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise _error(source, line_number, None, None, f"malformed block header {line!r}; expected e.g. [convolutional]")
            block_type = line[1:-1].strip().lower()
            block_type = _BLOCK_ALIASES.get(block_type, block_type)
            if block_type not in _BLOCK_KEYS:
                raise _error(source, line_number, block_type, None,
                             f"unknown block type [{block_type}]; supported: {', '.join('[' + b + ']' for b in _BLOCK_KEYS)}")
            blocks.append((block_type, line_number, []))
            continue
        if "=" not in line:
            raise _error(source, line_number, blocks[-1][0] if blocks else None, None,
                         f"expected 'key=value', got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if not blocks:
            raise _error(source, line_number, None, key, "key outside any block; a cfg starts with [net]")
        if not value:
            raise _error(source, line_number, blocks[-1][0], key, "empty value")
        blocks[-1][2].append((key, value, line_number))
    return blocks


def _parse_block(source: str, block_type: str, header_line: int, items: List[Tuple[str, str, int]]) -> CfgBlock:
    """Parse each key with its schema and fill defaults; unknown, duplicate, malformed or missing keys are errors."""
    schema = _BLOCK_KEYS[block_type]
    block = CfgBlock(type=block_type, line=header_line)
    for key, value, line_number in items:
        if key not in schema:
            raise _error(source, line_number, block_type, key,
                         f"unknown key for [{block_type}]; allowed: {', '.join(schema)}")
        if key in block.key_lines:
            raise _error(source, line_number, block_type, key, f"duplicate key (first set at line {block.key_lines[key]})")
        parser, _ = schema[key]
        try:
            block.options[key] = parser(value)
        except ValueError as exc:
            raise _error(source, line_number, block_type, key, str(exc)) from None
        block.key_lines[key] = line_number
    for key, (_, default) in schema.items():
        if key in block.options:
            continue
        if default is _REQUIRED:
            raise _error(source, header_line, block_type, key, f"required key missing from [{block_type}]")
        block.options[key] = default
    return block


def _check_positive(cfg: DarknetCfg, block: CfgBlock, keys: Tuple[str, ...], minimum: int = 1) -> None:
    for key in keys:
        if block.options[key] < minimum:
            raise cfg.error(block, key, f"must be >= {minimum}, got {block.options[key]}")


def _resolve_index(cfg: DarknetCfg, block: CfgBlock, key: str, index: int) -> int:
    """Absolute layer index for a route/shortcut reference (negative = relative to this layer)."""
    absolute = block.index + index if index < 0 else index
    if not 0 <= absolute < block.index:
        raise cfg.error(block, key, f"refers to layer {index} (absolute {absolute}), but only layers 0..{block.index - 1} "
                                    f"come before layer {block.index}")
    return absolute


def _validate(cfg: DarknetCfg) -> None:
    """Checks that need more than one key: ranges, references between layers, head sizes."""
    net = cfg.net
    _check_positive(cfg, net, ("width", "height", "channels", "batch", "subdivisions"))
    for block in cfg.layers:
        opts = block.options
        if block.type == "convolutional":
            _check_positive(cfg, block, ("filters", "size", "stride"))
            _check_positive(cfg, block, ("padding",), minimum=0)
            if opts["activation"] not in ACTIVATIONS:
                raise cfg.error(block, "activation", f"unsupported activation {opts['activation']!r}; "
                                                     f"supported: {', '.join(ACTIVATIONS)}")
        elif block.type == "shortcut":
            opts["from"] = _resolve_index(cfg, block, "from", opts["from"])
            if opts["activation"] not in ACTIVATIONS:
                raise cfg.error(block, "activation", f"unsupported activation {opts['activation']!r}; "
                                                     f"supported: {', '.join(ACTIVATIONS)}")
        elif block.type == "route":
            opts["layers"] = [_resolve_index(cfg, block, "layers", index) for index in opts["layers"]]
        elif block.type == "upsample":
            _check_positive(cfg, block, ("stride",))
        elif block.type == "maxpool":
            _check_positive(cfg, block, ("stride",))
            if opts["size"] is None:
                opts["size"] = opts["stride"]
            _check_positive(cfg, block, ("size",))
            if opts["padding"] is None:
                opts["padding"] = opts["size"] - 1
            _check_positive(cfg, block, ("padding",), minimum=0)
        elif block.type == "yolo":
            _validate_yolo(cfg, block)


def _validate_yolo(cfg: DarknetCfg, block: CfgBlock) -> None:
    opts = block.options
    anchors = opts["anchors"]
    if len(anchors) % 2:
        raise cfg.error(block, "anchors", f"expected width,height pairs, got an odd count ({len(anchors)} numbers)")
    if any(value <= 0 for value in anchors):
        raise cfg.error(block, "anchors", "anchor widths and heights must be > 0")
    total = len(anchors) // 2
    if opts["num"] is None:
        opts["num"] = total
    elif opts["num"] != total:
        raise cfg.error(block, "num", f"num={opts['num']} but anchors lists {total} pairs")
    if opts["mask"] is None:
        opts["mask"] = list(range(total))
    for anchor_index in opts["mask"]:
        if not 0 <= anchor_index < total:
            raise cfg.error(block, "mask", f"anchor index {anchor_index} out of range 0..{total - 1} ({total} anchors)")
    if len(set(opts["mask"])) != len(opts["mask"]):
        raise cfg.error(block, "mask", f"repeated anchor index in {opts['mask']}")
    _check_positive(cfg, block, ("classes",))
    previous = cfg.layers[block.index - 1] if block.index > 0 else None
    if previous is None or previous.type != "convolutional":
        raise cfg.error(block, None, "a [yolo] layer must directly follow the [convolutional] layer that feeds it")
    expected = len(opts["mask"]) * (5 + opts["classes"])
    if previous.options["filters"] != expected:
        raise cfg.error(previous, "filters",
                        f"the conv feeding the [yolo] at line {block.line} needs filters = len(mask) * (5 + classes) = "
                        f"{len(opts['mask'])} * (5 + {opts['classes']}) = {expected}, got {previous.options['filters']}")
    if previous.options["batch_normalize"]:
        raise cfg.error(previous, "batch_normalize", "the conv feeding a [yolo] layer must have a bias (no batch_normalize)")


def parse_cfg(cfg: Union[str, Path, DarknetCfg]) -> DarknetCfg:
    """Parse a Darknet cfg given as a path or as text (text is recognised by containing ``[net]``).

    Route/shortcut references come back as absolute layer indices; maxpool ``size``/``padding``, yolo ``mask``/``num``
    are filled with Darknet's defaults. Raises CfgError (file, line, key) on any problem.
    """
    if isinstance(cfg, DarknetCfg):
        return cfg
    return _parse_text(*_read_source(cfg))


def _parse_text(source: str, text: str) -> DarknetCfg:
    """Parse cfg ``text``; ``source`` is the name errors use (a path or "<cfg text>")."""
    raw_blocks = _tokenise(source, text)
    if not raw_blocks:
        raise _error(source, 1, None, None, "no blocks found; a cfg starts with [net]")
    if raw_blocks[0][0] != "net":
        raise _error(source, raw_blocks[0][1], raw_blocks[0][0], None, "the first block must be [net]")
    blocks = [_parse_block(source, *raw) for raw in raw_blocks]
    for extra_net in blocks[1:]:
        if extra_net.type == "net":
            raise _error(source, extra_net.line, "net", None, "only one [net] block is allowed, and it comes first")
    layers = blocks[1:]
    if not layers:
        raise _error(source, blocks[0].line, "net", None, "the cfg has no layers after [net]")
    for index, block in enumerate(layers):
        block.index = index
    parsed = DarknetCfg(source=source, text=text, net=blocks[0], layers=layers)
    _validate(parsed)
    if not any(block.type == "yolo" for block in layers):
        raise _error(source, blocks[0].line, "net", None, "the cfg has no [yolo] layer")
    return parsed


def with_num_classes(cfg: Union[str, Path, DarknetCfg], num_classes: int) -> DarknetCfg:
    """The cfg with every [yolo] ``classes`` set to ``num_classes`` and the filters of the conv feeding each head set to
    ``len(mask) * (5 + num_classes)``; comments and layout are kept, only those lines change."""
    parsed = parse_cfg(cfg)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    lines = parsed.text.splitlines(keepends=True)
    edits: List[Tuple[int, Optional[str], str]] = []  # (0-based line, key being replaced or None to insert, new line)
    for block in parsed.layers:
        if block.type != "yolo":
            continue
        head_conv = parsed.layers[block.index - 1]
        edits.append((head_conv.key_lines["filters"] - 1, "filters",
                      f"filters={len(block.options['mask']) * (5 + num_classes)}"))
        if "classes" in block.key_lines:
            edits.append((block.key_lines["classes"] - 1, "classes", f"classes={num_classes}"))
        else:  # rely on no default: write the key right under the header
            edits.append((block.line - 1, None, f"classes={num_classes}"))
    for line_index, key, new_line in sorted(edits, key=lambda edit: edit[0], reverse=True):
        old = lines[line_index]
        newline = old[len(old.rstrip("\r\n")):] or "\n"
        if key is None:
            lines[line_index] = old.rstrip("\r\n") + newline
            lines.insert(line_index + 1, new_line + newline)
        else:
            lines[line_index] = new_line + newline
    # errors keep naming the original file; line numbers are those of the rewritten text
    return _parse_text(parsed.source, "".join(lines))
