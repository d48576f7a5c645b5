"""Anchor/cell assignment and the ignore mask (yolov3/targets.py)."""
import pytest
import torch

from yolov3.targets import assign_targets, ignore_mask, pad_truths_per_image

# yolov3.cfg anchors, grouped per [yolo] layer in cfg order (masks 6,7,8 / 3,4,5 / 0,1,2), strides 32, 16, 8
YOLOV3_ANCHORS = [
    torch.tensor([[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]]),
    torch.tensor([[30.0, 61.0], [62.0, 45.0], [59.0, 119.0]]),
    torch.tensor([[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]),
]
YOLOV3_STRIDES = [32, 16, 8]
IMAGE = 416
GRIDS = [(IMAGE // s, IMAGE // s) for s in YOLOV3_STRIDES]  # 13, 26, 52


def _as_tuples(assignment):
    """Set of (image, anchor, gy, gx, truth) tuples of one layer's positives."""
    fields = (assignment.image_index, assignment.anchor_index, assignment.grid_y, assignment.grid_x,
              assignment.truth_index)
    return set(zip(*(f.tolist() for f in fields)))


# hand-picked centres in pixels and their expected cells (gy, gx) = (floor(cy / stride), floor(cx / stride)):
#   (200, 100):   stride 32 -> (3, 6)    stride 16 -> (6, 12)   stride 8 -> (12, 25)
#   (31.9, 33.0): stride 32 -> (1, 0)    stride 16 -> (2, 1)    stride 8 -> (4, 3)
#   (415, 1):     stride 32 -> (0, 12)   stride 16 -> (0, 25)   stride 8 -> (0, 51)
POSITIONS = [(200.0, 100.0), (31.9, 33.0), (415.0, 1.0)]
EXPECTED_CELLS = {
    (200.0, 100.0): {32: (3, 6), 16: (6, 12), 8: (12, 25)},
    (31.9, 33.0): {32: (1, 0), 16: (2, 1), 8: (4, 3)},
    (415.0, 1.0): {32: (0, 12), 16: (0, 25), 8: (0, 51)},
}


def test_box_sized_to_each_anchor_lands_on_that_anchor_and_cell():
    # one truth per image: 9 anchors x 3 positions = 27 images, assigned in one vectorised call
    rows, expected = [], [set() for _ in YOLOV3_ANCHORS]
    image = 0
    for layer, anchors in enumerate(YOLOV3_ANCHORS):
        for anchor_index, (w, h) in enumerate(anchors.tolist()):
            for cx, cy in POSITIONS:
                # a box exactly the anchor's size has shape IoU 1 with it and < 1 with every other anchor
                rows.append([image, 0, cx / IMAGE, cy / IMAGE, w / IMAGE, h / IMAGE])
                gy, gx = EXPECTED_CELLS[(cx, cy)][YOLOV3_STRIDES[layer]]
                expected[layer].add((image, anchor_index, gy, gx, image))  # truth row == image here
                image += 1
    targets = torch.tensor(rows)
    found = assign_targets(targets, YOLOV3_ANCHORS, GRIDS, (IMAGE, IMAGE), batch_size=image)
    for layer in range(3):
        assert _as_tuples(found[layer]) == expected[layer], f"layer {layer}"


def test_best_anchor_is_chosen_across_all_layers_by_shape_iou():
    # 20x28 px box: shape IoU with (16,30) = 16*28/(560+480-448) = 448/592 = .757, with (10,13) = 130/560 = .232,
    # with (33,23) = 460/859 = .536, with (30,61) = 560/1830 = .306
    # -> best is (16,30): layer 2 (stride 8), anchor 1; centre (100, 60) -> cell (floor(60/8), floor(100/8)) = (7, 12)
    targets = torch.tensor([[0, 3, 100 / IMAGE, 60 / IMAGE, 20 / IMAGE, 28 / IMAGE]])
    found = assign_targets(targets, YOLOV3_ANCHORS, GRIDS, (IMAGE, IMAGE), batch_size=1)
    assert [f.num_positives for f in found] == [0, 0, 1]
    assert _as_tuples(found[2]) == {(0, 1, 7, 12, 0)}


# two layers: stride 8 with anchors (8,8), (32,32); stride 16 with anchor (10,10); input 64x64 -> grids 8 and 4.
SMALL_ANCHORS = [torch.tensor([[8.0, 8.0], [32.0, 32.0]]), torch.tensor([[10.0, 10.0]])]
SMALL_GRIDS = [(8, 8), (4, 4)]


@pytest.mark.parametrize(
    "threshold, expected_layer0",
    [
        (None, set()),  # darknet rule: best anchor only
        (0.5, {(0, 0, 4, 2, 0)}),  # (8,8): IoU .790 > .5 -> extra positive at its own layer's centre cell
        (0.8, set()),  # .790 < .8: no extra
    ],
)
def test_extra_positives_above_shape_iou_threshold(threshold, expected_layer0):
    # 9x9 px box at (20, 36): shape IoU with (8,8) = 64/81 = .790, (32,32) = 81/1024 = .079, (10,10) = 81/100 = .81
    # best is (10,10) on the stride-16 layer: cell (floor(36/16), floor(20/16)) = (2, 1)
    # an extra positive on the stride-8 layer sits at (floor(36/8), floor(20/8)) = (4, 2)
    targets = torch.tensor([[0, 0, 20 / 64, 36 / 64, 9 / 64, 9 / 64]])
    found = assign_targets(targets, SMALL_ANCHORS, SMALL_GRIDS, (64, 64), batch_size=1, extra_positive_iou=threshold)
    assert _as_tuples(found[1]) == {(0, 0, 2, 1, 0)}
    assert _as_tuples(found[0]) == expected_layer0


def test_collision_same_kind_later_row_wins_and_other_images_are_independent():
    anchors = [torch.tensor([[8.0, 8.0], [10.0, 10.0]])]
    # rows 0 and 1: image 0, both 8x8 (best anchor 0) with centres in cell (2, 2) -> collision, row 1 wins;
    # row 2: the same box in image 1 -> its own positive
    targets = torch.tensor([
        [0, 0, 20 / 64, 20 / 64, 8 / 64, 8 / 64],
        [0, 1, 22 / 64, 19 / 64, 8 / 64, 8 / 64],
        [1, 0, 20 / 64, 20 / 64, 8 / 64, 8 / 64],
    ])
    (found,) = assign_targets(targets, anchors, [(8, 8)], (64, 64), batch_size=2)
    assert _as_tuples(found) == {(0, 0, 2, 2, 1), (1, 0, 2, 2, 2)}


def test_collision_best_anchor_beats_extra_positive_regardless_of_row_order():
    anchors = [torch.tensor([[8.0, 8.0], [10.0, 10.0]])]
    # row 0: 8x8 at (20,20): best anchor 0 (IoU 1); anchor 1 IoU 64/100 = .64 > .5 -> extra positive
    # row 1: 9x9 at (21,21): best anchor 1 (IoU .81); anchor 0 IoU 64/81 = .79 > .5 -> extra positive
    # both centres are in cell (2, 2): anchor 0 -> row 0 (best beats row 1's extra although row 1 is later)
    #                                    anchor 1 -> row 1 (best beats row 0's extra)
    targets = torch.tensor([
        [0, 0, 20 / 64, 20 / 64, 8 / 64, 8 / 64],
        [0, 0, 21 / 64, 21 / 64, 9 / 64, 9 / 64],
    ])
    (found,) = assign_targets(targets, anchors, [(8, 8)], (64, 64), batch_size=1, extra_positive_iou=0.5)
    assert _as_tuples(found) == {(0, 0, 2, 2, 0), (0, 1, 2, 2, 1)}


def test_centre_on_the_far_edge_is_clamped_into_the_last_cell():
    anchors = [torch.tensor([[8.0, 8.0]])]
    targets = torch.tensor([[0, 0, 1.0, 1.0, 8 / 64, 8 / 64]])  # cx = cy = 1 -> floor(8) = 8, clamped to 7
    (found,) = assign_targets(targets, anchors, [(8, 8)], (64, 64), batch_size=1)
    assert _as_tuples(found) == {(0, 0, 7, 7, 0)}


def test_no_truths_gives_no_positives():
    found = assign_targets(torch.zeros((0, 6)), YOLOV3_ANCHORS, GRIDS, (IMAGE, IMAGE), batch_size=2)
    assert [f.num_positives for f in found] == [0, 0, 0]


def test_pad_truths_per_image_groups_rows_in_order():
    targets = torch.tensor([
        [1, 0, 0.5, 0.5, 0.5, 0.5],  # image 1, first
        [0, 0, 0.25, 0.25, 0.5, 0.5],  # image 0
        [1, 0, 0.5, 0.25, 0.25, 0.5],  # image 1, second
    ])
    padded = pad_truths_per_image(targets, batch_size=3, image_size=(100, 200))  # height 100, width 200
    assert padded.shape == (3, 2, 4)
    # image 0: cx 50, cy 25, w 100, h 50 -> (0, 0, 100, 50); its second slot is padding
    assert torch.allclose(padded[0], torch.tensor([[0.0, 0.0, 100.0, 50.0], [0, 0, 0, 0]]))
    # image 1: (100 +- 50, 50 +- 25) and (100 +- 25, 25 +- 25)
    assert torch.allclose(padded[1], torch.tensor([[50.0, 25.0, 150.0, 75.0], [75.0, 0.0, 125.0, 50.0]]))
    assert torch.equal(padded[2], torch.zeros(2, 4))
    assert pad_truths_per_image(torch.zeros((0, 6)), 2, (64, 64)).shape == (2, 0, 4)


def test_ignore_mask_hand_built():
    truths = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 0.0, 0.0]]])  # image 0: one truth; image 1: padding
    preds = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # IoU 1
        [0.0, 0.0, 10.0, 6.0],  # IoU 60 / 100 = .6
        [5.0, 0.0, 15.0, 10.0],  # IoU 50 / 150 = .333
        [20.0, 20.0, 30.0, 30.0],  # IoU 0
    ]).reshape(1, 1, 2, 2, 4).repeat(2, 1, 1, 1, 1)  # same predictions in both images: (B=2, A=1, H=2, W=2, 4)
    at_half = ignore_mask(preds, truths, 0.5)
    assert at_half[0].flatten().tolist() == [True, True, False, False]
    assert not at_half[1].any()  # truths of image 0 never ignore predictions of image 1
    assert ignore_mask(preds, truths, 0.7)[0].flatten().tolist() == [True, False, False, False]
    assert not ignore_mask(preds, truths[:, :0], 0.5).any()  # no truths at all


