"""Per-element losses and YOLOLoss (yolov3/loss.py)."""
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from yolov3.config import ClassLossConfig, ConfigError, LossConfig, ObjectnessLossConfig
from yolov3.loss import (
    darknet_box_distance,
    varifocal_loss,
    OBJECTNESS_LOSSES,
    YOLOLoss,
    apply_objectness_prior,
    bce_loss,
    focal_loss,
    get_loss_fn,
)

LOG2 = math.log(2.0)


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# --------------------------------------------------------------------------------------------------------------------
# Per-element losses
# --------------------------------------------------------------------------------------------------------------------
# (y, gamma, p) -> CE, (1 - p_t)^gamma, FL without alpha (the table of the focal-loss blog this project follows)
FOCAL_TABLE = [
    (1, 2.0, 0.9, 0.105, 0.01, 0.00105),
    (1, 2.0, 0.1, 2.30, 0.81, 1.87),
    (0, 2.0, 0.2, 0.223, 0.04, 0.00893),
    (0, 2.0, 0.8, 1.61, 0.64, 1.03),
]


def _same_3_significant(value: float, expected: float) -> bool:
    return f"{value:.3g}" == f"{expected:.3g}"


@pytest.mark.parametrize("y, gamma, p, ce, factor, fl", FOCAL_TABLE)
def test_focal_table(y, gamma, p, ce, factor, fl):
    x = torch.tensor([logit(p)], dtype=torch.float64)
    t = torch.tensor([float(y)], dtype=torch.float64)
    ce_value = bce_loss(x, t).item()
    fl_value = focal_loss(x, t, gamma=gamma, alpha=None).item()
    assert _same_3_significant(ce_value, ce), ce_value
    assert _same_3_significant(fl_value / ce_value, factor), fl_value / ce_value  # the modulating factor
    assert _same_3_significant(fl_value, fl), fl_value


@pytest.mark.parametrize("y, gamma, p, ce, factor, fl", FOCAL_TABLE)
def test_focal_alpha_weights_positives_by_alpha_and_negatives_by_one_minus_alpha(y, gamma, p, ce, factor, fl):
    x = torch.tensor([logit(p)], dtype=torch.float64)
    t = torch.tensor([float(y)], dtype=torch.float64)
    weighted = focal_loss(x, t, gamma=gamma, alpha=0.25).item()
    unweighted = focal_loss(x, t, gamma=gamma, alpha=None).item()
    assert weighted == pytest.approx((0.25 if y == 1 else 0.75) * unweighted, rel=1e-12)
    if (y, p) == (1, 0.9):  # first row: 0.25 * 0.0010536 = 0.000263
        assert _same_3_significant(weighted, 0.000263)


def test_soft_target_alpha_follows_the_positive_mask_not_the_target_value():
    # a positive with IoU target .4 gets alpha = .25 (not .25*.4 + .75*.6 = .55); a negative with soft target .4
    # (label smoothing) gets 1 - alpha = .75. gamma = 0 isolates alpha.
    x = torch.tensor([0.3, -1.2])
    t = torch.tensor([0.4, 0.4])
    positive = torch.tensor([True, False])
    got = focal_loss(x, t, gamma=0.0, alpha=0.25, positive=positive)
    assert torch.allclose(got, torch.tensor([0.25, 0.75]) * bce_loss(x, t))
    # without a mask, target > 0 decides: both are positives
    assert torch.allclose(focal_loss(x, t, gamma=0.0, alpha=0.25), 0.25 * bce_loss(x, t))
    with pytest.raises(ValueError, match="positive mask"):
        focal_loss(x, t, alpha=0.25, positive=torch.tensor([True]))


@pytest.mark.parametrize("logit_value", [-20.0, -30.0, -50.0, -80.0])
def test_per_element_losses_keep_their_far_tail(logit_value):
    # torch's fused BCE-with-logits returns exactly 0 here (float32 at -20); the true values are softplus(x):
    # 2.06e-9 at -20 ... 1.8e-35 at -80, all normal float32 numbers
    expected = math.log1p(math.exp(logit_value))
    x = torch.tensor([logit_value])
    assert bce_loss(x, torch.zeros(1)).item() == pytest.approx(expected, rel=1e-5)
    assert bce_loss(-x, torch.ones(1)).item() == pytest.approx(expected, rel=1e-5)
    p = 1 / (1 + math.exp(-logit_value))
    assert focal_loss(x, torch.zeros(1), gamma=0.5, alpha=None).item() == pytest.approx(p ** 0.5 * expected, rel=1e-4)


def test_varifocal_hand_computed_values_and_gradient():
    # positive, IoU target q = .6, logit .3: q * BCE(p, q); negative, logit -1.2: alpha p^gamma BCE(p, 0)
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.6, 0.0], dtype=torch.float64)
    p_pos, p_neg = 1 / (1 + math.exp(-0.3)), 1 / (1 + math.exp(1.2))
    bce_pos = -(0.6 * math.log(p_pos) + 0.4 * math.log(1 - p_pos))
    expected = [0.6 * bce_pos, 0.75 * p_neg ** 2 * -math.log(1 - p_neg)]
    assert expected[0] == pytest.approx(0.404613, abs=1e-6) and expected[1] == pytest.approx(0.0105802, abs=1e-6)
    got = varifocal_loss(x, q, gamma=2.0, alpha=0.75)
    assert got.tolist() == pytest.approx(expected, rel=1e-10)
    got.sum().backward()
    # d/dx: positive q (p - q) (q is a target); negative alpha [gamma p^gamma (1-p) BCE + p^gamma p]
    grad_neg = 0.75 * (2 * p_neg ** 2 * (1 - p_neg) * -math.log(1 - p_neg) + p_neg ** 2 * p_neg)
    assert x.grad.tolist() == pytest.approx([0.6 * (p_pos - 0.6), grad_neg], rel=1e-9)
    # positives are never down-weighted: target 1 gives plain BCE; gamma 0, alpha None is BCE everywhere
    assert varifocal_loss(x[:1], torch.ones(1, dtype=torch.float64)).item() == pytest.approx(-math.log(p_pos))
    both = torch.tensor([0.3, -1.2], dtype=torch.float64)
    assert torch.allclose(varifocal_loss(both, torch.tensor([1.0, 0.0], dtype=torch.float64), gamma=0, alpha=None),
                          bce_loss(both, torch.tensor([1.0, 0.0], dtype=torch.float64)))


def test_darknet_box_distance_has_darknets_deltas_as_gradient():
    # row: logits (0, 0, .5, 0) against targets (.25, .5, .1, 0)
    pred = torch.tensor([[0.0, 0.0, 0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.25, 0.5, 0.1, 0.0]], dtype=torch.float64)
    value = darknet_box_distance(pred, target)
    # x: BCE(.5, .25) - H(.25) = log 2 - .562335 = .130812; y: log 2 - log 2 = 0; w: (.5 - .1)^2 / 2 = .08; h: 0
    assert value.item() == pytest.approx(0.130812 + 0.08, abs=1e-6)
    value.sum().backward()
    # darknet's deltas with the sign of a gradient: sigmoid(tx) - tx*, tw - tw*
    assert pred.grad[0].tolist() == pytest.approx([0.5 - 0.25, 0.0, 0.4, 0.0], abs=1e-12)


