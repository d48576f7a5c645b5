"""Darknet .weights: float counts of the official files, byte-exact round trips, value order, cutoffs, clear errors."""
from __future__ import annotations

import re
import struct

import numpy as np
import pytest
import torch

from yolov3.model import Darknet
from yolov3.weights import WeightsError, count_darknet_floats, load_darknet_weights, read_darknet_header, save_darknet_weights


@pytest.mark.parametrize("name, floats", [("yolov3.cfg", 62_001_757), ("yolov3-tiny.cfg", 8_858_734),
                                          ("yolov3-spp.cfg", 63_052_381)])
def test_official_float_counts(cfg_dir, name, floats):
    with torch.device("meta"):  # counts from shapes only: no file, no 62 M allocations
        model = Darknet(cfg_dir / name)
    assert count_darknet_floats(model) == floats


def test_darknet53_conv74_count(cfg_dir):
    with torch.device("meta"):
        model = Darknet(cfg_dir / "yolov3.cfg")
    # darknet53.conv.74 = yolov3 layers 0..73, all 52 backbone convs: 40,620,640 floats;
    # 20-byte header + 4 * 40,620,640 = 162,482,580 bytes, the size of the published file
    floats = count_darknet_floats(model, cutoff=74)
    assert floats == 40_620_640 and 20 + 4 * floats == 162_482_580
    assert count_darknet_floats(model, cutoff=75) == floats  # layer 74 is a shortcut: no weights


def _write_weights(path, header, payload: np.ndarray, header_bytes: int = 20) -> bytes:
    """A .weights file built by hand: 3 little-endian int32, ``seen`` as int64 (``header_bytes`` 20) or int32 (16),
    then the float32 payload. The caller states the header size; nothing here shares the reader's rule."""
    major, minor, revision, seen = header
    seen_format = {20: "<q", 16: "<i"}[header_bytes]
    data = struct.pack("<iii", major, minor, revision) + struct.pack(seen_format, seen) + payload.astype("<f4").tobytes()
    path.write_bytes(data)
    return data


@pytest.fixture(scope="module")
def small_model(cfg_dir):
    return Darknet(cfg_dir / "yolov3-small.cfg")


@pytest.mark.parametrize("header, header_bytes", [((0, 2, 0, 123_456_789_012), 20),  # int64 seen (Darknet today)
                                                  ((0, 1, 0, 32_013_312), 16),  # int32 seen (old files)
                                                  ((1000, 2, 5, 7), 16)])  # major >= 1000: int32 seen
