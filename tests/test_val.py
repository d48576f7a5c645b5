"""val.py: its mAP agrees with pycocotools on the files it writes; errors for misfit weights and data."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import val  # noqa: E402
from conftest import record_prepared_models  # noqa: E402


def run(args, capsys):
    code = val.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_val_matches_cocoeval_on_its_own_json(easy_data, trained_checkpoint, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # validate on the train split the model was fitted to (a meaningful, non-trivial mAP) via a YAML whose val
    # split points at the training images
    config = yaml.safe_load(easy_data.read_text())
    config.pop("generate")
    config["path"] = str(easy_data.parent / "shapes")
    config["val"] = "images/train"
    data_yaml = tmp_path / "trainval.yaml"
    data_yaml.write_text(yaml.safe_dump(config))
    code, out, _ = run(["--data", data_yaml, "--weights", trained_checkpoint, "--save-json", "--project", tmp_path,
                        "--img-size", "128", "--workers", "0"], capsys)
    assert code == 0
    run_dir = tmp_path / "exp"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.3 < metrics["mAP50"] <= 1.0
    gt = COCO(str(run_dir / "annotations.json"))
    assert sorted(gt.getImgIds()) == list(range(1, metrics["num_images"] + 1))  # train_00000.jpg...: numbered
    assert sorted(gt.getCatIds()) == [1, 2, 3, 4, 5]  # not COCO's classes: class + 1
    dt = gt.loadRes(str(run_dir / "predictions.json"))
    evaluator = COCOeval(gt, dt, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert metrics["mAP50_95"] == pytest.approx(evaluator.stats[0], abs=1e-3)
    assert metrics["mAP50"] == pytest.approx(evaluator.stats[1], abs=1e-3)
    # the table and the summary line
    assert "all" in out and "mAP@.5:.95" in out and "circle" in out
    assert f"mAP@.5 {metrics['mAP50']:.3f}" in out
    for name in ("PR_curve.png", "F1_curve.png", "confusion_matrix.png"):
        assert (run_dir / name).is_file()


def test_val_flag_defaults_are_the_training_runs_validation_settings():
    from yolov3.config import ValConfig

    # val.py must score a checkpoint as train.py's own validation did, or the two mAPs of one model differ
    args = val.parse_args(["--data", "d.yaml", "--weights", "w.pt"])
    defaults = ValConfig()
    assert (args.conf_thres, args.iou_thres, args.max_det) == (defaults.conf_thres, defaults.iou_thres,
                                                              defaults.max_det)


def test_wrong_class_count_is_a_one_line_error(easy_data, trained_checkpoint, tmp_path, capsys):
    config = yaml.safe_load(easy_data.read_text())
    config.pop("generate")
    config["path"] = str(easy_data.parent / "shapes")
    config["nc"] = 3
    config["names"] = ["a", "b", "c"]
    data_yaml = tmp_path / "three.yaml"
    data_yaml.write_text(yaml.safe_dump(config))
    code, _, err = run(["--data", data_yaml, "--weights", trained_checkpoint, "--project", tmp_path], capsys)
    assert code == 2
    assert "predicts 5 classes" in err and "nc 3" in err and len(err.strip().splitlines()) == 1


def test_missing_test_split_and_empty_split(easy_data, trained_checkpoint, tmp_path, capsys):
    code, _, err = run(["--data", easy_data, "--weights", trained_checkpoint, "--task", "test",
                        "--project", tmp_path], capsys)
    assert code == 2 and "has no 'test' split" in err
    config = yaml.safe_load(easy_data.read_text())
    config.pop("generate")
    config["path"] = str(tmp_path)
    (tmp_path / "images" / "empty").mkdir(parents=True)
    config["val"] = "images/empty"
    data_yaml = tmp_path / "empty.yaml"
    data_yaml.write_text(yaml.safe_dump(config))
    code, _, err = run(["--data", data_yaml, "--weights", trained_checkpoint, "--project", tmp_path], capsys)
    assert code == 2 and "val" in err and "Traceback" not in err


def test_weights_that_do_not_fit_the_cfg(easy_data, tmp_path, capsys):
    from yolov3.model import Darknet

    Darknet(str(REPO / "cfg" / "yolov3-tiny.cfg"), num_classes=5).save_darknet_weights(tmp_path / "t.weights")
    code, _, err = run(["--data", easy_data, "--weights", tmp_path / "t.weights", "--cfg",
                        REPO / "cfg" / "yolov3-small.cfg", "--project", tmp_path], capsys)
    assert code == 2 and "floats" in err and "Traceback" not in err


def test_same_count_different_names_is_refused(easy_data, trained_checkpoint, tmp_path, capsys):
    config = yaml.safe_load(easy_data.read_text())
    config.pop("generate")
    config["path"] = str(easy_data.parent / "shapes")
    config["names"] = list(reversed(config["names"]))
    data_yaml = tmp_path / "reversed.yaml"
    data_yaml.write_text(yaml.safe_dump(config))
    code, _, err = run(["--data", data_yaml, "--weights", trained_checkpoint, "--project", tmp_path], capsys)
    assert code == 2 and "different classes or order" in err


@pytest.mark.parametrize("flags, message", [
    (["--iou-thres", "1.5"], "--iou-thres must be in (0, 1]"),
    (["--conf-thres", "-1"], "--conf-thres must be in [0, 1]"),
    (["--img-size", "100"], "--img-size must be a positive multiple of the model's stride 32, got 100"),
    (["--max-det", "0"], "--max-det must be at least 1, got 0"),
])
def test_bad_thresholds_and_sizes(easy_data, trained_checkpoint, tmp_path, capsys, flags, message):
    code, _, err = run(["--data", easy_data, "--weights", trained_checkpoint, "--project", tmp_path, *flags], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_corrupt_checkpoint(easy_data, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run(["--data", easy_data, "--weights", broken, "--project", tmp_path], capsys)
    assert code == 2 and "cannot be read as a PyTorch checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--batch-size", "-4"], "--batch-size must be at least 1, got -4"),
    (["--workers", "-1"], "--workers must be 0 (load in this process) or more, got -1"),
    (["--img-size", "100000"], "--img-size must be at most 8192 (a positive multiple of the model's stride), "
                               "got 100000"),
])
def test_bad_loader_flags_are_one_line_errors(easy_data, trained_checkpoint, tmp_path, capsys, monkeypatch, flags,
                                              message):
    # 100000 is a multiple of 32 and would letterbox every image to 30 GB: never let a regression get that far
    monkeypatch.setattr(val, "create_dataloader", lambda *a, **k: pytest.fail("the loader was built"))
    code, _, err = run(["--data", easy_data, "--weights", trained_checkpoint, "--project", tmp_path / "out", *flags],
                       capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def two_class_data(root: Path) -> Path:
    """A 2-class data YAML over two grey 64x64 images with one box each."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for index in range(2):
        cv2.imwrite(str(root / "images" / f"{index}.jpg"), np.full((64, 64, 3), 60 + 80 * index, np.uint8))
        (root / "labels" / f"{index}.txt").write_text(f"{index} 0.5 0.5 0.4 0.3\n")
    data_yaml = root / "two.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "nc": 2,
                                         "names": ["cat", "dog"]}))
    return data_yaml


