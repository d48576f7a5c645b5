"""train.py end to end on a tiny generated dataset: smoke run, exact resume, DDP (gloo), errors, NaN handling."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402
from yolov3 import bookkeeping  # noqa: E402
from yolov3.runs import is_objectness_record  # noqa: E402

TINY_ARGS = ["--epochs", "2", "--batch-size", "4", "--img-size", "64", "--workers", "0",
             "train.nominal_batch=8", "train.warmup_epochs=0.5", "val.conf_thres=0.01"]


def test_multi_scale_resizes_each_batch_with_a_seed_of_its_iteration(tiny_data, tmp_path, monkeypatch):
    sizes = []

    def recording_rescale(images, img_size, seed):
        sizes.append((img_size, seed))
        return images

    monkeypatch.setattr(train, "random_rescale", recording_rescale)
    assert run_train(tiny_data, tmp_path, "fixed", "--epochs", "1") == 0
    assert sizes == []  # off by default
    assert run_train(tiny_data, tmp_path, "multi", "--epochs", "1", "--multi-scale", "--seed", "4") == 0
    # 3 batches: iterations 0, 1, 2, each seeded by (seed, iteration) so a resumed run draws the same sizes
    assert sizes == [(64, 4 * 1_000_003 + iteration) for iteration in range(3)]


def test_the_prior_the_accumulation_and_each_epochs_data_reach_the_loop(tiny_data, tmp_path, monkeypatch):
    from yolov3.dataset import YOLODataset

    divisors, epochs = [], []
    real_divisor, real_set_epoch = train.accumulation_divisor, YOLODataset.set_epoch

    def recording_divisor(batch_index, accumulate, batches_per_epoch):
        divisors.append((batch_index, accumulate, batches_per_epoch))
        return real_divisor(batch_index, accumulate, batches_per_epoch)

    def recording_set_epoch(self, epoch):
        if self.augment is not None:  # the training set (validation never augments)
            epochs.append(epoch)
        return real_set_epoch(self, epoch)

    monkeypatch.setattr(train, "accumulation_divisor", recording_divisor)
    monkeypatch.setattr(YOLODataset, "set_epoch", recording_set_epoch)
    assert run_train(tiny_data, tmp_path, "prior", "loss.obj_prior=0.01") == 0
    # each batch's loss divided for the accumulation (nominal 8 = 2 batches of 4; 3 batches an epoch)
    assert divisors == [(b, 2, 3) for b in range(3)] * 2
    assert epochs == [0, 1]  # new shuffles and augmentations each epoch
    with open(tmp_path / "prior" / "diagnostics.csv") as fh:
        first_step = next(csv.DictReader(fh))
    assert float(first_step["p_pos_mean"]) < 0.05  # the fresh heads start near p = .01, not .5


def _falling_validation_scores(monkeypatch):
    """The real validation, its mAPs replaced by ones that fall with each call: the first validated epoch is best."""
    from yolov3.evaluate import evaluate

    calls = []

    def falling(*args, **kwargs):
        calls.append(1)
        return {**evaluate(*args, **kwargs), "mAP50": 0.9 / len(calls), "mAP50_95": 0.5 / len(calls)}

    monkeypatch.setattr(train, "evaluate", falling)


def test_patience_stops_only_when_set_and_an_early_stop_still_saves(tiny_data, tmp_path, monkeypatch):
    # validation scores that fall every epoch: epoch 1 is the best, and each later one adds an epoch without gain
    _falling_validation_scores(monkeypatch)
    assert run_train(tiny_data, tmp_path, "patient", "--epochs", "4") == 0
    assert len(read_rows(tmp_path / "patient")) == 4  # patience 0 (the default): never stops early
    _falling_validation_scores(monkeypatch)
    assert run_train(tiny_data, tmp_path, "stopped", "--epochs", "4", "--patience", "1", "--nosave") == 0
    assert len(read_rows(tmp_path / "stopped")) == 3  # 2 epochs without gain > patience 1: stop after epoch 3
    weights = tmp_path / "stopped" / "weights"
    # --nosave writes at the end, and an early stop is an end: both checkpoints are there
    assert torch.load(weights / "best.pt", weights_only=True)["epoch"] == 1
    assert torch.load(weights / "last.pt", weights_only=True)["epoch"] == 3


def test_val_interval_save_period_and_nosave_keep_the_best_epochs_weights(tiny_data, tmp_path, monkeypatch):
    # 3 epochs validated every 2nd (and the last): epochs 2 and 3, epoch 2 the best; a checkpoint every 2nd epoch
    _falling_validation_scores(monkeypatch)
    assert run_train(tiny_data, tmp_path, "saved", "--epochs", "3", "--save-period", "2", "val.interval=2") == 0
    rows = read_rows(tmp_path / "saved")
    assert math.isnan(float(rows[0]["mAP50"] or "nan")) and [float(r["mAP50"]) for r in rows[1:]] == [0.9, 0.45]
    weights = tmp_path / "saved" / "weights"
    assert sorted(p.name for p in weights.glob("epoch*.pt")) == ["epoch2.pt"]
    best = torch.load(weights / "best.pt", weights_only=True)
    assert best["epoch"] == 2
    # --nosave writes only at the end, yet best.pt must hold epoch 2's weights, not the final ones
    _falling_validation_scores(monkeypatch)
    assert run_train(tiny_data, tmp_path, "nosave", "--epochs", "3", "--nosave", "val.interval=2") == 0
    kept = torch.load(tmp_path / "nosave" / "weights" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "nosave" / "weights" / "last.pt", weights_only=True)
    assert kept["epoch"] == 2 and last["epoch"] == 3
    assert all(torch.equal(kept["model"][k], best["model"][k]) for k in best["model"])  # same seed: same run
    assert any(not torch.equal(kept["model"][k], last["model"][k]) for k in kept["model"])
    # --noval: only the last epoch is validated
    assert run_train(tiny_data, tmp_path, "noval", "--noval") == 0
    rows = read_rows(tmp_path / "noval")
    assert math.isnan(float(rows[0]["mAP50"] or "nan")) and not math.isnan(float(rows[1]["mAP50"]))


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


def test_two_epoch_smoke_run(tiny_data, tmp_path, capsys):
    assert run_train(tiny_data, tmp_path, "smoke") == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "smoke"
    rows = read_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for key in ("train_box", "train_obj", "train_noobj", "train_cls", "train_total", "val_noobj", "mAP50"):
            assert math.isfinite(float(row[key])), key
    assert float(rows[1]["train_total"]) < float(rows[0]["train_total"])  # the loss falls
    # each row's lr is its last batch's: 3 batches an epoch, so iterations 2 and 5 (warmup is round(.5 * 3) = 2
    # iterations), on the cosine from lr0 .01 to .01 x .01 over the 2 epochs: at 2/3 and 5/3 epochs
    for row, iteration in zip(rows, (2, 5)):
        factor = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (iteration / 3) / 2))
        assert float(row["lr"]) == pytest.approx(0.01 * factor, rel=1e-5)
    for name in ("weights/last.pt", "weights/best.pt", "config.yaml", "results.png", "train_batch0.png", "summary.json",
                 "objectness_losses.npz", "PR_curve.png", "labels.jpg", "val_batch0_labels.jpg",
                 "val_batch0_pred.jpg", "train.log"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob("events.out.tfevents.*"))  # tensorboard is not installed here: off, and said so
    # the saved objectness sample in the record's compact form (studies commit it): negatives float16 by logit
    with np.load(run_dir / "objectness_losses.npz") as npz:
        record = {key: npz[key] for key in npz.files}
    assert set(record) == {"pos", "neg", "pos_logit", "neg_logit"} and is_objectness_record(record)
    assert record["neg"].size == record["neg_logit"].size > 0 and record["pos"].size == record["pos_logit"].size > 0
    # train.log: the commands, each epoch's line, the per-class table, the end; never a progress bar
    log = (run_dir / "train.log").read_text()
    lines = log.splitlines()
    assert lines[0].endswith(f"command: python train.py --data {tiny_data} --project {tmp_path} --name smoke "
                             + " ".join(TINY_ARGS))
    assert " resolved: python train.py data=" in lines[1] and "train.epochs=2" in lines[1]
    assert "\r" not in log and "%|" not in log and "TensorBoard: off" in log
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
    table = [line.split() for line in lines if line.split()[:1] in (["all"], ["circle"], ["cross"])]
    assert [row[0] for row in table] == ["all", "circle", "cross"] and len(table[0]) == 7
    assert "circle" in out and lines[-1].startswith("done in ")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["nominal_batch"] == 8
    # diagnostics: every step of epoch 1 (3 batches of 4; the optimiser steps after batches 2 and 3 since
    # nominal_batch 8 accumulates 2), none of epoch 2 (every 20th step)
    with open(run_dir / "diagnostics.csv") as fh:
        steps = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in steps] == [0, 1, 2] and {r["epoch"] for r in steps} == {"1"}
    # warmup: round(.5 epoch x 3 batches) = 2 iterations, the weights' lr ramping from 0 to the cosine's value
    cosine = [0.01 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (i / 3) / 2))) for i in range(3)]
    assert [float(r["lr"]) for r in steps] == pytest.approx([0.0, 0.5 * cosine[1], cosine[2]], rel=1e-5)
    assert [r["clipped"] for r in steps][0] == "" and math.isnan(float(steps[0]["grad_norm"]))
    norms = [float(r["grad_norm"]) for r in steps[1:]]
    assert all(n > 0 for n in norms) and all(r["clipped"] == str(int(n > 10.0)) for r, n in zip(steps[1:], norms))
    for r in steps:
        pos, neg = float(r["grad_pos"]), float(r["grad_neg"])
        assert pos > 0 and neg > 0 and float(r["neg_grad_share"]) == pytest.approx(neg / (pos + neg), rel=1e-4)
        assert 0 < float(r["p_pos_mean"]) < 1 and int(r["num_neg"]) > int(r["num_pos"]) > 0
    assert float(rows[0]["grad_norm"]) == pytest.approx(sum(norms) / 2, rel=1e-4)
    assert float(rows[0]["clipped_fraction"]) == sum(n > 10.0 for n in norms) / 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2
    # where and in what precision it ran: 'auto' resolved on this machine's CPU flags
    from yolov3.precision import resolve_precision

    expected = resolve_precision("auto", torch.device("cpu")).name
    environment = json.loads((run_dir / "environment.json").read_text())
    assert summary["precision"] == environment["precision"] == expected
    assert environment["cpu_line"] and environment["amp"] == "auto"
    ckpt = torch.load(run_dir / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["names"][0] == "circle" and "[net]" in ckpt["cfg_text"]
    # the run folder is never overwritten: the same name gives smoke2; yolov5's flags: a checkpoint every epoch,
    # the first two layers frozen, every box one class
    assert run_train(tiny_data, tmp_path, "smoke", "--save-period", "1", "--freeze", "2", "--single-cls") == 0
    assert len(read_rows(run_dir)) == 2
    weights = tmp_path / "smoke2" / "weights"
    last = torch.load(weights / "last.pt", weights_only=True)
    first = torch.load(weights / "epoch1.pt", weights_only=True)
    assert "optimizer" not in first and first["epoch"] == 1 and (weights / "epoch2.pt").is_file()
    assert last["names"] == first["names"] == ["object"] and "classes=1" in last["cfg_text"].replace(" ", "")
    for key, value in last["train_model"].items():  # frozen: layers 0 and 1 end where epoch 1 had them (their
        # weights: BatchNorm's running statistics still follow the data, as in yolov5)
        if key.startswith(("module_list.0.", "module_list.1.")) and key.endswith(("weight", "bias")):
            assert torch.equal(value, first["model"][key]), key
    assert not torch.equal(last["train_model"]["module_list.2.conv.weight"], first["model"]["module_list.2.conv.weight"])


@pytest.fixture(scope="module")
def straight_run(tiny_data, tmp_path_factory):
    """The uninterrupted 2-epoch run that interrupted and killed runs must reproduce exactly."""
    project = tmp_path_factory.mktemp("straight")
    assert run_train(tiny_data, project, "straight") == 0
    return project / "straight"


def _final_weights(run_dir):
    from yolov3.runs import checkpoint_path

    ckpt = torch.load(checkpoint_path(run_dir, "last.pt"), weights_only=True)  # weights/, or the older layout's top
    return ckpt["train_model"], ckpt["model"], ckpt


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["epoch_boundary", "mid_epoch"])
def test_resume_gives_the_same_weights(tiny_data, tmp_path, monkeypatch, stop, straight_run):
    reference_train, reference_ema, reference = _final_weights(straight_run)

    calls = {"n": 0}
    if stop == "epoch_boundary":
        original = bookkeeping.plot_results_csv

        def interrupt_after_first_epoch(*args, **kwargs):  # called once per epoch, after its row is recorded
            original(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(bookkeeping, "plot_results_csv", interrupt_after_first_epoch)
    else:
        original = train.set_learning_rates

        def interrupt_in_epoch_two(*args, **kwargs):  # 3 batches per epoch: stop before the 2nd of epoch 2
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(train, "set_learning_rates", interrupt_in_epoch_two)
    assert run_train(tiny_data, tmp_path, "stopped") == 130
    partial = torch.load(tmp_path / "stopped" / "weights" / "last.pt", weights_only=True)
    assert partial["epoch"] == 1
    assert partial["batches_done"] == (0 if stop == "epoch_boundary" else 1)
    monkeypatch.undo()
    if stop == "epoch_boundary":  # as a run made before weights/ existed: last.pt and best.pt at the top
        for name in ("last.pt", "best.pt"):
            (tmp_path / "stopped" / "weights" / name).rename(tmp_path / "stopped" / name)
        (tmp_path / "stopped" / "weights").rmdir()

    assert train.main(["--resume", str(tmp_path / "stopped"), "--workers", "0"]) == 0
    resumed_train, resumed_ema, resumed = _final_weights(tmp_path / "stopped")
    old_layout = stop == "epoch_boundary"  # such a run keeps its layout: nothing moves under its readers
    assert (tmp_path / "stopped" / "weights").is_dir() != old_layout
    assert torch.load(tmp_path / "stopped" / ("best.pt" if old_layout else "weights/best.pt"),
                      weights_only=True)["epoch"] == resumed["best_epoch"]
    assert resumed["precision"] == partial["precision"]  # a resumed run keeps the precision it started in
    _assert_same_weights(reference_train, resumed_train)
    _assert_same_weights(reference_ema, resumed_ema)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][-1]["train_total"] == pytest.approx(reference["history"][-1]["train_total"], rel=1e-5)
    # the diagnostics continue too: same rows, same values as the straight run
    with open(straight_run / "diagnostics.csv") as a, open(tmp_path / "stopped" / "diagnostics.csv") as b:
        straight_rows, resumed_rows = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["iteration"] for r in resumed_rows] == [r["iteration"] for r in straight_rows]
    for x, y in zip(straight_rows, resumed_rows):
        assert float(y["neg_grad_share"]) == pytest.approx(float(x["neg_grad_share"]), rel=1e-4)
    assert resumed["history"][-1]["grad_norm"] == pytest.approx(reference["history"][-1]["grad_norm"], rel=1e-4)
    # a finished run cannot be resumed again; one whose summary.json was damaged finishes again
    assert train.main(["--resume", str(tmp_path / "stopped")]) == 2
    (tmp_path / "stopped" / "summary.json").write_text('{"status": "fini')
    assert train.main(["--resume", str(tmp_path / "stopped"), "--workers", "0"]) == 0
    assert json.loads((tmp_path / "stopped" / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("extra, message", [
    (["loss.objectness.gama=2"], "unknown key 'loss.objectness.gama'"),
    (["train.epochs=two"], "'train.epochs' expects an integer"),
    (["loss.objectness.name=focl"], "focl"),
    (["--cfg", "cfg/missing.cfg"], "'cfg': file not found: cfg/missing.cfg"),
    (["--img-size", "100"], "'train.img_size' must be a multiple of 32"),
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

    def poisoned(self, raw_maps, targets, **kwargs):
        total, terms = original(self, raw_maps, targets, **kwargs)
        if self.training is not None and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2, 2nd batch
                total = total * float("nan")
        return total, terms

    monkeypatch.setattr(train.YOLOLoss, "forward", poisoned)
    assert run_train(tiny_data, tmp_path, "nan") == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "epoch 2, batch 1" in err and ".jpg" in err
    ckpt = torch.load(tmp_path / "nan" / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["batches_done"] == 0  # the good one from epoch 1
    assert not (tmp_path / "nan" / "summary.json").exists()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        # --standalone: the rendezvous binds port 0, so the OS picks a free port (a fixed one collides with another
        # test process or a leftover run on the same machine)
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "train.py"), "--data", str(tiny_data), "--project", str(tmp_path), "--name", "ddp",
         "--device", "cpu", *TINY_ARGS, "--epochs", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size: 2" in result.stdout
    rows = read_rows(tmp_path / "ddp")
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_total"]))
    assert (tmp_path / "ddp" / "summary.json").is_file()
    # the batch of 4 split over 2 processes and the 12 images over 2 ranks: 6 images a rank, 2 a batch, 3 steps
    with open(tmp_path / "ddp" / "diagnostics.csv") as fh:
        assert [int(r["iteration"]) for r in csv.DictReader(fh)] == [0, 1, 2]


def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path), "--epochs", "50"]) == 2
    err = capsys.readouterr().err
    assert "--epochs cannot change it" in err and "--workers" in err


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


def test_darknet_weights_for_other_classes_transfer_everything_but_the_heads(tmp_path):
    from yolov3.checkpoint import load_initial_weights
    from yolov3.model import Darknet

    # the COCO case: an 80-class .weights file fine-tuned onto 3 classes (only the two head convs differ in shape)
    cfg = REPO / "cfg" / "yolov3-tiny.cfg"
    torch.manual_seed(0)
    coco = Darknet(str(cfg))
    coco.save_darknet_weights(tmp_path / "coco.weights")
    torch.manual_seed(1)
    mine = Darknet(str(cfg), num_classes=3)
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    message = load_initial_weights(mine, str(tmp_path / "coco.weights"), cfg_path=str(cfg))
    source, loaded = coco.state_dict(), mine.state_dict()
    heads = [k for k in loaded if loaded[k].shape != source[k].shape]
    assert len(heads) == 4  # weight and bias of each head conv
    assert all(torch.equal(loaded[k], source[k]) for k in loaded if k not in heads)
    assert all(torch.equal(loaded[k], before[k]) for k in heads)  # left as initialised
    assert f"transferred {len(loaded) - 4}/{len(loaded)} tensors" in message


# ---- faults: signals, kills, non-finite weights, reused and unwritable folders -------------------------------------

def _poison_loss_forward(monkeypatch, at_call, action):
    """Run ``action(raw_maps)`` in the ``at_call``-th training loss call (3 batches per epoch: 5 = epoch 2, 2nd)."""
    original = train.YOLOLoss.forward
    calls = {"n": 0}

    def wrapped(self, raw_maps, targets, **kwargs):
        total, terms = original(self, raw_maps, targets, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == at_call:
                action(raw_maps)
        return total, terms

    monkeypatch.setattr(train.YOLOLoss, "forward", wrapped)


def _sigint_during_backward(raw_maps, times=1):
    # a hook on the first map runs inside backward(), after the loss and before the network's layers
    def hook(grad):
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)
        return grad

    raw_maps[0].register_hook(hook)


@pytest.mark.slow
def test_sigint_inside_backward_stops_between_batches_and_resumes_exactly(tiny_data, tmp_path, monkeypatch,
                                                                          straight_run, capsys):
    reference_train, reference_ema, _ = _final_weights(straight_run)
    _poison_loss_forward(monkeypatch, 5, _sigint_during_backward)
    assert run_train(tiny_data, tmp_path, "stopped") == 130
    assert "finishing this batch" in capsys.readouterr().err
    partial = torch.load(tmp_path / "stopped" / "weights" / "last.pt", weights_only=True)
    assert (partial["epoch"], partial["batches_done"]) == (1, 2)  # the batch in whose backward Ctrl-C came is done
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
    monkeypatch.undo()
    assert train.main(["--resume", str(tmp_path / "stopped"), "--workers", "0"]) == 0
    resumed_train, resumed_ema, _ = _final_weights(tmp_path / "stopped")
    _assert_same_weights(reference_train, resumed_train)
    _assert_same_weights(reference_ema, resumed_ema)


def test_second_sigint_stops_at_once_and_keeps_the_last_whole_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    _poison_loss_forward(monkeypatch, 5, lambda maps: _sigint_during_backward(maps, times=2))
    assert run_train(tiny_data, tmp_path, "hard") == 130
    err = capsys.readouterr().err
    assert "stopped at once inside a batch, so nothing was saved" in err and "(epoch 1, written before" in err
    kept = torch.load(tmp_path / "hard" / "weights" / "last.pt", weights_only=True)
    assert (kept["epoch"], kept["batches_done"]) == (1, 0)  # the half-done batch never reached the disk


def test_non_finite_weights_are_never_validated_or_saved(tiny_data, tmp_path, monkeypatch, capsys):
    """BatchNorm running statistics can overflow while the training loss (batch statistics) stays finite."""
    original = train.ModelEMA.update
    calls = {"n": 0}

    def diverging_update(self, model):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's first step: steps after batches 2 and 3 of each 3-batch epoch
            bn = next(m for m in train.unwrap(model).modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        original(self, model)

    monkeypatch.setattr(train.ModelEMA, "update", diverging_update)
    assert run_train(tiny_data, tmp_path, "diverged") == 1
    err = capsys.readouterr().err
    assert "weights became NaN or infinite during epoch 2" in err and "running_var" in err
    assert "last.pt (epoch 1, written before the problem) was kept" in err
    for name in ("last.pt", "best.pt"):
        saved = torch.load(tmp_path / "diverged" / "weights" / name, weights_only=True)
        assert saved["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert len(read_rows(tmp_path / "diverged")) == 1  # the diverged epoch was not validated or recorded
    assert not (tmp_path / "diverged" / "summary.json").exists()


def test_nan_before_any_checkpoint_says_nothing_was_kept(tiny_data, tmp_path, monkeypatch, capsys):
    original = train.YOLOLoss.forward

    def always_nan(self, raw_maps, targets, **kwargs):
        total, terms = original(self, raw_maps, targets, **kwargs)
        return total * float("nan"), terms

    monkeypatch.setattr(train.YOLOLoss, "forward", always_nan)
    assert run_train(tiny_data, tmp_path, "nan0") == 1
    err = capsys.readouterr().err
    assert "no checkpoint had been written yet" in err and "last good checkpoint was kept" not in err


GROUP_SIGINT_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train
original, calls = train.evaluate, []
def evaluate_after_a_terminal_ctrl_c(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # epoch 2: the persistent workers of both loaders exist
        os.killpg(os.getpgid(0), signal.SIGINT)  # as a terminal does: to the process group, workers included
    return original(*args, **kwargs)
train.evaluate = evaluate_after_a_terminal_ctrl_c
sys.exit(train.main(sys.argv[1:]))
"""


