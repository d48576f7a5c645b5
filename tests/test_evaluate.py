"""evaluate(): a fake model that 'predicts' the truths must score 1.0; perturbations must score lower; truths and
predictions are mapped to original pixels through the letterbox; validation losses come from the raw maps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import yolov3.evaluate as evaluate_module
from yolov3.evaluate import EvalOptions, evaluate

QUIET = EvalOptions(progress=False)

NAMES = ["circle", "square", "triangle"]
SIZE = 64  # network input, square


def make_loader(seed: int = 0, num_batches: int = 3, batch_size: int = 2):
    """Batches (images, targets (N, 6) normalised, paths, shapes) with varied letterboxes, one image without
    objects. Returns the batches and, per batch, (B, N, 5+C) decoded predictions equal to the truths."""
    rng = np.random.default_rng(seed)
    batches, perfect_outputs = [], []
    for b in range(num_batches):
        targets, shapes, paths = [], [], []
        decoded = torch.zeros(batch_size, 20, 5 + len(NAMES))  # objectness 0: padding rows never pass conf
        for i in range(batch_size):
            orig_w, orig_h = int(rng.integers(40, 200)), int(rng.integers(40, 200))
            ratio = min(SIZE / orig_w, SIZE / orig_h)
            pad_w, pad_h = (SIZE - orig_w * ratio) / 2, (SIZE - orig_h * ratio) / 2
            shapes.append(((orig_h, orig_w), (ratio, ratio), (pad_w, pad_h)))
            paths.append(f"img_{b}_{i}.jpg")
            num_objects = 0 if (b, i) == (1, 0) else int(rng.integers(1, 5))
            for k in range(num_objects):
                cls = int(rng.integers(0, len(NAMES)))
                w, h = rng.uniform(6, 20, 2)
                cx = rng.uniform(pad_w + w / 2, SIZE - pad_w - w / 2)
                cy = rng.uniform(pad_h + h / 2, SIZE - pad_h - h / 2)
                targets.append([i, cls, cx / SIZE, cy / SIZE, w / SIZE, h / SIZE])
                decoded[i, k, :4] = torch.tensor([cx, cy, w, h])
                decoded[i, k, 4] = 0.9
                decoded[i, k, 5:] = 0.01
                decoded[i, k, 5 + cls] = float(rng.uniform(0.5, 1.0))
        images = torch.zeros(batch_size, 3, SIZE, SIZE)
        batches.append((images, torch.tensor(targets, dtype=torch.float32).reshape(-1, 6), paths, shapes))
        perfect_outputs.append(decoded)
    return batches, perfect_outputs


class ReplayModel(nn.Module):
    """Eval mode: returns the next prepared (B, N, 5+C) tensor; with return_raw also fake raw maps."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so train()/eval() are meaningful

    def forward(self, x, return_raw: bool = False):
        assert not self.training, "evaluate must run the model in eval mode"
        out = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        return (out, [torch.full((x.shape[0], 1, 2, 2, 8), float(self.calls))]) if return_raw else out


def test_perfect_predictions_score_one_and_perturbed_lower(tmp_path):
    batches, outputs = make_loader()
    model = ReplayModel(outputs).train()
    result = evaluate(model, batches, NAMES, options=EvalOptions(plot_dir=tmp_path, progress=False))
    assert model.training  # mode restored
    assert result["mAP50"] == pytest.approx(1.0) and result["mAP50_95"] == pytest.approx(1.0)
    assert result["precision"] == pytest.approx(1.0) and result["recall"] == pytest.approx(1.0)
    all_targets = torch.cat([b[1] for b in batches])
    assert result["num_images"] == 6 and result["num_instances"] == len(all_targets)
    for c, row in enumerate(result["per_class"]):
        assert row["name"] == NAMES[c] and row["instances"] == int((all_targets[:, 1] == c).sum())
    assert [p.name for p in result["plots"]] == ["PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png",
                                                 "confusion_matrix.png"]
    assert all(p.is_file() for p in result["plots"])
    assert (tmp_path / "val_batch0_labels.jpg").is_file() and (tmp_path / "val_batch0_pred.jpg").is_file()
    assert np.isnan(result["val_obj"])  # no loss_fn given

    # boxes shifted by 30% of their width: IoU drops to .7/1.3 = 0.54 (a TP at .5, a miss from .55 on)
    shifted = [o.clone() for o in outputs]
    for o in shifted:
        o[..., 0] += 0.3 * o[..., 2]
    shifted_result = evaluate(ReplayModel(shifted), batches, NAMES, options=QUIET)
    assert shifted_result["mAP50"] == pytest.approx(1.0)
    assert shifted_result["mAP50_95"] < 0.2
    # classes rotated: every prediction has the wrong class
    wrong = [torch.cat((o[..., :5], o[..., 5:].roll(1, dims=-1)), -1) for o in outputs]
    assert evaluate(ReplayModel(wrong), batches, NAMES, options=QUIET)["mAP50"] < 0.05


