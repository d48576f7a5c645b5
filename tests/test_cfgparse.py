"""Darknet cfg parser: the shipped cfgs parse to the known layer structure; every bad cfg names file, line and key."""
from __future__ import annotations

import re

import pytest

from conftest import MINIMAL_CFG
from yolov3.cfgparse import CfgError, parse_cfg, with_num_classes

MINIMAL = MINIMAL_CFG  # conftest: one [net], a conv, a 1x1 head conv and a [yolo] layer


def _type_counts(cfg):
    counts = {}
    for block in cfg.layers:
        counts[block.type] = counts.get(block.type, 0) + 1
    return counts


def test_official_cfgs_layer_structure(cfg_dir):
    # yolov3: 75 backbone layers (52 conv + 23 shortcuts) + 32 head layers = 107; conv 75, route 4, upsample 2, yolo 3
    yolov3 = parse_cfg(cfg_dir / "yolov3.cfg")
    assert len(yolov3.layers) == 107
    assert _type_counts(yolov3) == {"convolutional": 75, "shortcut": 23, "route": 4, "upsample": 2, "yolo": 3}
    assert yolov3.input_size == (608, 608)
    assert yolov3.net.options["steps"] == [400000, 450000] and yolov3.net.options["scales"] == [0.1, 0.1]
    # relative references come back absolute: layer 4 is "from=-3" -> 1; layer 86 "layers=-1, 61" -> [85, 61]
    assert yolov3.layers[4].options["from"] == 1
    assert yolov3.layers[86].options["layers"] == [85, 61]
    head = yolov3.layers[82]
    assert head.type == "yolo" and head.options["mask"] == [6, 7, 8] and head.options["num"] == 9
    assert head.options["ignore_thresh"] == 0.7 and head.options["classes"] == 80

    tiny = parse_cfg(cfg_dir / "yolov3-tiny.cfg")
    assert len(tiny.layers) == 24
    pools = [b.options for b in tiny.layers if b.type == "maxpool"]
    # five size-2 stride-2 pools, then the size-2 stride-1 pool; Darknet's default padding is size - 1 = 1
    assert [(p["size"], p["stride"], p["padding"]) for p in pools] == [(2, 2, 1)] * 5 + [(2, 1, 1)]
    assert tiny.layers[20].options["layers"] == [19, 8]  # "layers = -1, 8": one relative, one absolute

    spp = parse_cfg(cfg_dir / "yolov3-spp.cfg")
    assert len(spp.layers) == 114
    spp_pools = [(b.options["size"], b.options["stride"], b.options["padding"]) for b in spp.layers if b.type == "maxpool"]
    assert spp_pools == [(5, 1, 4), (9, 1, 8), (13, 1, 12)]
    assert spp.layers[83].options["layers"] == [82, 80, 78, 77]  # "layers=-1,-3,-5,-6" at layer 83


def test_small_cfg_heads(cfg_dir):
    small = parse_cfg(cfg_dir / "yolov3-small.cfg")
    heads = [b.options for b in small.layers if b.type == "yolo"]
    assert [h["mask"] for h in heads] == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert all(h["classes"] == 5 for h in heads)
    assert small.input_size == (256, 256)


def test_text_input_spaces_comments_and_line_numbers():
    text = "# leading comment\n; another\n" + MINIMAL.replace("filters=8", "filters = 8")
    cfg = parse_cfg(text)
    assert cfg.source == "<cfg text>"
    conv = cfg.layers[0]
    assert conv.options["filters"] == 8
    # two comment lines shift everything by 2: "[convolutional]" is line 5 + 2, "filters" line 7 + 2
    assert conv.line == 7 and conv.key_lines["filters"] == 9
    # keys a cfg leaves out take Darknet's defaults (parser.c): the [yolo] layer here sets none of these
    yolo = cfg.layers[-1].options
    assert (yolo["ignore_thresh"], yolo["truth_thresh"], yolo["jitter"], yolo["random"]) == (0.5, 1.0, 0.2, 0)


def test_num_classes_rewrite_keeps_comments(cfg_dir):
    rewritten = with_num_classes(cfg_dir / "yolov3.cfg", 5)
    heads = [b for b in rewritten.layers if b.type == "yolo"]
    assert all(h.options["classes"] == 5 for h in heads)
    # 3 anchors * (5 + 5) = 30 filters in each head conv
    assert [rewritten.layers[h.index - 1].options["filters"] for h in heads] == [30, 30, 30]
    original = (cfg_dir / "yolov3.cfg").read_text()
    assert rewritten.text.count("\n") == original.count("\n")
    assert rewritten.text.count("#") == original.count("#")
    assert "filters=255" in original and "filters=255" not in rewritten.text


def _error_for(text: str, tmp_path, name: str = "bad.cfg") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CfgError) as info:
        parse_cfg(path)
    return str(info.value)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize(
    "old, new, key, fragment",
    [
        ("filters=8", "filters=abc", "filters", "expected an integer"),
        ("anchors = 10,13, 16,30, 33,23", "anchors = 10,13, 16,30, 33", "anchors", "odd count"),
        ("mask = 0,1,2", "mask = 0,1,3", "mask", "out of range"),
        ("size=3", "size=3\nshape=7", "shape", "unknown key"),
        ("size=3", "size=3\nsize=5", "size", "duplicate key"),
        ("activation=leaky", "activation=swish", "activation", "unsupported activation"),
        ("num=3", "num=4", "num", "anchors lists 3 pairs"),
        ("filters=21", "filters=20", "filters", "3 * (5 + 2) = 21"),
        ("stride=2", "stride=0", "stride", "must be >= 1"),
    ],
)
def test_bad_values_name_file_line_key(tmp_path, old, new, key, fragment):
    text = MINIMAL.replace(old, new, 1)
    assert text != MINIMAL
    message = _error_for(text, tmp_path)
    line = _line_of(text, new.splitlines()[-1])  # the error points at the line that was changed or added
    assert message.startswith(f"{tmp_path / 'bad.cfg'}:{line}:"), message
    assert f" {key}:" in message and fragment in message, message