def test_terminal_ctrl_c_with_dataloader_workers(tiny_data, tmp_path):
    """The workers get the terminal's SIGINT too; they must neither die of it nor act on it: the main process
    finishes the epoch's validation, saves and exits 130."""
    args = ["--data", str(tiny_data), "--project", str(tmp_path), "--name", "group", *TINY_ARGS, "--workers", "1"]
    result = subprocess.run([sys.executable, "-c", GROUP_SIGINT_SCRIPT.format(repo=str(REPO)), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=300, start_new_session=True)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "exited unexpectedly" not in result.stderr
    # workers inherit the main process's handler when forked; they must ignore SIGINT, not answer it themselves
    assert result.stderr.count("Ctrl-C: finishing this batch") == 1, result.stderr[-3000:]
    saved = torch.load(tmp_path / "group" / "weights" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["batches_done"]) == (2, 0) and len(saved["history"]) == 2


KILL_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
import train
from yolov3 import bookkeeping, utils
kill_at, calls = int(sys.argv[1]), {{"n": 0}}
original = bookkeeping.atomic_torch_save
def dying(obj, path):
    calls["n"] += 1
    if calls["n"] == kill_at:  # SIGKILL halfway through this write: a temporary file exists, the target is untouched
        utils.atomic_write(path, lambda fh: (fh.write(b"half a checkpoint"), fh.flush(), os.kill(os.getpid(), 9)))
    original(obj, path)
bookkeeping.atomic_torch_save = dying
sys.exit(train.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_kill_at_each_checkpoint_write_then_resume_gives_the_straight_run(tiny_data, tmp_path, straight_run,
                                                                          monkeypatch):
    """kill -9 inside each checkpoint write of a 2-epoch run (last.pt and best.pt of each epoch), then --resume.

    Whatever the moment, the finished run must equal the uninterrupted one: same weights, best.pt holding the epoch
    summary.json names (also when the process died between last.pt and best.pt), and no temporary files left.
    """
    writes = []
    original = bookkeeping.atomic_torch_save
    monkeypatch.setattr(bookkeeping, "atomic_torch_save", lambda obj, path: (writes.append(Path(path).name),
                                                                        original(obj, path)))
    assert run_train(tiny_data, tmp_path, "count") == 0
    monkeypatch.undo()
    assert writes[:2] == ["last.pt", "best.pt"] and len(writes) >= 3  # last.pt is always written before best.pt
    reference_train, _, _ = _final_weights(straight_run)
    reference_best = torch.load(straight_run / "weights" / "best.pt", weights_only=True)
    script = KILL_SCRIPT.format(repo=str(REPO))
    for kill_at in range(1, len(writes) + 1):
        name = f"kill{kill_at}"
        args = ["--data", str(tiny_data), "--project", str(tmp_path), "--name", name, *TINY_ARGS]
        result = subprocess.run([sys.executable, "-c", script, str(kill_at), *args], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == -9, result.stderr[-2000:]
        run_dir = tmp_path / name
        assert list(run_dir.rglob(".*.tmp")), "the kill should leave a temporary file behind"
        if (run_dir / "weights" / "last.pt").exists():
            assert train.main(["--resume", str(run_dir), "--workers", "0"]) == 0
        else:  # killed inside the first write: nothing to resume; the folder may be reused
            assert train.main(["--data", str(tiny_data), "--project", str(tmp_path), "--name", name, "--exist-ok",
                               *TINY_ARGS]) == 0
        assert not list(run_dir.rglob(".*.tmp")), f"kill at write {kill_at}: temporary files left"
        summary = json.loads((run_dir / "summary.json").read_text())
        best = torch.load(run_dir / "weights" / "best.pt", weights_only=True)
        assert best["epoch"] == summary["best_epoch"] == reference_best["epoch"], f"kill at write {kill_at}"
        _assert_same_weights(reference_best["model"], best["model"])
        _assert_same_weights(reference_train, _final_weights(run_dir)[0])


def test_exist_ok_refuses_a_folder_holding_a_run(tiny_data, tmp_path, straight_run, capsys):
    finished = tmp_path / "finished"
    finished.mkdir()
    for name in ("summary.json", "last.pt", "best.pt", "results.csv"):  # as a run of the older layout has them
        (finished / name).write_bytes((straight_run / {"last.pt": "weights/last.pt", "best.pt": "weights/best.pt"}
                                       .get(name, name)).read_bytes())
    before = {p.name: p.stat().st_mtime_ns for p in finished.iterdir()}
    assert run_train(tiny_data, tmp_path, "finished", "--exist-ok") == 2
    assert "holds a finished run (summary.json)" in capsys.readouterr().err
    (finished / "summary.json").unlink()
    assert run_train(tiny_data, tmp_path, "finished", "--exist-ok") == 2
    assert (f"holds an unfinished run ({finished / 'last.pt'}): continue it with 'python train.py --resume"
            in capsys.readouterr().err)  # a run of the older layout (checkpoints at the top) is recognised
    assert {p.name: p.stat().st_mtime_ns for p in finished.iterdir()} == {k: v for k, v in before.items()
                                                                        if k != "summary.json"}
    # a folder of the user's own that happens to hold a results.csv (no config.yaml: no run made it) is refused
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my own table\n")
    assert run_train(tiny_data, tmp_path, "mine", "--exist-ok") == 2
    assert "holds results.csv, which a new run would overwrite, and no config.yaml" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["results.csv"] and (mine / "results.csv").read_text() == "my own table\n"
    (mine / "results.csv").unlink()
    (mine / "events.out.tfevents.1.host").write_bytes(b"my TensorBoard log")
    assert run_train(tiny_data, tmp_path, "mine", "--exist-ok") == 2
    assert "holds events.out.tfevents.1.host, which a new run would overwrite" in capsys.readouterr().err
    assert (mine / "events.out.tfevents.1.host").read_bytes() == b"my TensorBoard log"
    # leftovers of a run that failed before its first checkpoint are cleared; the user's own files stay
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "config.yaml").write_text((straight_run / "config.yaml").read_text())
    (failed / "results.csv").write_text("epoch\n1\n2\n3\n")
    (failed / "notes.txt").write_text("mine")
    assert run_train(tiny_data, tmp_path, "failed", "--exist-ok", "--epochs", "1") == 0
    assert len(read_rows(failed)) == 1 and (failed / "notes.txt").read_text() == "mine"


def test_a_failed_start_leaves_no_run_folder(tmp_path, tiny_data, capsys):
    bad_data = tmp_path / "bad.yaml"
    bad_data.write_text("train: images/none\nval: images/none\nnames: [a]\n")
    assert train.main(["--data", str(bad_data), "--project", str(tmp_path / "runs"), *TINY_ARGS]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, foreign)
    assert run_train(tiny_data, tmp_path / "runs", "w", "--weights", str(foreign)) == 2
    assert "no tensor matches" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_weights_of_another_cfg_are_refused_unless_asked(tiny_data, tmp_path, capsys):
    from yolov3.model import Darknet

    other = Darknet(str(REPO / "cfg" / "yolov3-tiny.cfg"), num_classes=5)
    own = Darknet(str(REPO / "cfg" / "yolov3-small.cfg"), num_classes=5).state_dict()
    shared = [k for k, v in other.state_dict().items() if k in own and own[k].shape == v.shape]
    assert 0 < len(shared) < 0.5 * len(own)  # a few tensors match by accident
    path = tmp_path / "tiny.pt"
    torch.save({"model": other.state_dict()}, path)
    assert run_train(tiny_data, tmp_path, "other", "--weights", str(path), "--epochs", "1") == 2
    assert f"only {len(shared)}/{len(own)} of this model's tensors match" in capsys.readouterr().err
    assert run_train(tiny_data, tmp_path, "other", "--weights", str(path), "--epochs", "1",
                     "--allow-partial-weights") == 0
    assert f"transferred {len(shared)}/{len(own)} tensors" in capsys.readouterr().out


def test_a_failed_write_is_one_line_and_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    """ENOSPC from the file system in epoch 2's last.pt write (fault injection; a real full disk is tested below)."""
    import errno

    from yolov3 import files

    calls = {"n": 0}
    original_fsync = os.fsync

    def fsync_fails_on_the_second_last_pt(fd):
        if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            calls["n"] += 1
            if calls["n"] == 2:  # epoch 2's last.pt
                raise OSError(errno.ENOSPC, "No space left on device")
        original_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file is being written")
    monkeypatch.setattr(files.os, "fsync", fsync_fails_on_the_second_last_pt)
    assert run_train(tiny_data, tmp_path, "full") == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: cannot write") and "Traceback" not in err
    assert f"cannot write {tmp_path / 'full' / 'weights' / 'last.pt'}: the disk is full" in err
    assert "(epoch 1, written before the problem) was kept" in err
    assert torch.load(tmp_path / "full" / "weights" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "full").rglob(".*.tmp"))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
def test_real_full_or_read_only_file_system(tiny_data, tmp_path, capsys, fault):
    """A tiny tmpfs (needs root on Linux; skipped elsewhere): too small for epoch 2's files, or made read-only."""
    mount = tmp_path / "fs"
    if not _mount_tmpfs(mount, "1m" if fault == "disk_full" else "64m"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    try:
        if fault == "read_only":
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            assert run_train(tiny_data, mount, "ro") == 2
            err = capsys.readouterr().err
            assert f"cannot write {mount / 'ro'}" in err and "read-only" in err and "Traceback" not in err
            return
        # the small model's last.pt is ~2 MB: the first write already fails, and says so
        assert run_train(tiny_data, mount, "full") == 2
        err = capsys.readouterr().err
        assert f"cannot write {mount / 'full' / 'weights' / 'last.pt'}: the disk is full" in err and "Traceback" not in err
        assert "no checkpoint had been written yet" in err
        assert not list((mount / "full").rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_fp32_run_and_a_resume_keep_their_recorded_precision(tiny_data, tmp_path, monkeypatch):
    """A run made in fp32 resumes in fp32 even where 'auto' now picks bf16 (another machine, say)."""
    assert run_train(tiny_data, tmp_path, "fp32", "train.amp=off", "--epochs", "1") == 0
    assert json.loads((tmp_path / "fp32" / "summary.json").read_text())["precision"] == "fp32"
    seen = []
    original = train.resolve_precision
    monkeypatch.setattr(train, "resolve_precision",
                        lambda mode, device, **kw: seen.append((mode, kw)) or original(mode, device, **kw))
    ckpt = torch.load(tmp_path / "fp32" / "weights" / "last.pt", weights_only=True)
    ckpt["epoch"], ckpt["config"]["train"]["amp"] = 0, "auto"  # pretend: unfinished, and asked for auto
    torch.save(ckpt, tmp_path / "fp32" / "weights" / "last.pt")
    (tmp_path / "fp32" / "summary.json").unlink()
    assert train.main(["--resume", str(tmp_path / "fp32"), "--workers", "0"]) == 0
    assert seen == [("off", {"resumed": True})]
    # and it says why: the user did not ask for fp32 on resuming
    environment = json.loads((tmp_path / "fp32" / "environment.json").read_text())
    assert environment["precision_reason"] == "the precision the run started with"


def test_grad_clip_epochs_clips_only_the_first_epochs(tiny_data, tmp_path, monkeypatch):
    # a clip far below any gradient norm: every optimiser step of epoch 1 is clipped, none of epoch 2
    bounds = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        bounds.append(max_norm)
        return real_clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    assert run_train(tiny_data, tmp_path, "clip1", "train.grad_clip=1e-6", "train.grad_clip_epochs=1") == 0
    rows = read_rows(tmp_path / "clip1")
    assert [float(r["clipped_fraction"]) for r in rows] == [1.0, 0.0]
    assert all(float(r["grad_norm"]) > 1e-3 for r in rows)
    # the bound the gradients were clipped to, step by step: 2 optimiser steps an epoch (3 batches, 2 accumulated)
    assert bounds == [1e-6, 1e-6, math.inf, math.inf]


def test_val_test_scores_the_final_model_once_on_the_test_split(tiny_data, tmp_path, capsys):
    import val

    # a test split of other images than val's (the train images here): the run's final validation and its test
    # score must be what val.py gives for the saved model on each split; so the saved weights are the ones
    # validated (the EMA), and the test score comes from the test images
    with_test = tmp_path / "with_test.yaml"
    content = yaml.safe_load(tiny_data.read_text())
    content.pop("generate")
    content["path"] = str(tiny_data.parent / "shapes")
    content["test"] = "images/train"
    with_test.write_text(yaml.safe_dump(content))
    assert train.main(["--data", str(with_test), "--project", str(tmp_path), "--name", "t", *TINY_ARGS,
                       "val.test=true", "train.amp=off"]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert [row["name"] for row in summary["per_class"]] == content["names"]
    last = str(tmp_path / "t" / "weights" / "last.pt")
    for task, scored in (("val", summary["final"]), ("test", summary["test"])):
        again = val.run(val.parse_args(["--data", str(with_test), "--weights", last, "--task", task, "--conf-thres",
                                        "0.01", "--no-optimize", "--workers", "0", "--project", str(tmp_path / "val"),
                                        "--name", task]))
        for key in ("precision", "recall", "mAP50", "mAP50_95"):
            assert again[key] == pytest.approx(scored[key], abs=1e-6), (task, key)
    boxes = {split: sum(len(f.read_text().splitlines()) for f in (tiny_data.parent / "shapes" / "labels" / split)
                        .glob("*.txt")) for split in ("train", "val")}
    assert sum(row["instances"] for row in summary["test"]["per_class"]) == boxes["train"]
    assert sum(row["instances"] for row in summary["per_class"]) == boxes["val"] != boxes["train"]
    assert "test split: mAP@.5" in capsys.readouterr().out
    assert run_train(tiny_data, tmp_path, "no_test", "val.test=true") == 2
    assert "'val.test' is true but" in capsys.readouterr().err


def test_the_end_says_which_epoch_the_table_and_best_pt_are(straight_run):
    from yolov3.bookkeeping import best_pt_note

    assert "the last epoch's model (epoch 2), on the validation split:" in (straight_run / "train.log").read_text()
    history = [{"epoch": 1, "mAP50_95": 0.3}, {"epoch": 2, "mAP50_95": 0.41234}, {"epoch": 3, "mAP50_95": 0.4}]
    assert best_pt_note(history, 2) == (" (epoch 3); best.pt, which val.py and detect.py take from the run folder, "
                                        "is epoch 2: mAP@.5:.95 0.412")
    assert best_pt_note(history, 3) == "" and best_pt_note([], 0) == "" and best_pt_note(history, 0) == ""


def test_weights_and_splits_are_checked_before_the_train_scan(tiny_data, tmp_path, straight_run, capsys,
                                                              monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights at all\n")
    fake_pt = tmp_path / "fake.pt"
    fake_pt.write_text("not a checkpoint\n")

    def no_scan(*args, **kwargs):
        raise AssertionError("the data were read before the check")
    monkeypatch.setattr(train, "create_dataloader", no_scan)
    assert run_train(tiny_data, tmp_path, "a", "--weights", str(notes)) == 2
    assert f"'weights': {notes} is not Darknet weights (its first bytes are not a Darknet header" \
        in capsys.readouterr().err
    assert run_train(tiny_data, tmp_path, "a", "--weights", str(fake_pt)) == 2
    assert f"'weights': {fake_pt} is named .pt but is not a PyTorch checkpoint" in capsys.readouterr().err
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(tiny_data.read_text().replace("val: images/val", "val: images/nowhere"))
    assert run_train(no_val, tmp_path, "b") == 2
    err = capsys.readouterr().err
    assert "split 'val': " in err and "nowhere does not exist" in err and "read before the check" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    monkeypatch.undo()
    # a run folder as --weights, as val.py and detect.py take it: its best.pt
    assert run_train(tiny_data, tmp_path, "c", "--weights", str(straight_run), "--epochs", "1") == 0
    out, _ = capsys.readouterr()
    best = straight_run / "weights" / "best.pt"
    assert f"weights: {straight_run} is a run folder: its {best}" in out
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["weights"] == str(best)
    # a file path written another way (a doubled slash) is not a run folder, and kept as given
    spelled = f"{straight_run}//weights/best.pt"
    assert run_train(tiny_data, tmp_path, "d", "--weights", spelled, "--epochs", "1") == 0
    assert "is a run folder" not in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())["weights"] == spelled


def test_ema_tau_reaches_the_ema(tiny_data, tmp_path, monkeypatch):
    class Stop(Exception):
        pass

    seen = []

    def record(*args, **kwargs):
        seen.append((args, kwargs))
        raise Stop

    monkeypatch.setattr(train, "ModelEMA", record)
    with pytest.raises(Stop):
        run_train(tiny_data, tmp_path, "ema", "train.ema_tau=50")
    args, kwargs = seen[0]
    assert list(args[1:]) + list(kwargs.values()) == [0.9999, 50.0]


# ---- planted-bug checks: what a run reads, prints and records ----------------------------------------------------
def test_a_missing_test_split_fails_before_training(tiny_data, tmp_path, monkeypatch, capsys):
    content = yaml.safe_load(tiny_data.read_text())
    content.pop("generate")
    content["path"] = str(tiny_data.parent / "shapes")
    content["test"] = "images/nowhere"
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(content))
    monkeypatch.setattr(train, "create_dataloader", lambda *a, **k: pytest.fail("data read before the check"))
    assert run_train(tmp_path / "d.yaml", tmp_path, "t", "val.test=true") == 2
    err = capsys.readouterr().err
    assert "split 'test'" in err and "nowhere" in err and not (tmp_path / "t").exists()


def test_one_epoch_run_shuffles_train_only_honours_ema_off_and_prints_its_metrics(tiny_data, tmp_path, monkeypatch,
                                                                                  capsys):
    loaders = []
    real_loader, real_evaluate = train.create_dataloader, train.evaluate

    def recording_loader(data, split, *args, **kwargs):
        loaders.append((split, kwargs.get("shuffle")))
        return real_loader(data, split, *args, **kwargs)

    def fixed_metrics(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "precision": 0.111, "recall": 0.222, "mAP50": 0.333,
                "mAP50_95": 0.444}

    monkeypatch.setattr(train, "create_dataloader", recording_loader)
    monkeypatch.setattr(train, "evaluate", fixed_metrics)
    assert run_train(tiny_data, tmp_path, "one", "--epochs", "1", "train.ema=false") == 0
    captured = capsys.readouterr()
    assert ("train", True) in loaders and ("val", False) in loaders
    ckpt = torch.load(tmp_path / "one" / "weights" / "last.pt", weights_only=True)
    assert ckpt["ema"] is None and all(torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in ckpt["model"])
    assert "epoch 1/1" in captured.err and "epoch 0/1" not in captured.err
    assert "epoch 1: P 0.111 R 0.222 mAP@.5 0.333 mAP@.5:.95 0.444" in captured.out
    done = [line for line in captured.out.splitlines() if line.startswith("done in ")]
    assert done and "mAP@.5 0.333 mAP@.5:.95 0.444" in done[-1]


def test_results_csv_columns_means_and_clock_of_a_straight_run(straight_run):
    from yolov3.runs import RESULT_COLUMNS

    rows = read_rows(straight_run)
    header = (straight_run / "results.csv").read_text().splitlines()[0].split(",")
    assert header == list(RESULT_COLUMNS) and "epoch_time_s" in header and "val_cls" in header
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("val_box", "val_obj", "val_noobj", "val_cls"))
        assert float(row["epoch_time_s"]) > 0
    with open(straight_run / "diagnostics.csv") as fh:
        first = [r for r in csv.DictReader(fh) if r["epoch"] == "1"]
    # every step of epoch 1 is recorded: the epoch's mean loss is their mean
    for term in ("obj", "noobj"):
        assert float(rows[0][f"train_{term}"]) == pytest.approx(np.mean([float(r[term]) for r in first]), rel=1e-4)
    history = torch.load(straight_run / "weights" / "last.pt", weights_only=True)["history"]
    assert history[1]["elapsed_s"] >= history[0]["epoch_time_s"] + history[1]["epoch_time_s"]


def test_a_resumed_run_keeps_its_clock_its_workers_flag_and_best_epoch(straight_run, tmp_path):
    import shutil
    import time

    from yolov3.bookkeeping import Bookkeeper, RunPlan
    from yolov3.checkpoint import load_resume
    from yolov3.config import apply_overrides
    from yolov3.model import Darknet
    from yolov3.optim import ModelEMA, build_optimizer
    from yolov3.precision import resolve_precision

    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    (run_dir / "summary.json").unlink()  # as if stopped before its end: resumable
    last = run_dir / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["config"]["train"]["workers"] = 2
    ckpt["history"][-1]["elapsed_s"] = 25.0
    ckpt["partial_s"] = 5.0
    torch.save(ckpt, last)
    plan = bookkeeping.start_run(train.parse_args(["--resume", str(run_dir), "--workers", "0"]), True)
    assert plan.cfg.train.workers == 0
    checkpoint, cfg, _ = load_resume(str(run_dir), str(tmp_path))
    cfg = apply_overrides(cfg, ["train.epochs=3"])
    model = Darknet(checkpoint["cfg_text"], num_classes=len(checkpoint["names"]))
    book = Bookkeeper(RunPlan(cfg, run_dir, checkpoint, (), False, False, False), checkpoint["names"],
                      resolve_precision("off", torch.device("cpu")), torch.device("cpu"), 1, True)
    book.attach(model, build_optimizer(model, cfg.train), torch.amp.GradScaler("cuda", enabled=False),
                ModelEMA(model))
    assert time.time() - book.started == pytest.approx(30.0, abs=1.0)  # 25 s of epochs and 5 s of the open one
    next(book.epochs())
    assert time.time() - book.state.epoch_started == pytest.approx(5.0, abs=1.0)
