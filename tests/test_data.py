"""Data YAML, label validation and its cache, the dataset and the loader."""
import json
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov3.config import AugmentConfig
from yolov3.data import (DataError, create_dataloader, label_path_for, load_data_yaml, parse_label_text, scan_split,
                         YOLODataset)

NAMES = ["a", "b", "c"]
REPO = Path(__file__).resolve().parents[1]


def _write_image(path: Path, height=32, width=32, value=(40, 80, 120)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((height, width, 3), value, np.uint8)
    assert cv2.imwrite(str(path), img)


def _write_label(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _make_dataset(root: Path, labels: dict, split="train", shape=(32, 32), yaml_extra=""):
    """Images ``img{i}.png`` with the given label texts (None = no label file); returns the loaded data dict."""
    for name, text in labels.items():
        _write_image(root / "images" / split / f"{name}.png", *shape)
        if text is not None:
            _write_label(root / "labels" / split / f"{name}.txt", text)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: .\ntrain: images/{split}\nval: images/{split}\nnames: {NAMES}\n{yaml_extra}")
    return load_data_yaml(yaml_path)


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.INFO, logger="yolov3")
    return caplog


# ----------------------------------------------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------------------------------------------
def test_yaml_resolves_paths_relative_to_yaml_and_root(tmp_path):
    (tmp_path / "cfgs").mkdir()
    yaml_path = tmp_path / "cfgs" / "d.yaml"
    yaml_path.write_text("path: ../ds\ntrain: [images/t1, list.txt]\nval: images/v\nnames: {0: x, 1: y}\n")
    data = load_data_yaml(yaml_path)
    root = (tmp_path / "ds").resolve()
    assert data["path"] == str(root)
    assert data["train"] == [str(root / "images/t1"), str(root / "list.txt")]
    assert data["val"] == [str(root / "images/v")] and data["test"] == []
    assert data["names"] == ["x", "y"] and data["nc"] == 2


@pytest.mark.parametrize("text, fragment", [
    ("train: a\nval: a\nnc: 3\nnames: [x, y]\n", "'nc' is 3 but 'names' lists 2"),
    ("train: a\nval: a\n", "missing key 'names'"),
    ("train: a\nval: a\nnames: {0: x, 2: y}\n", "keys 0..1"),
    ("train: [a\n", "invalid YAML"),
])
def test_yaml_errors_name_file_and_key(tmp_path, text, fragment):
    yaml_path = tmp_path / "bad.yaml"
    yaml_path.write_text(text)
    with pytest.raises(DataError) as info:
        load_data_yaml(yaml_path)
    assert fragment in str(info.value) and "bad.yaml" in str(info.value)


def test_label_path_replaces_last_images_component():
    assert label_path_for("/d/images/x/images/train/a.jpg") == "/d/images/x/labels/train/a.txt"
    assert label_path_for("/d/imgs/a.png") == "/d/imgs/a.txt"  # no images/ folder: label beside the image
    assert label_path_for("/d/images/images.jpg") == "/d/labels/images.txt"  # the file name is never swapped


def test_txt_list_split_resolves_against_root(tmp_path, info_logs):
    _write_image(tmp_path / "images" / "all" / "p.png")
    _write_image(tmp_path / "images" / "all" / "q.png")
    _write_label(tmp_path / "labels" / "all" / "q.txt", "1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "list.txt").write_text("images/all/q.png\n")
    (tmp_path / "d.yaml").write_text("train: list.txt\nval: list.txt\nnames: [a, b]\n")
    entries = scan_split(load_data_yaml(tmp_path / "d.yaml"), "train", progress=False)
    assert [Path(p).name for p in entries.paths] == ["q.png"]
    np.testing.assert_allclose(entries.labels[0], [[1, 0.5, 0.5, 0.5, 0.5]])


# ----------------------------------------------------------------------------------------------------------------
# Label rows
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, fragment", [
    ("0 0.5 0.5 0.2", "expected 5 values 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 5 values 'class cx cy w h', got 6"),
    ("0 0.5 abc 0.2 0.2", "non-numeric value 'abc'"),
    ("3 0.5 0.5 0.2 0.2", "class 3 out of range [0, 3)"),
    ("-1 0.5 0.5 0.2 0.2", "class -1 out of range [0, 3)"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not an integer"),
    ("0 1.2 0.5 0.2 0.2", "cx=1.2 outside [0, 1]"),
    ("0 0.5 -0.01 0.2 0.2", "cy=-0.01 outside [0, 1]"),
    ("0 0.5 0.5 0 0.2", "width and height must be positive, got w=0 h=0.2"),
    ("0 0.5 0.5 0.2 -0.1", "h=-0.1 outside [0, 1]; width and height must be positive"),
    ("0 0.5 nan 0.2 0.2", "non-finite value"),
    # inside the 1e-3 tolerance, yet wholly beyond the right edge: nothing is left after clipping
    ("0 1.0005 0.5 0.0005 0.2", "the box lies outside the image (no area left after clipping to [0, 1])"),
])
def test_bad_label_rows_report_file_line_and_problem(row, fragment):
    text = "1 0.5 0.5 0.1 0.1\n\n" + row + "\n"  # the bad row is on line 3 (line 2 is blank)
    labels, errors, _ = parse_label_text(text, "lbl/x.txt", num_classes=3)
    assert len(errors) == 1 and errors[0].startswith("lbl/x.txt:3: ") and fragment in errors[0], errors
    assert labels.shape == (0, 5)  # a file with a bad row yields nothing: the image is skipped


def test_good_rows_tolerance_clipping_and_duplicates():
    text = ("2 0.25 0.5 0.5 0.2\n"
            "0 1.0005 0.5 0.2 0.2\n"  # within the 1e-3 tolerance: accepted, then clipped
            "2 0.25 0.5 0.5 0.2\n")  # duplicate of line 1
    labels, errors, warnings = parse_label_text(text, "y.txt", num_classes=3)
    assert errors == [] and warnings == ["y.txt:3: duplicate of line 1, dropped"]
    # line 2: x from 1.0005 - 0.1 = 0.9005 to 1.1005 -> clipped to 1: cx = 0.95025, w = 0.0995
    np.testing.assert_allclose(labels, [[2, 0.25, 0.5, 0.5, 0.2], [0, 0.95025, 0.5, 0.0995, 0.2]], atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Scanning a split
# ----------------------------------------------------------------------------------------------------------------
def test_scan_skips_corrupt_image_and_bad_labels_and_summarises(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {
        "good": "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.1\n",
        "empty": None,  # no label file: an image without objects
        "badlabel": "0 0.5 0.5 0.5\n",
        "dup": "2 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n",
    })
    corrupt = tmp_path / "images" / "train" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    entries = scan_split(data, "train", progress=False)
    assert sorted(Path(p).stem for p in entries.paths) == ["dup", "empty", "good"]
    text = info_logs.text
    assert f"{corrupt}: cannot read or decode the image" in text
    assert f"{tmp_path / 'labels' / 'train' / 'badlabel.txt'}:1: expected 5 values" in text and "image skipped" in text
    assert "dup.txt:2: duplicate of line 1, dropped" in text
    summary = [r.message for r in info_logs.records if r.message.startswith("train:")]
    assert summary == ["train: 3 images, 3 boxes, 1 empty, 2 skipped (1 unreadable, 1 bad labels), "
                       "1 duplicate rows dropped"]


def test_cache_is_used_then_rebuilt_when_a_label_changes(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    first = scan_split(data, "train", progress=False)
    # a name of our own: a yolov5 checkout on the same data keeps its labels/train.cache
    assert not first.from_cache and Path(first.cache_path) == tmp_path / "labels" / "train.yolov3-focal.cache"
    assert scan_split(data, "train", progress=False).from_cache
    label = tmp_path / "labels" / "train" / "b.txt"
    label.write_text("2 0.5 0.5 0.3 0.3\n2 0.1 0.1 0.1 0.1\n")
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a visible mtime change on any filesystem
    rebuilt = scan_split(data, "train", progress=False)
    assert not rebuilt.from_cache
    index = [Path(p).stem for p in rebuilt.paths].index("b")
    np.testing.assert_allclose(rebuilt.labels[index], [[2, 0.5, 0.5, 0.3, 0.3], [2, 0.1, 0.1, 0.1, 0.1]])
    # problems found at scan time are reported again when the cache is reused
    label.write_text("7 0.5 0.5 0.3 0.3\n")
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    scan_split(data, "train", progress=False)
    info_logs.clear()
    assert scan_split(data, "train", progress=False).from_cache
    assert "b.txt:1: class 7 out of range [0, 3)" in info_logs.text
    # the same data with 8 classes: class 7 is fine there, so the 3-class scan must not be reused
    eight = {**data, "nc": 8, "names": [*NAMES, "d", "e", "f", "g", "h"]}
    widened = scan_split(eight, "train", progress=False)
    assert not widened.from_cache
    np.testing.assert_allclose(widened.labels[index], [[7, 0.5, 0.5, 0.3, 0.3]])
    # an edit that keeps the file's size (class 7 -> 6) is seen by its time stamp
    label.write_text("6 0.5 0.5 0.3 0.3\n")
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3 * 10**9))
    edited = scan_split(eight, "train", progress=False)
    assert not edited.from_cache
    np.testing.assert_allclose(edited.labels[index], [[6, 0.5, 0.5, 0.3, 0.3]])


def test_a_label_file_in_another_encoding_skips_its_image_with_a_reason(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": None})
    # UTF-16 (a Windows editor's "Unicode"): not UTF-8 text
    (tmp_path / "labels" / "train" / "b.txt").write_bytes("1 0.5 0.5 0.2 0.2\n".encode("utf-16"))
    entries = scan_split(data, "train", progress=False)
    assert [Path(p).stem for p in entries.paths] == ["a"]
    assert f"{tmp_path / 'labels' / 'train' / 'b.txt'}: cannot read the label file (" in info_logs.text
    assert "image skipped" in info_logs.text


def test_damaged_label_cache_is_scanned_again(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    cache = Path(scan_split(data, "train", progress=False).cache_path)
    payload = json.loads(cache.read_text())
    del payload["labels"]  # right version and hash, yet incomplete
    cache.write_text(json.dumps(payload))
    entries = scan_split(data, "train", progress=False)
    assert not entries.from_cache
    np.testing.assert_allclose(entries.labels[0], [[0, 0.5, 0.5, 0.5, 0.5]])


def test_split_without_usable_image_is_an_error(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"a": "5 0.5 0.5 0.5 0.5\n"})
    with pytest.raises(DataError) as info:
        scan_split(data, "train", progress=False)
    assert "split 'train' has no usable image" in str(info.value) and "data.yaml" in str(info.value)


def test_empty_or_missing_split_is_an_error(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "d.yaml").write_text("train: images/train\nval: images/nowhere\nnames: [a]\n")
    data = load_data_yaml(tmp_path / "d.yaml")
    with pytest.raises(DataError, match="split 'train' has no images"):
        scan_split(data, "train", progress=False)
    with pytest.raises(DataError, match="split 'val': .*nowhere does not exist \\(expected a folder of images"):
        scan_split(data, "val", progress=False)
    (tmp_path / "images" / "notes.md").write_text("not images")
    (tmp_path / "d2.yaml").write_text("train: images/train\nval: images/notes.md\nnames: [a]\n")
    with pytest.raises(DataError, match="split 'val': .*notes.md is not a folder, a .txt list or an image"):
        scan_split(load_data_yaml(tmp_path / "d2.yaml"), "val", progress=False)
    with pytest.raises(DataError, match="split 'test' is not defined"):
        scan_split(data, "test", progress=False)


def _write_image_bytes_name(folder: Path, name: bytes, height=32, width=32):
    """An image whose file name is raw bytes (not always UTF-8): returns the path as Python shows it."""
    ok, png = cv2.imencode(".png", np.full((height, width, 3), (40, 80, 120), np.uint8))
    assert ok
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as fh:
        fh.write(png.tobytes())
    return os.fsdecode(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a file system that takes any bytes as names")
def test_file_names_that_are_not_utf8_scan_cache_and_load(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"ok": "0 0.5 0.5 0.5 0.5\n"})
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    odd = _write_image_bytes_name(images, b"caf\xff.png")  # Python shows the byte 0xff as '\udcff'
    with open(os.path.join(os.fsencode(labels), b"caf\xff.txt"), "wb") as fh:
        fh.write(b"2 0.25 0.25 0.1 0.1\n")
    bad = _write_image_bytes_name(images, b"bad\xff.png")  # a bad label: named in the warning, skipped
    with open(os.path.join(os.fsencode(labels), b"bad\xff.txt"), "wb") as fh:
        fh.write(b"7 0.5 0.5 0.1 0.1\n")
    entries = scan_split(data, "train", progress=False)
    assert "caf\udcff" in odd and sorted(Path(p).name for p in entries.paths) == ["caf\udcff.png", "ok.png"]
    np.testing.assert_allclose(entries.labels[entries.paths.index(odd)], [[2, 0.25, 0.25, 0.1, 0.1]])
    assert f"{label_path_for(bad)}:1: class 7 out of range [0, 3)" in info_logs.text
    # the cache round-trips the name
    cached = scan_split(data, "train", progress=False)
    assert cached.from_cache and cached.paths == entries.paths
    np.testing.assert_array_equal(cached.labels[cached.paths.index(odd)], entries.labels[entries.paths.index(odd)])
    # and the loader reads the image and hands its path back
    loader, _ = create_dataloader(data, "val", 64, 2, None, workers=0, seed=0, shuffle=False, progress=False)
    batch_images, targets, paths, _ = next(iter(loader))
    assert odd in paths and batch_images.shape == (2, 3, 64, 64)
    assert sorted(targets[:, 1].tolist()) == [0.0, 2.0]


def _no_label_warnings(caplog) -> list:
    return [r.message for r in caplog.records if "no label file found" in r.message]


def test_no_label_file_for_any_image_warns_once_per_split(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"a": None, "b": None})  # train and val both read images/train
    first_label = tmp_path / "labels" / "train" / "a.txt"
    first_image = tmp_path / "images" / "train" / "a.png"
    for split in ("train", "val"):
        info_logs.clear()
        scan_split(data, split, progress=False)
        assert _no_label_warnings(info_logs) == [
            f"WARNING {split}: no label file found for any of 2 images; expected them at {first_label} (for "
            f"{first_image}: the last 'images' folder of the path becomes 'labels'), so every image trains as "
            "background"]
    assert not (tmp_path / "labels").exists()  # no labels/ folder appears that the user did not make
    # an empty labels/ folder (the files went elsewhere): the warning comes back with the cached scan too
    (tmp_path / "labels" / "train").mkdir(parents=True)
    assert not scan_split(data, "train", progress=False).from_cache
    info_logs.clear()
    assert scan_split(data, "train", progress=False).from_cache
    assert len(_no_label_warnings(info_logs)) == 1
    # one label file is enough: images without one are simply empty
    _write_label(tmp_path / "labels" / "train" / "b.txt", "0 0.5 0.5 0.5 0.5\n")
    info_logs.clear()
    scan_split(data, "train", progress=False)
    assert _no_label_warnings(info_logs) == []


def test_label_file_and_image_list_with_a_utf8_byte_order_mark(tmp_path, info_logs):
    data = _make_dataset(tmp_path, {"a": None})
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_bytes(b"\xef\xbb\xbf1 0.5 0.5 0.2 0.2\r\n0 0.1 0.1 0.1 0.1\n")
    entries = scan_split(data, "train", progress=False)
    np.testing.assert_allclose(entries.labels[0], [[1, 0.5, 0.5, 0.2, 0.2], [0, 0.1, 0.1, 0.1, 0.1]])
    assert entries.summary["bad_labels"] == 0
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbfimages/train/a.png\n")
    (tmp_path / "l.yaml").write_text(f"train: list.txt\nval: list.txt\nnames: {NAMES}\n")
    entries = scan_split(load_data_yaml(tmp_path / "l.yaml"), "train", progress=False)
    assert entries.paths == [str(tmp_path / "images" / "train" / "a.png")]


def test_image_list_and_data_yaml_that_are_not_utf8_are_one_line_errors(tmp_path):
    _write_image(tmp_path / "images" / "café.png")
    (tmp_path / "list.txt").write_bytes("images/café.png\n".encode("latin-1"))
    (tmp_path / "d.yaml").write_text(f"train: list.txt\nval: list.txt\nnames: {NAMES}\n")
    with pytest.raises(DataError) as info:
        scan_split(load_data_yaml(tmp_path / "d.yaml"), "train", progress=False)
    message = str(info.value)
    assert f"split 'train': {tmp_path / 'list.txt'} is not UTF-8 text" in message and "\n" not in message
    latin1_yaml = tmp_path / "latin1.yaml"
    latin1_yaml.write_bytes(f"train: images  # données\nval: images\nnames: {NAMES}\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.yaml: data YAML is not UTF-8 text"):
        load_data_yaml(latin1_yaml)


# ----------------------------------------------------------------------------------------------------------------
# Dataset and loader
# ----------------------------------------------------------------------------------------------------------------
def test_val_batch_letterbox_targets_and_shapes(tmp_path):
    # a 64x32 (w x h) image letterboxed to 64: no scaling, 16 grey rows above and below
    data = _make_dataset(tmp_path, {"a": "1 0.5 0.5 0.5 0.5\n", "b": None}, shape=(32, 64))
    loader, dataset = create_dataloader(data, "val", 64, 2, None, workers=0, seed=0, shuffle=False, progress=False)
    images, targets, paths, shapes = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    # the picture is BGR (40, 80, 120) -> RGB (120, 80, 40) / 255 inside, grey 114 / 255 in the padding
    np.testing.assert_allclose(images[0, :, 32, 32].numpy(), np.array([120, 80, 40]) / 255, atol=1e-6)
    np.testing.assert_allclose(images[0, :, 0, 0].numpy(), np.full(3, 114 / 255), atol=1e-6)
    # box: cx 0.5*64 = 32 -> 0.5; cy 0.5*32 + 16 = 32 -> 0.5; w 32/64 = 0.5; h 16/64 = 0.25
    np.testing.assert_allclose(targets.numpy(), [[0, 1, 0.5, 0.5, 0.5, 0.25]], atol=1e-6)
    assert shapes[0] == ((32, 64), (1.0, 1.0), (0.0, 16.0)) and Path(paths[1]).stem == "b"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="converting on the GPU needs one"))])