def test_soft_target_focal_is_zero_where_prediction_equals_target():
    # |y - p|^gamma factor: the loss vanishes at p == y for an IoU-valued target (unlike plain BCE)
    t = torch.tensor([0.3, 0.75], dtype=torch.float64)
    x = torch.log(t / (1 - t))
    assert focal_loss(x, t, gamma=2.0, alpha=None).abs().max().item() < 1e-20
    assert (bce_loss(x, t) > 0.5).all()  # BCE at p == y is the entropy, > 0


def test_gamma_zero_without_alpha_is_bce_exactly_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(200) * 6
    targets = torch.cat([torch.randint(0, 2, (100,)).float(), torch.rand(100)])  # hard and soft targets
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    weights = torch.rand(200)  # a non-uniform upstream gradient
    a = bce_loss(x1, targets)
    b = focal_loss(x2, targets, gamma=0.0, alpha=None)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    assert torch.equal(a, b)
    assert torch.equal(x1.grad, x2.grad)


def test_bce_matches_the_definition():
    # independent oracle: -(y log p + (1-y) log(1-p)) in float64
    torch.manual_seed(1)
    x = torch.randn(50, dtype=torch.float64) * 3
    y = torch.rand(50, dtype=torch.float64)
    p = torch.sigmoid(x)
    assert torch.allclose(bce_loss(x, y), -(y * p.log() + (1 - y) * (1 - p).log()))


def test_focal_matches_its_definition_on_soft_targets():
    # independent oracle in float64: alpha_t * |y - p|^gamma * BCE
    torch.manual_seed(2)
    x = torch.randn(50, dtype=torch.float64) * 3
    y = torch.rand(50, dtype=torch.float64)
    p = torch.sigmoid(x)
    positive = torch.rand(50) < 0.5  # soft targets on both sides: the mask, not the value, picks alpha
    alpha_t = torch.where(positive, 0.3, 0.7).double()
    expected = alpha_t * (y - p).abs() ** 1.5 * -(y * p.log() + (1 - y) * (1 - p).log())
    assert torch.allclose(focal_loss(x, y, gamma=1.5, alpha=0.3, positive=positive), expected)


def focal_reference(x: float, y: float, gamma: float, alpha) -> tuple:
    """(FL, dFL/dx) of one logit in float64 Python arithmetic, independent of torch.

    BCE = softplus(x) - y x (the stable form); p = 1 / (1 + e^-x) and q = 1 - p = 1 / (1 + e^x) each computed
    directly; the factor is |y - p|^gamma (q for y = 1, p for y = 0: no cancellation); alpha_t = alpha for a
    positive (y > 0), 1 - alpha for a negative, or 1. Derivative by hand: d BCE/dx = p - y, d p/dx = p q, so
    dFL/dx = alpha_t [gamma |y-p|^(gamma-1) sign(p-y) p q BCE + |y-p|^gamma (p - y)] (first term absent at gamma 0).
    """
    bce = max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))
    p, q = 1.0 / (1.0 + math.exp(-x)), 1.0 / (1.0 + math.exp(x))
    distance = q if y == 1.0 else p if y == 0.0 else abs(y - p)
    alpha_t = 1.0 if alpha is None else alpha if y > 0 else 1.0 - alpha  # by the positive mask (target > 0)
    value = alpha_t * distance**gamma * bce
    gradient = distance**gamma * (p - y)
    if gamma != 0.0:
        gradient += gamma * distance ** (gamma - 1.0) * math.copysign(1.0, p - y) * p * q * bce
    return value, alpha_t * gradient


def fn_id(fn) -> str:
    return {bce_loss: "bce", focal_loss: "focal"}.get(fn, "focal.5")


def _focal_half(x, y):
    return focal_loss(x, y, gamma=0.5, alpha=None)


# the grid the shipped ablation sweeps (cfg/ablation/focal_grid.yaml): every point against the float64 reference
GRID_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
GRID_ALPHAS = (0.25, 0.5, 0.75, None)


def test_the_reference_grid_is_the_shipped_grid():
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "cfg" / "ablation" / "focal_grid.yaml").read_text())
    assert tuple(spec["grid"]["loss.objectness.gamma"]) == GRID_GAMMAS
    assert tuple(spec["grid"]["loss.objectness.alpha"]) == GRID_ALPHAS