def test_darknet_weights_take_the_class_count_from_the_data(tmp_path, capsys):
    # a .weights file does not record its class count: the heads are built for the data's nc, not the cfg's 5
    from yolov3.model import Darknet

    cfg = REPO / "cfg" / "yolov3-small.cfg"
    Darknet(str(cfg), num_classes=2).save_darknet_weights(tmp_path / "two.weights")
    data_yaml = two_class_data(tmp_path / "data")
    code, out, err = run(["--data", data_yaml, "--weights", tmp_path / "two.weights", "--cfg", cfg,
                          "--img-size", "64", "--workers", "0", "--project", tmp_path / "out"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "exp" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and [row["name"] for row in metrics["per_class"]] == ["cat", "dog"]
    # weights of the cfg's own 5 classes against the 2-class data: the class-count message, not a float count
    Darknet(str(cfg)).save_darknet_weights(tmp_path / "five.weights")
    code, _, err = run(["--data", data_yaml, "--weights", tmp_path / "five.weights", "--cfg", cfg,
                        "--project", tmp_path / "out"], capsys)
    assert code == 2 and "predicts 5 classes" in err and "nc 2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("failure, code", [("error", 2), ("ctrl-c", 130)])
def test_a_failed_evaluation_leaves_no_run_folder(easy_data, trained_checkpoint, tmp_path, capsys, monkeypatch,
                                                   failure, code):
    from yolov3.data import DataError

    def fail(*args, **kwargs):
        raise KeyboardInterrupt if failure == "ctrl-c" else DataError("images/val/0.jpg: cannot be read")

    monkeypatch.setattr(val, "evaluate", fail)
    try:
        got, _, err = run(["--data", easy_data, "--weights", trained_checkpoint, "--project", tmp_path / "out",
                           "--workers", "0"], capsys)
    except KeyboardInterrupt:
        pytest.fail("val.main let Ctrl-C out")
    assert got == code and "Traceback" not in err
    assert ("interrupted" if failure == "ctrl-c" else "error: images/val/0.jpg: cannot be read") in err
    assert list((tmp_path / "out").glob("*")) == []


def test_no_optimize_gives_the_same_metrics(easy_data, trained_checkpoint, tmp_path, capsys, monkeypatch):
    """--no-optimize runs the plain fused channels_last model; optimize_for_inference's paths give the same numbers;
    a job too short for them to pay (4 images: 4 calls at batch 1) runs the plain model as --no-optimize does."""
    from yolov3 import fastconv
    from yolov3.fastconv import FastConvLayer
    from yolov3.layers import ConvLayer

    prepared = record_prepared_models(monkeypatch, val)
    monkeypatch.setenv("YOLOV3_PREP_CACHE", str(tmp_path / "prep-cache.json"))
    monkeypatch.setattr(fastconv, "_MEASURED_METHODS", {})
    results, opened = {}, []
    for name, flags, min_calls in (("short", [], 5), ("optimized", [], 1), ("plain", ["--no-optimize"], 1)):
        # the 4-call job too short for any fast path, then long enough to measure every conv's paths on its own calls
        monkeypatch.setattr(fastconv, "USE_KNOWN_MIN_CALLS", min_calls)
        monkeypatch.setattr(fastconv, "JOB_MIN_CALLS", min_calls)
        monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
        code, _, _ = run(["--data", easy_data, "--weights", trained_checkpoint, "--project", tmp_path, "--name", name,
                          "--img-size", "128", "--workers", "0", "--batch-size", "1", *flags], capsys)
        assert code == 0
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        opened.append(fastconv._PREP_CACHE is not None)
    fast_layers = [sum(isinstance(m, FastConvLayer) for m in model.module_list) for model in prepared]
    convs = sum(isinstance(m, ConvLayer) for m in prepared[2].module_list)
    assert fast_layers == [0, convs, 0] and convs > 0  # every conv on the fast path, in the long job only
    assert opened == [False, True, False]  # the plain runs never opened the cache; the measuring run wrote it
    assert json.loads((tmp_path / "prep-cache.json").read_text())["choices"]
    for key in ("precision", "recall", "mAP50", "mAP50_95"):
        assert results["plain"][key] == results["short"][key], key
        assert results["plain"][key] == pytest.approx(results["optimized"][key], abs=1e-4), key


def test_bf16_is_recorded_and_scores_close_to_float32(easy_data, trained_checkpoint, tmp_path, capsys, monkeypatch):
    prepared = record_prepared_models(monkeypatch, val)
    results = {}
    for name, flags in (("fp32", ["--no-optimize"]), ("bf16", ["--bf16"])):
        code, out, _ = run(["--data", easy_data, "--weights", trained_checkpoint, "--project", tmp_path, "--name",
                            name, "--img-size", "128", "--workers", "0", "--threads", "1", *flags], capsys)
        assert code == 0 and "threads: 1 (--threads)" in out
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert "precision: bf16 autocast" in out or "warning: --bf16 on a CPU without native bf16" in out
    assert yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())["bf16"] is True
    assert results["bf16"]["mAP50"] == pytest.approx(results["fp32"]["mAP50"], abs=0.1)
    assert [m.inference_dtype for m in prepared] == [None, torch.bfloat16]  # what ran: float32, then bf16


# --------------------------------------------------------------------------------------------------------------------
# COCO-compatible --save-json, --save-txt, --single-cls
COCO_MISSING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # the 10 of 1..90 that COCO 2017 never annotated
COCO_IDS = [i for i in range(1, 91) if i not in COCO_MISSING_IDS]  # category id of COCO class 0..79
SHAPE_TO_COCO = [0, 11, 25, 44, 79]  # the 5 shape classes stand in for these COCO classes (ids 1, 13, 28, 50, 90)


def coco_class_checkpoint(trained_checkpoint, path):
    """The 5-class trained model as an 80-class COCO model: shape class k answers as COCO class SHAPE_TO_COCO[k],
    every other class's logit is -20 (probability 2e-9, below any threshold)."""
    import torch

    from yolov3.model import Darknet
    from yolov3.weights import read_checkpoint

    source = read_checkpoint(trained_checkpoint)
    model = Darknet(REPO / "cfg" / "yolov3-small.cfg", num_classes=80)
    state = model.state_dict()
    old = source["model"]
    for key, value in old.items():
        if state[key].shape == value.shape:
            state[key] = value.clone()
    parameter_names = {id(p): n for n, p in model.named_parameters()}
    for conv in model.head_convs:
        prefix = parameter_names[id(conv.weight)][: -len("weight")]
        old_weight, old_bias = old[prefix + "weight"], old[prefix + "bias"]
        new_weight, new_bias = torch.zeros_like(state[prefix + "weight"]), torch.full_like(state[prefix + "bias"], -20.0)
        for anchor in range(3):
            for new_row, old_row in [(r, r) for r in range(5)] + [(5 + c, 5 + k) for k, c in enumerate(SHAPE_TO_COCO)]:
                new_weight[anchor * 85 + new_row] = old_weight[anchor * 10 + old_row]
                new_bias[anchor * 85 + new_row] = old_bias[anchor * 10 + old_row]
        state[prefix + "weight"], state[prefix + "bias"] = new_weight, new_bias
    names = yaml.safe_load((REPO / "data" / "coco.yaml").read_text())["names"]
    torch.save({"model": state, "cfg_text": model.cfg_text, "names": names, "config": source["config"]}, path)
    return path, names


def numeric_dataset(easy_data, tmp_path, names, class_map):
    """The easy training images renamed to COCO-style numeric file names, labels with classes mapped."""
    root = easy_data.parent / "shapes"
    images, labels = tmp_path / "coco" / "images" / "val", tmp_path / "coco" / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for k, image in enumerate(sorted((root / "images" / "train").glob("*.jpg"))):
        stem = f"{397133 + 1000 * k:012d}"  # as COCO names its files: 000000397133.jpg is image 397133
        (images / f"{stem}.jpg").write_bytes(image.read_bytes())
        rows = [ln.split() for ln in (root / "labels" / "train" / f"{image.stem}.txt").read_text().splitlines()]
        (labels / f"{stem}.txt").write_text("".join(f"{class_map[int(r[0])]} {' '.join(r[1:])}\n" for r in rows))
    data_yaml = tmp_path / "coco.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(tmp_path / "coco"), "train": "images/val",
                                         "val": "images/val", "names": names}))
    return data_yaml, images, labels


