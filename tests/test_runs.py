"""The run folder's files (yolov3/runs.py): results.csv written and read back, summary.json judged."""
import json
import math

import numpy as np

import pytest

from yolov3.runs import (RESULT_COLUMNS, best_epoch, epochs_without_improvement, is_objectness_record,
                         objectness_record, read_results_csv, read_summary, write_results_csv, write_summary)


def test_results_csv_round_trip_keeps_six_significant_digits_and_blank_epochs(tmp_path):
    rows = [{**{column: 0.0 for column in RESULT_COLUMNS}, "epoch": epoch} for epoch in (1, 2)]
    rows[0]["lr"] = 0.0123456789  # written with 6 significant digits: 0.0123457
    rows[1]["mAP50"] = float("nan")  # an epoch without validation
    path = tmp_path / "results.csv"
    write_results_csv(path, rows)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(RESULT_COLUMNS) and len(lines) == 3
    assert lines[1].split(",")[RESULT_COLUMNS.index("lr")] == "0.0123457"
    columns = read_results_csv(path)
    assert list(columns) == RESULT_COLUMNS
    np.testing.assert_array_equal(columns["epoch"], [1.0, 2.0])
    assert columns["lr"][0] == 0.0123457 and columns["mAP50"][0] == 0.0 and math.isnan(columns["mAP50"][1])


def test_read_summary_counts_only_a_finished_run(tmp_path):
    assert read_summary(tmp_path) == (None, None)  # no summary.json: not finished, nothing wrong
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"status": "finished", "epochs": 3}))
    assert read_summary(tmp_path) == ({"status": "finished", "epochs": 3}, None)
    path.write_text(json.dumps({"status": "running"}))
    assert read_summary(tmp_path) == (None, f"{path}: status is 'running', not 'finished'")
    path.write_text('{"status": "fini')  # truncated by a crash
    summary, problem = read_summary(tmp_path)
    assert summary is None and problem.startswith(f"{path}: unreadable (")
    path.write_text("[1, 2]")
    assert read_summary(tmp_path) == (None, f"{path}: expected a JSON mapping, got list")


def test_summary_names_the_best_epoch_by_fitness_and_reads_back_as_finished(tmp_path):
    nan = float("nan")
    history = [{"epoch": 1, "mAP50": nan, "mAP50_95": nan, "lr": 0.01},  # not validated: fitness -1
               {"epoch": 2, "mAP50": 0.5, "mAP50_95": 0.2, "lr": 0.01},  # 0.1 * 0.5 + 0.9 * 0.2 = 0.23
               {"epoch": 3, "mAP50": 0.9, "mAP50_95": 0.1, "lr": 0.001}]  # 0.09 + 0.09 = 0.18
    assert best_epoch(history) == 2 and best_epoch([]) == 0
    assert epochs_without_improvement(history) == 1  # validated epochs since the best (epoch 1 does not count)
    summary = write_summary(tmp_path, history, wall_time_s=12.5, precision="bf16")
    assert summary["best_epoch"] == 2 and math.isclose(summary["best_fitness"], 0.23)
    assert summary["final"] == {"mAP50": 0.9, "mAP50_95": 0.1, "lr": 0.001}  # the last row without its epoch
    assert (summary["epochs"], summary["wall_time_s"], summary["precision"]) == (3, 12.5, "bf16")
    assert read_summary(tmp_path) == (summary, None)