@pytest.mark.parametrize("alpha", GRID_ALPHAS, ids=lambda a: f"alpha={a}")
@pytest.mark.parametrize("gamma", GRID_GAMMAS, ids=lambda g: f"gamma={g}")
def test_focal_value_and_gradient_at_every_grid_point_match_the_float64_reference(gamma, alpha):
    logits = [-6.0, -2.5, -0.3, 0.7, 3.0, 8.0]
    targets = [0.0, 1.0, 0.3, 0.85]  # hard and soft (IoU-valued) targets; no logit sits exactly at its target
    pairs = [(x, y) for x in logits for y in targets]
    x = torch.tensor([x for x, _ in pairs], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([y for _, y in pairs], dtype=torch.float64)
    loss = focal_loss(x, y, gamma=gamma, alpha=alpha)
    loss.sum().backward()
    expected = [focal_reference(a, b, gamma, alpha) for a, b in pairs]
    torch.testing.assert_close(loss, torch.tensor([v for v, _ in expected], dtype=torch.float64), rtol=1e-9,
                               atol=1e-15)
    torch.testing.assert_close(x.grad, torch.tensor([g for _, g in expected], dtype=torch.float64), rtol=1e-8,
                               atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fn", [bce_loss, focal_loss, _focal_half], ids=["bce", "focal", "focal.5"])
def test_finite_values_and_gradients_at_extreme_logits(fn, dtype):
    x = torch.tensor([100.0, -100.0, 100.0, -100.0, 100.0, -100.0, 0.0], dtype=dtype, requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.3, 0.3, 1.0], dtype=dtype)
    loss = fn(x, y)
    loss.sum().backward()
    assert loss.dtype == dtype and loss.shape == x.shape
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    # exact values from the float64 reference: confidently wrong predictions cost 100 (times alpha_t and the factor,
    # here 1), confidently right ones ~0; the soft target .3 at +-100 costs BCE 70 / 30 times alpha_t |y - p|^gamma
    gamma, alpha = {"bce": (0.0, None), "focal": (2.0, 0.25), "focal.5": (0.5, None)}[fn_id(fn)]
    for i in range(len(x)):
        value, gradient = focal_reference(x[i].item(), y[i].item(), gamma, alpha)
        tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-5
        assert loss[i].float().item() == pytest.approx(value, rel=tolerance, abs=1e-6), i
        assert x.grad[i].float().item() == pytest.approx(gradient, rel=tolerance, abs=1e-6), i


@pytest.mark.parametrize("gamma, alpha", [(0.0, None), (2.0, 0.25), (0.5, None), (5.0, 0.75)])
def test_gradient_pushes_probability_towards_the_target(gamma, alpha):
    torch.manual_seed(3)
    x = (torch.randn(300) * 4).requires_grad_()
    y = torch.cat([torch.ones(100), torch.zeros(100), torch.rand(100)])
    focal_loss(x, y, gamma=gamma, alpha=alpha).sum().backward()
    p = torch.sigmoid(x.detach())
    away = (p - y).abs() > 1e-3  # skip points already at the target, where the gradient vanishes
    # descending the gradient (x -= grad) must move p towards y: sign(grad) == sign(p - y)
    assert torch.equal(torch.sign(x.grad[away]), torch.sign(p - y)[away])


def test_focal_never_exceeds_bce_without_alpha():
    torch.manual_seed(4)
    x = torch.randn(500) * 5
    y = torch.rand(500)
    assert (focal_loss(x, y, gamma=2.0, alpha=None) <= bce_loss(x, y)).all()


def test_loss_table_and_selector():
    assert set(OBJECTNESS_LOSSES) == {"bce", "focal", "varifocal"}
    x = torch.tensor([0.7, -2.0])
    y = torch.tensor([1.0, 0.0])
    assert torch.equal(get_loss_fn("bce", gamma=2.0, alpha=0.25)(x, y), bce_loss(x, y))  # bce drops gamma/alpha
    assert torch.equal(get_loss_fn("focal", gamma=1.0, alpha=None)(x, y), focal_loss(x, y, gamma=1.0, alpha=None))
    with pytest.raises(ValueError, match=r"unknown loss 'focus'; choose from: bce, focal, varifocal"):
        get_loss_fn("focus")
    with pytest.raises(ValueError, match="gama"):
        get_loss_fn("focal", gama=2.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        get_loss_fn("focal", gamma=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        bce_loss(torch.zeros(3), torch.zeros(2))


# --------------------------------------------------------------------------------------------------------------------
# YOLOLoss on a hand-built one-layer case
# --------------------------------------------------------------------------------------------------------------------
# one layer, stride 8, anchors (8,8) and (24,24), 2 classes, input 32x32 -> grid 4x4, batch of 2 images
STRIDE = 8
ANCHORS = [torch.tensor([[8.0, 8.0], [24.0, 24.0]])]
NUM_CLASSES = 2
BATCH = 2
# one truth in image 0 (image 1 has none): class 1, centre (.6, .6) = 19.2 px, size .3 = 9.6 px.
# shape IoU with (8,8) = 64/92.16 = .694, with (24,24) = 92.16/576 = .16 -> anchor 0; cell floor(.6*4) = 2 -> (2, 2)
TRUTH = torch.tensor([[0.0, 1.0, 0.6, 0.6, 0.3, 0.3]])


def make_loss(**changes) -> YOLOLoss:
    cfg = dataclasses.replace(LossConfig(), **changes)
    return YOLOLoss(ANCHORS, [STRIDE], NUM_CLASSES, cfg, ignore_thresh=[0.5])


def zero_maps(requires_grad: bool = True) -> torch.Tensor:
    return torch.zeros(BATCH, 2, 4, 4, 5 + NUM_CLASSES, requires_grad=requires_grad)  # (B, A, H, W, 5+C)


# With all-zero raw maps every prediction is a box of its anchor's size centred in its cell, objectness 0.5:
#   no prediction other than the positive overlaps the truth [14.4, 24]^2 above .5 (the best: anchor 1 at (2, 2),
#   [8, 32]^2, IoU 92.16/576 = .16), so nothing is ignored and negatives = 2*2*16 - 1 = 63.
#   obj   = BCE(0, 1) = log 2; noobj = 63 log 2; cls = 2 classes * BCE(0, .) = 2 log 2
#   box (mse) = (2 - .3*.3) * [(.5 - .4)^2 * 2 + log(9.6/8)^2 * 2] = 1.91 * (.02 + 2 * .0332415) = .165181
BOX_SUM = 1.91 * (0.02 + 2 * math.log(1.2) ** 2)
OBJ_SUM, NOOBJ_SUM, CLS_SUM = LOG2, 63 * LOG2, 2 * LOG2


def test_mse_box_loss_hand_computed_and_counts():
    total, terms = make_loss(box="mse")([zero_maps()], TRUTH)
    assert BOX_SUM == pytest.approx(0.165181, abs=1e-6)
    # normalizer batch: each sum / 2
    assert terms["box"].item() == pytest.approx(BOX_SUM / 2, rel=1e-5)
    assert terms["obj"].item() == pytest.approx(OBJ_SUM / 2, rel=1e-5)
    assert terms["noobj"].item() == pytest.approx(NOOBJ_SUM / 2, rel=1e-5)
    assert terms["cls"].item() == pytest.approx(CLS_SUM / 2, rel=1e-5)
    assert total.item() == pytest.approx((BOX_SUM + OBJ_SUM + NOOBJ_SUM + CLS_SUM) / 2, rel=1e-5)
    assert (terms["num_pos"], terms["num_neg"], terms["num_ignored"]) == (1, 63, 0)
    assert not terms["box"].requires_grad and total.requires_grad


def test_darknet_box_loss_hand_computed_with_darknets_gradient():
    # the zero-map case: sigmoid(0) = .5 against the in-cell offset .4 (x and y), tw = 0 against log(9.6/8)
    raw = zero_maps()
    _, terms = make_loss(box="darknet")([raw], TRUTH)
    xy = 2 * (LOG2 + (0.4 * math.log(0.4) + 0.6 * math.log(0.6)))  # BCE(.5, .4) - H(.4), twice: .040270
    wh = math.log(1.2) ** 2  # 2 * (log 1.2)^2 / 2
    assert terms["box"].item() == pytest.approx(1.91 * (xy + wh) / BATCH, rel=1e-5)
    total, _ = make_loss(box="darknet", lambda_obj=0.0, lambda_noobj=0.0, lambda_cls=0.0)([raw], TRUTH)
    total.backward()
    grad = raw.grad[0, 0, 2, 2, :4]  # (2 - w h) * delta / batch
    expected = [1.91 * (0.5 - 0.4) / BATCH] * 2 + [1.91 * (0 - math.log(1.2)) / BATCH] * 2
    assert grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert raw.grad.abs().sum().item() == pytest.approx(sum(abs(g) for g in expected), rel=1e-5)  # nowhere else


@pytest.mark.parametrize("normalizer, divisor", [("batch", BATCH), ("positives", 1)])
def test_normalizer_and_lambdas_scale_each_term_exactly(normalizer, divisor):
    loss = make_loss(box="mse", normalizer=normalizer, lambda_box=2.0, lambda_obj=3.0, lambda_noobj=5.0, lambda_cls=7.0)
    total, terms = loss([zero_maps()], TRUTH)
    expected = {"box": 2 * BOX_SUM, "obj": 3 * OBJ_SUM, "noobj": 5 * NOOBJ_SUM, "cls": 7 * CLS_SUM}
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value / divisor, rel=1e-5), name
    assert total.item() == pytest.approx(sum(expected.values()) / divisor, rel=1e-5)


def test_positives_normaliser_counts_every_positive():
    # a second truth (image 1, same box) -> 2 positives: 'positives' divides by 2, like 'batch' with B=2
    truths = torch.cat([TRUTH, TRUTH * torch.tensor([0, 1, 1, 1, 1, 1]) + torch.tensor([1.0, 0, 0, 0, 0, 0])])
    _, by_batch = make_loss(normalizer="batch")([zero_maps()], truths)
    _, by_pos = make_loss(normalizer="positives")([zero_maps()], truths)
    assert by_pos["num_pos"] == 2
    for name in ("box", "obj", "noobj", "cls"):
        assert by_pos[name].item() == pytest.approx(by_batch[name].item(), rel=1e-6)


def test_label_smoothing_targets():
    # eps = .2: targets .9 (class 1) and .1 (class 0); at logit 0 BCE is log 2 whatever the target, so use logit 1:
    # BCE(1, .9) + BCE(1, .1) = (softplus(1) - .9) + (softplus(1) - .1) = 2 softplus(1) - 1
    raw = zero_maps(requires_grad=False)
    raw[0, 0, 2, 2, 5:] = 1.0
    loss = make_loss(cls=ClassLossConfig(label_smoothing=0.2), normalizer="positives")
    _, terms = loss([raw], TRUTH)
    softplus1 = math.log1p(math.e)
    assert terms["cls"].item() == pytest.approx(2 * softplus1 - 1.0, rel=1e-5)


def test_class_focal_alpha_with_label_smoothing_weights_by_the_truth_class_not_the_soft_target():
    # eps = .2, focal gamma 0, alpha .25 at logit 1: the truth class (target .9) gets .25, the other (target .1,
    # a negative despite its non-zero target) gets .75
    raw = zero_maps(requires_grad=False)
    raw[0, 0, 2, 2, 5:] = 1.0
    loss = make_loss(cls=ClassLossConfig(name="focal", gamma=0.0, alpha=0.25, label_smoothing=0.2),
                     normalizer="positives")
    _, terms = loss([raw], TRUTH)
    softplus1 = math.log1p(math.e)
    assert terms["cls"].item() == pytest.approx(0.25 * (softplus1 - 0.9) + 0.75 * (softplus1 - 0.1), rel=1e-5)


def _perfect_centre_raw(tw: float) -> tuple:
    """Truth 8x8 px centred at (20, 20) px -> anchor 0 (IoU 1), cell (2, 2), offset .5 = sigmoid(0).

    The raw map predicts that centre with width/height 8 * exp(tw); objectness logit 1 at the positive.
    """
    truth = torch.tensor([[0.0, 0.0, 0.625, 0.625, 0.25, 0.25]])
    raw = zero_maps(requires_grad=False)
    raw[0, 0, 2, 2, 2:4] = tw
    raw[0, 0, 2, 2, 4] = 1.0
    return raw, truth


@pytest.mark.parametrize("box", ["giou", "ciou", "mse"])
def test_box_loss_variants_hand_computed(box):
    # predicted 16x16 box on the 8x8 truth, same centre: IoU = 64/256 = .25; the enclosing box is the prediction, so
    # GIoU = .25; equal centres and aspect ratios make CIoU = IoU = .25 -> 1 - .25 = .75, times (2 - .25*.25) = 1.9375
    # mse: offsets exact, (tw - log(8/8))^2 + (th - 0)^2 = 2 log(2)^2
    raw, truth = _perfect_centre_raw(math.log(2.0))
    _, terms = make_loss(box=box, normalizer="positives")([raw], truth)
    distance = 2 * LOG2**2 if box == "mse" else 0.75
    assert terms["box"].item() == pytest.approx(1.9375 * distance, rel=1e-5)


@pytest.mark.parametrize("obj_target, expected", [
    ("one", math.log1p(math.exp(-1.0))),  # BCE(1, 1) = softplus(-1) = .313262
    ("iou", math.log1p(math.e) - 0.25),  # target = IoU .25: BCE(1, .25) = softplus(1) - .25 = 1.063262
])
def test_objectness_target_one_or_iou(obj_target, expected):
    raw, truth = _perfect_centre_raw(math.log(2.0))
    loss = make_loss(obj_target=obj_target, normalizer="positives", record_elementwise=True)
    _, terms = loss([raw], truth)
    assert terms["obj"].item() == pytest.approx(expected, rel=1e-5)
    pos = terms["obj_elementwise"]["pos"]
    neg = terms["obj_elementwise"]["neg"]
    assert pos.shape == (1,) and pos.item() == pytest.approx(expected, rel=1e-5)
    assert neg.shape == (terms["num_neg"],) and torch.allclose(neg, torch.full_like(neg, LOG2))


@pytest.mark.parametrize("name", ["bce", "focal"])
def test_ignored_prediction_gets_exactly_zero_gradient(name):
    # anchor 1 at cell (2, 2) of BOTH images predicts exactly the truth box of image 0:
    # sigmoid(tx) = .4 -> centre (2.4 * 8) = 19.2 px; exp(tw) = 9.6 / 24 -> width 9.6 px; IoU 1 > .5 -> ignored in
    # image 0 only (image 1 has no truth, so the same prediction there is an ordinary negative)
    raw = zero_maps(requires_grad=False)
    raw[:, 1, 2, 2, 0:2] = logit(0.4)
    raw[:, 1, 2, 2, 2:4] = math.log(9.6 / 24)
    raw[:, 1, 2, 2, 4] = 2.0  # confident objectness: a large no-object loss if it were not ignored
    raw.requires_grad_()
    loss = make_loss(objectness=ObjectnessLossConfig(name=name))
    total, terms = loss([raw], TRUTH)
    total.backward()
    assert terms["num_ignored"] == 1 and terms["num_neg"] == 62
    assert torch.equal(raw.grad[0, 1, 2, 2], torch.zeros(5 + NUM_CLASSES))  # ignored: exactly zero, every channel
    assert raw.grad[1, 1, 2, 2, 4].item() > 0.0  # the same prediction as a negative in image 1: pushed down
    assert (raw.grad[0, :, :, :, 4] != 0).sum().item() == 2 * 16 - 1  # every other cell of image 0 has a gradient
    # and the ignored cell's value is gone from the no-object sum: 62 negatives = 61 at logit 0 + image 1's copy at 2
    # (by the float64 reference: bce log 2 and softplus(2); focal's defaults gamma 2, alpha .25 weigh a negative
    # by .75 p^2: .75 * .25 * log 2 and .75 * sigmoid(2)^2 * softplus(2))
    gamma, alpha = (0.0, None) if name == "bce" else (2.0, 0.25)
    at_zero = focal_reference(0.0, 0.0, gamma, alpha)[0]
    at_two = focal_reference(2.0, 0.0, gamma, alpha)[0]
    expected_noobj = 61 * at_zero + at_two
    assert terms["noobj"].item() == pytest.approx(expected_noobj / BATCH, rel=1e-5)


def test_each_layer_decodes_its_predictions_at_its_own_stride():
    # the ignored-prediction case as the second layer (stride 8) behind a coarse first one (stride 16, 2 x 2 grid,
    # anchors 40 and 48 px whose centred boxes overlap the truth by IoU .06 at most): the truth still goes to
    # anchor 0 of the fine layer, and anchor 1 at its cell (2, 2) predicts the truth exactly, but only when decoded
    # at stride 8 (at 16 its centre would be 38.4 px, off the truth): ignored, with no gradient at all
    coarse_anchors = torch.tensor([[40.0, 40.0], [48.0, 48.0]])
    loss = YOLOLoss([coarse_anchors, ANCHORS[0]], [16, STRIDE], NUM_CLASSES, LossConfig(), ignore_thresh=[0.5, 0.5])
    coarse = torch.zeros(BATCH, 2, 2, 2, 5 + NUM_CLASSES, requires_grad=True)
    fine = zero_maps(requires_grad=False)
    fine[:, 1, 2, 2, 0:2] = logit(0.4)
    fine[:, 1, 2, 2, 2:4] = math.log(9.6 / 24)
    fine[:, 1, 2, 2, 4] = 2.0
    fine.requires_grad_()
    total, terms = loss([coarse, fine], TRUTH)
    total.backward()
    assert (terms["num_pos"], terms["num_ignored"]) == (1, 1)
    assert terms["num_neg"] == BATCH * 2 * 4 + BATCH * 2 * 16 - 2
    assert torch.equal(fine.grad[0, 1, 2, 2], torch.zeros(5 + NUM_CLASSES))
    assert fine.grad[1, 1, 2, 2, 4].item() > 0.0  # image 1 has no truth: there it is an ordinary negative


def test_config_ignore_thresh_overrides_the_layer_value():
    # the hand case's anchor-1 box at (2, 2) has IoU .16 with the truth: ignored at .15, not at the layer's .5
    cfg = dataclasses.replace(LossConfig(), ignore_thresh=0.15)
    loss = YOLOLoss(ANCHORS, [STRIDE], NUM_CLASSES, cfg, ignore_thresh=[0.5])
    _, terms = loss([zero_maps()], TRUTH)
    assert terms["num_ignored"] >= 1
    _, default_terms = make_loss()([zero_maps()], TRUTH)
    assert default_terms["num_ignored"] == 0


@pytest.mark.parametrize("name", ["bce", "focal"])
def test_batch_without_any_truth_has_only_the_noobj_term(name):
    raw = torch.randn(BATCH, 2, 4, 4, 5 + NUM_CLASSES).requires_grad_()
    loss = make_loss(objectness=ObjectnessLossConfig(name=name))
    total, terms = loss([raw], torch.zeros((0, 6)))
    total.backward()
    assert (terms["num_pos"], terms["num_ignored"], terms["num_neg"]) == (0, 0, BATCH * 2 * 16)
    assert terms["box"].item() == terms["obj"].item() == terms["cls"].item() == 0.0
    gamma, alpha = (0.0, None) if name == "bce" else (2.0, 0.25)
    expected = sum(focal_reference(x, 0.0, gamma, alpha)[0] for x in raw[..., 4].flatten().tolist()) / BATCH
    assert total.item() == pytest.approx(expected, rel=1e-5)
    expected_grad = [focal_reference(x, 0.0, gamma, alpha)[1] / BATCH for x in raw[..., 4].flatten().tolist()]
    torch.testing.assert_close(raw.grad[..., 4].flatten(), torch.tensor(expected_grad), rtol=1e-4, atol=1e-7)
    assert raw.grad[..., :4].abs().sum() == 0 and raw.grad[..., 5:].abs().sum() == 0


def test_focal_objectness_uses_alpha_on_positives_and_one_minus_alpha_on_negatives():
    # gamma = 0 isolates alpha: obj = .25 * log 2, noobj = .75 * 63 log 2 (per image: / 2)
    loss = make_loss(objectness=ObjectnessLossConfig(name="focal", gamma=0.0, alpha=0.25))
    _, terms = loss([zero_maps()], TRUTH)
    assert terms["obj"].item() == pytest.approx(0.25 * OBJ_SUM / 2, rel=1e-5)
    assert terms["noobj"].item() == pytest.approx(0.75 * NOOBJ_SUM / 2, rel=1e-5)
    assert terms["cls"].item() == pytest.approx(CLS_SUM / 2, rel=1e-5)  # the class term keeps its own choice (bce)


# --------------------------------------------------------------------------------------------------------------------
# A rectangular hand case: every x/y and w/h swap changes a number below
# --------------------------------------------------------------------------------------------------------------------
# input 32 px high x 64 px wide, stride 8 -> grid 4 (H) x 8 (W); anchors (w, h) = (8, 16) and (24, 12); 2 classes,
# batch 2. One truth in image 0: class 1, 24 x 10 px centred at (42, 13) px -> normalised cx 42/64 = .65625,
# cy 13/32 = .40625, w 24/64 = .375, h 10/32 = .3125 (all exact in binary), xyxy [30, 8, 54, 18].
#   shape IoU: (8, 16): 8*10 / (240 + 128 - 80) = 80/288 = .278; (24, 12): 240 / (240 + 288 - 240) = .833 -> anchor 1
#   cell: gx = floor(42 / 8) = 5, gy = floor(13 / 8) = 1; in-cell offsets tx* = .25, ty* = .625
#   tw* = log(24 / 24) = 0, th* = log(10 / 12); small-box weight 2 - .375 * .3125 = 1.8828125
# With all-zero maps every prediction is its anchor centred in its cell. Decoded IoUs with the truth:
#   anchor 1 at (1, 5): [32, 6, 56, 18] -> 22*10 / (240 + 288 - 220) = 220/308 = .714 (the positive)
#   anchor 1 at (1, 4): [24, 6, 48, 18] -> 18*10 / 348 = .517 > .5: ignored (the only one: (1, 6) gives 140/388 =
#   .361, (0, 5) 44/484, (2, 5) 88/440; anchor 0 (8 x 16) at best 80/288 = .278)
# so 1 positive, 1 ignored, 2 images * 2 anchors * 32 cells - 2 = 126 negatives.
RECT_STRIDE = 8
RECT_ANCHORS = [torch.tensor([[8.0, 16.0], [24.0, 12.0]])]
RECT_TRUTH = torch.tensor([[0.0, 1.0, 42 / 64, 13 / 32, 24 / 64, 10 / 32]])
RECT_WEIGHT = 2.0 - 0.375 * 0.3125
RECT_MSE = (0.5 - 0.25) ** 2 + (0.5 - 0.625) ** 2 + 0.0 + math.log(10 / 12) ** 2  # sigmoid(0) = .5, tw = th = 0


def make_rect_loss(**changes) -> YOLOLoss:
    cfg = dataclasses.replace(LossConfig(), **changes)
    return YOLOLoss(RECT_ANCHORS, [RECT_STRIDE], NUM_CLASSES, cfg, ignore_thresh=[0.5])


def rect_maps(requires_grad: bool = True) -> torch.Tensor:
    return torch.zeros(BATCH, 2, 4, 8, 5 + NUM_CLASSES, requires_grad=requires_grad)  # (B, A, H=4, W=8, 5+C)


def test_rectangular_input_hand_computed_terms_counts_and_gradients():
    raw = rect_maps()
    total, terms = make_rect_loss(box="mse")([raw], RECT_TRUTH)
    total.backward()
    assert (terms["num_pos"], terms["num_ignored"], terms["num_neg"]) == (1, 1, 126)
    assert terms["box"].item() == pytest.approx(RECT_WEIGHT * RECT_MSE / BATCH, rel=1e-6)  # 1.8828 * .1114 / 2
    assert terms["obj"].item() == pytest.approx(LOG2 / BATCH, rel=1e-6)
    assert terms["noobj"].item() == pytest.approx(126 * LOG2 / BATCH, rel=1e-6)
    assert terms["cls"].item() == pytest.approx(2 * LOG2 / BATCH, rel=1e-6)
    grad = raw.grad
    # the positive, exactly at (image 0, anchor 1, gy 1, gx 5): d/dx of (w (sigmoid(t) - t*)^2) / B at t = 0 is
    # w * 2 (.5 - t*) * .25 / 2; d/dth of w (th - log(10/12))^2 / B = w * 2 * log(1.2) / 2; d obj/dt = (.5 - 1) / 2;
    # classes: (.5 - 0) / 2 for class 0 and (.5 - 1) / 2 for class 1
    expected = torch.tensor([RECT_WEIGHT * 2 * 0.25 * 0.25 / 2, RECT_WEIGHT * 2 * -0.125 * 0.25 / 2, 0.0,
                             RECT_WEIGHT * math.log(1.2), -0.25, 0.25, -0.25])
    torch.testing.assert_close(grad[0, 1, 1, 5], expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(grad[0, 1, 1, 4], torch.zeros(5 + NUM_CLASSES))  # ignored: nothing at all
    # every other cell is a negative with d BCE(t, 0)/dt / B = .5 / 2 and nothing on the box or class channels
    negative = torch.ones(BATCH, 2, 4, 8, dtype=torch.bool)
    negative[0, 1, 1, 5] = negative[0, 1, 1, 4] = False
    assert torch.equal(grad[..., 4][negative], torch.full((126,), 0.25))
    assert grad[..., :4][negative].abs().max() == 0 and grad[..., 5:][negative].abs().max() == 0


@pytest.mark.parametrize("box", ["giou", "ciou"])
def test_rectangular_input_iou_box_losses_hand_computed(box):
    # positive [32, 6, 56, 18] against the truth [30, 8, 54, 18]: IoU 220/308; enclosing box 26 x 12 = 312
    # GIoU = IoU - (312 - 308) / 312; CIoU = IoU - d^2/c^2 - alpha v with centres (44, 12), (42, 13): d^2 = 4 + 1,
    # c^2 = 26^2 + 12^2 = 820, v = 4/pi^2 (atan(24/10) - atan(24/12))^2, alpha = v / (1 - IoU + v)
    iou = 220 / 308
    if box == "giou":
        similarity = iou - 4 / 312
    else:
        v = 4 / math.pi**2 * (math.atan(24 / 10) - math.atan(24 / 12)) ** 2
        similarity = iou - 5 / 820 - v * v / (1 - iou + v)
    _, terms = make_rect_loss(box=box, normalizer="positives")([rect_maps()], RECT_TRUTH)
    assert terms["box"].item() == pytest.approx(RECT_WEIGHT * (1 - similarity), rel=1e-5)


def test_ignore_threshold_is_strict_at_equality():
    # truth 24 x 12 px centred at (40, 12) px: xyxy [28, 6, 52, 18], anchor 1 (IoU 1) at cell (1, 5). Anchor 1 at
    # (1, 4) = [24, 6, 48, 18] overlaps it by 20 * 12 / (288 + 288 - 240) = 5/7; at (1, 3) = [16, 6, 40, 18] and
    # (1, 6) = [40, 6, 64, 18] by 12 * 12 / (576 - 144) = 1/3 exactly (in float32 too); anchor 0 at best 96/320 = .3.
    # IoU > thresh ignores: at thresh 1/3 only (1, 4); just below 1/3 also (1, 3) and (1, 6)
    truth = torch.tensor([[0.0, 0.0, 40 / 64, 12 / 32, 24 / 64, 12 / 32]])
    at = YOLOLoss(RECT_ANCHORS, [RECT_STRIDE], NUM_CLASSES, LossConfig(), ignore_thresh=[1 / 3])
    below = YOLOLoss(RECT_ANCHORS, [RECT_STRIDE], NUM_CLASSES, LossConfig(), ignore_thresh=[1 / 3 - 1e-6])
    _, terms_at = at([rect_maps()], truth)
    _, terms_below = below([rect_maps()], truth)
    assert (terms_at["num_ignored"], terms_at["num_neg"]) == (1, 126)
    assert (terms_below["num_ignored"], terms_below["num_neg"]) == (3, 124)


def test_recorded_negatives_leave_out_ignored_and_positive_cells():
    # the rectangular case with a confident objectness logit 3 at the ignored cell and 2 at the positive: the
    # recorded negatives are the 126 cells at logit 0 (log 2 each), never the ignored cell's softplus(3)
    raw = rect_maps(requires_grad=False)
    raw[0, 1, 1, 4, 4] = 3.0
    raw[0, 1, 1, 5, 4] = 2.0
    _, terms = make_rect_loss(record_elementwise=True)([raw], RECT_TRUTH)
    recorded = terms["obj_elementwise"]
    assert recorded["neg"].shape == (126,) and torch.allclose(recorded["neg"], torch.full((126,), LOG2))
    assert recorded["pos"].shape == (1,) and recorded["pos"].item() == pytest.approx(math.log1p(math.exp(-2.0)))
    assert terms["noobj"].item() == pytest.approx(126 * LOG2 / BATCH, rel=1e-6)


@pytest.mark.parametrize("normalizer, divisor", [("batch", BATCH), ("positives", 1)])
def test_batch_without_objects_positives_normaliser_is_one(normalizer, divisor):
    # no positive at all: 'positives' divides by max(1, 0) = 1, never by zero; 2 * 2 * 32 cells at logit 0
    total, terms = make_rect_loss(normalizer=normalizer)([rect_maps()], torch.zeros((0, 6)))
    assert terms["num_pos"] == 0
    assert terms["noobj"].item() == pytest.approx(128 * LOG2 / divisor, rel=1e-6)
    assert total.item() == pytest.approx(128 * LOG2 / divisor, rel=1e-6)


def test_rectangular_maps_imply_height_then_width():
    # (B, A, 4, 8, .) at stride 8 is a 32 x 64 input: a truth at cx = .9 lies in column 7, which only exists when
    # the width is 64; a (B, A, 8, 4, .) map of a 64 x 32 input puts the same truth at column 3
    truth = torch.tensor([[0.0, 0.0, 0.9, 0.1, 8 / 64, 16 / 32]])  # 8 x 16 px in a 32 x 64 input: anchor 0
    raw = rect_maps()
    loss = make_rect_loss(normalizer="positives")
    total, terms = loss([raw], truth)
    total.backward()
    assert terms["num_pos"] == 1
    assert raw.grad[0, 0, 0, 7, 4].item() == pytest.approx(-0.5)  # (sigmoid(0) - 1) / 1 at gy = floor(.4) = 0
    # the same row on a tall 64 x 32 input is a 4 x 32 px box at column floor(.9 * 4) = 3 of row 0 (whichever anchor)
    tall = torch.zeros(BATCH, 2, 8, 4, 5 + NUM_CLASSES, requires_grad=True)
    total, _ = loss([tall], truth)
    total.backward()
    assert tall.grad[0, :, 0, 3, 4].min().item() == pytest.approx(-0.5)


@pytest.mark.parametrize(
    "changes, key, choices",
    [
        ({"objectness": ObjectnessLossConfig(name="focus")}, "loss.objectness.name", "bce, focal"),
        ({"cls": ClassLossConfig(name="softmax")}, "loss.cls.name", "bce, focal"),
        ({"box": "l1"}, "loss.box", "mse, darknet, giou, ciou"),
        ({"normalizer": "anchors"}, "loss.normalizer", "batch, positives"),
        ({"obj_target": "giou"}, "loss.obj_target", "one, iou"),
    ],
)
def test_unknown_config_strings_fail_at_construction_listing_the_choices(changes, key, choices):
    with pytest.raises(ConfigError) as info:
        make_loss(**changes)
    assert key in str(info.value) and choices in str(info.value)


def test_bad_inputs_raise_clear_errors():
    loss = make_loss()
    with pytest.raises(ValueError, match="expected"):
        loss([torch.zeros(BATCH, 3, 4, 4, 7)], TRUTH)  # 3 anchors instead of 2
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        loss([zero_maps()], torch.zeros(3, 5))
    with pytest.raises(ValueError, match="image index"):
        loss([zero_maps()], torch.tensor([[5.0, 0, 0.5, 0.5, 0.1, 0.1]]))
    with pytest.raises(ValueError, match="zero or negative width"):
        loss([zero_maps()], torch.tensor([[0.0, 0, 0.5, 0.5, 0.0, 0.1]]))
    with pytest.raises(ConfigError, match="ignore_thresh"):
        YOLOLoss(ANCHORS, [STRIDE], NUM_CLASSES, LossConfig(), ignore_thresh=None)


# --------------------------------------------------------------------------------------------------------------------
# A tiny model following the Darknet contract (yolo_layers, head_convs, strides, num_classes)
# --------------------------------------------------------------------------------------------------------------------
class _YoloLayer(nn.Module):
    def __init__(self, anchors, stride, num_classes, ignore_thresh):
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))
        self.stride, self.num_classes, self.ignore_thresh = stride, num_classes, ignore_thresh


class TinyYolo(nn.Module):
    """64x64 input -> raw maps at strides 16 and 8, two anchors each."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.num_classes = num_classes
        self.strides = [16, 8]
        self.yolo_layers = nn.ModuleList([
            _YoloLayer([[24.0, 24.0], [40.0, 20.0]], 16, num_classes, 0.7),
            _YoloLayer([[8.0, 8.0], [12.0, 16.0]], 8, num_classes, 0.7),
        ])
        act = nn.LeakyReLU(0.1)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), act, nn.Conv2d(16, 32, 3, 2, 1), act,
                                  nn.Conv2d(32, 32, 3, 2, 1), act)  # stride 8
        self.down = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), act)  # stride 16
        outputs = 2 * (5 + num_classes)
        self.head_convs = nn.ModuleList([nn.Conv2d(32, outputs, 1), nn.Conv2d(32, outputs, 1)])

    def forward(self, x):
        s8 = self.stem(x)
        s16 = self.down(s8)
        maps = []
        for conv, feature in zip(self.head_convs, (s16, s8)):
            out = conv(feature)
            b, _, h, w = out.shape
            maps.append(out.view(b, 2, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2).contiguous())  # (B,A,H,W,5+C)
        return maps


def test_from_model_and_objectness_prior():
    model = TinyYolo()
    apply_objectness_prior(model, 0.01)
    for conv in model.head_convs:
        bias = conv.bias.view(2, 5 + model.num_classes)
        # -log((1 - .01) / .01) = -log(99) = -4.59512
        assert torch.allclose(bias[:, 4], torch.full((2,), -4.59512), atol=1e-5)
        assert (bias[:, :4].abs() < 1).all()  # other channels keep their default init
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="0 < pi < 1"):
            apply_objectness_prior(model, bad)
    loss = YOLOLoss.from_model(model)
    assert loss.strides == [16, 8] and loss.ignore_thresh == [0.7, 0.7] and loss.num_classes == 2
    assert torch.equal(loss.anchors(1), torch.tensor([[8.0, 8.0], [12.0, 16.0]]))
    # with the prior, every prediction starts at objectness .01: the no-object loss per cell is -log(.99) = .01005
    for conv in model.head_convs:  # outputs = bias alone, so the objectness is exactly the prior
        nn.init.zeros_(conv.weight)
    x = torch.rand(1, 3, 64, 64)
    _, terms = loss(model(x), torch.zeros((0, 6)))
    cells = 2 * 4 * 4 + 2 * 8 * 8
    assert terms["noobj"].item() == pytest.approx(cells * -math.log(0.99), rel=1e-4)


def _synthetic_image():
    """One 64x64 image with a 24x24 object (class 0) and a 10x10 object (class 1) on a dark background."""
    image = torch.full((1, 3, 64, 64), 0.1)
    image[0, :, 8:32, 30:54] = 0.9  # cx 42, cy 20, 24x24
    image[0, 0, 44:54, 10:20] = 1.0  # cx 15, cy 49, 10x10
    targets = torch.tensor([[0, 0, 42 / 64, 20 / 64, 24 / 64, 24 / 64], [0, 1, 15 / 64, 49 / 64, 10 / 64, 10 / 64]])
    return image, targets


@pytest.mark.parametrize("name", ["bce", "focal"])
def test_a_few_optimisation_steps_drive_the_loss_down(name):
    # with the RetinaNet prior the no-object term starts small, so the drop must come from learning the objects:
    # the object, box and class terms must all fall, not just the (easy) no-object term
    torch.manual_seed(0)
    model = TinyYolo()
    apply_objectness_prior(model, 0.01)
    cfg = dataclasses.replace(LossConfig(), objectness=ObjectnessLossConfig(name=name))
    loss_fn = YOLOLoss.from_model(model, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    image, targets = _synthetic_image()
    history = []
    for _ in range(40):
        total, terms = loss_fn(model(image), targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append((total.item(), terms))
    (first_total, first), (last_total, last) = history[0], history[-1]
    assert last["num_pos"] == 2
    assert last_total < 0.5 * first_total, [h[0] for h in history]
    for term in ("obj", "box", "cls"):
        assert last[term].item() < 0.5 * first[term].item(), term


def test_with_darknet_small_prior_matches_decoded_objectness_and_loss_trains():
    # the real model: the prior must hit the objectness channel of the model's own (A, 5+C) channel layout,
    # which its eval-mode decode reveals once the head conv weights are zero (output = bias)
    from yolov3.model import Darknet

    torch.manual_seed(0)
    model = Darknet(str(Path(__file__).resolve().parents[1] / "cfg" / "yolov3-small.cfg"), num_classes=2)
    apply_objectness_prior(model, 0.01)
    saved = [conv.weight.detach().clone() for conv in model.head_convs]
    for conv in model.head_convs:
        nn.init.zeros_(conv.weight)
    image, targets = _synthetic_image()
    with torch.no_grad():
        decoded = model.eval()(image)  # (1, N, 5+C)
    assert torch.allclose(decoded[0, :, 4], torch.full_like(decoded[0, :, 4], 0.01), atol=1e-6)
    assert ((decoded[0, :, 5:] - 0.5).abs() < 0.1).all()  # class channels keep their small default biases
    with torch.no_grad():
        for conv, weight in zip(model.head_convs, saved):
            conv.weight.copy_(weight)

    loss_fn = YOLOLoss.from_model(model, LossConfig())
    assert loss_fn.strides == [32, 16, 8] and loss_fn.ignore_thresh == [0.7, 0.7, 0.7]
    assert torch.equal(loss_fn.anchors(2), torch.tensor([[10.0, 12.0], [16.0, 24.0], [24.0, 16.0]]))
    # a batch of two images, the second without objects; the 24x24 object's best anchor is (24,16) or (16,24) at
    # stride 8 (shape IoU 384/576 = .667 vs 28x44: 672/1232 = .545), the 10x10 one's is (10,12) (100/120 = .833)
    batch = torch.cat([image, torch.rand(1, 3, 64, 64)])
    model.train()
    raw_maps = model(batch)
    total, terms = loss_fn(raw_maps, targets)
    total.backward()
    assert terms["num_pos"] == 2 and torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---- planted-bug checks: varifocal's gamma and alpha, alpha = 1, shape and class checks, the positive mask ----------
def test_varifocal_keeps_its_gamma_below_one_and_its_alpha():
    x, y = torch.tensor([-1.2], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    p, bce = 1 / (1 + math.exp(1.2)), math.log1p(math.exp(-1.2))  # sigmoid(-1.2), BCE(p, 0) = softplus(-1.2)
    assert varifocal_loss(x, y, gamma=1.0, alpha=0.75).item() == pytest.approx(0.75 * p * bce, rel=1e-9)
    assert get_loss_fn("varifocal", gamma=2.0, alpha=0.5)(x, y).item() == pytest.approx(0.5 * p * p * bce, rel=1e-9)


def test_focal_alpha_one_weights_only_positives_and_builds_a_loss():
    out = focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), gamma=2.0, alpha=1.0)
    assert out.tolist() == pytest.approx([0.25 * LOG2, 0.0])  # (1 - .5)^2 log 2; the negative weighs 1 - 1 = 0
    make_loss(objectness=ObjectnessLossConfig(name="focal", alpha=1.0))  # the config allows 1: so must the loss


def test_maps_with_the_wrong_class_count_and_labels_of_a_class_the_model_lacks_are_refused():
    with pytest.raises(ValueError, match="expected"):
        make_loss()([torch.zeros(2, 2, 4, 4, 8)], TRUTH)  # 8 = 5 + 3 channels for a 2-class loss
    with pytest.raises(ValueError, match="class outside"):
        make_loss()([zero_maps()], torch.tensor([[0.0, 2.0, 0.5, 0.5, 0.1, 0.1]]))


def test_a_positive_whose_iou_target_is_zero_keeps_the_positive_alpha():
    """obj_target iou: the target of a positive is its IoU, here 0; focal's alpha follows the positive mask, not
    the target's value, so the positive weighs alpha (.25), not 1 - alpha."""
    loss = make_loss(objectness=ObjectnessLossConfig(name="focal", gamma=0.0, alpha=0.25), obj_target="iou",
                     normalizer="positives")
    raw = zero_maps(requires_grad=False).clone()
    raw[0, 0, 2, 2, 0:2] = 30.0  # centre (2 + 1) x 8 = 24 px
    raw[0, 0, 2, 2, 2:4] = -10.0  # a box of 8 e^-10 px: it does not touch the truth 13..21
    truth = torch.tensor([[0.0, 0.0, 17 / 32, 17 / 32, 8 / 32, 8 / 32]])
    _, terms = loss([raw], truth)
    assert float(terms["obj"]) == pytest.approx(0.25 * LOG2, rel=1e-5)


# ---- planted-bug checks: ignore thresholds per layer and truth, class alpha, label checks, target detaching ----------
def test_ignore_mask_uses_the_best_truth_and_each_layer_its_own_threshold():
    from yolov3.targets import ignore_mask

    truths = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]])
    assert ignore_mask(torch.tensor([0.0, 0.0, 10.0, 10.0]).reshape(1, 1, 1, 1, 4), truths, 0.5).tolist() == [[[[True]]]]
    anchors = [torch.tensor([[40.0, 40.0], [48.0, 48.0]]), torch.tensor([[8.0, 8.0], [24.0, 24.0]])]
    loss = YOLOLoss(anchors, [16, 8], 2, LossConfig(), ignore_thresh=[0.5, 0.15])
    # the fine layer's 24 px anchor at the 4 cells whose box holds the truth [14.4, 24]^2: IoU .16 > .15
    _, terms = loss([torch.zeros(2, 2, 2, 2, 7), torch.zeros(2, 2, 4, 4, 7)], TRUTH)
    assert (int(terms["num_ignored"]), int(terms["num_neg"])) == (4, 16 + 64 - 1 - 4)
    scalar = YOLOLoss([anchors[1], anchors[1]], [16, 8], 2, LossConfig(), ignore_thresh=0.5)
    assert scalar.ignore_thresh == [0.5, 0.5]