def ground_truth_from_labels(images, labels):
    """A COCO ground-truth dict built straight from the YOLO label files (not through val.py or yolov3.metrics)."""
    dataset = {"images": [], "annotations": [], "categories": [{"id": i, "name": str(i)} for i in COCO_IDS]}
    for image in sorted(images.glob("*.jpg")):
        height, width = cv2.imread(str(image)).shape[:2]
        image_id = int(image.stem)
        dataset["images"].append({"id": image_id, "file_name": image.name, "width": width, "height": height})
        for row in (labels / f"{image.stem}.txt").read_text().split("\n"):
            if not row.strip():
                continue
            cls, cx, cy, w, h = (float(v) for v in row.split())
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, "image_id": image_id,
                                           "category_id": COCO_IDS[int(cls)], "bbox": box,
                                           "area": box[2] * box[3], "iscrowd": 0})
    return dataset


def cocoeval_stats(ground_truth, predictions_json):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = ground_truth
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(str(predictions_json)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def test_save_json_uses_coco_ids_that_an_independent_ground_truth_scores(easy_data, trained_checkpoint, tmp_path,
                                                                          capsys):
    """What the official instances_val2017.json needs: image ids from the numeric file names and category ids
    1..90 for the 80 COCO classes; pycocotools on a ground truth built from the label files alone gives val.py's
    mAP. --save-txt --save-conf rows hold the same detections."""
    pytest.importorskip("pycocotools")
    weights, names = coco_class_checkpoint(trained_checkpoint, tmp_path / "coco80.pt")
    data_yaml, images, labels = numeric_dataset(easy_data, tmp_path, names, SHAPE_TO_COCO)
    code, out, err = run(["--data", data_yaml, "--weights", weights, "--save-json", "--save-txt", "--save-conf",
                          "--project", tmp_path / "val", "--workers", "0"], capsys)
    assert code == 0, err
    assert "image ids from the file names, COCO category ids 1..90" in out
    run_dir = tmp_path / "val" / "exp"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["mAP50"] > 0.3
    predictions = json.loads((run_dir / "predictions.json").read_text())
    assert {p["image_id"] for p in predictions} <= {int(p.stem) for p in images.glob("*.jpg")}
    used = {p["category_id"] for p in predictions if p["score"] > 0.01}
    assert used and used <= {COCO_IDS[c] for c in SHAPE_TO_COCO} and used != set(range(1, 6))
    stats = cocoeval_stats(ground_truth_from_labels(images, labels), run_dir / "predictions.json")
    assert metrics["mAP50_95"] == pytest.approx(stats[0], abs=2e-3)
    assert metrics["mAP50"] == pytest.approx(stats[1], abs=2e-3)

    # --save-txt --save-conf: per image, the JSON's detections as normalised rows with the score
    stem = next(p["image_id"] for p in predictions if p["score"] > 0.3)
    height, width = cv2.imread(str(images / f"{stem:012d}.jpg")).shape[:2]
    rows = [[float(v) for v in ln.split()] for ln in (run_dir / "labels" / f"{stem:012d}.txt").read_text().splitlines()]
    mine = sorted((p for p in predictions if p["image_id"] == stem), key=lambda p: -p["score"])
    assert len(rows) == len(mine)
    for row, p in zip(sorted(rows, key=lambda r: -r[5]), mine):
        x, y, w, h = p["bbox"]
        assert COCO_IDS[int(row[0])] == p["category_id"] and abs(row[5] - p["score"]) < 1e-4
        assert np.allclose(row[1:5], [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height], atol=2e-6)
    assert len(list((run_dir / "labels").glob("*.txt"))) == len(list(images.glob("*.jpg")))  # empty ones too


def test_save_json_takes_the_ids_of_the_converted_coco_json(tmp_path, capsys):
    """Data converted by yolov3.convert from a COCO JSON with arbitrary file names and ids: val.py writes the
    original ids (from the converter's coco_ids.json), so that JSON scores the predictions directly."""
    pytest.importorskip("pycocotools")
    import torch

    from yolov3.convert import coco_to_yolo
    from yolov3.model import Darknet

    images = tmp_path / "set" / "images" / "val"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"},
                                                             {"id": 12, "name": "c"}]}
    for k, (name, image_id) in enumerate([("left.jpg", 501), ("right.jpg", 777), ("top.jpg", 9)]):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        coco["images"].append({"id": image_id, "file_name": name, "width": 64, "height": 64})
        coco["annotations"].append({"id": k + 1, "image_id": image_id, "category_id": [3, 7, 12][k],
                                    "bbox": [10, 12, 30, 20], "area": 600, "iscrowd": 0})
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    coco_to_yolo(tmp_path / "instances.json", tmp_path / "set" / "labels" / "val")
    assert (tmp_path / "set" / "labels" / "val" / "coco_ids.json").is_file()
    data_yaml = tmp_path / "set.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(tmp_path / "set"), "train": "images/val", "val": "images/val",
                                         "names": ["a", "b", "c"]}))
    torch.manual_seed(0)  # the random weights must not depend on which tests ran before
    model = Darknet(REPO / "cfg" / "yolov3-small.cfg", num_classes=3)  # random weights: boxes everywhere
    torch.save({"model": model.state_dict(), "cfg_text": model.cfg_text, "names": ["a", "b", "c"]},
               tmp_path / "random.pt")
    code, out, err = run(["--data", data_yaml, "--weights", tmp_path / "random.pt", "--img-size", "64",
                          "--save-json", "--project", tmp_path / "val", "--workers", "0"], capsys)
    assert code == 0, err
    assert f"image and category ids from {tmp_path / 'set' / 'labels' / 'val' / 'coco_ids.json'}" in out
    predictions = json.loads((tmp_path / "val" / "exp" / "predictions.json").read_text())
    assert {p["image_id"] for p in predictions} == {501, 777, 9}
    assert {p["category_id"] for p in predictions} == {3, 7, 12}
    from pycocotools.coco import COCO

    gt = COCO(str(tmp_path / "instances.json"))
    gt.loadRes(str(tmp_path / "val" / "exp" / "predictions.json"))  # the original JSON takes them as they are