def test_per_class_rows_and_headline_precision_recall_hand_computed():
    """Three 64 x 64 images (no letterbox). circle: two truths in image 0, one found at IoU 7/13 = .54 (a match at
    .5 only), the other missed. square: one truth in each of images 1 and 2, both found exactly. triangle: none.
    By hand (COCO's 101 recall points): circle AP@.5 = 51/101 (precision 1 up to recall .5), AP@.5:.95 a tenth of
    that; P 1, R .5. square: AP 1 at every threshold, P = R = 1. Headline: the mean over the two classes with
    truths, P 1, R .75 (at IoU .5, the threshold P and R are reported at)."""
    shapes = [((SIZE, SIZE), (1.0, 1.0), (0.0, 0.0))] * 3
    targets = torch.tensor([[0, 0, 20 / SIZE, 20 / SIZE, 10 / SIZE, 10 / SIZE],
                            [0, 0, 45 / SIZE, 45 / SIZE, 10 / SIZE, 10 / SIZE],
                            [1, 1, 30 / SIZE, 30 / SIZE, 12 / SIZE, 12 / SIZE],
                            [2, 1, 30 / SIZE, 30 / SIZE, 12 / SIZE, 12 / SIZE]])
    decoded = torch.zeros(3, 4, 5 + len(NAMES))
    decoded[0, 0, :6] = torch.tensor([23.0, 20, 10, 10, 0.9, 1.0])  # shifted 3 px: IoU 70 / 130
    decoded[1, 0, :7] = torch.tensor([30.0, 30, 12, 12, 0.9, 0.0, 1.0])
    decoded[2, 0, :7] = torch.tensor([30.0, 30, 12, 12, 0.8, 0.0, 1.0])
    batches = [(torch.zeros(3, 3, SIZE, SIZE), targets, ["a.jpg", "b.jpg", "c.jpg"], shapes)]
    result = evaluate(ReplayModel([decoded]), batches, NAMES, options=QUIET)
    circle, square, triangle = result["per_class"]
    assert (circle["images"], circle["instances"], square["images"], square["instances"]) == (1, 2, 2, 2)
    assert (triangle["images"], triangle["instances"]) == (0, 0) and math.isnan(triangle["mAP50"])
    assert circle["mAP50"] == pytest.approx(51 / 101) and circle["mAP50_95"] == pytest.approx(51 / 1010)
    assert circle["precision"] == pytest.approx(1.0) and circle["recall"] == pytest.approx(0.5)
    assert square["mAP50"] == square["mAP50_95"] == pytest.approx(1.0)
    assert square["precision"] == pytest.approx(1.0) and square["recall"] == pytest.approx(1.0)
    assert result["precision"] == pytest.approx(1.0) and result["recall"] == pytest.approx(0.75)
    assert result["mAP50"] == pytest.approx((51 / 101 + 1) / 2)
    assert result["mAP50_95"] == pytest.approx((51 / 1010 + 1) / 2)


