"""The ablation report from fake run folders with known numbers: statistics, tables and the data behind the plots."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CodeRunningPickle

from yolov3 import config as config_lib
from yolov3.report import (build_report, cumulative_loss_curve, mean_sd, paired_difference, student_t_cdf,
                           t_quantile)


# ---------------------------------------------------------------------------------------------------------------
# Student t
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_table(df, table):
    assert t_quantile(0.975, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-table, abs=5e-4)  # symmetry


# odd df >= 5 run the odd-df series (df 1 and 3 need none of its terms); values from the standard t table
@pytest.mark.parametrize("p, df, table", [
    (0.975, 5, 2.571), (0.95, 5, 2.015), (0.99, 5, 3.365), (0.995, 5, 4.032),
    (0.975, 7, 2.365), (0.99, 7, 2.998), (0.975, 9, 2.262), (0.90, 9, 1.383),
    (0.975, 11, 2.201), (0.975, 15, 2.131), (0.975, 29, 2.045), (0.95, 21, 1.721),
])
def test_t_quantile_at_odd_df_matches_table(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=5e-4)


def test_t_cdf_closed_forms():
    # df 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi -> F(1) = 0.75
    assert student_t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    # df 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)) -> F(1) = 0.5 + 1/(2 sqrt 3) = 0.7886751
    assert student_t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)), abs=1e-12)
    assert student_t_cdf(0.0, 7) == 0.5
    assert student_t_cdf(-1.3, 5) == pytest.approx(1 - student_t_cdf(1.3, 5), abs=1e-12)
    # large df approaches the normal: t_{0.975, 1000} = 1.962
    assert t_quantile(0.975, 1000) == pytest.approx(1.962, abs=1e-3)


def test_paired_difference_hand_computed():
    base = {0: 0.50, 1: 0.52, 2: 0.54}
    var = {0: 0.53, 1: 0.56, 2: 0.55}
    diff = paired_difference(base, var)
    # diffs [0.03, 0.04, 0.01]: mean 0.026667; deviations .00333, .01333, -.01667 -> squares sum 4.6667e-4,
    # / 2 = 2.3333e-4 -> sd 0.015275; half-width 4.3027 * 0.015275 / sqrt(3) = 0.037946
    assert diff.n == 3 and diff.seeds == [0, 1, 2]
    assert diff.mean == pytest.approx(0.0266667, abs=1e-6)
    assert diff.sd == pytest.approx(0.0152753, abs=1e-6)
    assert diff.half_width == pytest.approx(0.037946, abs=1e-5)
    assert diff.low == pytest.approx(-0.011279, abs=1e-5) and diff.excludes_zero is False
    # only seeds present in both are paired; one pair -> interval undefined
    one = paired_difference({0: 0.5, 1: 0.6}, {1: 0.7, 2: 0.1})
    assert one.n == 1 and one.mean == pytest.approx(0.1) and one.half_width is None and one.excludes_zero is None
    assert mean_sd([1.0]) [0] == 1.0 and math.isnan(mean_sd([1.0])[1])


def test_paired_difference_of_a_worse_variant_excludes_zero_below_it():
    # diffs [-.05, -.06, -.04]: mean -.05, sd .01, half-width t(.975, 2) * .01 / sqrt 3 = 4.302653 * .01 / 1.732051
    # = .024841 -> [-.074841, -.025159]: entirely below 0, so the interval excludes 0 (the variant is worse)
    diff = paired_difference({0: 0.50, 1: 0.52, 2: 0.54}, {0: 0.45, 1: 0.46, 2: 0.50})
    assert diff.mean == pytest.approx(-0.05, abs=1e-12) and diff.sd == pytest.approx(0.01, abs=1e-12)
    assert diff.half_width == pytest.approx(0.024841, abs=1e-6)
    assert diff.low == pytest.approx(-0.074841, abs=1e-6) and diff.high == pytest.approx(-0.025159, abs=1e-6)
    assert diff.excludes_zero is True
    # a worse variant whose interval reaches 0 does not exclude it: diffs [-.05, 0, -.01], mean -.02,
    # sd sqrt((.0009 + .0004 + .0001) / 2) = .026458, half-width 4.302653 * .026458 / 1.732051 = .065724
    # -> [-.085724, +.045724]
    mixed = paired_difference({0: 0.50, 1: 0.52, 2: 0.54}, {0: 0.45, 1: 0.52, 2: 0.53})
    assert mixed.half_width == pytest.approx(0.065724, abs=1e-6) and mixed.excludes_zero is False
    assert mixed.low == pytest.approx(-0.085724, abs=1e-6) and mixed.high == pytest.approx(0.045724, abs=1e-6)


def test_cumulative_loss_curve():
    fractions = np.array([0.0, 1 / 3, 0.5, 2 / 3, 1.0])
    # sorted [1, 1, 2], total 4: (1/3, .25), (2/3, .5), (1, 1); at 0.5 halfway between .25 and .5 -> .375
    curve = cumulative_loss_curve(np.array([2.0, 1.0, 1.0]), fractions)
    assert curve == pytest.approx([0.0, 0.25, 0.375, 0.5, 1.0])
    assert cumulative_loss_curve(np.zeros(5), fractions) is None  # no loss to distribute
    assert cumulative_loss_curve(np.array([]), fractions) is None


# ---------------------------------------------------------------------------------------------------------------
# A fake study folder
# ---------------------------------------------------------------------------------------------------------------
def make_run(study_dir: Path, index: int, variant: str, seed: int, map50: float, map50_95: float, *,
             grid: dict | None = None, finished: bool = True, curve=(0.1, 0.2), obj=(1.0, 0.5), noobj=(8.0, 2.0),
             pos=None, neg=None, exit_code=None, objectness="bce") -> Path:
    grid = grid or {}
    arm = variant + ("__" + "_".join(f"{k.split('.')[-1]}={'none' if v is None else format(v, 'g')}"
                                     for k, v in grid.items()) if grid else "")
    name = f"{arm}__seed{seed}"
    run_dir = study_dir / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "ablation.json").write_text(json.dumps({
        "study": study_dir.name, "baseline": "bce", "index": index, "run_name": name, "variant": variant,
        "arm": arm, "grid": grid, "seed": seed, "overrides": {}, "command": [], "exit_code": exit_code}))
    cfg = config_lib.apply_overrides(config_lib.Config(), [f"loss.objectness.name={objectness}"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_lib.to_dict(cfg)))
    with open(run_dir / "results.csv", "w") as fh:
        fh.write("epoch,train_box,train_obj,train_noobj,train_cls,mAP50,mAP50_95,epoch_time_s\n")
        for epoch, (m, o, n) in enumerate(zip(curve, obj, noobj), start=1):
            fh.write(f"{epoch},0.1,{o},{n},0.1,{m},{m / 2},10\n")
    if finished:
        final = {"precision": 0.8, "recall": 0.7, "mAP50": map50, "mAP50_95": map50_95, "train_obj": obj[-1],
                 "train_noobj": noobj[-1]}
        (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "epochs": len(curve),
                                                          "final": final, "wall_time_s": 120.0}))
        if pos is not None:
            np.savez(run_dir / "objectness_losses.npz", pos=np.asarray(pos), neg=np.asarray(neg))
    return run_dir


def test_report_statistics_tables_and_plots(tmp_path):
    study_dir = tmp_path / "objectness"
    base_map = [0.50, 0.52, 0.54]
    focal_map = [0.53, 0.56, 0.55]
    base_map95 = [0.30, 0.31, 0.32]
    focal_map95 = [0.35, 0.36, 0.38]
    curves = [(0.1, 0.4), (0.2, 0.5), (0.3, 0.6)]
    for seed in range(3):
        make_run(study_dir, seed, "bce", seed, base_map[seed], base_map95[seed], curve=curves[seed],
                 pos=[2.0, 1.0, 1.0] if seed == 0 else [1.0, 1.0, 1.0, 1.0], neg=[0.0, 0.0, 0.0, 4.0])
        make_run(study_dir, 3 + seed, "focal", seed, focal_map[seed], focal_map95[seed], objectness="focal",
                 obj=(0.2, 0.1), noobj=(0.4, 0.1), pos=[1.0, 3.0] if seed != 2 else None, neg=[1.0, 1.0])
    # a run still going (no summary.json) and a failed one: reported, never a crash, not in the statistics
    make_run(study_dir, 6, "focal_noobj", 0, 0.0, 0.0, finished=False)
    make_run(study_dir, 7, "focal_noobj", 1, 0.0, 0.0, finished=False, exit_code=1)

    report = build_report(study_dir)
    arms = {a.arm: a for a in report.arms}
    assert list(arms) == ["bce", "focal", "focal_noobj"]
    bce, focal, unfinished = arms["bce"], arms["focal"], arms["focal_noobj"]
    assert (bce.n, focal.n, unfinished.n) == (3, 3, 0)
    # bce mAP50 mean 0.52, sd sqrt((.02^2 + 0 + .02^2) / 2) = 0.02
    assert bce.mean["mAP50"] == pytest.approx(0.52) and bce.sd["mAP50"] == pytest.approx(0.02)
    # focal mAP50 [.53, .56, .55]: mean .546667, sd .015275
    assert focal.mean["mAP50"] == pytest.approx(0.546667, abs=1e-6)
    assert focal.sd["mAP50"] == pytest.approx(0.015275, abs=1e-6)
    d50 = focal.vs_baseline["mAP50"]
    assert d50.mean == pytest.approx(0.026667, abs=1e-6) and d50.half_width == pytest.approx(0.037946, abs=1e-5)
    assert d50.excludes_zero is False
    # mAP50_95 diffs [.05, .05, .06]: mean .053333; deviations -.00333, -.00333, .00667 -> squares sum 6.6667e-5,
    # / 2 -> sd .0057735; half-width 4.3027 * .0057735 / sqrt 3 = .014342 -> [.0390, .0677] excludes 0
    d95 = focal.vs_baseline["mAP50_95"]
    assert d95.mean == pytest.approx(0.053333, abs=1e-6) and d95.half_width == pytest.approx(0.014342, abs=1e-5)
    assert d95.excludes_zero is True
    # final noobj/obj ratio: bce 2.0 / 0.5 = 4, focal 0.1 / 0.1 = 1
    assert bce.mean["noobj_obj_ratio"] == pytest.approx(4.0) and focal.mean["noobj_obj_ratio"] == pytest.approx(1.0)

    # summary.csv: one row per run with identity, status and the final numbers
    with open(report.files["summary.csv"]) as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 8
    assert rows["focal__seed1"]["mAP50"] == "0.56" and rows["focal__seed1"]["status"] == "finished"
    assert rows["focal__seed1"]["obj_loss"] == "focal" and rows["focal__seed1"]["wall_time_s"] == "120"
    assert (rows["focal__seed1"]["obj_gamma"], rows["focal__seed1"]["obj_alpha"]) == ("2", "0.25")
    assert (rows["bce__seed1"]["obj_gamma"], rows["bce__seed1"]["obj_alpha"]) == ("", "")  # BCE has neither
    assert rows["focal_noobj__seed0"]["status"] == "partial" and rows["focal_noobj__seed1"]["status"] == "failed"
    assert rows["focal_noobj__seed0"]["wall_time_s"] == "20"  # partial: sum of epoch times 10 + 10
    assert rows["focal_noobj__seed0"]["mAP50"] == "0.2"  # partial: its latest epoch's (curve .1 then .2)

    md = report.files["summary.md"].read_text()
    assert "| bce | 3/3 |  | 0.5200 ± 0.0200 | (baseline) |" in md
    # p: t = .026667 / (.015275 / sqrt 3) = 3.0237, df 2: P(T <= t) = .5 + t / (2 sqrt(2 + t^2)) = .95290 -> .094;
    # one comparison, so Holm leaves it; mAP50_95: t = .053333 / (.0057735 / sqrt 3) = 16.0 -> p = .0039
    assert "| focal | 3/3 | 3 | 0.5467 ± 0.0153 | +0.0267 | ±0.0379 [-0.0113, +0.0646] | no | 0.094 | 0.094 | no (interim) |" in md
    assert "| focal | 3/3 | 3 | 0.3633 ± 0.0153 | +0.0533 | ±0.0143 [+0.0390, +0.0677] | yes | 0.0039 | 0.0039 | yes (interim) |" \
        in md
    assert "| focal_noobj | 0/2 (1 failed) |" in md
    # precision .8, recall .7, final train obj / noobj (bce .5 / 2, focal .1 / .1) and 120 s from summary.json
    same = "0.8000 ± 0.0000 | 0.7000 ± 0.0000"
    assert f"| bce | 3 | {same} | 0.5000 ± 0.0000 | 2.0000 ± 0.0000 | 4.00 ± 0.00 | 2.0 |" in md
    assert f"| focal | 3 | {same} | 0.1000 ± 0.0000 | 0.1000 ± 0.0000 | 1.00 ± 0.00 | 2.0 |" in md
    assert "focal_noobj__seed0: partial; left out of the statistics" in md
    assert "focal_noobj__seed1: failed; left out of the statistics" in md
    assert "focal__seed2: no objectness_losses.npz" in md

    # plots written, and the data behind them
    for name in ("map_per_variant.png", "val_map_per_epoch.png", "objectness_losses.png", "objectness_cdf.png"):
        assert report.files[name].is_file() and report.files[name].stat().st_size > 1000
    assert "grid_gamma_alpha.png" not in report.files  # no gamma x alpha grid in this study
    per_arm = report.plots["map_per_variant"]["mAP50"]
    assert per_arm["focal"]["seeds"] == {0: 0.53, 1: 0.56, 2: 0.55} and "focal_noobj" not in per_arm
    # per-epoch mAP, bce: epoch 1 seeds [.1, .2, .3] -> mean .2, band [.1, .3]; epoch 2 [.4, .5, .6] -> .5
    epochs = report.plots["val_map_per_epoch"]["bce"]
    assert epochs["epoch"].tolist() == [1, 2]
    assert epochs["mean"] == pytest.approx([0.2, 0.5]) and epochs["min"] == pytest.approx([0.1, 0.4])
    assert epochs["max"] == pytest.approx([0.3, 0.6])
    assert epochs["mAP50_95"]["mean"] == pytest.approx([0.1, 0.25])  # results.csv's mAP50_95 is mAP50 / 2 here
    # losses per epoch: bce noobj/obj = 8/1 then 2/0.5 -> [8, 4]; focal 0.4/0.2, 0.1/0.1 -> [2, 1]
    losses = report.plots["objectness_losses"]
    assert losses["ratio"]["bce"]["mean"] == pytest.approx([8.0, 4.0])
    assert losses["ratio"]["focal"]["mean"] == pytest.approx([2.0, 1.0])
    assert losses["train_noobj"]["bce"]["mean"] == pytest.approx([8.0, 2.0])
    # loss distribution at fraction 0.5 (index 100 of 201): bce pos seed 0 [1, 1, 2] -> .375 (see the curve test);
    # seeds 1, 2 [1, 1, 1, 1] -> .5; mean (.375 + .5 + .5) / 3 = .458333
    cdf = report.plots["objectness_cdf"]
    assert cdf["fraction"][100] == pytest.approx(0.5) and cdf["scorers"] == ["own"]  # no logits saved: own losses
    assert cdf["own"]["pos"]["bce"][100] == pytest.approx(0.458333, abs=1e-6)
    # bce negatives [0, 0, 0, 4]: three quarters of the samples carry no loss -> 0 up to fraction .75
    assert cdf["own"]["neg"]["bce"][150] == pytest.approx(0.0) and cdf["own"]["neg"]["bce"][-1] == pytest.approx(1.0)
    # focal pos [1, 3]: (0.5, .25) -> .25; averaged over the 2 seeds that have an npz
    assert cdf["own"]["pos"]["focal"][100] == pytest.approx(0.25)


def _drawn_figures(monkeypatch):
    """{file name: the matplotlib figure as drawn}, kept as each plot is saved."""
    import yolov3.report_plots as report_plots

    figures = {}
    real_save = report_plots._save

    def keep(fig, path, *args, **kwargs):
        figures[Path(path).name] = fig
        return real_save(fig, path, *args, **kwargs)

    monkeypatch.setattr(report_plots, "_save", keep)
    return figures


def test_per_epoch_figure_draws_each_map_in_its_own_panel(tmp_path, monkeypatch):
    figures = _drawn_figures(monkeypatch)
    study_dir = tmp_path / "s"
    make_run(study_dir, 0, "bce", 0, 0.5, 0.3, curve=(0.1, 0.4))
    make_run(study_dir, 1, "bce", 1, 0.5, 0.3, curve=(0.3, 0.6))
    build_report(study_dir)
    # mean over the two seeds; make_run records mAP50_95 as half of mAP50
    mAP50, mAP50_95 = [[list(line.get_ydata()) for line in ax.lines] for ax in figures["val_map_per_epoch.png"].axes]
    assert mAP50 == [pytest.approx([0.2, 0.5])] and mAP50_95 == [pytest.approx([0.1, 0.25])]


def test_gamma_alpha_grid_plot_data(tmp_path):
    study_dir = tmp_path / "focal_grid"
    index = 0
    make_run(study_dir, index, "bce", 0, 0.40, 0.2)
    values = {(0, 0.25): 0.41, (2, 0.25): 0.45, (0, None): 0.40, (2, None): 0.38}
    for gamma in (2, 0):  # written out of order: the plot sorts by gamma
        for alpha in (0.25, None):
            index += 1
            make_run(study_dir, index, "focal", 0, values[(gamma, alpha)], 0.2,
                     grid={"loss.objectness.gamma": gamma, "loss.objectness.alpha": alpha})
    report = build_report(study_dir)
    grid = report.plots["grid_gamma_alpha"]
    assert report.files["grid_gamma_alpha.png"].is_file()
    assert grid["focal"]["0.25"]["gamma"] == [0.0, 2.0] and grid["focal"]["0.25"]["mean"] == [0.41, 0.45]
    assert grid["focal"]["none"]["mean"] == [0.40, 0.38]
    md = report.files["summary.md"].read_text()
    # one seed: the difference is shown, its interval is undefined
    assert "| focal__gamma=2_alpha=0.25 | 1/1 | 1 | 0.4500 (n=1) | +0.0500 | undefined (n=1) |" in md
    with open(report.files["summary.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert rows[1]["loss.objectness.gamma"] == "2" and rows[2]["loss.objectness.alpha"] == "none"


def test_report_on_empty_or_unstarted_study(tmp_path):
    study_dir = tmp_path / "s"
    (study_dir / "runs" / "stranger").mkdir(parents=True)  # a folder not made by ablate.py
    (study_dir / "runs.json").write_text(json.dumps({"baseline": "bce", "grid_keys": [], "runs": [
        {"run_name": "bce__seed0", "index": 0, "variant": "bce", "arm": "bce", "grid": {}, "seed": 0}]}))
    report = build_report(study_dir)
    assert [r.status for r in report.study.runs] == ["not started"]
    md = report.files["summary.md"].read_text()
    assert "no finished run yet; plots skipped" in md
    assert "stranger: not in the current runs.json" in md
    assert not any(name.endswith(".png") for name in report.files)


@pytest.mark.parametrize("content", ['{"status": "finished", "fin', "[1, 2]", '"finished"', '{"epochs": 2}',
                                     '{"status": "running"}'])
def test_damaged_summary_json_is_named_and_not_counted_as_finished(tmp_path, content):
    study_dir = tmp_path / "s"
    for seed in range(2):
        make_run(study_dir, seed, "bce", seed, 0.5, 0.3)
        make_run(study_dir, 2 + seed, "focal", seed, 0.6, 0.4, objectness="focal")
    damaged = study_dir / "runs" / "focal__seed1" / "summary.json"
    damaged.write_text(content)
    report = build_report(study_dir, plots=False)
    status = {r.run_name: r.status for r in report.study.runs}
    assert status["focal__seed1"] == "partial" and status["focal__seed0"] == "finished"  # results.csv, no summary
    assert {a.arm: a.n for a in report.arms} == {"bce": 2, "focal": 1}
    md = report.files["summary.md"].read_text()
    assert f"{damaged}: " in md and "the run counts as not finished" in md


def test_damaged_run_files_are_noted_not_fatal(tmp_path):
    study_dir = tmp_path / "s"
    kept = make_run(study_dir, 0, "bce", 0, 0.5, 0.3)
    (kept / "config.yaml").write_bytes(b"loss: {}  # \xff\n")  # not UTF-8
    (kept / "summary.json").write_text(json.dumps({"status": "finished", "epochs": 2, "final": [0.5]}))  # final: not a mapping
    broken = make_run(study_dir, 1, "bce", 1, 0.5, 0.3) / "ablation.json"
    broken.write_text("[]")
    (study_dir / "runs.json").write_text('["bce__seed0"]')
    report = build_report(study_dir, plots=False)
    assert [(r.run_name, r.status) for r in report.study.runs] == [("bce__seed0", "finished")]
    assert math.isnan(report.study.runs[0].metrics["mAP50"]) and report.study.runs[0].metrics["epochs"] == 2
    md = report.files["summary.md"].read_text()
    assert f"{broken}: expected a JSON mapping, got list; ignored" in md
    assert f"{study_dir / 'runs.json'}: expected a JSON mapping, got list; ignored" in md
    assert "bce__seed0: config.yaml unreadable" in md


def test_a_shared_study_folder_runs_no_code_when_its_report_is_built(tmp_path):
    # a study folder from someone else (committed, sent): a YAML tag and a pickled npz are noted, never executed
    marker = tmp_path / "PWNED"
    study_dir = tmp_path / "s"
    tagged = make_run(study_dir, 0, "bce", 0, 0.5, 0.3)
    (tagged / "config.yaml").write_text(f"loss: !!python/object/apply:os.system ['touch {marker}']\n")
    pickled = make_run(study_dir, 1, "bce", 1, 0.5, 0.3)
    np.savez(pickled / "objectness_losses.npz", pos=np.array([CodeRunningPickle(marker)], dtype=object),
             neg=np.ones(2))
    garbage = make_run(study_dir, 2, "bce", 2, 0.5, 0.3)
    (garbage / "objectness_losses.npz").write_bytes(b"not an npz")
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert not marker.exists()
    assert "bce__seed0: config.yaml unreadable" in md
    assert "bce__seed1: objectness_losses.npz unreadable" in md and "bce__seed2: objectness_losses.npz unreadable" in md


def _bce_and_worse(study_dir):
    """Three seeds of bce and of an arm .05 lower on average at mAP@.5 (.45, .46, .50 against .50, .52, .54)."""
    for seed, (base, worse) in enumerate([(0.50, 0.45), (0.52, 0.46), (0.54, 0.50)]):
        make_run(study_dir, seed, "bce", seed, base, 0.3)
        make_run(study_dir, 3 + seed, "worse", seed, worse, 0.3)
    return study_dir


def test_report_rows_for_a_worse_variant_and_runs_without_results_csv(tmp_path):
    study_dir = _bce_and_worse(tmp_path / "s")
    # interrupted before its first epoch ended: last.pt and config.yaml, no results.csv -> partial
    partial = make_run(study_dir, 6, "late", 0, 0.0, 0.0, finished=False)
    (partial / "results.csv").unlink()
    (partial / "weights").mkdir()
    (partial / "weights" / "last.pt").write_bytes(b"")  # the layout of this version (the older one: test_ablation)
    # launched and nothing written yet: only ablation.json and config.yaml -> not started
    unstarted = make_run(study_dir, 7, "late", 1, 0.0, 0.0, finished=False)
    (unstarted / "results.csv").unlink()
    report = build_report(study_dir, plots=False)
    status = {r.run_name: r.status for r in report.study.runs}
    assert status["late__seed0"] == "partial" and status["late__seed1"] == "not started"
    late = next(r for r in report.study.runs if r.run_name == "late__seed0")
    assert math.isnan(late.metrics["mAP50"]) and late.history is None
    assert {a.arm: a.n for a in report.arms} == {"bce": 3, "worse": 3, "late": 0}
    md = report.files["summary.md"].read_text()
    # mAP50 mean .47, sd sqrt((.0004 + .0001 + .0009) / 2) = .026458; the interval from the test above
    # t = .05 / (.01 / sqrt 3) = 8.660, df 2: p = 2 (1 - (.5 + t / (2 sqrt(2 + t^2)))) = .0131
    assert "| worse | 3/3 | 3 | 0.4700 ± 0.0265 | -0.0500 | ±0.0248 [-0.0748, -0.0252] | yes | 0.013 | 0.013 | yes (interim) |" \
        in md
    assert "late__seed0: partial; left out of the statistics" in md
    assert "late__seed1: not started; left out of the statistics" in md
    with open(report.files["summary.csv"]) as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["late__seed0"]["status"] == "partial" and rows["late__seed0"]["mAP50"] == ""


def test_holm_adjustment_by_hand():
    from yolov3.report import holm_adjust

    # m = 4 sorted p: .01 x4 = .04; .02 x3 = .06; .03 x2 = .06 (monotone: max with the previous); .5 x1 = .5
    adjusted = holm_adjust({"a": 0.03, "b": 0.01, "c": 0.5, "d": 0.02, "e": None})
    assert adjusted == pytest.approx({"b": 0.04, "d": 0.06, "a": 0.06, "c": 0.5})
    assert holm_adjust({"a": 0.6, "b": 0.4}) == pytest.approx({"b": 0.8, "a": 0.8})  # capped, then monotone
    assert holm_adjust({}) == {}


def test_paired_t_test_p_value_and_holm_over_the_study(tmp_path):
    # diffs [.05, .05, .06] -> t = 16.0 at df 2 -> p = .0039 (see above); diffs [.01, -.01, .03] -> mean .01,
    # sd .02, t = .866 -> P(T <= t) = .5 + .866 / (2 sqrt(2.75)) = .76112 -> p = .4778; Holm over the 2:
    # min p x2 = .0078, then max(.0078, .4778) = .4778
    d = paired_difference({0: 0.30, 1: 0.31, 2: 0.32}, {0: 0.35, 1: 0.36, 2: 0.38})
    assert d.p_value == pytest.approx(2 * (1 - (0.5 + 16.0 / (2 * math.sqrt(258.0)))), rel=1e-6)
    study_dir = tmp_path / "s"
    for seed, (base, better, same) in enumerate([(0.30, 0.35, 0.31), (0.31, 0.36, 0.30), (0.32, 0.38, 0.35)]):
        make_run(study_dir, 3 * seed, "bce", seed, 0.5, base)
        make_run(study_dir, 3 * seed + 1, "better", seed, 0.5, better)
        make_run(study_dir, 3 * seed + 2, "same", seed, 0.5, same)
    arms = {a.arm: a for a in build_report(study_dir, plots=False).arms}
    better, same = arms["better"].vs_baseline["mAP50_95"], arms["same"].vs_baseline["mAP50_95"]
    assert same.p_value == pytest.approx(0.4778, abs=1e-4)
    assert better.p_holm == pytest.approx(2 * better.p_value) and same.p_holm == pytest.approx(same.p_value)
    text = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert "adjusts it over the 2 comparisons of the table (every arm" in text
    # an arm with one seed has no p yet: Holm counts the 2 comparisons made, and the text says 2 of 3 are
    make_run(study_dir, 9, "late", 0, 0.5, 0.9)
    arms = {a.arm: a for a in build_report(study_dir, plots=False).arms}
    assert arms["late"].vs_baseline["mAP50_95"].p_holm is None
    assert arms["better"].vs_baseline["mAP50_95"].p_holm == pytest.approx(better.p_holm)
    text = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert ("adjusts it over the comparisons of the table that have a p, 2 of 3 (an arm has one once 2 of its seeds "
            "are paired with the baseline's) (every arm") in text
    make_run(study_dir, 10, "late", 1, 0.5, 0.9, finished=False)  # a planned run still to finish
    text = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert "2 of 3 (an arm has one once 2 of its seeds are paired with the baseline's; planned runs are still " \
           "to come, so a verdict read now is not the study's) (every arm" in text
    # and each verdict of the table says it is an interim one
    row = next(line for line in text.split("## mAP@0.5:0.95")[1].splitlines() if line.startswith("| better |"))
    assert row.endswith("| yes (interim) |")
    # constant differences: sd 0, p 0 (or 1 when the difference is 0)
    assert paired_difference({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5}).p_value == 0.0
    assert paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).p_value == 1.0


def test_runs_of_different_precision_are_never_paired(tmp_path):
    study_dir = tmp_path / "s"
    for seed in range(3):
        make_run(study_dir, 2 * seed, "bce", seed, 0.5, 0.30 + 0.01 * seed)
        variant = make_run(study_dir, 2 * seed + 1, "focal", seed, 0.5, 0.35 + 0.01 * seed)
        summary = json.loads((variant / "summary.json").read_text())
        summary["precision"] = "bf16" if seed == 1 else "fp32"
        (variant / "summary.json").write_text(json.dumps(summary))
        base_summary = json.loads((study_dir / "runs" / f"bce__seed{seed}" / "summary.json").read_text())
        (study_dir / "runs" / f"bce__seed{seed}" / "summary.json").write_text(
            json.dumps({**base_summary, "precision": "fp32"}))
    report = build_report(study_dir, plots=False)
    diff = next(a for a in report.arms if a.arm == "focal").vs_baseline["mAP50_95"]
    assert diff.seeds == [0, 2] and diff.unpaired_precision == [1] and diff.n == 2
    md = report.files["summary.md"].read_text()
    assert ("not paired, configured alike but trained in another precision than the baseline's run of the same "
            "seed: focal seed 1") in md
    # make_run records 120 s per run: 5 x 120 s = 0.17 h, 1 x 120 s = 0.03 h
    assert "| fp32 | unknown CPU | 5 | 0.17 |" in md and "| bf16 | unknown CPU | 1 | 0.03 |" in md
    # arms that set different precisions on purpose (a precision study) are paired
    for seed in range(3):
        config_path = study_dir / "runs" / f"focal__seed{seed}" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["train"]["amp"] = "bf16"
        config_path.write_text(yaml.safe_dump(config))
    diff = next(a for a in build_report(study_dir, plots=False).arms if a.arm == "focal").vs_baseline["mAP50_95"]
    assert diff.seeds == [0, 1, 2] and diff.unpaired_precision == []


def test_common_objectness_losses_score_logits_with_one_function():
    from yolov3.report import common_objectness_losses

    logits = np.array([-20.0, 0.0, 3.0])
    # negatives: BCE = softplus(x); focal gamma 2: sigmoid(x)^2 softplus(x)
    bce = [math.log1p(math.exp(v)) for v in logits]
    sig = [1 / (1 + math.exp(-v)) for v in logits]
    assert common_objectness_losses(logits, False, "bce") == pytest.approx(bce, rel=1e-12)
    assert common_objectness_losses(logits, False, "focal2") == pytest.approx([s * s * b for s, b in zip(sig, bce)],
                                                                               rel=1e-12)
    # positives: BCE = softplus(-x); focal (1 - p)^2 softplus(-x)
    assert common_objectness_losses(logits, True, "focal2")[2] == pytest.approx(
        (1 - sig[2]) ** 2 * math.log1p(math.exp(-3.0)), rel=1e-12)
    assert common_objectness_losses(logits, False, "bce")[0] == pytest.approx(2.0611536e-09, rel=1e-6)
    with pytest.raises(ValueError, match="choose bce or focal2"):
        common_objectness_losses(logits, True, "mse")


def test_cdf_from_logits_and_the_first_epoch_plot(tmp_path):
    study_dir = tmp_path / "s"
    for seed in range(2):
        for index, (variant, scale) in enumerate((("bce", 1.0), ("focal", 2.0))):
            run_dir = make_run(study_dir, 2 * seed + index, variant, seed, 0.5, 0.3)
            # negatives at logits -20 and 0 (BCE: 2e-9 and log 2: the first carries ~nothing)
            np.savez(run_dir / "objectness_losses.npz", pos=np.array([1.0]), neg=np.array([1.0, 1.0]),
                     pos_logit=np.array([2.0]), neg_logit=np.array([-20.0, 0.0]))
            with open(run_dir / "diagnostics.csv", "w") as fh:
                fh.write("epoch,iteration,obj,noobj,neg_grad_share\n")
                for it in range(3):
                    fh.write(f"1,{it},{scale * (it + 1)},{10.0 / (it + 1)},{0.9 - 0.2 * it - 0.1 * seed}\n")
                fh.write("2,20,1,1,0.5\n")  # epoch 2 rows are not in the first-epoch plot
    report = build_report(study_dir)
    cdf = report.plots["objectness_cdf"]
    assert cdf["scorers"] == ["bce", "focal2"]
    # two negatives sorted [2.06e-9, log 2]: at fraction .5 the curve holds 2.06e-9 / (log 2 + 2.06e-9) ~ 3e-9
    assert cdf["bce"]["neg"]["bce"][100] == pytest.approx(2.0611536e-09 / math.log(2.0), rel=1e-4)
    assert cdf["focal2"]["neg"]["focal"][200] == pytest.approx(1.0)
    first = report.plots["first_epoch"]
    assert first["obj"]["focal"]["step"].tolist() == [1, 2, 3]
    assert first["obj"]["focal"]["mean"] == pytest.approx([2.0, 4.0, 6.0])
    assert first["neg_grad_share"]["bce"]["mean"] == pytest.approx([0.85, 0.65, 0.45])  # mean of the 2 seeds
    assert report.files["first_epoch.png"].is_file()


def test_hardest_share_by_hand():
    from yolov3.report_tables import hardest_share

    losses = np.array([1.0] * 99 + [99.0])  # the hardest 1 % (one of 100) carries 99 of 198
    assert hardest_share(losses) == pytest.approx(0.5)
    assert hardest_share(np.array([3.0, 1.0]), fraction=0.5) == pytest.approx(0.75)
    assert hardest_share(np.array([5.0])) == pytest.approx(1.0)  # at least one sample
    assert np.isnan(hardest_share(np.zeros(0))) and np.isnan(hardest_share(np.zeros(3)))


def test_diagnostics_table_means_over_seeds(tmp_path):
    study_dir = tmp_path / "s"
    for seed, (share1, norm) in enumerate(((0.9, 2000.0), (0.7, 1000.0))):
        run_dir = make_run(study_dir, seed, "bce", seed, 0.5, 0.3)
        np.savez(run_dir / "objectness_losses.npz", pos=np.array([1.0]), neg=np.array([1.0, 1.0]),
                 pos_logit=np.array([0.0, 0.0]), neg_logit=np.array([-20.0] * 99 + [0.0]))
        with open(run_dir / "diagnostics.csv", "w") as fh:
            fh.write("epoch,iteration,grad_norm,neg_grad_share\n")
            fh.write(f"1,0,{norm},{share1}\n1,1,5,0.1\n")
        with open(run_dir / "results.csv", "w") as fh:
            fh.write("epoch,mAP50,clipped_fraction,neg_grad_share,p_pos_mean,p_neg_q999,neg_over_half\n")
            fh.write(f"1,0.1,0.5,{share1 - 0.2},0.3,0.2,4\n2,0.2,0,0.5,{0.6 + seed / 10},0.1,1\n")
            # an epoch shorter than diagnostics_every steps records no sample: the last columns take epoch 2's
            fh.write("3,0.25,0,nan,nan,nan,nan\n")
    text = build_report(study_dir).files["summary.md"].read_text()
    section = text.split("## Objectness diagnostics", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| bce | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:8] == ["1500 ± 707", "0.50 ± 0.00", "0.800 ± 0.141", "0.600 ± 0.141", "0.500 ± 0.000",
                          "0.650 ± 0.071"]
    # positives at logit 0: BCE log 2; negatives: 99 at -20 (2e-9 each) and one at 0 carrying ~all of the loss
    assert cells[8:10] == ["0.100 ± 0.000", "1.00 ± 0.00"]  # epoch 2's: the last that recorded them
    assert cells[10] == f"{math.log(2):.3f} ± 0.000" and cells[11] == "1.000 ± 0.000"


def test_per_class_and_test_split_tables_by_hand(tmp_path):
    """Runs that recorded per-class rows and a test-split score (summary.json 'per_class', 'test') get two more
    tables; a study whose runs did not (every study before them) gets neither, so its report is unchanged."""
    study_dir = tmp_path / "s"
    plain = build_report(_two_arm_study(tmp_path / "plain"), plots=False).files["summary.md"].read_text()
    assert "Per-class AP" not in plain and "Test split" not in plain
    rows = {"bce": [(0.9, 0.5, 0.4), (0.8, 0.7, 0.6)], "focal": [(0.95, 0.6, 0.5), (0.85, 0.8, 0.7)]}
    tests = {"bce": [0.50, 0.40], "focal": [0.56, 0.43]}
    for index, (arm, per_seed) in enumerate(rows.items()):
        for seed, (wbc, rbc, rbc95) in enumerate(per_seed):
            run = make_run(study_dir, 2 * index + seed, arm, seed, 0.5, 0.3)
            summary = json.loads((run / "summary.json").read_text())
            summary["per_class"] = [{"name": "WBC", "mAP50": wbc, "mAP50_95": wbc / 2},
                                    {"name": "RBC", "mAP50": rbc, "mAP50_95": rbc95}]
            summary["test"] = {"mAP50": 0.9, "mAP50_95": tests[arm][seed], "precision": 0.8, "recall": 0.7}
            (run / "summary.json").write_text(json.dumps(summary))
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    # bce WBC AP@.5: (.9, .8) -> .850 ± .071; focal RBC AP@.5:.95 (.5, .7) -> .600 ± .141
    assert "| bce | 2 | 0.850 ± 0.071 | 0.425 ± 0.035 | 0.600 ± 0.141 | 0.500 ± 0.141 |" in md
    assert "| focal | 2 | 0.900 ± 0.071 | 0.450 ± 0.035 | 0.700 ± 0.141 | 0.600 ± 0.141 |" in md
    # test split: differences .06 and .03 -> mean .045, sd .0212, t(.975, 1) = 12.706: half width .1906
    assert "| focal | 2 | 0.9000 ± 0.0000 | 0.4950 ± 0.0919 | +0.0450 | ±0.1906 [-0.1456, +0.2356] |" in md
    # per-class AP@.5:.95 paired differences: WBC (.475, .425) - (.45, .40) = +.025 twice, RBC (.5, .7) - (.4, .6)
    assert "| bce |  | (baseline) |  | (baseline) |  |" in md
    assert "| focal | 2 | +0.025 | ±0.000 [+0.025, +0.025] | +0.100 | ±0.000 [+0.100, +0.100] |" in md
    # an arm whose RBC differences are +.1 and -.2: mean -.05, sd .2121, half width 12.706 * .2121 / sqrt 2 = 1.906
    for seed, rbc95 in enumerate((0.5, 0.4)):
        run = make_run(study_dir, 4 + seed, "alpha", seed, 0.5, 0.3)
        summary = json.loads((run / "summary.json").read_text())
        summary["per_class"] = [{"name": "WBC", "mAP50": 0.9, "mAP50_95": 0.45 - 0.05 * seed},
                                {"name": "RBC", "mAP50": 0.5, "mAP50_95": rbc95}]
        (run / "summary.json").write_text(json.dumps(summary))
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert "| alpha | 2 | +0.000 | ±0.000 [+0.000, +0.000] | -0.050 | ±1.906 [-1.956, +1.856] |" in md


def _two_arm_study(study_dir):
    for seed in range(2):
        make_run(study_dir, seed, "bce", seed, 0.5, 0.3)
        make_run(study_dir, 2 + seed, "focal", seed, 0.6, 0.35)
    return study_dir


def test_report_figures_are_palette_pngs_with_the_same_bytes_every_time(tmp_path):
    """The figures are committed with each study: small (a 256-colour palette at 100 dpi) and deterministic (no
    metadata, no dithering), so that rebuilding a report changes no byte of it."""
    from matplotlib.figure import Figure
    from PIL import Image

    from yolov3.report_plots import DPI, _save

    def draw(path):
        fig = Figure(figsize=(4, 3), layout="constrained")
        ax = fig.subplots()
        x = np.linspace(0, 1, 200)
        for i in range(12):  # more colours than tab10, each line anti-aliased
            ax.plot(x, x ** (i + 1), label=f"arm {i}")
            ax.fill_between(x, x ** (i + 1), x ** (i + 2), alpha=0.15, linewidth=0)
        ax.legend(fontsize=7)
        _save(fig, path)

    draw(tmp_path / "a.png")
    draw(tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG" and image.mode == "P" and image.size == (4 * DPI, 3 * DPI)
        assert not getattr(image, "text", {})  # no 'Software: matplotlib version ...'


# ---------------------------------------------------------------------------------------------------------------
# Planted-bug checks: edge cases of the statistics, the tables and the plotted data
# ---------------------------------------------------------------------------------------------------------------
def test_statistics_edge_cases_by_hand():
    from yolov3.report import holm_adjust

    same = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})  # differences [0, 0]: interval [0, 0]
    assert same.low == same.high == 0 and same.excludes_zero is False
    # Holm: .6 x 2 = 1.2 -> capped at 1; then max(1, .7 x 1) = 1
    assert holm_adjust({"a": 0.6, "b": 0.7}) == pytest.approx({"a": 1.0, "b": 1.0})
    # a seed whose baseline value is nan is not paired: diffs [.03, .04], mean .035, sd .01 / sqrt 2 = .0070711,
    # half width 12.7062 x .0070711 / sqrt 2 = .063531
    d = paired_difference({0: 0.50, 1: 0.52, 2: float("nan")}, {0: 0.53, 1: 0.56, 2: 0.55})
    assert d.n == 2 and d.seeds == [0, 1] and d.half_width == pytest.approx(0.063531, abs=1e-5)
    # a variant run that recorded no precision is paired (only two known, different precisions are not)
    d = paired_difference({0: 0.50, 1: 0.52, 2: 0.54}, {0: 0.53, 1: 0.56, 2: 0.55},
                          baseline_numeric={s: ("auto", "fp32") for s in range(3)},
                          variant_numeric={0: ("auto", ""), 1: ("auto", "fp32"), 2: ("auto", "fp32")})
    assert d.n == 3 and d.unpaired_precision == [] and d.half_width == pytest.approx(0.037946, abs=1e-5)
    # mean and sd of the finite values only: [.5, .7] -> .6, .2 / sqrt 2
    assert mean_sd([0.5, float("nan"), 0.7]) == pytest.approx((0.6, 0.141421), abs=1e-6)


def test_a_run_that_exited_0_without_a_summary_failed_and_its_cpu_is_named(tmp_path):
    study_dir = tmp_path / "s"
    make_run(study_dir, 0, "bce", 0, 0.546667, 0.3)
    (study_dir / "runs" / "bce__seed0" / "environment.json").write_text(json.dumps({"cpu_line": "Test CPU"}))
    make_run(study_dir, 1, "bce", 1, 0.5, 0.3, finished=False, exit_code=0)
    report = build_report(study_dir, plots=False)
    status = {r.run_name: r.status for r in report.study.runs}
    assert status == {"bce__seed0": "finished", "bce__seed1": "failed"}
    with open(report.files["summary.csv"]) as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["bce__seed1"]["status"] == "failed"
    assert rows["bce__seed0"]["cpu"] == "Test CPU" and rows["bce__seed0"]["mAP50"] == "0.546667"
    assert rows["bce__seed0"]["epochs"] == "2"
    md = report.files["summary.md"].read_text()
    assert "| bce | 1/2 (1 failed) |" in md and "| unknown | Test CPU | 1 | 0.03 |" in md  # 120 s = 0.03 h
    assert "Runs: 1 finished, 1 failed." in md


def test_run_folders_that_name_two_baselines_get_no_differences(tmp_path):
    study_dir = tmp_path / "s"
    make_run(study_dir, 0, "bce", 0, 0.5, 0.3)
    focal = make_run(study_dir, 1, "focal", 0, 0.6, 0.35)
    identity = json.loads((focal / "ablation.json").read_text())
    (focal / "ablation.json").write_text(json.dumps({**identity, "baseline": "focal"}))
    report = build_report(study_dir, plots=False)
    assert report.study.baseline is None and all(a.vs_baseline == {} for a in report.arms)
    assert "no single baseline recorded in the run folders" in report.files["summary.md"].read_text()


def test_a_focal_run_without_alpha_says_none_and_a_count_of_hardest_samples_is_rounded(tmp_path):
    from yolov3.report_tables import hardest_share

    study_dir = tmp_path / "s"
    run = make_run(study_dir, 0, "focal", 0, 0.5, 0.3, objectness="focal")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["loss"]["objectness"]["alpha"] = None
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with open(build_report(study_dir, plots=False).files["summary.csv"]) as fh:
        row = next(csv.DictReader(fh))
    assert (row["obj_gamma"], row["obj_alpha"]) == ("2", "none")
    # 170 samples: the hardest 1 % is round(1.7) = 2 of them, 20 of the 188 summed
    assert hardest_share(np.array([10.0, 10.0] + [1.0] * 168)) == pytest.approx(20 / 188)


def test_report_counts_only_finished_runs_in_diagnostics_and_machine_tables(tmp_path):
    study_dir = tmp_path / "s"
    for seed, share1 in enumerate((0.9, 0.7)):
        run_dir = make_run(study_dir, seed, "bce", seed, 0.5, 0.3)
        with open(run_dir / "results.csv", "w") as fh:
            fh.write("epoch,mAP50,clipped_fraction,neg_grad_share,p_pos_mean,p_neg_q999,neg_over_half\n")
            fh.write(f"1,0.1,0.5,{share1 - 0.2},0.3,0.2,4\n2,0.2,0,0.5,0.6,0.1,1\n")
    partial = make_run(study_dir, 2, "bce", 2, 0.5, 0.3, finished=False)
    (partial / "results.csv").write_text("epoch,mAP50,clipped_fraction,neg_grad_share,p_pos_mean,p_neg_q999,"
                                         "neg_over_half\n1,0.1,1.0,0.1,0.1,0.9,50\n")
    md = build_report(study_dir).files["summary.md"].read_text()
    row = next(line for line in md.split("## Objectness diagnostics", 1)[1].splitlines() if line.startswith("| bce |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2" and cells[3] == "0.50 ± 0.00"
    assert "| unknown | unknown CPU | 2 | 0.07 |" in md  # two finished runs of 120 s; the partial one not counted
    assert "Runs: 2 finished, 1 partial." in md


def test_per_class_deltas_pair_by_precision_and_skip_runs_of_other_classes(tmp_path):
    study_dir = tmp_path / "s"
    for index, (arm, seed) in enumerate([(a, s) for a in ("bce", "focal") for s in range(3)]):
        run = make_run(study_dir, index, arm, seed, 0.5, 0.3)
        summary = json.loads((run / "summary.json").read_text())
        summary["precision"] = "bf16" if (arm, seed) == ("focal", 1) else "fp32"
        summary["per_class"] = [{"name": "WBC", "mAP50": 0.9, "mAP50_95": 0.45 + 0.01 * index},
                                {"name": "RBC", "mAP50": 0.7, "mAP50_95": 0.6}]
        (run / "summary.json").write_text(json.dumps(summary))
    other = make_run(study_dir, 6, "bce", 3, 0.5, 0.3)  # its classes in another order: not in the table
    summary = json.loads((other / "summary.json").read_text())
    summary["per_class"] = [{"name": "RBC", "mAP50": 0.1, "mAP50_95": 0.1}, {"name": "WBC", "mAP50": 0.2,
                                                                               "mAP50_95": 0.2}]
    (other / "summary.json").write_text(json.dumps({**summary, "precision": "fp32"}))
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert "| bce | 3 | 0.900 ± 0.000 | 0.460 ± 0.010 | 0.700 ± 0.000 | 0.600 ± 0.000 |" in md
    deltas = md.split("each arm minus `bce`", 1)[1]
    assert next(line for line in deltas.splitlines() if line.startswith("| focal |")).startswith("| focal | 2 |")


def test_test_split_table_leaves_the_baselines_differences_blank(tmp_path):
    study_dir = tmp_path / "s"
    for index, (arm, values) in enumerate({"bce": (0.50, 0.40), "focal": (0.56, 0.43)}.items()):
        for seed, value in enumerate(values):
            run = make_run(study_dir, 2 * index + seed, arm, seed, 0.5, 0.3)
            summary = json.loads((run / "summary.json").read_text())
            summary["test"] = {"mAP50": 0.9, "mAP50_95": value, "precision": 0.8, "recall": 0.7}
            (run / "summary.json").write_text(json.dumps(summary))
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert "| bce | 2 | 0.9000 ± 0.0000 | 0.4500 ± 0.0707 |  |  |" in md  # sd of [.5, .4] = .1 / sqrt 2


def test_verdicts_are_interim_while_planned_runs_have_not_started(tmp_path):
    study_dir = _bce_and_worse(tmp_path / "s")
    unstarted = make_run(study_dir, 7, "late", 1, 0.0, 0.0, finished=False)
    (unstarted / "results.csv").unlink()
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    row = next(line for line in md.split("## mAP@0.5", 1)[1].splitlines() if line.startswith("| worse |"))
    assert row.endswith("| yes (interim) |")


def test_the_baseline_without_a_finished_run_is_named(tmp_path):
    study_dir = tmp_path / "s"
    for seed in range(2):
        make_run(study_dir, seed, "bce", seed, 0.5, 0.3, finished=False)
        make_run(study_dir, 2 + seed, "focal", seed, 0.6, 0.35)
    md = build_report(study_dir, plots=False).files["summary.md"].read_text()
    assert "the baseline bce has no finished run yet; no differences computed" in md


def test_plotted_data_seed_dots_epochs_some_seeds_reached_and_grid_error_bars(tmp_path, monkeypatch):
    import yolov3.report_plots as report_plots

    figures = _drawn_figures(monkeypatch)
    study_dir = tmp_path / "s"
    make_run(study_dir, 0, "aaa", 0, 0.0, 0.0, finished=False)  # planned first, nothing finished: not drawn
    make_run(study_dir, 1, "bce", 0, 0.5, 0.3, curve=(0.1, 0.2, 0.3), obj=(1, 1, 1), noobj=(1, 1, 1))
    make_run(study_dir, 2, "bce", 1, 0.5, 0.3, curve=(0.3, 0.4))
    make_run(study_dir, 3, "focal", 0, 0.6, 0.3)
    make_run(study_dir, 4, "focal", 1, 0.6, 0.3)
    report = build_report(study_dir)
    seed_dots = {line.get_label(): list(line.get_xdata()) for line in figures["map_per_variant.png"].axes[0].lines}
    assert seed_dots["seed 0"] == [0, 1]  # bce at 0, focal at 1
    curve = report.plots["val_map_per_epoch"]["bce"]
    assert curve["epoch"].tolist() == [1, 2, 3] and curve["mean"] == pytest.approx([0.2, 0.3, 0.3])
    assert curve["n"].tolist() == [2, 2, 1]

    assert report_plots.find_gamma_alpha_keys(["loss.cls.gamma", "loss.objectness.gamma", "loss.objectness.alpha"]
                                              ) == ("loss.objectness.gamma", "loss.objectness.alpha")
    grid_dir = tmp_path / "g"
    make_run(grid_dir, 0, "bce", 0, 0.40, 0.2)
    for seed, (m50, m95) in enumerate([(0.40, 0.20), (0.42, 0.30)]):
        make_run(grid_dir, 1 + seed, "focal", seed, m50, m95,
                 grid={"loss.objectness.gamma": 0, "loss.objectness.alpha": 0.25})
    make_run(grid_dir, 3, "focal", 0, 0.0, 0.0, finished=False,
             grid={"loss.objectness.gamma": 2, "loss.objectness.alpha": 0.25})
    grid = build_report(grid_dir).plots["grid_gamma_alpha"]["focal"]["0.25"]
    assert grid["gamma"] == [0.0] and grid["mean"] == pytest.approx([0.41])
    assert grid["sd"] == pytest.approx([0.0141421], abs=1e-6)  # sd of mAP@.5 [.40, .42], not of mAP@.5:.95


def test_a_partial_runs_epochs_and_a_zero_objectness_loss(tmp_path):
    from yolov3.report_load import load_run, noobj_obj_ratio

    run_dir = make_run(tmp_path / "s", 0, "bce", 0, 0.5, 0.3, finished=False)  # two epoch rows, eight columns
    assert load_run(run_dir, []).metrics["epochs"] == 2.0
    assert math.isnan(noobj_obj_ratio({"train_obj": 0.0, "train_noobj": 1.0}))
    assert noobj_obj_ratio({"train_obj": 0.5, "train_noobj": 2.0}) == 4.0


def test_small_p_holm_verdicts_recall_sd_figure_links_and_unpaired_arms(tmp_path):
    md = build_report(_two_arm_study(tmp_path / "two")).files["summary.md"].read_text()
    row = next(line for line in md.split("## mAP@0.5", 1)[1].splitlines() if line.startswith("| focal |"))
    assert row.endswith("| yes | <0.001 | <0.001 | yes |")  # constant differences: p 0
    assert "![map_per_variant](map_per_variant.png)" in md
    study_dir = tmp_path / "holm"
    for seed, (base, better) in enumerate([(0.50, 0.52), (0.52, 0.55), (0.54, 0.58)]):
        make_run(study_dir, 3 * seed, "bce", seed, base, 0.3)
        for k, arm in enumerate(("a", "b")):
            make_run(study_dir, 3 * seed + 1 + k, arm, seed, better, 0.3)
    for seed, recall in enumerate((0.6, 0.8, 0.7)):
        path = study_dir / "runs" / f"bce__seed{seed}" / "summary.json"
        summary = json.loads(path.read_text())
        summary["final"]["recall"] = recall
        summary["precision"] = "bf16"
        path.write_text(json.dumps(summary))
    report = build_report(study_dir, plots=False)
    md = report.files["summary.md"].read_text()
    # diffs [.02, .03, .04]: t = 3 sqrt 3, p = 1 - t / sqrt(2 + t^2) = .0351; Holm over 2: .0702 -> no
    row = next(line for line in md.split("## mAP@0.5", 1)[1].splitlines() if line.startswith("| a |"))
    assert row.endswith("| 0.035 | 0.07 | no |")
    assert "| bce | 3 | 0.8000 ± 0.0000 | 0.7000 ± 0.1000 |" in md
    with open(report.files["summary.csv"]) as fh:
        assert next(r for r in csv.DictReader(fh) if r["run"] == "bce__seed0")["numeric"] == "bf16"
    apart = tmp_path / "apart"
    make_run(apart, 0, "bce", 0, 0.5, 0.3)
    make_run(apart, 1, "focal", 1, 0.6, 0.3)
    path = apart / "runs" / "bce__seed0" / "summary.json"
    make_run(apart, 2, "bce", 2, 0.5, 0.3)
    summary = json.loads((apart / "runs" / "bce__seed2" / "summary.json").read_text())
    del summary["wall_time_s"]
    (apart / "runs" / "bce__seed2" / "summary.json").write_text(json.dumps(summary))
    md = build_report(apart, plots=False).files["summary.md"].read_text()
    assert "| 0 | 0.6000 (n=1) | — | no seed finished in both |" in md
    assert "| unknown | unknown CPU | 3 | 0.07 (2 timed) |" in md


def test_the_per_arm_figure_draws_each_panels_own_means_sds_and_baseline(tmp_path, monkeypatch):
    figures = _drawn_figures(monkeypatch)
    study_dir = tmp_path / "s"
    for seed, (b50, b95, f95) in enumerate([(0.50, 0.30, 0.35), (0.52, 0.31, 0.36), (0.54, 0.32, 0.38)]):
        make_run(study_dir, seed, "bce", seed, b50, b95)
        make_run(study_dir, 3 + seed, "focal", seed, 0.55, f95)
    build_report(study_dir)
    fig = figures["map_per_variant.png"]
    means = fig.axes[1].containers[0].lines[0].get_ydata()
    assert list(means) == pytest.approx([0.31, 0.363333], abs=1e-6)  # the mAP@.5:.95 panel's own means
    bar = fig.axes[0].containers[0].lines[2][0].get_segments()[0]  # bce's mAP@.5: .52 ± sd .02
    assert [y for _, y in bar] == pytest.approx([0.50, 0.54])
    baseline = next(line for line in fig.axes[1].lines if line.get_label() == "baseline bce")
    assert list(baseline.get_ydata()) == pytest.approx([0.31, 0.31])


def test_per_epoch_curves_are_means_with_a_min_max_band_and_loss_panels_keep_zeros(tmp_path, monkeypatch):
    figures = _drawn_figures(monkeypatch)
    study_dir = tmp_path / "s"
    for seed, curve in enumerate([(0.1, 0.4), (0.2, 0.5), (0.6, 0.9)]):
        make_run(study_dir, seed, "bce", seed, 0.5, 0.3, curve=curve,
                 obj=(0.0, 0.5) if seed == 0 else (1.0, 0.5), noobj=(8.0, 2.0) if seed == 0 else (4.0, 2.0))
    report = build_report(study_dir)
    epochs = report.plots["val_map_per_epoch"]["bce"]
    assert list(epochs["mean"]) == pytest.approx([0.3, 0.6])  # means, not medians
    vertices = figures["val_map_per_epoch.png"].axes[0].collections[0].get_paths()[0].vertices
    at_one = vertices[vertices[:, 0] == 1][:, 1]
    assert at_one.max() == pytest.approx(0.6) and at_one.min() == pytest.approx(0.1)
    ratio = report.plots["objectness_losses"]["ratio"]["bce"]
    assert list(ratio["mean"]) == pytest.approx([4.0, 4.0]) and list(ratio["n"]) == [2, 3]  # obj 0: left out
    losses = figures["objectness_losses.png"]
    assert losses.axes[0].get_yscale() == "linear"  # a panel holding a zero loss stays linear


def test_loss_distributions_skip_nan_and_runs_without_logits(tmp_path):
    from yolov3.report_plots import cumulative_loss_curve

    assert list(cumulative_loss_curve(np.array([1.0, np.nan, 1.0]), np.array([0.0, 0.5, 1.0]))) == \
        pytest.approx([0.0, 0.5, 1.0])
    study_dir = tmp_path / "s"
    with_logits = make_run(study_dir, 0, "bce", 0, 0.5, 0.3)
    np.savez(with_logits / "objectness_losses.npz", pos=np.array([1.0]), neg=np.array([1.0, 1.0]),
             pos_logit=np.array([2.0]), neg_logit=np.array([-20.0, 0.0]))
    older = make_run(study_dir, 1, "bce", 1, 0.5, 0.3)
    np.savez(older / "objectness_losses.npz", pos=np.array([1.0]), neg=np.array([1.0, 1.0]))
    report = build_report(study_dir)
    assert report.plots["objectness_cdf"]["scorers"] == ["bce", "focal2"]
    assert ("bce__seed1: objectness_losses.npz has no logits (an older run); left out of the common-loss "
            "distribution plot") in report.study.notes


def test_the_first_epoch_plot_averages_over_the_seeds_that_measured_and_draws_what_it_has(tmp_path):
    study_dir = tmp_path / "s"
    for seed, rows in enumerate(["1,0,1,10,0.9\n1,1,2,5,0.7\n", "1,0,3,10,0.5\n1,1,4,5,nan\n"]):
        run_dir = make_run(study_dir, seed, "bce", seed, 0.5, 0.3)
        (run_dir / "diagnostics.csv").write_text("epoch,iteration,obj,noobj,neg_grad_share\n" + rows)
    first = build_report(study_dir).plots["first_epoch"]
    assert list(first["neg_grad_share"]["bce"]["mean"]) == pytest.approx([0.7, 0.7])
    lone = tmp_path / "lone"
    run_dir = make_run(lone, 0, "bce", 0, 0.5, 0.3)
    (run_dir / "diagnostics.csv").write_text("epoch,iteration,obj,noobj\n1,0,1,10\n1,1,2,5\n")
    report = build_report(lone)
    assert "first_epoch.png" in report.files and list(report.plots["first_epoch"]["obj"]["bce"]["mean"]) == [1, 2]


def test_no_plots_without_a_finished_run_and_no_baseline_note_without_a_baseline(tmp_path, monkeypatch):
    study_dir = tmp_path / "s"
    make_run(study_dir, 0, "bce", 0, 0.5, 0.3, finished=False)
    report = build_report(study_dir)
    assert not any(name.endswith(".png") for name in report.files)
    assert "no finished run yet; plots skipped" in report.study.notes
    two = tmp_path / "two"
    make_run(two, 0, "bce", 0, 0.5, 0.3)
    focal = make_run(two, 1, "focal", 0, 0.6, 0.35)
    identity = json.loads((focal / "ablation.json").read_text())
    (focal / "ablation.json").write_text(json.dumps({**identity, "baseline": "focal"}))
    assert not any(note.startswith("the baseline ") for note in build_report(two, plots=False).study.notes)
    figures = _drawn_figures(monkeypatch)
    grid_dir = tmp_path / "grid"
    make_run(grid_dir, 0, "bce", 0, 0.40, 0.2)
    for index, gamma in enumerate((0, 2)):
        make_run(grid_dir, 1 + index, "focal", 0, 0.41, 0.2,
                 grid={"loss.objectness.gamma": gamma, "loss.objectness.alpha": 0.25})
    build_report(grid_dir)
    baseline = [l for l in figures["grid_gamma_alpha.png"].axes[0].lines if l.get_label() == "baseline bce"]
    assert baseline and list(baseline[0].get_ydata()) == pytest.approx([0.40, 0.40])


def test_contrasts_named_in_the_spec_are_paired_by_seed_and_not_corrected(tmp_path):
    # gamma alone (g) and alpha (a) beside BCE; the spec asks for a minus g. mAP@.5:.95 differences [.03, .04, .01]
    # (test_paired_difference_hand_computed): +0.0267 ± 0.0379; t = .026667 / (.015275 / sqrt 3) = 3.0237, df 2:
    # F = 1/2 + t / (2 sqrt(2 + t^2)) = .95291, p = .094. mAP@.5 differences [-.05, -.04, 0]: mean -.03, sd .026458,
    # half-width 4.302653 * .026458 / sqrt 3 = .065724; t = 1.9640, F = .90575, p = .19
    study_dir = tmp_path / "s"
    for seed, (g5095, a5095, a50) in enumerate([(0.50, 0.53, 0.75), (0.52, 0.56, 0.76), (0.54, 0.55, 0.80)]):
        make_run(study_dir, 3 * seed, "bce", seed, 0.9, 0.1)
        make_run(study_dir, 3 * seed + 1, "g", seed, 0.80, g5095)
        make_run(study_dir, 3 * seed + 2, "a", seed, a50, a5095)
    md = build_report(study_dir, plots=False, contrasts=[("a", "g"), ("a", "gone")]).files["summary.md"].read_text()
    section = md.split("## Contrasts named in the spec", 1)[1].split("\n## ", 1)[0]
    assert "not corrected" in section and "still to come" not in section
    assert "| a | g | mAP@0.5:0.95 | 3 | +0.0267 | ±0.0379 [-0.0113, +0.0646] | no | 0.094 |" in section
    assert "| a | g | mAP@0.5 | 3 | -0.0300 | ±0.0657 [-0.0957, +0.0357] | no | 0.19 |" in section
    assert "| a | gone | mAP@0.5:0.95 |  | — | not in this study's runs |  |  |" in section
    # the section follows the baseline's tables; the baseline's Holm family is unchanged by it
    assert md.index("## mAP@0.5:0.95") < md.index("## Contrasts") < md.index("## Precision, recall")
    assert "## Contrasts" not in build_report(study_dir, plots=False).files["summary.md"].read_text()