def test_single_cls_scores_boxes_only(easy_data, trained_checkpoint, tmp_path, capsys):
    """The 80-class stand-in predicts other class indices than the 5-class data's labels: refused as it is, and
    under --single-cls scored exactly like the 5-class model (boxes and scores are the same)."""
    weights, _ = coco_class_checkpoint(trained_checkpoint, tmp_path / "coco80.pt")
    config = yaml.safe_load(easy_data.read_text())
    config.pop("generate")
    config.update(path=str(easy_data.parent / "shapes"), val="images/train")
    data_yaml = tmp_path / "trainval.yaml"
    data_yaml.write_text(yaml.safe_dump(config))
    common = ["--data", data_yaml, "--project", tmp_path / "val", "--workers", "0"]
    code, _, err = run(common + ["--weights", weights], capsys)
    assert code == 2 and "predicts 80 classes but" in err
    results = []
    for model in (weights, trained_checkpoint):
        code, out, err = run(common + ["--weights", model, "--single-cls", "--save-json"], capsys)
        assert code == 0, err
        run_dir = sorted((tmp_path / "val").iterdir(), key=lambda p: p.stat().st_mtime)[-1]
        results.append(json.loads((run_dir / "metrics.json").read_text()))
        assert [row["name"] for row in results[-1]["per_class"]] == ["object"]
        assert {p["category_id"] for p in json.loads((run_dir / "predictions.json").read_text())} == {1}
    assert results[0]["mAP50"] == pytest.approx(results[1]["mAP50"], abs=1e-6) and results[0]["mAP50"] > 0.3
    assert results[0]["num_instances"] == results[1]["num_instances"] > 0


