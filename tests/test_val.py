"""val.py: its mAP agrees with pycocotools on the files it writes; errors for misfit weights and data."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import val  # noqa: E402


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
    """--no-optimize runs the plain fused channels_last model; optimize_for_inference's paths give the same numbers."""
    import yolov3.model as model_module

    used = []
    original = model_module.Darknet.optimize_for_inference
    monkeypatch.setattr(model_module.Darknet, "optimize_for_inference",
                        lambda self, *a, **k: used.append(1) or original(self, *a, **k))
    results = {}
    for flags in ([], ["--no-optimize"]):
        name = "plain" if flags else "optimized"
        code, _, _ = run(["--data", easy_data, "--weights", trained_checkpoint, "--project", tmp_path, "--name", name,
                          "--img-size", "128", "--workers", "0", *flags], capsys)
        assert code == 0
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert used == [1]  # only the default run optimised
    for key in ("precision", "recall", "mAP50", "mAP50_95"):
        assert results["plain"][key] == pytest.approx(results["optimized"][key], abs=1e-4), key