def test_loader_on_a_device_gives_the_same_batch(tmp_path, device):
    # with a device the uint8 batch goes there before the float conversion; values must not change
    data = _make_dataset(tmp_path, {"a": "1 0.5 0.5 0.5 0.5\n", "b": None}, shape=(32, 64))
    plain, _ = create_dataloader(data, "val", 64, 2, None, workers=0, seed=0, shuffle=False, progress=False)
    moved, _ = create_dataloader(data, "val", 64, 2, None, workers=0, seed=0, shuffle=False, progress=False,
                                 device=device)
    (images, targets, _, _), (moved_images, moved_targets, _, _) = next(iter(plain)), next(iter(moved))
    assert moved_images.device.type == device and moved_images.dtype == torch.float32
    assert moved.pin_memory == (device == "cuda")
    assert torch.equal(moved_images.cpu(), images) and torch.equal(moved_targets, targets)


def test_shapes_map_original_pixels_when_resizing(tmp_path):
    data = _make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"}, shape=(40, 100))
    dataset = YOLODataset(data, "val", 64, progress=False)
    _, labels, _, ((h0, w0), (rw, rh), (pw, ph)) = dataset[0]
    assert (h0, w0) == (40, 100)
    # original box x 25..75, y 10..30; net = orig * ratio + pad must equal the returned label in pixels
    x1, y1 = 25 * rw + pw, 10 * rh + ph
    cx, cy, w, h = labels[0, 1:].numpy() * 64
    assert abs((cx - w / 2) - x1) < 1e-3 and abs((cy - h / 2) - y1) < 1e-3