def test_round_trip_byte_for_byte(small_model, tmp_path, header, header_bytes):
    floats = count_darknet_floats(small_model)
    payload = np.random.default_rng(0).standard_normal(floats).astype("<f4")
    payload[3 * 16: 4 * 16] = np.abs(payload[3 * 16: 4 * 16])  # running variances of layer 0 are positive
    original = _write_weights(tmp_path / "in.weights", header, payload, header_bytes)
    assert len(original) == header_bytes + 4 * floats
    assert read_darknet_header(tmp_path / "in.weights") == (header, header_bytes)

    assert small_model.load_darknet_weights(tmp_path / "in.weights") == header
    assert small_model.darknet_header == header
    small_model.save_darknet_weights(tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == original
    assert not list(tmp_path.glob("*.part"))  # the temporary file was renamed, not left behind


def test_values_land_in_darknet_order(small_model, tmp_path):
    floats = count_darknet_floats(small_model)
    payload = np.arange(floats, dtype="<f4")
    _write_weights(tmp_path / "ramp.weights", (0, 2, 0, 0), payload)
    load_darknet_weights(small_model, tmp_path / "ramp.weights")
    layer0 = small_model.module_list[0]  # BN conv, 16 filters, 3x3 over 3 channels
    # file order: beta 0..15, gamma 16..31, mean 32..47, var 48..63, weights 64..64+432
    assert layer0.bn.bias[0].item() == 0 and layer0.bn.weight[0].item() == 16
    assert layer0.bn.running_mean[0].item() == 32 and layer0.bn.running_var[15].item() == 63
    assert layer0.conv.weight[0, 0, 0, 0].item() == 64 and layer0.conv.weight[15, 2, 2, 2].item() == 64 + 431
    head = small_model.head_convs[-1]  # the last values in the file: bias then weights of the last head conv
    assert head.weight.flatten()[-1].item() == floats - 1
    assert head.bias[0].item() == floats - 1 - head.weight.numel() - head.bias.numel() + 1


# A tiny cfg for header and cutoff cases: layers 0-2 BN convs, 3 a shortcut, 4 the head conv, 5 the yolo layer.
# Floats: layer 0: 4*4 BN + 4*3*3*3 = 124; layer 1: 8*4 + 8*4*3*3 = 320; layer 2: 8*4 + 8*8 = 96; layer 4: 18 + 18*8
# = 162 -> 702 in all, 540 in layers 0..2 (darknet's .conv.3).
TINY_CFG = """[net]
width=32
height=32

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=10,13, 16,30, 33,23
classes=1
"""


def test_tiny_cfg_float_counts():
    model = Darknet(TINY_CFG)
    assert count_darknet_floats(model) == 702 and count_darknet_floats(model, cutoff=3) == 540
    assert count_darknet_floats(model, cutoff=4) == 540 and count_darknet_floats(model, cutoff=2) == 444


@pytest.mark.parametrize("major, minor, header_bytes", [
    (0, 0, 16), (0, 1, 16),  # major*10 + minor < 2: seen is int32
    (0, 2, 20), (0, 5, 20), (1, 0, 20), (2, 1, 20), (999, 999, 20),  # >= 2: int64 (major 1 alone is 10)
    (0, 1000, 16), (1000, 0, 16),  # either number >= 1000: int32 again, as Darknet checks
])
def test_header_major_minor_variants(tmp_path, major, minor, header_bytes):
    model = Darknet(TINY_CFG)
    payload = np.random.default_rng(1).standard_normal(702).astype("<f4")
    payload[12:16] = np.abs(payload[12:16])  # layer 0's running variances (values 12..15) positive
    seen = 2**40 + 3 if header_bytes == 20 else 2**31 - 5
    original = _write_weights(tmp_path / "in.weights", (major, minor, 7, seen), payload, header_bytes)
    assert read_darknet_header(tmp_path / "in.weights") == ((major, minor, 7, seen), header_bytes)
    assert load_darknet_weights(model, tmp_path / "in.weights") == (major, minor, 7, seen)
    assert model.module_list[4].conv.weight.flatten()[-1].item() == payload[-1]  # the payload starts where it should
    save_darknet_weights(model, tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == original


def test_dot_conv_n_name_loads_layers_up_to_n_minus_1_when_that_layer_is_a_conv(tmp_path):
    # tiny.conv.3 holds layers 0..2; layer 2 is a conv whose values are the last 96 of the 540 (444..539)
    payload = np.arange(540, dtype="<f4")
    _write_weights(tmp_path / "tiny.conv.3", (0, 2, 0, 0), payload)
    model = Darknet(TINY_CFG)
    head_before = model.module_list[4].conv.weight.detach().clone()
    load_darknet_weights(model, tmp_path / "tiny.conv.3")
    layer2 = model.module_list[2]
    assert layer2.bn.bias[0].item() == 444 and layer2.bn.running_var[7].item() == 444 + 31
    assert layer2.conv.weight.flatten()[-1].item() == 539
    assert torch.equal(model.module_list[4].conv.weight, head_before)  # the head keeps its initialisation
    # the same 540 floats under a plain name: the error names the prefix it matches, layer 2 included
    (tmp_path / "tiny.conv.3").rename(tmp_path / "backbone.weights")
    assert "pass cutoff=3" in _message(load_darknet_weights, model, tmp_path / "backbone.weights")


def _message(callable_, *args, **kwargs) -> str:
    with pytest.raises(WeightsError) as info:  # the class the command lines print as a one-line user error
        callable_(*args, **kwargs)
    return str(info.value)


def test_truncated_and_too_long(small_model, tmp_path):
    floats = count_darknet_floats(small_model)
    payload = np.zeros(floats + 1, "<f4")
    _write_weights(tmp_path / "short.weights", (0, 2, 0, 0), payload[:-2])
    message = _message(small_model.load_darknet_weights, tmp_path / "short.weights")
    assert str(tmp_path / "short.weights") in message
    assert f"expected {floats:,} floats" in message and f"found {floats - 1:,}" in message and "truncated" in message
    _write_weights(tmp_path / "long.weights", (0, 2, 0, 0), payload)
    message = _message(small_model.load_darknet_weights, tmp_path / "long.weights")
    assert f"expected {floats:,} floats" in message and f"found {floats + 1:,}" in message and "too long" in message
    (tmp_path / "odd.weights").write_bytes((tmp_path / "long.weights").read_bytes()[:-2])
    assert "not a whole number of float32" in _message(small_model.load_darknet_weights, tmp_path / "odd.weights")
    (tmp_path / "tiny.weights").write_bytes(b"\0" * 8)
    assert "too short for a Darknet weights header" in _message(small_model.load_darknet_weights,
                                                                 tmp_path / "tiny.weights")


def test_file_for_another_cfg_is_named(small_model, cfg_dir, tmp_path):
    tiny = Darknet(cfg_dir / "yolov3-tiny.cfg")
    tiny.save_darknet_weights(tmp_path / "yolov3-tiny.weights")
    message = _message(small_model.load_darknet_weights, tmp_path / "yolov3-tiny.weights")
    assert f"expected {count_darknet_floats(small_model):,} floats" in message and "found 8,858,734" in message
    assert "yolov3-small.cfg" in message and "official yolov3-tiny.weights" in message


def test_cutoff_save_and_load(small_model, cfg_dir, tmp_path):
    torch.manual_seed(0)
    source = Darknet(cfg_dir / "yolov3-small.cfg")
    cutoff = 12  # layers 0..11: the stem and the stride-8 stage
    source.save_darknet_weights(tmp_path / "backbone.weights", cutoff=cutoff)
    assert (tmp_path / "backbone.weights").stat().st_size == 20 + 4 * count_darknet_floats(source, cutoff)

    target = Darknet(cfg_dir / "yolov3-small.cfg")
    untouched = {k: v.clone() for k, v in target.state_dict().items()}
    target.load_darknet_weights(tmp_path / "backbone.weights", cutoff=cutoff)
    for key, value in target.state_dict().items():
        layer = int(key.split(".")[1])
        if key.endswith("num_batches_tracked"):
            continue
        expected = source.state_dict()[key] if layer < cutoff else untouched[key]
        assert torch.equal(value, expected), key

    # without cutoff a short file is an error that suggests the cutoff it matches (layer 11 is a shortcut,
    # so the values end at layer 10: "first 11 layers")
    message = _message(target.load_darknet_weights, tmp_path / "backbone.weights")
    assert "pass cutoff=11" in message
    # Darknet's own naming, <name>.conv.N, implies cutoff=N
    (tmp_path / "backbone.weights").rename(tmp_path / "small.conv.12")
    assert target.load_darknet_weights(tmp_path / "small.conv.12") == (0, 2, 0, 0)
    # a full file loads under a cutoff too (extra values are ignored, as Darknet's partial does)
    source.save_darknet_weights(tmp_path / "full.weights")
    load_darknet_weights(target, tmp_path / "full.weights", cutoff=5)
    with pytest.raises(ValueError, match=r"cutoff must be a number of layers between 1 and 46"):
        save_darknet_weights(source, tmp_path / "x.weights", cutoff=0)


def test_missing_file(small_model, tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.weights"))):
        small_model.load_darknet_weights(tmp_path / "none.weights")


def _load_download_script():
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("download_weights", REPO_ROOT / "weights" / "download_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_script_sizes_match_the_models(cfg_dir):
    script = _load_download_script()
    with torch.device("meta"):
        models = {name: Darknet(cfg_dir / f"{name}.cfg") for name in ("yolov3", "yolov3-tiny", "yolov3-spp")}
    for name, model in models.items():
        assert script.FLOAT_COUNTS[f"{name}.weights"] == count_darknet_floats(model)
    assert script.FLOAT_COUNTS["darknet53.conv.74"] == count_darknet_floats(models["yolov3"], cutoff=74)
    assert script.EXPECTED_BYTES == {"yolov3.weights": 248_007_048, "yolov3-tiny.weights": 35_434_956,
                                     "yolov3-spp.weights": 252_209_544, "darknet53.conv.74": 162_482_580}


def test_download_from_local_mirror_is_atomic_and_size_checked(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    script = _load_download_script()
    served = tmp_path / "mirror"
    served.mkdir()
    good = np.array([0, 2, 0], "<i4").tobytes() + np.array([5], "<i8").tobytes() + np.ones(1000, "<f4").tobytes()
    (served / "good.weights").write_bytes(good)
    (served / "bad.weights").write_bytes(good[:-4])
    monkeypatch.setitem(script.EXPECTED_BYTES, "good.weights", len(good))
    monkeypatch.setitem(script.EXPECTED_BYTES, "bad.weights", len(good))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        out = tmp_path / "out"
        out.mkdir()
        (out / "good.weights.part").write_bytes(b"stale")  # this server ignores Range: the download restarts
        assert script.download("good.weights", out, base, quiet=True).read_bytes() == good
        assert not (out / "good.weights.part").exists()
        with pytest.raises(ValueError, match=f"got {len(good) - 4:,} bytes, expected {len(good):,}"):
            script.download("bad.weights", out, base, quiet=True)
        assert not (out / "bad.weights").exists()  # a short file never takes the final name
    finally:
        server.shutdown()
        server.server_close()


def test_download_script_help():
    import subprocess
    import sys

    from conftest import REPO_ROOT

    result = subprocess.run([sys.executable, str(REPO_ROOT / "weights" / "download_weights.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--mirror" in result.stdout and "248,007,048" in result.stdout


def test_cutoff_of_every_layer_and_a_truncated_version_two_header(tmp_path):
    from yolov3.weights import looks_like_darknet_weights

    model = Darknet(TINY_CFG)
    assert count_darknet_floats(model, cutoff=len(model.module_list)) == count_darknet_floats(model)
    path = tmp_path / "short.weights"
    path.write_bytes(struct.pack("<iiii", 0, 2, 0, 5))  # version 0.2 needs 20 header bytes
    with pytest.raises(WeightsError, match="truncated header: version 0.2 needs 20 header bytes, the file has 16"):
        read_darknet_header(path)
    assert looks_like_darknet_weights(path) is False


def test_a_given_header_is_written_and_a_download_resumes_from_its_part_file(tmp_path, monkeypatch):
    import http.server
    import threading

    model = Darknet(TINY_CFG)
    save_darknet_weights(model, tmp_path / "h.weights", header=(0, 1, 3, 77))
    raw = (tmp_path / "h.weights").read_bytes()
    assert raw[:16] == struct.pack("<iiii", 0, 1, 3, 77) and len(raw) == 16 + 4 * count_darknet_floats(model)
    script = _load_download_script()
    good = np.array([0, 2, 0], "<i4").tobytes() + np.array([5], "<i8").tobytes() + np.ones(1000, "<f4").tobytes()
    monkeypatch.setitem(script.EXPECTED_BYTES, "good.weights", len(good))
    ranges = []

    class Ranged(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            asked = self.headers.get("Range")
            ranges.append(asked)
            start = int(asked.split("=")[1].rstrip("-")) if asked else 0
            self.send_response(206 if asked else 200)
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{len(good) - 1}/{len(good)}")
            self.send_header("Content-Length", str(len(good) - start))
            self.end_headers()
            self.wfile.write(good[start:])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ranged)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / "good.weights.part").write_bytes(good[:100])  # an interrupted download
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert script.download("good.weights", out, base, quiet=True).read_bytes() == good
        assert ranges == ["bytes=100-"]
    finally:
        server.shutdown()
        server.server_close()
