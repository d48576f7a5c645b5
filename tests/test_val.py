"""val.py: its mAP agrees with pycocotools on the files it writes; errors for misfit weights and data."""
import json
import sys
from pathlib import Path

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