def test_dataset_statistics_hand_counted_on_non_square_images(tmp_path):
    from yolov3.datastats import dataset_statistics

    # at 256 px a 256 x 128 photo keeps its scale and a 128 x 256 one too (long side 256): boxes in pixels below
    _write_image(tmp_path / "images" / "train" / "wide.png", height=128, width=256)
    _write_label(tmp_path / "labels" / "train" / "wide.txt",
                 "0 0.5 0.5 0.0625 0.125\n"  # 16 x 16: small
                 "2 0.3 0.5 0.125 0.25\n")  # 32 x 32: area 32^2 exactly, the first medium
    _write_image(tmp_path / "images" / "train" / "tall.png", height=256, width=128)
    _write_label(tmp_path / "labels" / "train" / "tall.txt",
                 "2 0.5 0.5 0.25 0.125\n"  # 32 x 32: medium
                 "1 0.5 0.5 1.0 0.5\n")  # 128 x 128: large
    (tmp_path / "data.yaml").write_text(f"train: images/train\nval: images/train\nnames: {NAMES}\n")
    stats = dataset_statistics(load_data_yaml(tmp_path / "data.yaml"), "train", img_size=256)
    assert stats["per_class"] == {"a": 1, "b": 1, "c": 2}
    assert stats["sizes"] == {"small": 1, "medium": 2, "large": 1}
    # 3 anchors at strides 8, 16, 32: 3 * (32^2 + 16^2 + 8^2) = 4032 cells per image
    assert (stats["cells_per_image"], stats["object_cells"], stats["noobject_cells"]) == (4032, 4, 2 * 4032 - 4)