def test_ignore_mask_in_slices_equals_one_pass(monkeypatch):
    import yolov3.targets as targets_module

    torch.manual_seed(0)
    corners = torch.rand(3, 2, 5, 7, 2, 2) * 60  # (B, A, H, W, 2 points, xy)
    preds = torch.cat([corners.amin(4), corners.amax(4)], dim=-1)  # (B, A, H, W, 4) valid xyxy boxes
    truth_corners = torch.rand(3, 4, 2, 2) * 60
    truths = torch.cat([truth_corners.amin(2), truth_corners.amax(2)], dim=-1)  # (B, T=4, 4)
    whole = ignore_mask(preds, truths, 0.3)
    assert whole.any() and not whole.all()  # a meaningful mix for this seed
    monkeypatch.setattr(targets_module, "IGNORE_CHUNK_ELEMENTS", 3 * 4 * 11)  # 11 cells per slice: 7 uneven slices
    assert torch.equal(targets_module.ignore_mask(preds, truths, 0.3), whole)


# --------------------------------------------------------------------------------------------------------------------
# Rectangular input: every x/y or w/h swap moves a positive
# --------------------------------------------------------------------------------------------------------------------
# input 32 px high x 64 px wide; layer 0 stride 16 (grid 2 x 4) with anchor (w, h) = (24, 12), layer 1 stride 8
# (grid 4 x 8) with anchor (8, 16)
RECT_IMAGE = (32, 64)  # (height, width)
RECT_ANCHORS = [torch.tensor([[24.0, 12.0]]), torch.tensor([[8.0, 16.0]])]
RECT_GRIDS = [(2, 4), (4, 8)]


