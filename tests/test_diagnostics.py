import dataclasses
import math

import pytest
import torch

from yolov3.config import LossConfig, ObjectnessLossConfig
from yolov3.diagnostics import STEP_COLUMNS, DiagnosticsRecorder, objectness_statistics, upper_quantile
from yolov3.loss import YOLOLoss

# the hand case of test_loss.py: one layer, stride 8, anchors (8,8), (24,24), 2 classes, 32x32 input, batch 2, one
# truth -> 1 positive, 63 negatives, nothing ignored; all-zero logits so every p = .5
ANCHORS = [torch.tensor([[8.0, 8.0], [24.0, 24.0]])]
TRUTH = torch.tensor([[0.0, 1.0, 0.6, 0.6, 0.3, 0.3]])


def _loss(**objectness):
    cfg = dataclasses.replace(LossConfig(), objectness=ObjectnessLossConfig(**objectness))
    return YOLOLoss(ANCHORS, [8], 2, cfg, ignore_thresh=[0.5])


@pytest.mark.parametrize("objectness, grad_pos, grad_neg", [
    # BCE: |dL/dx| = |sigmoid(0) - y| / batch = .25 per cell: 1 positive, 63 negatives
    ({"name": "bce"}, 0.25, 63 * 0.25),
    # focal gamma 0, alpha .25: positives x .25, negatives x .75
    ({"name": "focal", "gamma": 0.0, "alpha": 0.25}, 0.25 * 0.25, 63 * 0.75 * 0.25),
])
def test_gradient_share_of_negatives_hand_computed(objectness, grad_pos, grad_neg):
    raw = torch.zeros(2, 2, 4, 4, 7, requires_grad=True)
    maps = [raw * 1.0]  # a non-leaf, as the model's output is
    maps[0].retain_grad()
    total, terms = _loss(**objectness)(maps, TRUTH, masks=True)
    total.backward()
    stats = objectness_statistics(maps, terms["masks"], batch_size=2)
    assert stats["grad_pos"] == pytest.approx(grad_pos, rel=1e-6)
    assert stats["grad_neg"] == pytest.approx(grad_neg, rel=1e-6)
    assert stats["neg_grad_share"] == pytest.approx(grad_neg / (grad_pos + grad_neg), rel=1e-6)
    assert stats["p_pos_mean"] == pytest.approx(0.5) and stats["p_neg_q999"] == pytest.approx(0.5)
    assert stats["neg_over_half"] == 0.0
    positive, negative = terms["masks"][0]
    assert int(positive.sum()) == 1 and int(negative.sum()) == 63 and not (positive & negative).any()