def test_save_conf_needs_save_txt(easy_data, trained_checkpoint, tmp_path, capsys):
    code, _, err = run(["--data", easy_data, "--weights", trained_checkpoint, "--save-conf",
                        "--project", tmp_path], capsys)
    assert code == 2 and err.strip() == "error: --save-conf adds the score to --save-txt rows: give --save-txt too"
    assert not any(tmp_path.iterdir())


def test_coco_ids_helpers():
    from yolov3.coco_ids import COCO80_TO_91, is_coco_classes, numeric_image_ids

    assert COCO80_TO_91 == COCO_IDS
    assert numeric_image_ids(["a/000000397133.jpg", "b/42.png"]) == [397133, 42]
    assert numeric_image_ids(["1.jpg", "x.jpg"]) is None  # one name is not a number: number them all instead
    assert numeric_image_ids(["a/7.jpg", "b/007.jpg"]) is None  # two files, one id
    coco_json = yaml.safe_load((REPO / "data" / "coco.yaml").read_text())["names"]
    spelt = {"motorcycle": "motorbike", "airplane": "aeroplane", "couch": "sofa", "potted plant": "pottedplant",
             "dining table": "diningtable", "tv": "tvmonitor"}  # Darknet's own coco.names
    darknet = [spelt.get(name, name) for name in coco_json]
    assert darknet != coco_json and darknet[3] == "motorbike"
    assert is_coco_classes(darknet) and is_coco_classes(coco_json) and is_coco_classes([n.upper() for n in darknet])
    assert not is_coco_classes(darknet[::-1]) and not is_coco_classes(darknet[:79])


