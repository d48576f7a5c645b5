"""The run folder's files (yolov3/runs.py): results.csv written and read back, summary.json judged."""
import json
import math

import numpy as np

from yolov3.runs import RESULT_COLUMNS, read_results_csv, read_summary, write_results_csv


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