def test_probability_statistics_on_chosen_logits():
    raw = torch.full((2, 2, 4, 4, 7), -3.0)
    raw[0, 0, 2, 2, 4] = 2.0  # the positive: p = sigmoid(2) = .8808
    raw[1, 1, 0, 0, 4] = 1.0  # three negatives above p = .5
    raw[1, 1, 0, 1, 4] = 0.5
    raw[1, 1, 0, 2, 4] = 4.0
    _, terms = _loss()([raw], TRUTH, masks=True)
    stats = objectness_statistics([raw], terms["masks"], batch_size=2)
    assert "grad_pos" not in stats  # no backward: no gradient statistics
    assert stats["p_pos_mean"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert stats["neg_over_half"] == pytest.approx(3 / 2)
    # 63 negatives: the 99.9th percentile is the ceil(.999*63) = 63rd smallest, the largest: logit 4
    assert stats["p_neg_q999"] == pytest.approx(1 / (1 + math.exp(-4.0)))


def test_upper_quantile_is_the_ceil_qn_th_smallest():
    values = torch.arange(1000.0).flip(0)
    assert upper_quantile(values, 0.999).item() == 998.0  # the 999th smallest of 0..999
    assert upper_quantile(values, 0.5).item() == 499.0
    assert upper_quantile(torch.tensor([7.0]), 0.999).item() == 7.0
    with pytest.raises(ValueError):
        upper_quantile(torch.zeros(0), 0.5)


def test_recorder_schedule_clipping_epoch_means_and_resume():
    rec = DiagnosticsRecorder(every=10, max_norm=5.0)
    assert all(rec.wants(0, i) for i in range(7)) and rec.wants(1, 20) and not rec.wants(1, 21)
    assert not DiagnosticsRecorder(every=0, max_norm=None).wants(1, 20)
    terms = {"obj": 0.5, "noobj": 2.0, "num_pos": 3, "num_neg": 300}
    assert rec.optimizer_step(12.0) is True and rec.optimizer_step(4.0) is False
    rec.record(0, 0, 0.01, terms, {"neg_grad_share": 0.9, "p_pos_mean": 0.2, "p_neg_q999": 0.1,
                                   "neg_over_half": 1.0}, 12.0, True)
    saved = rec.state_dict()  # mid-epoch, as a Ctrl-C checkpoint
    rec.record(0, 1, 0.01, terms, {"neg_grad_share": 0.7, "p_pos_mean": 0.4, "p_neg_q999": 0.3,
                                   "neg_over_half": 3.0}, None, None)
    straight = rec.end_epoch()
    assert straight == pytest.approx({"grad_norm": 8.0, "clipped_fraction": 0.5, "neg_grad_share": 0.8,
                                      "p_pos_mean": 0.3, "p_neg_q999": 0.2, "neg_over_half": 2.0})
    resumed = DiagnosticsRecorder(every=10, max_norm=5.0)
    resumed.load_state_dict(saved)
    resumed.record(0, 1, 0.01, terms, {"neg_grad_share": 0.7, "p_pos_mean": 0.4, "p_neg_q999": 0.3,
                                       "neg_over_half": 3.0}, None, None)
    assert resumed.end_epoch() == pytest.approx(straight)
    assert resumed.csv_text() == rec.csv_text()
    lines = rec.csv_text().splitlines()
    assert lines[0] == ",".join(STEP_COLUMNS) and len(lines) == 3
    assert lines[2].split(",")[STEP_COLUMNS.index("clipped")] == ""  # no optimiser step at that batch
    assert math.isnan(DiagnosticsRecorder(every=1, max_norm=None).end_epoch()["grad_norm"])
    assert DiagnosticsRecorder(every=1, max_norm=None).optimizer_step(1e9) is False  # clipping off


def test_clipped_is_judged_against_the_clip_in_force_at_the_step():
    rec = DiagnosticsRecorder(every=1, max_norm=10.0)
    assert rec.optimizer_step(12.0) is True  # the recorder's clip
    assert rec.optimizer_step(12.0, math.inf) is False  # clipping switched off for this epoch (grad_clip_epochs)
    assert rec.optimizer_step(12.0, 11.0) is True and rec.end_epoch()["clipped_fraction"] == pytest.approx(2 / 3)


def test_ignored_cells_are_neither_positives_nor_negatives_in_the_statistics():
    raw = torch.zeros(1, 1, 1, 3, 6)
    raw[0, 0, 0, :, 4] = torch.tensor([2.0, -1.0, 5.0])
    positive = torch.tensor([True, False, False]).view(1, 1, 1, 3)
    negative = torch.tensor([False, True, False]).view(1, 1, 1, 3)  # the third cell is ignored
    stats = objectness_statistics([raw], [(positive, negative)], 1)
    assert stats["neg_over_half"] == 0.0
    assert stats["p_neg_q999"] == pytest.approx(1 / (1 + math.exp(1.0)))  # sigmoid(-1) = .268941


def test_an_epoch_mean_skips_steps_that_could_not_measure_a_statistic():
    rec = DiagnosticsRecorder(every=1, max_norm=None)
    terms = {"obj": 1.0, "noobj": 1.0, "num_pos": 1, "num_neg": 9}
    rec.record(0, 0, 0.01, terms, {"p_pos_mean": 0.4, "neg_grad_share": 0.8}, None, None)
    rec.record(0, 1, 0.01, {**terms, "num_pos": 0}, {"neg_grad_share": 0.6}, None, None)  # no positive: no p_pos
    means = rec.end_epoch()
    assert means["p_pos_mean"] == pytest.approx(0.4) and means["neg_grad_share"] == pytest.approx(0.7)


def test_resuming_inside_a_later_epoch_keeps_only_that_epochs_steps():
    terms = {"obj": 1.0, "noobj": 1.0, "num_pos": 1, "num_neg": 9}
    rec = DiagnosticsRecorder(every=1, max_norm=None)
    rec.record(0, 0, 0.01, terms, {"p_pos_mean": 0.2}, None, None)
    rec.end_epoch()
    rec.record(1, 1, 0.01, terms, {"p_pos_mean": 0.4}, None, None)
    state = rec.state_dict()
    assert state["epoch"]["steps"] == 1
    resumed = DiagnosticsRecorder(every=1, max_norm=None)
    resumed.load_state_dict(state)
    for recorder in (rec, resumed):
        recorder.record(1, 2, 0.01, terms, {"p_pos_mean": 0.6}, None, None)
        assert recorder.end_epoch()["p_pos_mean"] == pytest.approx(0.5)  # epoch 2's steps only: (.4 + .6) / 2