def test_a_train_run_folder_is_read_for_its_best_pt(easy_data, trained_checkpoint, tmp_path, capsys):
    """--weights runs/train/exp: its weights/best.pt (or best.pt at the top of a run of the older layout)."""
    import shutil

    for layout, where in (("new", "weights/best.pt"), ("old", "best.pt")):
        (tmp_path / layout / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trained_checkpoint, tmp_path / layout / where)
    results = {}
    for weights in (trained_checkpoint, tmp_path / "new", tmp_path / "old"):
        code, _, err = run(["--data", easy_data, "--weights", weights, "--project", tmp_path / "val", "--name",
                            Path(weights).stem, "--workers", "0"], capsys)
        assert code == 0, err
        results[weights] = json.loads((tmp_path / "val" / Path(weights).stem / "metrics.json").read_text())["mAP50"]
    assert len(set(results.values())) == 1
    (tmp_path / "empty").mkdir()
    code, _, err = run(["--data", easy_data, "--weights", tmp_path / "empty", "--project", tmp_path / "val"], capsys)
    assert code == 2 and err.strip() == (f"error: {tmp_path / 'empty'}: a folder, but neither "
                                         f"{tmp_path / 'empty' / 'weights' / 'best.pt'} nor "
                                         f"{tmp_path / 'empty' / 'best.pt'} is there (give a train.py run folder or "
                                         "a weights file)")