def _rect_row(image, cls, cx_px, cy_px, w_px, h_px):
    return [image, cls, cx_px / 64, cy_px / 32, w_px / 64, h_px / 32]


def test_rectangular_input_cells_and_anchors_hand_computed():
    targets = torch.tensor([
        # 24 x 10 at (42, 13): shape IoU (24,12) = 240/288 = .833, (8,16) = 80/288 = .278 -> layer 0,
        # cell (floor(13/16), floor(42/16)) = (0, 2)
        _rect_row(0, 0, 42, 13, 24, 10),
        # 6 x 14 at (60, 27): (8,16) = 84/128 = .656, (24,12) = 72/300 = .24 -> layer 1, cell (floor(27/8),
        # floor(60/8)) = (3, 7): the last column exists only because the grid is 8 wide
        _rect_row(1, 1, 60, 27, 6, 14),
        # 8 x 16 (IoU 1 with (8,16)) centred on the bottom-right corner (cx = cy = 1): clamped into (3, 7)
        _rect_row(0, 2, 64, 32, 8, 16),
        # 20 x 12 at (10, 30): (24,12) = 240/288 = .833 -> layer 0, cell (floor(30/16), floor(10/16)) = (1, 0)
        _rect_row(1, 0, 10, 30, 20, 12),
    ])
    found = assign_targets(targets, RECT_ANCHORS, RECT_GRIDS, RECT_IMAGE, batch_size=2)
    assert _as_tuples(found[0]) == {(0, 0, 0, 2, 0), (1, 0, 1, 0, 3)}
    assert _as_tuples(found[1]) == {(1, 0, 3, 7, 1), (0, 0, 3, 7, 2)}