def test_single_class_scoring_suppresses_overlapping_boxes_across_classes():
    # one truth; the model puts the same box under two of its classes: scored as one class, NMS runs across
    # classes, so the second box goes (class by class it would stay, and count as a false positive)
    shapes = [((SIZE, SIZE), (1.0, 1.0), (0.0, 0.0))]
    targets = torch.tensor([[0, 0, 30 / SIZE, 30 / SIZE, 12 / SIZE, 12 / SIZE]])
    decoded = torch.zeros(1, 2, 5 + len(NAMES))
    decoded[0, 0, :6] = torch.tensor([30.0, 30, 12, 12, 0.9, 1.0])
    decoded[0, 1, :7] = torch.tensor([30.0, 30, 12, 12, 0.8, 0.0, 1.0])
    batches = [(torch.zeros(1, 3, SIZE, SIZE), targets, ["a.jpg"], shapes)]
    for single_cls, names, kept in ((True, ["object"], 1), (False, NAMES, 2)):
        records = []
        evaluate(ReplayModel([decoded]), batches, names, options=EvalOptions(single_cls=single_cls, progress=False),
                 records=records)
        assert len(records[0]["preds"]) == kept, single_cls


def test_truths_and_predictions_are_mapped_to_original_pixels(monkeypatch):
    recorded = []

    class RecordingEvaluator(evaluate_module.DetectionEvaluator):
        def update(self, preds, truths, image_id=None):
            recorded.append((preds.clone(), truths.clone()))
            super().update(preds, truths, image_id)

    monkeypatch.setattr(evaluate_module, "DetectionEvaluator", RecordingEvaluator)
    # one 128 (w) x 64 (h) image letterboxed to 64: ratio .5, resized 64 x 32, pad_h = 16.
    # A truth at net cx=32, cy=32, w=16, h=8 -> net xyxy (24, 28, 40, 36) -> original
    # x = (24 - 0) / .5 = 48, y = (28 - 16) / .5 = 24, x2 = 80, y2 = (36 - 16) / .5 = 40.
    targets = torch.tensor([[0, 1, 32 / 64, 32 / 64, 16 / 64, 8 / 64]])
    batch = (torch.zeros(1, 3, 64, 64), targets, ["a.jpg"], [((64, 128), (0.5, 0.5), (0.0, 16.0))])
    decoded = torch.zeros(1, 1, 8)
    decoded[0, 0, :5] = torch.tensor([32.0, 32.0, 16.0, 8.0, 1.0])
    decoded[0, 0, 5 + 1] = 0.8
    evaluate(ReplayModel([decoded]), [batch], NAMES, options=QUIET)
    (preds, truths), = recorded
    np.testing.assert_allclose(truths.numpy(), [[1, 48, 24, 80, 40]])
    np.testing.assert_allclose(preds.numpy(), [[48, 24, 80, 40, 0.8, 1]])


def test_validation_losses_average_the_loss_terms_over_batches():
    batches, outputs = make_loader(num_batches=3)
    seen_targets = []

    def fake_loss(raw_maps, targets):
        seen_targets.append(len(targets))
        value = raw_maps[0].flatten()[0]  # 1, 2, 3 for the three batches
        terms = {"box": value, "obj": 2 * value, "noobj": 3 * value, "cls": 4 * value}
        return value, terms

    result = evaluate(ReplayModel(outputs), batches, NAMES, loss_fn=fake_loss, options=QUIET)
    # means over batches of (1, 2, 3) times 1, 2, 3, 4
    assert (result["val_box"], result["val_obj"], result["val_noobj"], result["val_cls"]) == (2.0, 4.0, 6.0, 8.0)
    assert seen_targets == [len(b[1]) for b in batches]

    class NoRaw(nn.Module):
        def forward(self, x):
            return outputs[0]

    with pytest.raises(ValueError, match="no return_raw argument"):
        evaluate(NoRaw(), batches, NAMES, loss_fn=fake_loss, options=QUIET)


