"""The built-in shapes dataset: deterministic, regenerated only when asked, labels true to the pixels."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolov3.data import DataError, load_data_yaml, scan_split
from yolov3.datastats import dataset_statistics
from yolov3.synthetic import (CLASS_NAMES, CLASS_WEIGHTS, EMPTY_IMAGE_FRACTION, SyntheticDataError, check_params,
                              ensure_shapes_dataset, render_image)

REPO = Path(__file__).resolve().parents[1]
TINY = {"train_images": 6, "val_images": 2, "img_size": 64, "min_objects": 1, "max_objects": 4, "seed": 1}


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.parent.name in ("train", "val"):
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_generation_is_deterministic_per_seed(tmp_path):
    ensure_shapes_dataset(tmp_path / "a", TINY, progress=False)
    ensure_shapes_dataset(tmp_path / "b", TINY, progress=False)
    ensure_shapes_dataset(tmp_path / "c", {**TINY, "seed": 2}, progress=False)
    assert len(list((tmp_path / "a" / "images" / "train").glob("*.jpg"))) == 6
    assert len(list((tmp_path / "a" / "labels" / "val").glob("*.txt"))) == 2
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    # the val split is drawn apart from train: no val image or label file repeats a train one (val mAP would be a
    # score on training images)
    def digests(folder):  # empty label files (images without objects) are alike by nature: left out
        return {hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir() if f.stat().st_size}

    for kind in ("images", "labels"):
        train, val = digests(tmp_path / "a" / kind / "train"), digests(tmp_path / "a" / kind / "val")
        assert val and not train & val, kind


def test_generation_skipped_when_parameters_match_and_redone_when_they_differ(tmp_path):
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is True
    image = tmp_path / "images" / "train" / "train_00000.jpg"
    mtime = image.stat().st_mtime_ns
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is False and image.stat().st_mtime_ns == mtime
    assert ensure_shapes_dataset(tmp_path, {**TINY, "train_images": 3}, progress=False) is True
    assert len(list((tmp_path / "images" / "train").glob("*.jpg"))) == 3  # old files removed, not mixed in


def _pixel_boxes(labels, size):
    """(n, 5) normalised labels -> (n, 4) integer pixel xyxy (exact for the generator's pixel-aligned boxes)."""
    cx, cy, w, h = (labels[:, 1:] * size).T
    return np.round(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)).astype(int)


def test_labels_are_the_true_full_extent_and_shapes_stay_mostly_visible():
    size, exact, occluded, sizes = 128, 0, 0, []
    for index in range(60):
        _, labels, owner, areas = render_image(np.random.default_rng([0, 0, index]), size, 2, 8, return_owner=True)
        boxes = _pixel_boxes(labels, size)
        visible = np.bincount(owner[owner >= 0], minlength=len(labels))
        # MIN_VISIBLE_FRACTION = 0.5: no shape more than half hidden, and every drawn shape is labelled
        assert np.all(visible >= 0.5 * areas) and owner.max() == len(labels) - 1
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            ys, xs = np.nonzero(owner == k)
            # visible pixels lie inside the label box: the box is the full extent, hidden parts included
            assert x1 <= xs.min() and xs.max() < x2 and y1 <= ys.min() and ys.max() < y2
            if visible[k] == areas[k]:  # unoccluded: the box is exactly the pixel extent
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
                exact += 1
            else:
                occluded += 1
            sizes.append(max(x2 - x1, y2 - y1))
    assert exact > 50 and occluded > 5  # both cases were exercised
    # MIN_OBJECT_PX = 10 (+1 for rasterisation) up to MAX_OBJECT_FRACTION * 128 = 64 px (+2)
    assert 8 <= min(sizes) <= 16 and 48 <= max(sizes) <= 66


def test_class_frequencies_and_empty_images_follow_the_weights():
    counts = np.zeros(len(CLASS_NAMES))
    empty = 0
    images = 400
    for index in range(images):
        _, labels = render_image(np.random.default_rng([5, 0, index]), 64, 1, 4)
        counts += np.bincount(labels[:, 0].astype(int), minlength=len(CLASS_NAMES))
        empty += len(labels) == 0
    frequencies = counts / counts.sum()
    # ~1000 boxes: each frequency within 0.05 of its weight (3+ standard errors), order of the weights kept
    assert np.abs(frequencies - np.array(CLASS_WEIGHTS)).max() < 0.05
    assert empty >= EMPTY_IMAGE_FRACTION * images / 3