@pytest.fixture
def augmented_data(tmp_path):
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(6):
        (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / "train" / f"i{i}.png"), rng.integers(0, 255, (48, 64, 3), np.uint8))
        labels[f"i{i}"] = f"{i % 3} 0.5 0.5 0.4 0.3\n{(i + 1) % 3} 0.3 0.6 0.2 0.2\n"
        _write_label(tmp_path / "labels" / "train" / f"i{i}.txt", labels[f"i{i}"])
    (tmp_path / "data.yaml").write_text(f"train: images/train\nval: images/train\nnames: {NAMES}\n")
    return load_data_yaml(tmp_path / "data.yaml")


def _first_batch(data, seed, workers, epoch=0, cache=False):
    loader, dataset = create_dataloader(data, "train", 64, 4, AugmentConfig(), workers=workers, seed=seed,
                                        shuffle=True, cache=cache, progress=False)
    dataset.set_epoch(epoch)
    return next(iter(loader))


def test_loader_is_reproducible_and_independent_of_workers(augmented_data):
    images_a, targets_a, paths_a, _ = _first_batch(augmented_data, seed=3, workers=0)
    images_b, targets_b, paths_b, _ = _first_batch(augmented_data, seed=3, workers=2)
    assert paths_a == paths_b and torch.equal(images_a, images_b) and torch.equal(targets_a, targets_b)
    images_c, _, _, _ = _first_batch(augmented_data, seed=4, workers=0)
    assert not torch.equal(images_a, images_c)
    images_d, _, _, _ = _first_batch(augmented_data, seed=3, workers=0, epoch=1)  # a new epoch, new augmentation
    assert not torch.equal(images_a, images_d)
    images_e, targets_e, _, _ = _first_batch(augmented_data, seed=3, workers=0, cache=True)  # RAM cache: same data
    assert torch.equal(images_a, images_e) and torch.equal(targets_a, targets_e)
    # targets are normalised boxes inside the image, image indices within the batch
    assert targets_a.shape[1] == 6 and set(targets_a[:, 0].long().tolist()) <= {0, 1, 2, 3}
    assert torch.all(targets_a[:, 2:] >= 0) and torch.all(targets_a[:, 2:] <= 1)


def test_set_epoch_reaches_persistent_workers(augmented_data):
    loader, dataset = create_dataloader(augmented_data, "train", 64, 6, AugmentConfig(), workers=1, seed=0,
                                        shuffle=False, progress=False)
    first = next(iter(loader))[0]
    dataset.set_epoch(5)
    fifth = next(iter(loader))[0]  # same persistent worker process, new epoch
    reference = YOLODataset(augmented_data, "train", 64, AugmentConfig(), seed=0, progress=False)
    reference.set_epoch(5)
    expected = torch.stack([reference[i][0] for i in range(6)]).float() / 255
    assert not torch.equal(first, fifth) and torch.equal(fifth, expected)


OBJECT_BGR = (60, 60, 200)  # one unsaturated red object per photo on a dark background


@pytest.fixture
def object_photos(tmp_path):
    """Six non-square photos (80 wide, 48 high), each with one red rectangle away from the centre and its label."""
    for i in range(6):
        img = np.full((48, 80, 3), 30, np.uint8)
        x1, y1 = 6 + 8 * i, 4 + 3 * i  # 16 x 12 px, off centre, a different place in each photo
        img[y1:y1 + 12, x1:x1 + 16] = OBJECT_BGR
        _write_image_array(tmp_path / "images" / "train" / f"p{i}.png", img)
        _write_label(tmp_path / "labels" / "train" / f"p{i}.txt",
                     f"0 {(x1 + 8) / 80} {(y1 + 6) / 48} {16 / 80} {12 / 48}\n")
    (tmp_path / "data.yaml").write_text(f"train: images/train\nval: images/train\nnames: {NAMES}\n")
    return load_data_yaml(tmp_path / "data.yaml")


def _write_image_array(path: Path, img: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _only(**gains) -> AugmentConfig:
    """Every augmentation off but the ones given."""
    off = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, fliplr=0.0,
               mosaic=0.0)
    return AugmentConfig(**{**off, **gains})


def _samples(data, augment, epochs=range(4)):
    """(epoch, index, RGB HWC uint8 image, (n, 5) labels in pixels xyxy) of every photo in the given epochs."""
    dataset = YOLODataset(data, "train", 64, augment, seed=0, progress=False)
    out = []
    for epoch in epochs:
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            image, labels, _, _ = dataset[index]
            boxes = labels.numpy().copy()
            boxes[:, 1:] = np.concatenate([boxes[:, 1:3] - boxes[:, 3:5] / 2, boxes[:, 1:3] + boxes[:, 3:5] / 2], 1)
            boxes[:, 1:] *= 64
            out.append((epoch, index, image.permute(1, 2, 0).numpy(), boxes))
    return out


def test_every_augmentation_off_gives_the_plain_letterboxed_photo(object_photos):
    plain = _samples(object_photos, None, epochs=[0])
    for epoch, index, image, boxes in _samples(object_photos, _only()):
        _, _, plain_image, plain_boxes = plain[index]
        assert np.array_equal(image, plain_image) and np.allclose(boxes, plain_boxes, atol=1e-4), (epoch, index)


def test_fliplr_one_mirrors_every_photo_and_its_boxes(object_photos):
    plain = _samples(object_photos, None, epochs=[0])
    for epoch, index, image, boxes in _samples(object_photos, _only(fliplr=1.0)):
        _, _, plain_image, plain_boxes = plain[index]
        assert np.array_equal(image, plain_image[:, ::-1]), (epoch, index)
        np.testing.assert_allclose(boxes[:, [1, 3]], 64 - plain_boxes[:, [3, 1]], atol=1e-4)


def _centre_is_the_object(image, box):
    cx, cy = int((box[1] + box[3]) / 2), int((box[2] + box[4]) / 2)
    red, green, blue = (int(v) for v in image[cy, cx])
    return abs(red - OBJECT_BGR[2]) <= 3 and abs(green - OBJECT_BGR[1]) <= 3 and abs(blue - OBJECT_BGR[0]) <= 3


def test_mosaic_labels_sit_on_their_objects_in_non_square_photos(object_photos):
    samples = _samples(object_photos, _only(mosaic=1.0, translate=0.1))
    checked = whole = 0
    for epoch, index, image, boxes in samples:
        for box in boxes:
            if min(box[3] - box[1], box[4] - box[2]) >= 3:  # big enough for its centre to be inside the object
                assert _centre_is_the_object(image, box), (epoch, index, box)
                checked += 1
            if np.all((box[1:] > 0.5) & (box[1:] < 63.5)):  # not cut by the border: the tile's size, unscaled
                # 16 x 12 px in an 80 x 48 photo, whose tile is resized to 64 x 38 (round(38.4)): 12.8 x 9.5 px
                np.testing.assert_allclose(box[3:5] - box[1:3], [16 * 64 / 80, 12 * 38 / 48], atol=1e-3)
                whole += 1
    assert checked >= 30 and whole >= 10
    # a mosaic of four photos shows more than one object on most images (a plain photo shows exactly one)
    assert np.mean([len(boxes) for _, _, _, boxes in samples]) > 1.5