def test_real_darknet_and_yolo_loss_end_to_end(cfg_dir):
    # The real contract: Darknet eval forward(x, return_raw=True) -> (decoded, raw maps) and YOLOLoss on the maps.
    from yolov3.loss import YOLOLoss
    from yolov3.model import Darknet

    torch.manual_seed(0)
    model = Darknet(cfg_dir / "yolov3-tiny.cfg", num_classes=len(NAMES))
    batches, _ = make_loader(num_batches=1)
    loss_fn = YOLOLoss.from_model(model)
    result = evaluate(model, batches, NAMES, loss_fn=loss_fn, options=QUIET)
    assert model.training  # a fresh module is in train mode; restored
    # the validation losses are the loss of the eval-mode raw maps of the one batch, term by term
    images, targets, _, _ = batches[0]
    with torch.no_grad():
        _, raw_maps = model.eval()(images, return_raw=True)
        _, terms = loss_fn(raw_maps, targets)
    for key in ("box", "obj", "noobj", "cls"):
        assert result[f"val_{key}"] == pytest.approx(terms[key].item(), rel=1e-6), key
    assert 0.0 <= result["mAP50"] <= 1.0


def test_bad_batches_raise_clear_errors():
    batches, outputs = make_loader(num_batches=1)
    images, targets, paths, shapes = batches[0]
    with pytest.raises(ValueError, match=r"targets must be \(N, 6\)"):
        evaluate(ReplayModel(outputs), [(images, targets[:, 1:], paths, shapes)], NAMES, options=QUIET)
    with pytest.raises(ValueError, match="one letterbox shape"):
        evaluate(ReplayModel(outputs), [(images, targets, paths, [None, None])], NAMES, options=QUIET)


def test_objectness_samples_keep_logits_aligned_with_the_losses(cfg_dir):
    # every arm's final model must be scorable with one common loss: the saved negative logits give back the saved
    # negative losses element by element (bce, target 0), the positive logits the positive losses as a set
    from yolov3.config import LossConfig
    from yolov3.evaluate import objectness_samples
    from yolov3.loss import bce_loss
    from yolov3.model import Darknet

    torch.manual_seed(0)
    model = Darknet(cfg_dir / "yolov3-tiny.cfg", num_classes=len(NAMES))
    batches, _ = make_loader(num_batches=2)
    full = objectness_samples(model, batches, LossConfig(), seed=0)
    cells = 2 * 2 * 3 * (2 * 2 + 4 * 4)  # 2 batches of 2 images; 64 px: 3 anchors on 2x2 and 4x4 grids
    assert full["neg"].size + full["pos"].size <= cells and full["pos"].size > 0
    for samples in (full, objectness_samples(model, batches, LossConfig(), seed=3, max_negatives=25)):
        neg_again = bce_loss(torch.from_numpy(samples["neg_logit"]), torch.zeros(samples["neg_logit"].size))
        np.testing.assert_allclose(neg_again.numpy(), samples["neg"], rtol=1e-6)
        pos_again = bce_loss(torch.from_numpy(samples["pos_logit"]), torch.ones(samples["pos_logit"].size))
        np.testing.assert_allclose(np.sort(pos_again.numpy()), np.sort(samples["pos"]), rtol=1e-6)
    assert samples["neg"].size == 25 and set(samples["neg_logit"].tolist()) <= set(full["neg_logit"].tolist())
    assert model.training


def test_first_batch_is_drawn_with_its_labels_and_its_confident_detections(tmp_path, monkeypatch):
    """val_batch0_labels.jpg gets the first batch's targets; val_batch0_pred.jpg its detections above PLOT_CONF as
    targets with a score column (cx, cy, w, h normalised to the network input, as the labels)."""
    batches, outputs = make_loader()
    outputs[0][0, 0, 4] = 0.2  # objectness 0.2 x class <= 1: below PLOT_CONF, counted in mAP but not drawn
    drawn = {}
    monkeypatch.setattr(evaluate_module, "plot_batch",
                        lambda images, targets, paths, names, out: drawn.setdefault(out.name, (targets, paths)))
    evaluate(ReplayModel(outputs), batches, NAMES, options=EvalOptions(plot_dir=tmp_path, progress=False))
    labels, paths = drawn["val_batch0_labels.jpg"]
    assert torch.equal(labels, batches[0][1]) and paths == batches[0][2]
    predicted, _ = drawn["val_batch0_pred.jpg"]
    expected = batches[0][1][1:]  # the first box of image 0 is the one below PLOT_CONF
    assert predicted.shape == (len(expected), 7)
    order = lambda rows: rows[torch.argsort(rows[:, 2])]  # noqa: E731 - NMS reorders by score
    torch.testing.assert_close(order(predicted)[:, :6], order(expected), atol=1e-5, rtol=0)
    scores = outputs[0][predicted[:, 0].long(), :, 4].max(1).values  # objectness 0.9 of the kept boxes
    assert (predicted[:, 6] >= evaluate_module.PLOT_CONF).all() and (predicted[:, 6] <= scores).all()