def test_checkpoints_live_in_weights_unless_the_run_has_the_older_layout(tmp_path):
    from yolov3.runs import checkpoint_path, find_weights, run_dir_of, weights_dir

    new, old = tmp_path / "exp", tmp_path / "exp2"
    assert weights_dir(new) == new / "weights"  # a run not started yet gets the new layout
    (new / "weights").mkdir(parents=True)
    (new / "weights" / "last.pt").write_bytes(b"x")
    old.mkdir()
    (old / "best.pt").write_bytes(b"x")  # made before weights/: its checkpoints stay at the top
    assert checkpoint_path(new, "best.pt") == new / "weights" / "best.pt"
    assert checkpoint_path(old, "last.pt") == old / "last.pt"
    (old / "weights").mkdir()  # an empty weights/ folder changes nothing
    assert weights_dir(old) == old
    assert run_dir_of(new / "weights" / "last.pt") == new and run_dir_of(old / "last.pt") == old
    named_weights = tmp_path / "weights"  # an older run whose --name was 'weights'
    named_weights.mkdir()
    (named_weights / "config.yaml").write_text("{}")
    assert run_dir_of(named_weights / "last.pt") == named_weights
    # val.py, detect.py and the API take a run folder for its best.pt
    assert find_weights(old) == old / "best.pt" and find_weights(tmp_path / "x.pt") == tmp_path / "x.pt"
    try:
        find_weights(new)
    except FileNotFoundError as exc:
        assert str(exc) == (f"{new}: a folder, but neither {new / 'weights' / 'best.pt'} nor {new / 'best.pt'} is "
                            "there (give a train.py run folder or a weights file)")
    else:
        raise AssertionError("a run folder without best.pt must be an error")


def test_train_log_keeps_lines_and_drops_progress_bar_redraws(tmp_path, capsys):
    """What a run prints reaches the terminal unchanged and train.log line by line, without tqdm's redraws; lines
    printed before the run folder exists are written once it does; the yolov3 logger's records are logged too."""
    import logging
    import sys

    from tqdm import tqdm

    from yolov3.runs import TrainLog

    log = TrainLog().install()
    try:
        print("before the folder")
        log.attach(tmp_path / "train.log", header=["command: python train.py --epochs 2"])
        for _ in tqdm(range(3), desc="epoch 1/2", mininterval=0):  # bars draw on stderr with \r
            pass
        print("epoch 1: P 0.1", end="")
        print(" R 0.2")
        print("warning: odd labels", file=sys.stderr)
        for _ in tqdm(range(2), desc="val", leave=False, mininterval=0):
            pass
        print("after an erased bar", file=sys.stderr)
        logging.getLogger("yolov3.data").warning("train: 2 images skipped")
        print("unfinished line", end="")
    finally:
        log.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[0].endswith(" command: python train.py --epochs 2") and lines[0].startswith("# 20")
    assert lines[1:] == ["before the folder", "epoch 1: P 0.1 R 0.2", "warning: odd labels", "after an erased bar",
                         "train: 2 images skipped", "unfinished line"]
    terminal = capsys.readouterr()
    assert "epoch 1/2: 100%" in terminal.err and "before the folder" in terminal.out  # the terminal got everything
    assert sys.stdout is not None and not type(sys.stdout).__name__ == "_Tee"  # the streams are back


def test_train_log_of_a_failed_start_writes_nothing(tmp_path):
    from yolov3.runs import TrainLog

    log = TrainLog().install()
    print("error: bad data")
    log.close()  # never attached: no folder, no file
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_logs_the_epoch_rows_when_installed_and_says_when_not(tmp_path, monkeypatch):
    import sys
    import types

    from yolov3.runs import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: the import fails
    off = TensorBoardLog(tmp_path)
    assert off.status == "TensorBoard: off (pip install tensorboard to log the epochs there)"
    off.log_epoch({"epoch": 1, "lr": 0.01})
    off.close()

    written = []

    class SummaryWriter:  # what torch.utils.tensorboard offers, recording the calls
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    on = TensorBoardLog(tmp_path / "exp")
    assert on.status == f"TensorBoard: on (tensorboard --logdir {tmp_path})"
    on.log_epoch({"epoch": 3, "lr": 0.005, "train_obj": 0.5, "train_noobj": 2.0, "val_obj": float("nan"),
                  "mAP50": 0.7})
    on.close()
    assert written == [("dir", str(tmp_path / "exp")), ("train/obj", 0.5, 3), ("train/noobj", 2.0, 3),
                       ("metrics/mAP50", 0.7, 3), ("lr/group0", 0.005, 3), ("closed",)]  # nan: not drawn


def test_patience_counts_validated_epochs_only():
    nan = float("nan")
    rows = [{"mAP50": m, "mAP50_95": m / 2} for m in (0.2, nan, 0.5, nan, 0.4, 0.3)]
    # validated: 0.2, 0.5, 0.4, 0.3 -> the best is the 2nd validated one, 2 validated epochs since
    assert epochs_without_improvement(rows) == 2
    assert epochs_without_improvement([{"mAP50": nan, "mAP50_95": nan}] * 5) == 0