def test_route_to_missing_layer(tmp_path):
    text = MINIMAL.replace("[yolo]", "[route]\nlayers = -1, 7\n\n[convolutional]\nsize=1\nfilters=21\nactivation=linear\n\n[yolo]")
    message = _error_for(text, tmp_path)
    assert re.match(rf"{re.escape(str(tmp_path / 'bad.cfg'))}:{_line_of(text, 'layers = -1, 7')}: \[route\] layers:", message)
    assert "refers to layer 7" in message


def test_shortcut_before_first_layer(tmp_path):
    text = MINIMAL.replace("[convolutional]\nsize=1", "[shortcut]\nfrom=-5\n\n[convolutional]\nsize=1", 1)
    message = _error_for(text, tmp_path)
    assert f":{_line_of(text, 'from=-5')}: [shortcut] from:" in message


def test_unknown_block_key_outside_block_and_missing_key(tmp_path):
    text = MINIMAL.replace("[yolo]", "[dropout]")
    message = _error_for(text, tmp_path)
    assert f":{_line_of(text, '[dropout]')}: [dropout]" in message and "unknown block type" in message

    message = _error_for("width=3\n" + MINIMAL, tmp_path)
    assert ":1:" in message and "width:" in message and "outside any block" in message

    text = MINIMAL.replace("anchors = 10,13, 16,30, 33,23\n", "")
    message = _error_for(text, tmp_path)
    assert f":{_line_of(text, '[yolo]')}: [yolo] anchors: required key missing" in message

    text = MINIMAL.replace("activation=leaky", "activation leaky")
    message = _error_for(text, tmp_path)
    assert f":{_line_of(text, 'activation leaky')}:" in message and "key=value" in message


def test_text_errors_name_the_text_and_missing_file(tmp_path):
    with pytest.raises(CfgError, match=r"^<cfg text>:\d+: \[convolutional\] filters:"):
        parse_cfg(MINIMAL.replace("filters=8", "filters=-"))
    with pytest.raises(FileNotFoundError, match="nope.cfg"):
        parse_cfg(tmp_path / "nope.cfg")
    assert issubclass(CfgError, ValueError)


def test_references_to_layer_zero_are_valid_and_to_the_layer_itself_are_not(tmp_path):
    # layer 1 routes to layer 0 (absolute 0, and relative -1 = 0); layers 0..0 come before layer 1
    routed = MINIMAL.replace("[convolutional]\nsize=1", "[route]\nlayers = 0, -1\n\n[convolutional]\nsize=1", 1)
    cfg = parse_cfg(routed)
    assert cfg.layers[1].type == "route" and cfg.layers[1].options["layers"] == [0, 0]
    shortcut = MINIMAL.replace("[convolutional]\nsize=1", "[shortcut]\nfrom=0\n\n[convolutional]\nsize=1", 1)
    assert parse_cfg(shortcut).layers[1].options["from"] == 0
    # a layer referring to itself (absolute 1 at layer 1) is refused, naming the line
    itself = MINIMAL.replace("[convolutional]\nsize=1", "[route]\nlayers = 1\n\n[convolutional]\nsize=1", 1)
    message = _error_for(itself, tmp_path)
    assert f":{_line_of(itself, 'layers = 1')}: [route] layers: refers to layer 1 (absolute 1), but only layers 0..0 " \
           "come before layer 1" in message


@pytest.mark.parametrize("key", ["width", "height", "channels", "batch", "subdivisions"])
def test_net_sizes_must_be_at_least_one(tmp_path, key):
    text = MINIMAL.replace("[net]\n", f"[net]\n{key}=0\n", 1) if key not in ("width", "height") \
        else MINIMAL.replace(f"{key}=64", f"{key}=0")
    message = _error_for(text, tmp_path)
    assert message == f"{tmp_path / 'bad.cfg'}:{_line_of(text, f'{key}=0')}: [net] {key}: must be >= 1, got 0"
    one = text.replace(f"{key}=0", f"{key}=1")
    assert parse_cfg(one).net.options[key] == 1  # the edge itself is valid


def test_darknet_defaults_and_checks_of_yolo_and_head_layers():
    # a [yolo] without classes= is Darknet's 20 classes: the head needs 3 x (5 + 20) = 75 filters
    cfg = parse_cfg(MINIMAL.replace("classes=2\n", "").replace("filters=21", "filters=75"))
    assert cfg.layers[-1].options["classes"] == 20
    with pytest.raises(CfgError, match="anchor widths and heights must be > 0"):
        parse_cfg(MINIMAL.replace("anchors = 10,13, 16,30, 33,23", "anchors = 10,0, 16,30, 33,23"))
    with pytest.raises(CfgError, match="must have a bias"):
        parse_cfg(MINIMAL.replace("[convolutional]\nsize=1", "[convolutional]\nbatch_normalize=1\nsize=1"))
    trailing = parse_cfg(MINIMAL.replace("anchors = 10,13, 16,30, 33,23", "anchors = 10,13, 16,30, 33,23,"))
    assert trailing.layers[-1].options["anchors"] == [10, 13, 16, 30, 33, 23]  # Darknet allows a trailing comma