def test_translate_alone_moves_boxes_and_scale_alone_resizes_them(object_photos):
    plain = _samples(object_photos, None, epochs=[0])
    moved = resized = 0
    for epoch, index, image, boxes in _samples(object_photos, _only(translate=0.15)):
        plain_boxes = plain[index][3]
        sizes, plain_sizes = boxes[:, 3:5] - boxes[:, 1:3], plain_boxes[:, 3:5] - plain_boxes[:, 1:3]
        inside = np.all((boxes[:, 1:] > 0.5) & (boxes[:, 1:] < 63.5), axis=1)  # not cut by the border
        assert np.allclose(sizes[inside], plain_sizes[inside], atol=1e-3), (epoch, index)
        moved += int(np.abs(boxes[:, 1] - plain_boxes[:, 1]).max() > 2)
        assert all(_centre_is_the_object(image, box) for box in boxes[inside])
    for epoch, index, image, boxes in _samples(object_photos, _only(scale=0.3)):
        plain_boxes = plain[index][3]
        ratio = (boxes[:, 3] - boxes[:, 1]) / (plain_boxes[:, 3] - plain_boxes[:, 1])
        resized += int(abs(ratio[0] - 1) > 0.05)
    assert moved >= 12 and resized >= 12  # of 24 draws each


def test_hue_alone_turns_the_colour_and_keeps_saturation_and_value(object_photos):
    plain = _samples(object_photos, None, epochs=[0])
    turned = 0
    for epoch, index, image, boxes in _samples(object_photos, _only(hsv_h=0.3)):
        plain_image = plain[index][2]
        hsv, plain_hsv = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2HSV).astype(int)
                          for x in (image, plain_image))
        assert np.abs(hsv[..., 1:] - plain_hsv[..., 1:]).max() <= 8, (epoch, index)  # 8-bit HSV rounding
        hue_moved = (hsv[..., 0] - plain_hsv[..., 0] + 90) % 180 - 90
        turned += int(np.abs(hue_moved[plain_hsv[..., 1] > 100]).max() > 5)
    assert turned >= 12


def test_distributed_sampler_splits_the_data(augmented_data):
    seen = []
    for rank in (0, 1):
        loader, _ = create_dataloader(augmented_data, "train", 64, 2, None, workers=0, seed=0, shuffle=True,
                                      rank=rank, world_size=2, progress=False)
        seen.append([p for batch in loader for p in batch[2]])
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])


def test_plot_batch_draws_boxes_in_class_colours(tmp_path):
    from yolov3.draw import class_colour, plot_batch

    images = torch.zeros(2, 3, 64, 64)
    # image 1, class 3, box x 16..48, y 8..40 (cx 0.5, cy 0.375, w 0.5, h 0.5)
    targets = torch.tensor([[1, 3, 0.5, 0.375, 0.5, 0.5]])
    grid = plot_batch(images, targets, ["a.jpg", "b.jpg"], None, tmp_path / "batch.png")
    saved = cv2.imread(str(tmp_path / "batch.png"))
    assert saved.shape == (64, 128, 3) and np.array_equal(saved, grid)  # 2 tiles side by side, lossless PNG
    # the left edge of the box in the second tile (x = 64 + 16), halfway down, has the class colour
    assert tuple(int(v) for v in saved[30, 64 + 16]) == class_colour(3)
    assert saved[30, 16].max() == 0  # nothing drawn on the first (empty) tile there


def test_batches_are_channels_last_with_rgb_pixels(tmp_path):
    """The collate stacks HWC pixels as they lie: NHWC memory (what the network trains fastest in), RGB order."""
    data = _make_dataset(tmp_path, {"a": "1 0.5 0.5 0.5 0.5\n", "b": None}, shape=(64, 64))
    for workers in (0, 1):  # a batch shipped from a worker process keeps its layout
        loader, _ = create_dataloader(data, "val", 64, 2, None, workers=workers, seed=0, shuffle=False,
                                      progress=False)
        images = next(iter(loader))[0]
        assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
        np.testing.assert_allclose(images[1, :, 10, 20].numpy(), np.array([120, 80, 40]) / 255, atol=1e-6)


def test_ram_cache_auto_caches_what_fits_in_a_tenth_of_free_memory(monkeypatch):
    import yolov3.dataset as data_module

    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 10 * 2**30)  # 10 GiB free
    # 1,750 images at 256 px: 0.34 GB <= 1 GiB -> cached; COCO at 640 px: 145 GB -> not
    assert data_module.ram_cache_wanted("auto", 1750, 256)
    assert not data_module.ram_cache_wanted("auto", 118_287, 640)
    limit = int(0.1 * 10 * 2**30 // (3 * 256 * 256))  # the largest count that fits
    assert data_module.ram_cache_wanted("auto", limit, 256) and not data_module.ram_cache_wanted("auto", limit + 1, 256)
    assert data_module.ram_cache_wanted("ram", 10**9, 640) and data_module.ram_cache_wanted(True, 10**9, 640)
    assert not data_module.ram_cache_wanted("off", 1, 32) and not data_module.ram_cache_wanted(False, 1, 32)
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: None)  # unknown: never cache by itself
    assert not data_module.ram_cache_wanted("auto", 1, 32)


# ----------------------------------------------------------------------------------------------------------------
# What other YOLO tools bring: Roboflow/yolov5 YAMLs, yolov5's path rule, polygon labels, Darknet .data files
# ----------------------------------------------------------------------------------------------------------------
def test_unknown_yaml_keys_are_warned_about_and_ignored(tmp_path, info_logs):
    (tmp_path / "d.yaml").write_text("train: a\nval: a\nnames: [x]\nroboflow:\n  workspace: w\n  version: 3\n"
                                     "epochs: 3\n")
    data = load_data_yaml(tmp_path / "d.yaml")
    assert data["names"] == ["x"]
    assert (f"WARNING {tmp_path / 'd.yaml'}: ignoring unknown keys 'roboflow', 'epochs' (known keys: path, train, "
            "val, test, nc, names, download, generate)") in info_logs.text


def test_a_roboflow_export_whose_paths_start_one_folder_up_reads_from_its_own_folder(tmp_path, info_logs):
    export = tmp_path / "export"
    for split in ("train", "valid"):
        (export / split / "images").mkdir(parents=True)
    (tmp_path / "valid" / "images").mkdir(parents=True)  # where '../valid/images' does exist, it wins
    (export / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
                                      "nc: 1\nnames: ['cell']\n")
    data = load_data_yaml(export / "data.yaml")
    assert data["train"] == [str(export / "train" / "images")]
    assert data["val"] == [str(export / ".." / "valid" / "images")]
    assert data["test"] == [str(export / ".." / "test" / "images")]  # neither exists: the error will name the first
    notes = [r.getMessage() for r in info_logs.records if "does not exist; using" in r.getMessage()]
    assert notes == [f"note {export / 'data.yaml'}: split 'train': {export / '..' / 'train' / 'images'} does not "
                     f"exist; using {export / 'train' / 'images'} (an export that writes its paths from a folder "
                     "beside the dataset, as Roboflow's does)"]


def test_relative_path_also_resolves_from_the_working_directory_as_in_yolov5(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "datasets" / "set" / "images" / "train").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    yaml_path = tmp_path / "elsewhere" / "set.yaml"  # the YAML's folder has no datasets/ beside it
    yaml_path.write_text("path: datasets/set\ntrain: images/train\nval: images/val\nnames: [x]\n")
    monkeypatch.chdir(work)
    data = load_data_yaml(yaml_path)
    assert data["path"] == str(work / "datasets" / "set") and data["path_tried"] == []
    monkeypatch.chdir(tmp_path)  # found nowhere now: the first missing split names every place looked at
    data = load_data_yaml(yaml_path)
    assert data["path"] == str(tmp_path / "elsewhere" / "datasets" / "set")
    with pytest.raises(DataError) as info:
        scan_split(data, "train", progress=False)
    assert str(info.value).endswith(
        f"the dataset root 'path' was looked for at {tmp_path / 'elsewhere' / 'datasets' / 'set'} and "
        f"{tmp_path / 'datasets' / 'set'} and {REPO / 'datasets' / 'set'} and none exists")