def test_max_det_reaches_the_evaluation_and_single_class_ids_of_converted_coco(easy_data, trained_checkpoint,
                                                                               tmp_path, monkeypatch):
    from yolov3.convert import coco_to_yolo

    class Stop(Exception):
        pass

    seen = []

    def capture(model, loader, names, device, options, records=None):
        seen.append(options)
        raise Stop

    monkeypatch.setattr(val, "evaluate", capture)
    with pytest.raises(Stop):
        val.main(["--data", str(easy_data), "--weights", str(trained_checkpoint), "--max-det", "7", "--no-optimize",
                  "--project", str(tmp_path / "val"), "--workers", "0"])
    assert seen[0].max_det == 7
    images = tmp_path / "set" / "images" / "val"
    images.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"},
                                                             {"id": 12, "name": "c"}]}
    for k, (name, image_id) in enumerate([("left.jpg", 501), ("right.jpg", 777), ("top.jpg", 9)]):
        cv2.imwrite(str(images / name), np.zeros((64, 64, 3), np.uint8))
        coco["images"].append({"id": image_id, "file_name": name, "width": 64, "height": 64})
        coco["annotations"].append({"id": k + 1, "image_id": image_id, "category_id": [3, 7, 12][k],
                                    "bbox": [10, 12, 30, 20]})
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    coco_to_yolo(tmp_path / "instances.json", tmp_path / "set" / "labels" / "val")
    records = [{"path": str(images / name)} for name in ("left.jpg", "right.jpg", "top.jpg")]
    image_ids, categories, _ = val.coco_ids(records, ["object"], single_cls=True)
    assert image_ids == [501, 777, 9] and categories is None  # one class: its category id is 1