def test_per_class_table_rows():
    result = {"num_images": 4, "num_instances": 3, "precision": 0.5, "recall": 0.25, "mAP50": 0.75,
              "mAP50_95": 0.5, "per_class": [
                  {"name": "circle", "images": 2, "instances": 3, "precision": 0.5, "recall": 0.25, "mAP50": 0.75,
                   "mAP50_95": 0.5},
                  {"name": "square", "images": 0, "instances": 0, "precision": float("nan"),
                   "recall": float("nan"), "mAP50": float("nan"), "mAP50_95": float("nan")}]}
    assert evaluate_module.format_table(result).splitlines() == [
        "           class   images  instances        P        R   mAP@.5  mAP@.5:.95",
        "             all        4          3    0.500    0.250    0.750       0.500",
        "          circle        2          3    0.500    0.250    0.750       0.500",
        "          square        0          0        -        -        -           -"]


def test_max_det_of_the_options_caps_the_detections_of_an_image():
    shapes = [((SIZE, SIZE), (1.0, 1.0), (0.0, 0.0))]
    targets = torch.tensor([[0, 0, 20 / SIZE, 20 / SIZE, 10 / SIZE, 10 / SIZE]])
    decoded = torch.zeros(1, 2, 5 + len(NAMES))
    decoded[0, 0, :6] = torch.tensor([20.0, 20, 10, 10, 0.9, 1.0])
    decoded[0, 1, :6] = torch.tensor([45.0, 45, 10, 10, 0.8, 1.0])  # apart from the first: NMS keeps both
    batches = [(torch.zeros(1, 3, SIZE, SIZE), targets, ["a.jpg"], shapes)]
    records = []
    evaluate(ReplayModel([decoded]), batches, NAMES, options=EvalOptions(max_det=1, progress=False), records=records)
    assert len(records[0]["preds"]) == 1 and records[0]["preds"][0][4] == pytest.approx(0.9)


def test_the_printed_table_columns_and_per_image_times_of_batches(tmp_path):
    import time

    from yolov3.evaluate import StageClock, format_table

    table = format_table({"num_images": 1, "num_instances": 1, "precision": 0.5, "recall": 0.25, "mAP50": 0.75,
                          "mAP50_95": 0.125, "per_class": []})
    assert table.splitlines()[1] == "             all        1          1    0.500    0.250    0.750       0.125"
    first = StageClock()
    with first.inference(4, True):
        time.sleep(0.01)
    ms = first.per_image_ms(4)
    assert ms["first_pass_only"] and ms["inference"] == pytest.approx(1000 * first.warmup_s / 4)
    timed = StageClock()
    with timed.inference(4, False):
        time.sleep(0.01)
    ms = timed.per_image_ms(4)
    assert not ms["first_pass_only"] and ms["inference"] == pytest.approx(1000 * timed.seconds["inference"] / 4)


def test_truths_of_a_non_square_batch_are_scaled_on_their_own_axes():
    shapes = [((32, 64), (1.0, 1.0), (0.0, 0.0))]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.25, 0.5]])  # net cxcywh (32, 16, 16, 16): xyxy (24, 8, 40, 24)
    batches = [(torch.zeros(1, 3, 32, 64), targets, ["a.jpg"], shapes)]
    records = []
    evaluate(ReplayModel([torch.zeros(1, 1, 5 + len(NAMES))]), batches, NAMES,
             options=EvalOptions(progress=False), records=records)
    assert np.asarray(records[0]["truths"]).tolist() == [[1, 24, 8, 40, 24]]
