"""train.py end to end on a tiny generated dataset: smoke run, exact resume, DDP (gloo), errors, NaN handling."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402

TINY_ARGS = ["--epochs", "2", "--batch-size", "4", "--img-size", "64", "--workers", "0",
             "train.nominal_batch=8", "train.warmup_epochs=0.5", "val.conf_thres=0.01"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """12 train / 4 val generated images; one train image's labels are emptied so it holds no object."""
    root = tmp_path_factory.mktemp("tiny")
    data_yaml = root / "tiny.yaml"
    data_yaml.write_text(yaml.safe_dump({
        "path": "shapes", "train": "images/train", "val": "images/val", "nc": 5,
        "names": ["circle", "rectangle", "triangle", "star", "cross"],
        "generate": {"train_images": 12, "val_images": 4, "img_size": 64, "min_objects": 1, "max_objects": 3,
                     "seed": 0}}))
    from yolov3.data import load_data_yaml

    load_data_yaml(data_yaml)  # generates the images
    labels = sorted((root / "shapes" / "labels" / "train").glob("*.txt"))
    labels[0].write_text("")  # an image with no objects
    return data_yaml


def run_train(tiny_data, project, name, *extra):
    return train.main(["--data", str(tiny_data), "--project", str(project), "--name", name, *TINY_ARGS, *extra])


def read_rows(run_dir):
    with open(run_dir / "results.csv") as fh:
        return list(csv.DictReader(fh))


def test_two_epoch_smoke_run(tiny_data, tmp_path):
    assert run_train(tiny_data, tmp_path, "smoke") == 0
    run_dir = tmp_path / "smoke"
    rows = read_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for key in ("train_box", "train_obj", "train_noobj", "train_cls", "train_total", "val_noobj", "mAP50"):
            assert math.isfinite(float(row[key])), key
    assert float(rows[1]["train_total"]) < float(rows[0]["train_total"])  # the loss falls
    for name in ("last.pt", "best.pt", "config.yaml", "results.png", "train_batch0.png", "summary.json",
                 "objectness_losses.npz", "PR_curve.png"):
        assert (run_dir / name).is_file(), name
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["nominal_batch"] == 8
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2
    ckpt = torch.load(run_dir / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["names"][0] == "circle" and "[net]" in ckpt["cfg_text"]
    # the run folder is never overwritten: the same name gives smoke2
    assert run_train(tiny_data, tmp_path, "smoke", "--epochs", "1") == 0
    assert (tmp_path / "smoke2" / "last.pt").is_file()
    assert len(read_rows(run_dir)) == 2


def _final_weights(run_dir):
    ckpt = torch.load(run_dir / "last.pt", weights_only=False)
    return ckpt["train_model"], ckpt["model"], ckpt


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["epoch_boundary", "mid_epoch"])
def test_resume_gives_the_same_weights(tiny_data, tmp_path, monkeypatch, stop):
    assert run_train(tiny_data, tmp_path, "straight") == 0
    reference_train, reference_ema, reference = _final_weights(tmp_path / "straight")

    calls = {"n": 0}
    if stop == "epoch_boundary":
        original = train.plot_results_csv

        def interrupt_after_first_epoch(*args, **kwargs):  # called once per epoch, after its row is recorded
            original(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(train, "plot_results_csv", interrupt_after_first_epoch)
    else:
        original = train.set_learning_rates

        def interrupt_in_epoch_two(*args, **kwargs):  # 3 batches per epoch: stop before the 2nd of epoch 2
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(train, "set_learning_rates", interrupt_in_epoch_two)
    assert run_train(tiny_data, tmp_path, "stopped") == 130
    partial = torch.load(tmp_path / "stopped" / "last.pt", weights_only=False)
    assert partial["epoch"] == 1
    assert partial["batches_done"] == (0 if stop == "epoch_boundary" else 1)
    monkeypatch.undo()

    assert train.main(["--resume", str(tmp_path / "stopped"), "--workers", "0"]) == 0
    resumed_train, resumed_ema, resumed = _final_weights(tmp_path / "stopped")
    _assert_same_weights(reference_train, resumed_train)
    _assert_same_weights(reference_ema, resumed_ema)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][-1]["train_total"] == pytest.approx(reference["history"][-1]["train_total"], rel=1e-5)
    # a finished run cannot be resumed again
    assert train.main(["--resume", str(tmp_path / "stopped")]) == 2


@pytest.mark.parametrize("extra, message", [
    (["loss.objectness.gama=2"], "unknown key 'loss.objectness.gama'"),
    (["train.epochs=two"], "'train.epochs' expects an integer"),
    (["loss.objectness.name=focl"], "focl"),
    (["--cfg", "cfg/missing.cfg"], "'cfg': file not found: cfg/missing.cfg"),
    (["--img-size", "100"], "'train.img_size' must be a positive multiple of 32, got 100"),
])
def test_config_errors_name_the_key(tiny_data, tmp_path, capsys, extra, message):
    assert run_train(tiny_data, tmp_path, "bad", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_missing_data_file_is_a_clean_error(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "none.yaml"), "--project", str(tmp_path)]) == 2
    assert "'data': file not found" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    original = train.YOLOLoss.forward
    calls = {"n": 0}

    def poisoned(self, raw_maps, targets):
        total, terms = original(self, raw_maps, targets)
        if self.training is not None and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2, 2nd batch
                total = total * float("nan")
        return total, terms

    monkeypatch.setattr(train.YOLOLoss, "forward", poisoned)
    assert run_train(tiny_data, tmp_path, "nan") == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "epoch 2, batch 1" in err and ".jpg" in err
    ckpt = torch.load(tmp_path / "nan" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["batches_done"] == 0  # the good one from epoch 1
    assert not (tmp_path / "nan" / "summary.json").exists()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
         str(REPO / "train.py"), "--data", str(tiny_data), "--project", str(tmp_path), "--name", "ddp",
         "--device", "cpu", *TINY_ARGS, "--epochs", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size: 2" in result.stdout
    rows = read_rows(tmp_path / "ddp")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_total"]))
    assert (tmp_path / "ddp" / "summary.json").is_file()


def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path), "--epochs", "50"]) == 2
    err = capsys.readouterr().err
    assert "--epochs cannot change it" in err and "--workers" in err


def test_patience_counts_validated_epochs_only():
    nan = float("nan")
    rows = [{"mAP50": m, "mAP50_95": m / 2} for m in (0.2, nan, 0.5, nan, 0.4, 0.3)]
    # validated: 0.2, 0.5, 0.4, 0.3 -> the best is the 2nd validated one, 2 validated epochs since
    assert train.epochs_without_improvement(rows) == 2
    assert train.epochs_without_improvement([{"mAP50": nan, "mAP50_95": nan}] * 5) == 0


def test_corrupt_or_foreign_weights_are_one_line_errors(tmp_path, capsys):
    from yolov3.checkpoint import load_initial_weights
    from yolov3.model import Darknet
    from yolov3.weights import WeightsError

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00not a checkpoint")
    data = tmp_path / "d.yaml"
    assert train.main(["--weights", str(broken), "--data", str(data), "--project", str(tmp_path)]) == 2
    assert "'data': file not found" in capsys.readouterr().err  # paths are checked before anything is loaded
    model = Darknet(str(REPO / "cfg" / "yolov3-tiny.cfg"), num_classes=2)
    with pytest.raises(WeightsError, match="cannot be read as a PyTorch checkpoint"):
        load_initial_weights(model, str(broken))
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(WeightsError, match="no tensor matches this model"):
        load_initial_weights(model, str(foreign))
