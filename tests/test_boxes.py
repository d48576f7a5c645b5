"""Box formats and IoU family against hand-computed values."""
import math

import pytest
import torch

from yolov3 import boxes as B


def test_format_round_trip():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0], [0.0, 0.0, 0.5, 0.25]])
    cxcywh = B.xyxy_to_cxcywh(xyxy)
    assert torch.allclose(cxcywh, torch.tensor([[3.0, 6.0, 4.0, 8.0], [0.25, 0.125, 0.5, 0.25]]))
    assert torch.allclose(B.cxcywh_to_xyxy(cxcywh), xyxy)


def test_pairwise_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 2.0]])
    # overlaps: 1/(4+4-1)=1/7; identical 1; disjoint 0; contained 2/4
    expected = torch.tensor([[1 / 7, 1.0, 0.0, 0.5]])
    assert torch.allclose(B.box_iou(a, b), expected, atol=1e-6)


def test_giou_diou_ciou_hand_computed():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([1.0, 1.0, 3.0, 3.0])
    iou = 1 / 7
    # enclosing box 3x3 = 9, union 7: GIoU = 1/7 - (9-7)/9
    assert B.elementwise_iou(a, b, "giou").item() == pytest.approx(iou - 2 / 9, abs=1e-6)
    # centres (1,1),(2,2): distance^2 2; enclosing diagonal^2 18: DIoU = 1/7 - 2/18
    assert B.elementwise_iou(a, b, "diou").item() == pytest.approx(iou - 2 / 18, abs=1e-6)
    # same aspect ratio -> v = 0 -> CIoU = DIoU
    assert B.elementwise_iou(a, b, "ciou").item() == pytest.approx(iou - 2 / 18, abs=1e-6)
    # different aspect ratios: a 2x2, c 4x2 sharing the centre (1,1)
    c = torch.tensor([-1.0, 0.0, 3.0, 2.0])
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    iou_ac = 4 / 8
    alpha = v / (1 - iou_ac + v)
    assert B.elementwise_iou(a, c, "ciou").item() == pytest.approx(iou_ac - v * alpha, abs=1e-5)
    with pytest.raises(ValueError, match="choose from iou, giou, diou, ciou"):
        B.elementwise_iou(a, b, "xiou")


def test_giou_of_disjoint_boxes_is_negative_and_has_gradient():
    a = torch.tensor([0.0, 0.0, 1.0, 1.0], requires_grad=True)
    b = torch.tensor([3.0, 0.0, 4.0, 1.0])
    giou = B.elementwise_iou(a, b, "giou")
    # union 2, enclosing 4: 0 - 2/4
    assert giou.item() == pytest.approx(-0.5, abs=1e-6)
    # the gradient by hand, with b moved to (3, .5)-(4, 1.5) so no min/max ties: IoU 0 (no gradient through the
    # clamped overlap), union U = (x2 - x1)(y2 - y1) + 1 = 2, enclosing C = (4 - x1)(1.5 - y1) = 6,
    # GIoU = U/C - 1 = -2/3; d(U/C) = (dU C - U dC) / C^2: x1 (-6 + 3)/36, y1 (-6 + 8)/36, x2 6/36, y2 6/36
    giou = B.elementwise_iou(a, torch.tensor([3.0, 0.5, 4.0, 1.5]), "giou")
    assert giou.item() == pytest.approx(-2 / 3, abs=1e-6)
    giou.backward()
    torch.testing.assert_close(a.grad, torch.tensor([-1 / 12, 1 / 18, 1 / 6, 1 / 6]), rtol=1e-5, atol=1e-7)


def test_shape_iou_ignores_position():
    wh = torch.tensor([[10.0, 20.0]])
    anchors = torch.tensor([[10.0, 20.0], [20.0, 10.0], [5.0, 5.0]])
    # identical 1; crossed: inter 10*10=100, union 200+200-100=300; contained: 25/200
    assert torch.allclose(B.shape_iou(wh, anchors), torch.tensor([[1.0, 1 / 3, 0.125]]), atol=1e-6)


def test_clip():
    boxes = torch.tensor([[-5.0, -1.0, 50.0, 20.0]])
    assert B.clip_boxes_(boxes, height=10, width=40).tolist() == [[0.0, 0.0, 40.0, 10.0]]


def test_iou_family_on_rectangles_offset_differently_in_x_and_y():
    # a: 4 wide x 2 high at (0, 0); b: 6 x 2 at (1, 1). Intersection 3 x 1 = 3, union 8 + 12 - 3 = 17.
    # Enclosing box (0, 0)-(7, 3): 7 x 3 = 21, diagonal^2 49 + 9 = 58. Centres (2, 1) and (4, 2): distance^2 4 + 1 = 5.
    a = torch.tensor([0.0, 0.0, 4.0, 2.0], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0, 7.0, 3.0], dtype=torch.float64)
    iou = 3 / 17
    diou = iou - 5 / 58
    v = 4 / math.pi**2 * (math.atan(6 / 2) - math.atan(4 / 2)) ** 2  # aspect ratios 3 and 2
    ciou = diou - v * v / (1 - iou + v)
    # (rel 1e-6: elementwise_iou adds eps = 1e-7 to its denominators)
    assert B.elementwise_iou(a, b, "iou").item() == pytest.approx(iou, rel=1e-6)
    assert B.elementwise_iou(a, b, "giou").item() == pytest.approx(iou - (21 - 17) / 21, rel=1e-6)
    assert B.elementwise_iou(a, b, "diou").item() == pytest.approx(diou, rel=1e-6)
    assert B.elementwise_iou(a, b, "ciou").item() == pytest.approx(ciou, rel=1e-6)
    assert B.elementwise_iou(b, a, "ciou").item() == pytest.approx(ciou, rel=1e-6)  # symmetric
    assert B.box_iou(a[None], b[None]).item() == pytest.approx(iou, rel=1e-6)


def test_degenerate_boxes_have_zero_area_and_iou():
    # corners in the wrong order (negative height, or negative width) mean an empty box, not a negative area
    boxes = torch.tensor([[0.0, 0.0, 4.0, -2.0], [5.0, 0.0, 1.0, 3.0], [0.0, 0.0, 4.0, 2.0]])
    assert B.box_area(boxes).tolist() == [0.0, 0.0, 8.0]
    assert B.box_iou(boxes[:2], boxes[2:]).tolist() == [[0.0], [0.0]]


def test_ciou_differentiates_with_its_trade_off_weight_held_fixed():
    """CIoU's alpha = v / (v - IoU + 1) is a weight, not a path for gradients (Zheng et al. 2020)."""
    import math

    a = torch.tensor([0.0, 0.0, 4.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 1.0, 7.0, 3.0], dtype=torch.float64)
    (grad_ciou,) = torch.autograd.grad(B.elementwise_iou(a, b, "ciou"), a)
    diou = B.elementwise_iou(a, b, "diou")
    w1, h1 = a[2] - a[0], a[3] - a[1]
    v = 4 / math.pi ** 2 * (math.atan(6 / 2) - torch.atan(w1 / h1)) ** 2
    iou = B.elementwise_iou(a, b, "iou")
    alpha = (v / (v - iou + 1)).detach()
    (expected,) = torch.autograd.grad(diou - alpha * v, a)
    torch.testing.assert_close(grad_ciou, expected, rtol=0, atol=1e-8)