@pytest.mark.parametrize("block, fragment", [
    ({"train_imgs": 3}, "unknown key 'generate.train_imgs'"),
    ({"seed": "zero"}, "'generate.seed' expects an integer"),
    ({"min_objects": 5, "max_objects": 2}, "min_objects <= generate.max_objects"),
])
def test_generate_block_errors(block, fragment):
    with pytest.raises(SyntheticDataError, match=fragment):
        check_params(block, "shapes.yaml")


def test_yaml_with_generate_block_writes_and_loads(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"path": "ds", "train": "images/train", "val": "images/val",
                                                      "nc": 5, "names": list(CLASS_NAMES), "generate": TINY}))
    data = load_data_yaml(tmp_path / "s.yaml")
    assert (tmp_path / "ds" / "manifest.json").is_file()
    entries = scan_split(data, "train", progress=False)
    label_rows = sum(len(p.read_text().splitlines()) for p in (tmp_path / "ds" / "labels" / "train").glob("*.txt"))
    assert len(entries.paths) == 6 and sum(len(l) for l in entries.labels) == label_rows
    stats = dataset_statistics(data, "train", img_size=64)
    # 3 anchors * ((64/8)^2 + (64/16)^2 + (64/32)^2) = 3 * (64 + 16 + 4) = 252 cells per image
    assert stats["cells_per_image"] == 252 and stats["boxes"] == label_rows
    assert stats["noobject_cells"] == 252 * 6 - label_rows
    assert sum(stats["sizes"].values()) == label_rows and sum(stats["per_class"].values()) == label_rows
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"path": "ds", "train": "images/train", "val": "images/val",
                                                        "names": ["a", "b", "c", "d", "e"], "generate": TINY}))
    with pytest.raises(DataError, match="'names' must be"):
        load_data_yaml(tmp_path / "bad.yaml")


def test_cells_per_image_at_256_is_4032():
    # 3 * (32^2 + 16^2 + 8^2) = 3 * 1344 = 4032, the figure the README quotes
    assert sum(3 * (256 // s) ** 2 for s in (8, 16, 32)) == 4032


@pytest.mark.parametrize("name", ["shapes.yaml", "coco.yaml", "voc.yaml"])
def test_shipped_yamls_are_valid(name, monkeypatch):
    content = yaml.safe_load((REPO / "data" / name).read_text())
    if "generate" in content:
        # check the block and names without writing the full dataset
        params = check_params(content["generate"], name)
        assert params["img_size"] == 256 and content["names"] == list(CLASS_NAMES)
        monkeypatch.setattr("yolov3.synthetic.ensure_shapes_dataset", lambda *a, **k: False)
    data = load_data_yaml(REPO / "data" / name)
    assert data["nc"] == len(data["names"]) and data["train"] and data["val"]
    assert Path(data["path"]).parent == (REPO / "datasets").resolve()


def test_manifest_that_is_not_utf8_regenerates_the_dataset(tmp_path):
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is True
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe\x00{")  # damaged: used to end in a UnicodeDecodeError
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is True  # an unknown dataset: made again
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is False


def test_a_new_generator_version_regenerates_and_an_interrupted_run_never_looks_finished(tmp_path, monkeypatch):
    from yolov3 import synthetic

    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is True
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is True  # drawn by older code: drawn again
    assert json.loads((tmp_path / "manifest.json").read_text())["generator_version"] == synthetic.GENERATOR_VERSION

    real_generate = synthetic.generate_split

    def dies_half_way(root, split, params, progress=True):
        shutil.rmtree(Path(root) / "images" / split)
        raise RuntimeError("killed")

    monkeypatch.setattr(synthetic, "generate_split", dies_half_way)
    with pytest.raises(RuntimeError):
        ensure_shapes_dataset(tmp_path, {**TINY, "train_images": 3}, progress=False)
    monkeypatch.setattr(synthetic, "generate_split", real_generate)
    assert not (tmp_path / "manifest.json").exists()
    assert ensure_shapes_dataset(tmp_path, TINY, progress=False) is True  # the old parameters: rebuilt, not trusted
    assert len(list((tmp_path / "images" / "train").glob("*.jpg"))) == TINY["train_images"]


def test_object_counts_reach_max_objects_and_about_one_image_in_twenty_is_empty():
    counts = [len(render_image(np.random.default_rng([0, 0, i]), 128, 3, 3)[1]) for i in range(30)]
    assert max(counts) <= 3 and sum(c == 3 for c in counts) >= 20  # min == max objects: that many, or empty
    empty = sum(len(render_image(np.random.default_rng([5, 0, i]), 64, 1, 4)[1]) == 0 for i in range(400))
    # binomial(400, .05): mean 20, sd 4.4 -> well inside 8..35; a fraction of .5 would give ~200
    assert 8 <= empty <= 35