def test_the_coco_id_record_is_found_from_labels_in_a_subfolder_and_checked(tmp_path):
    from yolov3.coco_ids import find_ids_record, read_ids_record, write_ids_record

    write_ids_record(tmp_path / "labels", "inst.json", [3], {"val2017/a": 5})
    assert find_ids_record(tmp_path / "labels" / "val2017" / "a.txt") == tmp_path / "labels" / "coco_ids.json"
    (tmp_path / "bad.json").write_text('{"image_ids": {}}')
    with pytest.raises(ValueError, match="not a COCO id record"):
        read_ids_record(tmp_path / "bad.json")


def test_saved_scores_keep_five_decimals():
    from yolov3.boxes import yolo_label_rows

    rows = yolo_label_rows(torch.tensor([[10.0, 20, 30, 60, 0.123456, 0]]), 200, 100, with_score=True)
    assert rows == "0 0.100000 0.400000 0.100000 0.400000 0.12346\n"


def test_coco_id_records_with_other_class_counts_or_missing_images(tmp_path, capsys):
    from yolov3.coco_ids import write_ids_record

    write_ids_record(tmp_path / "labels", "i.json", [3, 7, 12], {"a": 5})
    with pytest.raises(val.ValError, match="3 category ids for 2 classes"):
        val.coco_ids([{"path": str(tmp_path / "images" / "a.jpg")}], ["x", "y"])
    write_ids_record(tmp_path / "other" / "labels", "i.json", [3, 7], {"a": 5})
    records = [{"path": str(tmp_path / "other" / "images" / f"{n}.jpg")} for n in ("a", "b")]
    image_ids, categories, _ = val.coco_ids(records, ["x", "y"])
    assert image_ids == [1, 2] and categories is None
    assert "does not list every image" in capsys.readouterr().err


def test_the_largest_img_size_is_allowed():
    from yolov3.config import ConfigError

    val.check_flags(val.parse_args(["--data", "d.yaml", "--weights", "w.pt", "--img-size", "8192"]))
    with pytest.raises(ConfigError):
        val.check_flags(val.parse_args(["--data", "d.yaml", "--weights", "w.pt", "--img-size", "8224"]))


def test_val_and_detect_defaults_the_docs_give():
    import detect
    from yolov3.config import ConfigError

    args = val.parse_args(["--data", "d.yaml", "--weights", "w.pt"])
    assert (args.project, args.threads) == ("runs/val", "auto")
    val.check_flags(val.parse_args(["--data", "d.yaml", "--weights", "w.pt", "--batch-size", "1"]))
    with pytest.raises(ConfigError):
        val.check_flags(val.parse_args(["--data", "d.yaml", "--weights", "w.pt", "--batch-size", "0"]))
    args = detect.parse_args(["--weights", "w.pt", "--source", "x.jpg"])
    assert (args.project, args.conf_thres, args.max_det, args.threads) == ("runs/detect", 0.25, 300, "auto")
    detect.check_flags(detect.parse_args(["--weights", "w.pt", "--source", "x.jpg", "--img-size", "8192"]))
    with pytest.raises(ConfigError, match="--img-size must be at most 8192"):
        detect.check_flags(detect.parse_args(["--weights", "w.pt", "--source", "x.jpg", "--img-size", "8224"]))