def test_polygon_rows_become_their_bounding_box(tmp_path):
    # a triangle (0.2, 0.3), (0.6, 0.1), (0.4, 0.7): x 0.2..0.6, y 0.1..0.7 -> cx 0.4, cy 0.4, w 0.4, h 0.6
    labels, errors, _ = parse_label_text("1 0.2 0.3 0.6 0.1 0.4 0.7\n0 0.5 0.5 0.2 0.2\n", "x.txt", 3)
    assert errors == []
    np.testing.assert_allclose(labels, [[1, 0.4, 0.4, 0.4, 0.6], [0, 0.5, 0.5, 0.2, 0.2]], atol=1e-6)
    _, errors, _ = parse_label_text("1 0.2 0.3 1.6 0.1 0.4 0.7\n", "x.txt", 3)
    assert errors == ["x.txt:1: polygon point x2=1.6 outside [0, 1]"]
    _, errors, _ = parse_label_text("0 0.1 0.1 0.1 0.1 0.1 0.1\n", "x.txt", 3)  # all points alike: no area
    assert errors == ["x.txt:1: width and height must be positive, got w=0 h=0"]


def test_darknet_data_file(tmp_path, monkeypatch):
    """PyTorch-YOLOv3's config/custom.data: paths relative to where the command runs, lists of image paths."""
    for name in ("a", "b", "c"):
        _write_image(tmp_path / "data" / "custom" / "images" / f"{name}.png")
        _write_label(tmp_path / "data" / "custom" / "labels" / f"{name}.txt", "1 0.5 0.5 0.4 0.4\n")
    (tmp_path / "data" / "custom" / "train.txt").write_text("data/custom/images/a.png\ndata/custom/images/b.png\n")
    (tmp_path / "data" / "custom" / "valid.txt").write_text("data/custom/images/c.png\n")
    (tmp_path / "data" / "custom" / "classes.names").write_text("cat\ndog\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "custom.data").write_text(
        "classes= 2\ntrain=data/custom/train.txt\nvalid=data/custom/valid.txt\nnames=data/custom/classes.names\n"
        "backup=backup/\n")
    monkeypatch.chdir(tmp_path)
    data = load_data_yaml("config/custom.data")
    assert data["names"] == ["cat", "dog"] and data["nc"] == 2
    assert data["train"] == [str(tmp_path / "data" / "custom" / "train.txt")]
    entries = scan_split(data, "val", progress=False)
    assert [Path(p).name for p in entries.paths] == ["c.png"]
    np.testing.assert_allclose(entries.labels[0], [[1, 0.5, 0.5, 0.4, 0.4]])
    (tmp_path / "config" / "bad.data").write_text("classes=3\ntrain=t\nvalid=v\nnames=data/custom/classes.names\n")
    with pytest.raises(DataError, match="'nc' is 3 but 'names' lists 2"):
        load_data_yaml("config/bad.data")
    (tmp_path / "config" / "bad.data").write_text("train=t\nvalid=v\nnames=nothing.names\n")
    with pytest.raises(DataError, match=r"bad.data:3: names file nothing.names not found \(looked for "):
        load_data_yaml("config/bad.data")


def test_data_yaml_names_and_nc_are_checked(tmp_path):
    for text, message in (("train: a\nval: a\nnames: []\n", "'names' must be a non-empty list"),
                          ("train: a\nval: a\nnc: true\nnames: [x]\n", "'nc' must be an integer, got True")):
        (tmp_path / "d.yaml").write_text(text)
        with pytest.raises(DataError, match=message):
            load_data_yaml(tmp_path / "d.yaml")


def test_a_split_path_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "d.yaml").write_text("train: ~/imgs\nval: ~/imgs\nnames: [x]\n")
    assert load_data_yaml(tmp_path / "d.yaml")["train"] == [str(tmp_path / "home" / "imgs")]


def test_darknet_data_paths_working_directory_first_then_beside_the_file(tmp_path, monkeypatch):
    """Darknet reads a .data file's paths from the working directory; where one is missing there, the same path
    beside the .data file is used (so the file also loads from another folder)."""
    (tmp_path / "cfg").mkdir()
    (tmp_path / "x.names").write_text("cwd\n")
    (tmp_path / "cfg" / "x.names").write_text("beside\n")
    (tmp_path / "cfg" / "train.txt").write_text("")
    (tmp_path / "cfg" / "x.data").write_text("train=train.txt\nvalid=train.txt\nnames=x.names\n")
    monkeypatch.chdir(tmp_path)
    assert load_data_yaml(tmp_path / "cfg" / "x.data")["names"] == ["cwd"]
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    data = load_data_yaml(tmp_path / "cfg" / "x.data")
    assert data["names"] == ["beside"] and data["train"] == [str(tmp_path / "cfg" / "train.txt")]


def test_darknet_data_comments_missing_valid_and_a_names_file_with_a_bom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.names").write_bytes(b"\xef\xbb\xbfcat\ndog\n")  # saved by a Windows editor
    (tmp_path / "x.data").write_text("# my data\nclasses = 2  # two\ntrain = t\nvalid = v\nnames = x.names\n")
    data = load_data_yaml("x.data")
    assert data["nc"] == 2 and data["names"] == ["cat", "dog"]
    (tmp_path / "y.data").write_text("train=t\nnames=x.names\n")
    with pytest.raises(DataError, match="missing key 'valid'"):
        load_data_yaml("y.data")


def test_a_generated_dataset_is_built_beside_its_yaml_whatever_the_working_directory(tmp_path, monkeypatch):
    from yolov3.synthetic import CLASS_NAMES

    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "ds").mkdir(parents=True)  # a folder of that name where the command runs is not it
    tiny = {"train_images": 2, "val_images": 1, "img_size": 64, "min_objects": 1, "max_objects": 2, "seed": 1}
    (tmp_path / "a" / "s.yaml").write_text(json.dumps({"path": "ds", "train": "images/train", "val": "images/val",
                                                       "names": list(CLASS_NAMES), "generate": tiny}))
    monkeypatch.chdir(tmp_path / "b")
    data = load_data_yaml(tmp_path / "a" / "s.yaml")
    assert data["path"] == str((tmp_path / "a" / "ds").resolve())
    assert (tmp_path / "a" / "ds" / "manifest.json").is_file() and not any((tmp_path / "b" / "ds").iterdir())


def test_label_path_for_darknet_voc_layout():
    assert label_path_for("/voc/VOC2007/JPEGImages/000001.jpg") == "/voc/VOC2007/labels/000001.txt"


def test_coco_names_and_coco_yaml_name_the_classes_alike():
    import yaml

    names = [ln for ln in (REPO / "data" / "coco.names").read_text().splitlines() if ln.strip()]
    assert names == yaml.safe_load((REPO / "data" / "coco.yaml").read_text())["names"] and len(names) == 80