def test_class_focal_keeps_its_own_alpha_and_bad_labels_and_map_sizes_are_refused():
    _, terms = make_loss(cls=ClassLossConfig(name="focal", gamma=0.0, alpha=None), normalizer="positives")(
        [zero_maps()], TRUTH)
    assert float(terms["cls"]) == pytest.approx(2 * LOG2, rel=1e-5)  # two classes at BCE(0), no alpha
    with pytest.raises(ValueError, match="class outside"):
        make_loss()([zero_maps()], torch.tensor([[0.0, -1.0, 0.5, 0.5, 0.1, 0.1]]))
    with pytest.raises(ValueError, match="zero or negative width"):
        make_loss()([zero_maps()], torch.tensor([[0.0, 0, 0.5, 0.5, 0.1, 0.0]]))
    anchors = torch.tensor([[8.0, 8.0], [24.0, 24.0]])
    two = YOLOLoss([anchors, anchors], [16, 8], 2, LossConfig(), ignore_thresh=[0.5, 0.5])
    with pytest.raises(ValueError, match="earlier maps imply"):
        two([torch.zeros(2, 2, 2, 2, 7), torch.zeros(2, 2, 4, 8, 7)], TRUTH)  # 32 x 32, then 32 x 64


def test_extra_positives_reach_training_and_alpha_zero_builds():
    # the 24 px anchor's shape IoU with the 9.6 px truth is .16 > .15: a second positive in cell (2, 2)
    _, terms = make_loss(extra_positive_iou=0.15)([zero_maps()], TRUTH)
    assert (int(terms["num_pos"]), int(terms["num_neg"])) == (2, 62)
    out = focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), gamma=2.0, alpha=0.0)
    assert out.tolist() == pytest.approx([0.0, 0.25 * LOG2])
    make_loss(objectness=ObjectnessLossConfig(name="focal", alpha=0.0))


def test_the_iou_objectness_target_is_detached_and_varifocal_negatives_use_the_mask():
    raw, truth = _perfect_centre_raw(math.log(2.0))  # a 16 px box on an 8 px truth: IoU .25
    raw.requires_grad_()
    loss, _ = make_loss(obj_target="iou", normalizer="positives", lambda_box=0, lambda_noobj=0, lambda_cls=0)(
        [raw], truth)
    loss.backward()
    assert raw.grad[0, 0, 2, 2, :4].abs().max() == 0  # the target does not pull the box
    assert float(raw.grad[0, 0, 2, 2, 4]) == pytest.approx(1 / (1 + math.exp(-1.0)) - 0.25, rel=1e-4)
    x = torch.tensor([-1.2, 0.3], dtype=torch.float64)
    out = varifocal_loss(x, torch.tensor([0.1, 0.0], dtype=torch.float64), gamma=2, alpha=0.75,
                         positive=torch.tensor([False, True]))
    p = 1 / (1 + math.exp(1.2))
    assert out.tolist() == pytest.approx([0.75 * p * p * math.log1p(math.exp(-1.2)), 0.0], rel=1e-6)