def test_objectness_record_orders_the_negatives_by_logit_and_keeps_their_pairs():
    rng = np.random.default_rng(0)
    neg_logit = rng.normal(-6.0, 3.0, 500).astype(np.float32)
    neg_logit[:3] = [-1.0, -1.0, -1.0]  # ties keep the order they came in (a stable sort: the same file every time)
    neg = np.log1p(np.exp(neg_logit)) + np.arange(500) * 1e-3  # own loss: not a function of the logit alone
    pos_logit, pos = rng.normal(1.0, 2.0, 40), rng.random(40)
    samples = {"pos": pos, "neg": neg, "pos_logit": pos_logit, "neg_logit": neg_logit}
    assert not is_objectness_record(samples)
    record = objectness_record(samples)
    assert is_objectness_record(record) and objectness_record(record).keys() == record.keys()
    for key, value in objectness_record(record).items():  # a record is a fixed point
        np.testing.assert_array_equal(value, record[key])
    # positives: float32, as given (in order)
    assert record["pos"].dtype == record["pos_logit"].dtype == np.float32
    np.testing.assert_array_equal(record["pos_logit"], pos_logit.astype(np.float32))
    # negatives: float16, ascending logit, every (own loss, logit) pair kept
    assert record["neg"].dtype == record["neg_logit"].dtype == np.float16
    assert np.all(np.diff(record["neg_logit"].astype(float)) >= 0)
    pairs = sorted(zip(neg.astype(np.float16).tolist(), neg_logit.astype(np.float16).tolist()))
    assert sorted(zip(record["neg"].tolist(), record["neg_logit"].tolist())) == pairs
    tied = record["neg"][record["neg_logit"] == -1.0]
    np.testing.assert_array_equal(tied, neg[:3].astype(np.float16))
    # a record saved without logits is ordered by its own loss
    own = objectness_record({"pos": pos, "neg": neg[::-1]})
    assert own.keys() == {"pos", "neg"} and np.all(np.diff(own["neg"].astype(float)) >= 0)
    with pytest.raises(ValueError, match="align"):
        objectness_record({"pos": pos, "neg": neg, "pos_logit": pos_logit, "neg_logit": neg_logit[:-1]})


def test_train_log_keeps_info_records_and_tensorboard_gets_every_metric(tmp_path, monkeypatch):
    import logging
    import sys
    import types

    from yolov3.runs import TensorBoardLog, TrainLog

    package = logging.getLogger("yolov3")
    level = package.level
    package.setLevel(logging.INFO)
    try:
        log = TrainLog().install()
        log.attach(tmp_path / "train.log")
        logging.getLogger("yolov3.data").info("train: 12 images")
        log.close()
    finally:
        package.setLevel(level)
    assert "train: 12 images" in (tmp_path / "train.log").read_text().splitlines()
    written = []

    class SummaryWriter:
        def __init__(self, log_dir):
            pass

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    TensorBoardLog(tmp_path / "exp").log_epoch({"epoch": 1, "lr": 0.01, "precision": 0.1, "recall": 0.2,
                                                "mAP50": 0.3, "mAP50_95": 0.4})
    assert [w for w in written if w[0].startswith("metrics/")] == [
        ("metrics/precision", 0.1, 1), ("metrics/recall", 0.2, 1), ("metrics/mAP50", 0.3, 1),
        ("metrics/mAP50_95", 0.4, 1)]


def test_only_sorted_negatives_and_float32_positives_count_as_records():
    assert is_objectness_record({"pos": np.zeros(2, np.float32), "neg": np.array([2.0, 1.0], np.float16)}) is False
    assert is_objectness_record({"pos": np.zeros(2, np.float32), "pos_logit": np.array([0.5]),
                                 "neg": np.array([1.0, 2.0], np.float16)}) is False
    assert is_objectness_record({"pos": np.zeros(2, np.float32), "neg": np.array([1.0, 2.0], np.float16)}) is True