def test_single_class_data_keeps_every_box_as_class_zero(tmp_path):
    from yolov3.data import YOLODataset, as_single_class

    data = _make_dataset(tmp_path, {"img0": "2 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n", "img1": ""})
    one = as_single_class(data)
    assert one["names"] == ["object"] and data["names"] == NAMES  # the original is untouched
    assert one["nc"] == 3  # label rows are still checked against the data's own classes
    classes, single = YOLODataset(data, "train", 32), YOLODataset(one, "train", 32)
    for rows, single_rows in zip(classes.labels, single.labels):
        assert np.array_equal(single_rows[:, 1:], rows[:, 1:]) and (single_rows[:, 0] == 0).all()
    assert sorted(classes.labels[0][:, 0].tolist()) == [1.0, 2.0] and len(single.labels[1]) == 0


def test_upper_case_suffixes_repeated_list_entries_and_boxes_past_the_bottom(tmp_path):
    _write_image(tmp_path / "images" / "train" / "A.JPG")
    _write_label(tmp_path / "labels" / "train" / "A.txt", "0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/train\nnames: {NAMES}\n")
    entries = scan_split(load_data_yaml(tmp_path / "data.yaml"), "train", progress=False)
    assert [Path(p).name for p in entries.paths] == ["A.JPG"]
    (tmp_path / "list.txt").write_text("images/train/A.JPG\n./images/train/A.JPG\nimages/train/A.JPG\n")
    (tmp_path / "list.yaml").write_text(f"path: .\ntrain: list.txt\nval: list.txt\nnames: {NAMES}\n")
    listed = scan_split(load_data_yaml(tmp_path / "list.yaml"), "train", progress=False)
    assert listed.paths == [str(tmp_path / "images" / "train" / "A.JPG")]  # once, not three times
    # y1 = .85, y2 = min(1.05, 1) = 1 -> cy .925, h .15
    labels, errors, _ = parse_label_text("0 0.5 0.95 0.2 0.2\n", "x.txt", 3)
    assert errors == [] and np.allclose(labels, [[0, 0.5, 0.925, 0.2, 0.15]], atol=1e-6)
    # within the tolerance of the bottom edge, yet nothing left after clipping
    labels, errors, _ = parse_label_text("0 0.5 1.0005 0.2 0.0005\n", "x.txt", 3)
    assert errors == ["x.txt:1: the box lies outside the image (no area left after clipping to [0, 1])"]
    assert labels.shape == (0, 5)


def test_a_replaced_photo_is_scanned_again(tmp_path):
    data = _make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    assert scan_split(data, "train", progress=False).shapes == [(32, 32)]
    image = tmp_path / "images" / "train" / "a.png"
    _write_image(image, height=32, width=64)
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = scan_split(data, "train", progress=False)
    assert not again.from_cache and again.shapes == [(32, 64)]


def test_mosaic_draws_partners_from_every_image_and_hsv_never_touches_the_ram_cache(augmented_data, tmp_path):
    dataset = YOLODataset(augmented_data, "train", 64, _only(mosaic=1.0), seed=0, progress=False)
    loaded = []
    real_load = dataset.load_image
    dataset.load_image = lambda index: (loaded.append(index), real_load(index))[1]
    for epoch in range(4):
        for index in range(6):
            before = len(loaded)
            dataset[(index, epoch)]
            assert loaded[before] == index
            partners = loaded[before + 1:]
            assert len(partners) == 3
    # 72 partner draws from 6 images: missing the last one by chance has probability (5/6)^72 ~ 2e-6
    partners = [i for k, i in enumerate(loaded) if k % 4]
    assert 5 in partners
    _write_image(tmp_path / "one" / "images" / "train" / "a.png", 64, 64, (100, 100, 100))
    _write_label(tmp_path / "one" / "labels" / "train" / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "one" / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/train\nnames: {NAMES}\n")
    cached = YOLODataset(load_data_yaml(tmp_path / "one" / "data.yaml"), "train", 64, _only(hsv_v=0.9), seed=0,
                         cache="ram", progress=False)
    before = cached._ram_cache[0].copy()
    images = [cached[(0, epoch)][0] for epoch in range(3)]
    assert np.array_equal(cached._ram_cache[0], before)  # each epoch jitters a copy, never the cached pixels
    assert not torch.equal(images[0], images[1])


def test_dataset_statistics_edges_and_the_printed_counts(tmp_path):
    from yolov3.datastats import dataset_statistics, format_statistics

    _write_image(tmp_path / "images" / "train" / "a.png", 256, 256)
    _write_label(tmp_path / "labels" / "train" / "a.txt", "0 0.5 0.5 0.375 0.375\n")  # 96 x 96 px: large
    _write_image(tmp_path / "images" / "train" / "b.png", 256, 256)
    _write_label(tmp_path / "labels" / "train" / "b.txt", "")
    (tmp_path / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/train\nnames: {NAMES}\n")
    stats = dataset_statistics(load_data_yaml(tmp_path / "data.yaml"), "train", img_size=256)
    assert stats["sizes"] == {"small": 0, "medium": 0, "large": 1}
    assert (stats["images"], stats["empty_images"], stats["boxes_per_image"]) == (2, 1, 0.5)
    assert format_statistics(stats).splitlines()[-1].endswith(
        f"({stats['object_cells']} object, {stats['noobject_cells']} no-object)")
    assert stats["object_cells"] < stats["noobject_cells"]


def test_a_greyscale_photo_is_read_as_three_channels(tmp_path):
    from yolov3.images import read_image

    cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 6), 77, np.uint8))
    image = read_image(str(tmp_path / "g.png"))
    assert image.shape == (4, 6, 3) and (image == 77).all()