def test_collision_keys_of_a_rectangular_grid_use_its_width():
    # grid 4 (H) x 8 (W): cells (gy 0, gx 4) and (gy 1, gx 0) are different cells (flat indices 4 and 8); a key built
    # with the height twice (gy * 4 + gx) would make both 4 and drop one truth as a "collision"
    targets = torch.tensor([_rect_row(0, 0, 36, 4, 8, 16), _rect_row(0, 1, 4, 12, 8, 16)])
    (found,) = assign_targets(targets, [torch.tensor([[8.0, 16.0], [24.0, 12.0]])], [(4, 8)], RECT_IMAGE,
                              batch_size=1)
    assert _as_tuples(found) == {(0, 0, 0, 4, 0), (0, 0, 1, 0, 1)}


def test_extra_positive_threshold_is_strict_at_equality():
    # 8 x 16 px truth: shape IoU 1 with anchor (8, 16) (the best) and 64 / 128 = .5 exactly with (8, 8);
    # the extra positive needs IoU > extra_positive_iou
    anchors = [torch.tensor([[8.0, 16.0], [8.0, 8.0]])]
    targets = torch.tensor([_rect_row(0, 0, 20, 12, 8, 16)])  # cell (floor(12/8), floor(20/8)) = (1, 2)
    (at,) = assign_targets(targets, anchors, [(4, 8)], RECT_IMAGE, batch_size=1, extra_positive_iou=0.5)
    (below,) = assign_targets(targets, anchors, [(4, 8)], RECT_IMAGE, batch_size=1, extra_positive_iou=0.4999)
    assert _as_tuples(at) == {(0, 0, 1, 2, 0)}
    assert _as_tuples(below) == {(0, 0, 1, 2, 0), (0, 1, 1, 2, 0)}


def test_ignore_mask_is_strict_at_equality():
    # [0, 0, 10, 10] against [0, 0, 10, 5]: 50 / 100 = .5 exactly (float32 included); ignored means IoU > thresh
    truths = torch.tensor([[[0.0, 0.0, 10.0, 5.0]]])
    preds = torch.tensor([0.0, 0.0, 10.0, 10.0]).reshape(1, 1, 1, 1, 4)
    assert not ignore_mask(preds, truths, 0.5).any()
    assert ignore_mask(preds, truths, 0.4999).all()