# ---- planted-bug checks, second pass: resizing for the RAM cache and mosaics, ratios, samplers, the label scan -------
def test_images_are_resized_to_the_training_size_by_area_or_line_and_damage_later_is_named(tmp_path):
    small = _make_dataset(tmp_path / "small", {"s": "0 0.5 0.5 0.5 0.5\n"}, shape=(16, 32))
    assert YOLODataset(small, "train", 64, progress=False).load_image(0).shape == (32, 64, 3)  # enlarged too
    thin = _make_dataset(tmp_path / "thin", {"t": None}, shape=(1, 200))
    dataset = YOLODataset(thin, "val", 64, progress=False)
    assert dataset.load_image(0).shape == (1, 64, 3) and dataset[0][0].shape == (3, 64, 64)
    noise = np.random.default_rng(0).integers(0, 255, (100, 150, 3), np.uint8)
    (tmp_path / "noise" / "images" / "val").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "noise" / "images" / "val" / "n.png"), noise)
    (tmp_path / "noise" / "data.yaml").write_text(f"path: .\ntrain: images/val\nval: images/val\nnames: {NAMES}\n")
    loaded = YOLODataset(load_data_yaml(tmp_path / "noise" / "data.yaml"), "val", 64, progress=False).load_image(0)
    assert np.array_equal(loaded, cv2.resize(noise, (64, 43), interpolation=cv2.INTER_AREA))  # 100 x 64 / 150 = 43
    data = _make_dataset(tmp_path / "late", {"a": "0 0.5 0.5 0.5 0.5\n"})
    late = YOLODataset(data, "val", 64, progress=False)
    (tmp_path / "late" / "images" / "train" / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read the image any more"):
        late[0]


def test_validation_ratios_per_axis_and_labels_follow_the_rounded_height(tmp_path):
    data = _make_dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"}, shape=(40, 100))
    _, labels, _, shapes = YOLODataset(data, "val", 64, progress=False)[0]
    # 100 x 40 -> 64 x 26 (40 x .64 = 25.6 rounds up): ratios .64 and 26 / 40 = .65, pad top (64 - 26) / 2 = 19
    (size, ratio, pad) = shapes
    assert size == (40, 100) and ratio == pytest.approx((0.64, 0.65)) and pad == pytest.approx((0.0, 19.0))
    np.testing.assert_allclose(labels.numpy(), [[0, 0.5, 0.5, 0.5, 13 / 64]], atol=1e-6)


def test_samplers_shuffle_by_seed_and_epoch_and_a_ranks_share_skips_what_was_done(augmented_data, monkeypatch):
    def order(seed, epoch, **kwargs):
        loader, dataset = create_dataloader(augmented_data, "train", 64, 1, None, workers=0, seed=seed,
                                            shuffle=True, progress=False, **kwargs)
        dataset.set_epoch(epoch)
        return [i for i, _ in loader.sampler], loader

    epochs = [order(0, epoch)[0] for epoch in range(4)]
    assert all(sorted(o) == list(range(6)) for o in epochs) and len({tuple(o) for o in epochs}) > 1
    seeds = [order(seed, 0)[0] for seed in range(4)]
    assert len({tuple(o) for o in seeds}) > 1 and order(2, 0)[0] == seeds[2]
    for seed, epoch in ((0, 0), (0, 1), (0, 3), (1, 0)):
        share, loader = order(seed, epoch, rank=0, world_size=2)
        reference = torch.utils.data.DistributedSampler(range(6), num_replicas=2, rank=0, shuffle=True, seed=seed)
        reference.set_epoch(epoch)
        assert share == list(reference)
    loader.sampler.skip = 1
    assert [i for i, _ in loader.sampler] == share[1:]
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    loader, _ = create_dataloader(augmented_data, "val", 64, 4, None, workers=4, seed=0, shuffle=False,
                                  progress=False)
    assert loader.num_workers == 1  # never more workers than cores


def test_available_memory_is_memavailable(monkeypatch):
    import io

    from yolov3 import dataset as dataset_module

    meminfo = "MemTotal: 16000000 kB\nMemFree: 1000 kB\nMemAvailable: 8000 kB\n"
    monkeypatch.setattr(dataset_module, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert dataset_module.available_memory_bytes() == 8000 * 1024


def test_label_rows_within_the_tolerance_of_the_left_and_top_edges_are_clipped():
    labels, errors, _ = parse_label_text("0 0.2 0.3 1.0005 0.1 0.4 0.7\n", "x.txt", 3)  # a polygon just past x = 1
    assert errors == [] and np.allclose(labels, [[0, 0.6, 0.4, 0.8, 0.6]], atol=1e-6)
    labels, errors, _ = parse_label_text("0 -0.0005 0.5 0.2 0.2\n", "x.txt", 3)
    assert errors == [] and np.allclose(labels, [[0, 0.04975, 0.5, 0.0995, 0.2]], atol=1e-6)
    labels, _, _ = parse_label_text("0 0.05 0.5 0.2 0.2\n", "x.txt", 3)  # x1 = -.05 -> 0: cx .075, w .15
    assert np.allclose(labels, [[0, 0.075, 0.5, 0.15, 0.2]], atol=1e-6)
    labels, _, _ = parse_label_text("0 0.5 0.05 0.2 0.2\n", "x.txt", 3)
    assert np.allclose(labels, [[0, 0.5, 0.075, 0.2, 0.15]], atol=1e-6)


def test_the_scan_reports_counts_of_what_it_found_and_skipped(tmp_path, caplog):
    from yolov3 import labels as labels_module

    caplog.set_level(logging.WARNING, logger="yolov3")
    labels_module._log_messages([f"p{i}" for i in range(30)])
    assert [r.getMessage() for r in caplog.records] == [f"WARNING p{i}" for i in range(30)]
    caplog.clear()
    labels_module._log_messages([f"p{i}" for i in range(31)])
    assert [r.getMessage() for r in caplog.records][-1] == "WARNING ... and 1 more problems"
    caplog.clear()
    data = _make_dataset(tmp_path / "nolabels", {"a": None, "b": None})
    (tmp_path / "nolabels" / "images" / "train" / "corrupt.png").write_bytes(b"\x89PNG junk")
    scan_split(data, "train", progress=False)
    assert "no label file found for any of 3 images" in caplog.text
    data = _make_dataset(tmp_path / "bad", {"a": "5 0.5 0.5 0.5 0.5\n", "b": "7 0.5 0.5 0.5 0.5\n"})
    with pytest.raises(DataError, match=r"\(2 found, all skipped"):
        scan_split(data, "train", progress=False)
    caplog.clear()
    data = _make_dataset(tmp_path / "beside", {"a": None})
    (tmp_path / "beside" / "images" / "train" / "corrupt.png").write_bytes(b"junk")
    _write_label(tmp_path / "beside" / "labels" / "train" / "corrupt.txt", "0 0.5 0.5 0.5 0.5\n")
    entries = scan_split(data, "train", progress=False)
    assert entries.summary["label_files"] == 1 and entries.summary["unreadable"] == 1
    assert "no label file found" not in caplog.text


def test_a_corrupt_cache_blank_list_lines_single_image_splits_and_the_download_hint(tmp_path, monkeypatch, caplog):
    data = _make_dataset(tmp_path / "c", {"a": "0 0.5 0.5 0.5 0.5\n"})
    cache = Path(scan_split(data, "train", progress=False).cache_path)
    cache.write_text("{truncated")
    again = scan_split(data, "train", progress=False)
    assert not again.from_cache and np.allclose(again.labels[0], [[0, 0.5, 0.5, 0.5, 0.5]])
    root = tmp_path / "l"
    _make_dataset(root, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    (root / "list.txt").write_text("images/train/a.png\n\nimages/train/b.png\n")
    (root / "list.yaml").write_text(f"path: .\ntrain: list.txt\nval: list.txt\nnames: {NAMES}\n")
    listed = scan_split(load_data_yaml(root / "list.yaml"), "train", progress=False)
    assert len(listed.paths) == 2 and listed.summary["skipped"] == 0
    _write_image(root / "images" / "train" / "A.JPG")
    _write_label(root / "labels" / "train" / "A.txt", "0 0.5 0.5 0.5 0.5\n")
    (root / "one.yaml").write_text(f"path: .\ntrain: images/train/b.png\nval: images/train/A.JPG\nnames: {NAMES}\n")
    one = load_data_yaml(root / "one.yaml")
    assert scan_split(one, "val", progress=False).paths == [str(root / "images" / "train" / "A.JPG")]
    assert scan_split(one, "train", progress=False).paths == [str(root / "images" / "train" / "b.png")]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "set.yaml").write_text("path: datasets/set\ntrain: images/train\nval: images/val\n"
                                                     "names: [x]\ndownload: run get_data.sh\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"none exists \(to get it: run get_data.sh\)$"):
        scan_split(load_data_yaml(tmp_path / "elsewhere" / "set.yaml"), "train", progress=False)


def test_paths_from_the_checkout_root_are_tried_once(monkeypatch):
    from yolov3 import paths

    monkeypatch.chdir(paths.ROOT)
    assert paths.candidates("cfg/none.cfg") == [Path("cfg/none.cfg")]
    assert paths.tried("cfg/none.cfg") == f"looked for {paths.ROOT / 'cfg/none.cfg'}"
