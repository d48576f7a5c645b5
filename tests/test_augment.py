"""Augmentation: geometry round trips, boxes that stay consistent with the pixels they describe."""
import numpy as np
import pytest

from yolov3.augment import (PAD_COLOR, augment_hsv, box_candidates, fliplr, letterbox, mosaic4,
                            normalised_to_pixels, pixels_to_normalised, random_affine)

BACKGROUND = (30, 30, 30)
# distinct, saturated colours, far from the background and from the grey padding
OBJECT_COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0),
                  (0, 128, 255), (255, 128, 0)]


def _scene(height, width, boxes_xyxy, colour_ids):
    """Flat background with solid rectangles; returns the image and (n, 5) pixel labels whose class = colour id."""
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes_xyxy, colour_ids):
        img[y1:y2, x1:x2] = OBJECT_COLOURS[c]
    labels = np.array([[c, *b] for b, c in zip(boxes_xyxy, colour_ids)], np.float32).reshape(-1, 5)
    return img, labels


def _is_colour(pixels, colour, tol=2):
    return np.all(np.abs(pixels.astype(int) - np.array(colour)) <= tol, axis=-1)


def _assert_boxes_match_pixels(img, labels, margin=2):
    """Each box's interior (inset by ``margin``) has its object's colour, every pixel of that colour lies inside the
    box (outset by ``margin``), and the box touches that colour on every side (so it is not too large)."""
    height, width = img.shape[:2]
    for c, x1, y1, x2, y2 in labels:
        colour = OBJECT_COLOURS[int(c)]
        ix1, iy1, ix2, iy2 = int(np.ceil(x1)) + margin, int(np.ceil(y1)) + margin, int(x2) - margin, int(y2) - margin
        if ix2 > ix1 and iy2 > iy1:
            assert _is_colour(img[iy1:iy2, ix1:ix2], colour).all(), (c, x1, y1, x2, y2)
        ys, xs = np.nonzero(_is_colour(img, colour))
        assert len(xs) > 0
        # tight: the colour reaches within `margin` px of each side, and never beyond `margin` px outside
        assert xs.min() >= x1 - margin and xs.max() + 1 <= x2 + margin
        assert ys.min() >= y1 - margin and ys.max() + 1 <= y2 + margin
        assert xs.min() <= x1 + margin and xs.max() + 1 >= x2 - margin
        assert ys.min() <= y1 + margin and ys.max() + 1 >= y2 - margin
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height


def test_letterbox_hand_computed_square_target():
    img, labels = _scene(50, 80, [(10, 5, 50, 45)], [0])
    out, (ratio_w, ratio_h), (pad_w, pad_h) = letterbox(img, 64)
    # 80x50 -> gain min(64/80, 64/50) = 0.8 -> 64x40, padded (64-40)/2 = 12 rows top and bottom
    assert out.shape == (64, 64, 3)
    assert (ratio_w, ratio_h, pad_w, pad_h) == (0.8, 0.8, 0.0, 12.0)
    assert _is_colour(out[:12], PAD_COLOR, 0).all() and _is_colour(out[52:], PAD_COLOR, 0).all()
    # the box (10, 5, 50, 45) by hand: x * 0.8, y * 0.8 + 12 -> (8, 16, 40, 48), where its pixels are
    boxes_net = np.array([[8.0, 16.0, 40.0, 48.0]])
    np.testing.assert_allclose(labels[:, 1:] * [ratio_w, ratio_h, ratio_w, ratio_h]
                               + [pad_w, pad_h, pad_w, pad_h], boxes_net)
    _assert_boxes_match_pixels(out, np.concatenate([labels[:, :1], boxes_net], 1))


@pytest.mark.parametrize("shape", [(37, 91), (91, 37), (64, 64), (100, 7)])
def test_letterbox_inverse_odd_shapes(shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    out, (rw, rh), (pw, ph) = letterbox(img, (64, 96))
    assert out.shape == (64, 96, 3)
    corners = np.array([[0, 0], [shape[1], shape[0]]], float)  # the whole image maps onto the unpadded area
    net = corners * [rw, rh] + [pw, ph]
    assert np.all(net[0] >= 0) and net[1, 0] <= 96 + 1e-6 and net[1, 1] <= 64 + 1e-6
    assert np.abs((net - [pw, ph]) / [rw, rh] - corners).max() < 1e-6
    # the unpadded area is exactly the resized image: the pad colour surrounds it
    if pw >= 1:
        assert _is_colour(out[:, : int(pw)], PAD_COLOR, 0).all()
    if ph >= 1:
        assert _is_colour(out[: int(ph)], PAD_COLOR, 0).all()


def test_letterbox_auto_pads_to_stride_only():
    img = np.zeros((50, 100, 3), np.uint8)
    out, _, (pw, ph) = letterbox(img, 128, auto=True, stride=32)
    # 100x50 -> 128x64 exactly, 64 % 32 == 0 -> no padding
    assert out.shape == (64, 128, 3) and (pw, ph) == (0.0, 0.0)


def test_flip_twice_is_identity_and_once_mirrors():
    img, labels = _scene(40, 60, [(5, 10, 20, 30)], [1])
    flipped, flipped_labels = fliplr(img, labels)
    # x1' = 60 - 20 = 40, x2' = 60 - 5 = 55
    np.testing.assert_allclose(flipped_labels, [[1, 40, 10, 55, 30]])
    _assert_boxes_match_pixels(flipped, flipped_labels)
    back, back_labels = fliplr(flipped, flipped_labels)
    assert np.array_equal(back, img) and np.array_equal(back_labels, labels)


def test_affine_identity_leaves_everything_unchanged():
    img, labels = _scene(64, 64, [(5, 10, 20, 30)], [2])
    out, out_labels = random_affine(img, labels, np.random.default_rng(0), degrees=0, translate=0, scale=0, shear=0)
    assert np.array_equal(out, img) and np.array_equal(out_labels, labels)


def test_affine_keeps_boxes_inside_the_image():
    img, labels = _scene(64, 64, [(0, 0, 30, 20), (40, 40, 64, 64), (20, 25, 45, 35)], [0, 1, 2])
    for seed in range(30):
        out, out_labels = random_affine(img, labels, np.random.default_rng(seed), degrees=30, translate=0.3,
                                        scale=0.6, shear=10)
        assert out.shape == img.shape
        assert np.all(out_labels[:, 1:] >= 0) and np.all(out_labels[:, [1, 3]] <= 64) and np.all(out_labels[:, [2, 4]] <= 64)
        assert np.all(out_labels[:, 3] > out_labels[:, 1]) and np.all(out_labels[:, 4] > out_labels[:, 2])


def test_affine_without_rotation_keeps_boxes_on_their_pixels():
    img, labels = _scene(64, 64, [(4, 6, 30, 22), (36, 30, 60, 58)], [3, 4])
    for seed in range(10):
        out, out_labels = random_affine(img, labels, np.random.default_rng(seed), translate=0.2, scale=0.4)
        _assert_boxes_match_pixels(out, out_labels)


def test_mosaic_boxes_stay_consistent_with_pixels():
    size = 64
    scenes = [
        _scene(64, 64, [(4, 4, 28, 24), (34, 36, 60, 60)], [0, 1]),
        _scene(48, 64, [(10, 8, 40, 40)], [2]),  # a wide image: mosaic tiles need not be square
        _scene(64, 40, [(2, 30, 30, 60), (5, 2, 35, 20)], [3, 4]),
        _scene(64, 64, [(20, 20, 44, 44), (0, 50, 16, 64)], [5, 6]),
    ]
    kept = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        canvas, labels = mosaic4([s[0] for s in scenes], [s[1] for s in scenes], size, rng)
        assert canvas.shape == (2 * size, 2 * size, 3)
        _assert_boxes_match_pixels(canvas, labels[(labels[:, 3] > labels[:, 1]) & (labels[:, 4] > labels[:, 2])])
        out, out_labels = random_affine(canvas, labels, rng, translate=0.1, scale=0.5, border=(-size // 2, -size // 2))
        assert out.shape == (size, size, 3)
        _assert_boxes_match_pixels(out, out_labels)
        kept += len(out_labels)
    assert kept > 12  # the check above ran on real boxes, not on empty outputs


def test_box_candidates_thresholds():
    before = np.array([[0, 0, 10, 10]] * 4, float)
    after = np.array([
        [0, 0, 10, 10],  # untouched: kept
        [0, 0, 1.5, 10],  # 1.5 px wide < MIN_BOX_SIDE_PX = 2: dropped
        [0, 0, 3, 3],  # 9 / 100 = 0.09 of its area < 0.1: dropped
        [0, 0, 3, 4],  # 12 / 100 = 0.12 of its area, aspect 1.33: kept
    ], float)
    assert box_candidates(before, after).tolist() == [True, False, False, True]
    sliver_before = np.array([[0, 0, 100, 100]], float)
    sliver_after = np.array([[0, 0, 100, 4]], float)  # aspect 25 > MAX_ASPECT_RATIO = 20 (area ratio 0.04 too)
    assert not box_candidates(sliver_before, sliver_after, min_area_ratio=0)[0]


def test_hsv_value_gain_on_grey_keeps_it_grey_and_within_range():
    img = np.full((8, 8, 3), 100, np.uint8)
    for seed in range(5):
        out = augment_hsv(img.copy(), np.random.default_rng(seed), hue=0.5, saturation=0.7, value=0.4)
        # grey has no saturation: hue and saturation gains change nothing; value gain in [0.6, 1.4]
        assert np.all(out == out[0, 0, 0]) and 60 - 1 <= out[0, 0, 0] <= 140 + 1
    untouched = augment_hsv(img.copy(), np.random.default_rng(0), hue=0, saturation=0, value=0)
    assert np.array_equal(untouched, img)


def _hues(bgr_pixels):
    import cv2

    return cv2.cvtColor(bgr_pixels.reshape(1, -1, 3), cv2.COLOR_BGR2HSV)[0, :, 0].astype(int)


def test_hsv_with_vanishing_gains_gives_back_the_colours_it_was_given():
    # blue, green, red and three mixed colours, BGR: a channel order lost on the way back (HSV -> RGB) swaps red and
    # blue here, which grey cannot show
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [40, 90, 200], [200, 120, 30], [90, 200, 150]],
                       np.uint8)
    img = np.repeat(colours[None], 4, axis=0)
    out = augment_hsv(img.copy(), np.random.default_rng(0), hue=1e-9, saturation=1e-9, value=1e-9)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 3


def test_hue_moves_by_at_most_its_fraction_of_the_circle_and_only_the_hue():
    import cv2

    # OpenCV's 8-bit hue circle has 180 steps: hue=0.25 moves it by U(-45, 45); saturation and value untouched
    img = np.array([[[40, 90, 200], [200, 120, 30]]], np.uint8)
    before = _hues(img)
    shifts = []
    for seed in range(200):
        out = augment_hsv(img.copy(), np.random.default_rng(seed), hue=0.25, saturation=0, value=0)
        moved = (_hues(out) - before + 90) % 180 - 90  # the signed shift around the circle
        assert abs(moved[0] - moved[1]) <= 2  # one shift for every pixel
        shifts.append(moved[0])
        hsv_in, hsv_out = (cv2.cvtColor(x, cv2.COLOR_BGR2HSV)[..., 1:].astype(int) for x in (img, out))
        assert np.abs(hsv_out - hsv_in).max() <= 3
    shifts = np.array(shifts)
    assert np.abs(shifts).max() <= 45 + 2 and shifts.max() > 35 and shifts.min() < -35


def test_random_rescale_draws_every_multiple_of_32_from_half_to_one_and_a_half_the_size():
    import torch

    from yolov3.augment import random_rescale

    images = torch.rand(1, 3, 8, 8)
    sizes = {random_rescale(images, 320, seed).shape[-1] for seed in range(400)}
    # int(U(0.5, 1.5) * 320) // 32 * 32: 160 up to 448 (480 itself is never drawn)
    assert sizes == set(range(160, 449, 32))
    batch = torch.rand(2, 3, 64, 64)
    outputs = [random_rescale(batch, 64, seed) for seed in range(20)]
    assert {o.shape[-1] for o in outputs} == {32, 64}  # 0.5 x 64 .. 95: 32 or 64
    assert all(o is batch for o in outputs if o.shape[-1] == 64)  # the batch's own size: no resampling


def test_normalised_pixels_round_trip():
    labels = np.array([[2, 0.5, 0.25, 0.2, 0.1]], np.float32)
    pixels = normalised_to_pixels(labels, 200, 100, pad_w=3, pad_h=4)
    # cx 100, cy 25, w 40, h 10 -> x 80..120, y 20..30, then + pad (3, 4)
    np.testing.assert_allclose(pixels, [[2, 83, 24, 123, 34]], atol=1e-4)
    back = pixels_to_normalised(pixels - np.float32([0, 3, 4, 3, 4]), 200, 100)
    np.testing.assert_allclose(back, labels, atol=1e-6)


@pytest.mark.parametrize("shape, ratio, pad, resized", [
    # 50 x 80 (h x w) into 32 x 64: gain min(32/50, 64/80) = .64 -> 51.2 -> 51 x 32 px; ratios 51/80 = .6375 and
    # 32/50 = .64; 64 - 51 = 13 columns of padding: 6 left, 7 right
    ((50, 80), (0.6375, 0.64), (6.0, 0.0), (51, 32)),
    # 80 x 50 into 32 x 64: gain min(32/80, 64/50) = .4 -> 20 x 32 px; 44 columns of padding, 22 on each side
    ((80, 50), (0.4, 0.4), (22.0, 0.0), (20, 32)),
    # 20 x 100 into 32 x 64: gain min(32/20, 64/100) = .64 -> 64 x 12.8 -> 13 px high; 19 rows: 9 top, 10 bottom
    ((20, 100), (0.64, 0.65), (0.0, 9.0), (64, 13)),
])
def test_letterbox_rectangular_target_hand_computed(shape, ratio, pad, resized):
    img = np.full((*shape, 3), 200, np.uint8)
    out, got_ratio, got_pad = letterbox(img, (32, 64))
    assert out.shape == (32, 64, 3)
    assert got_ratio == pytest.approx(ratio, abs=1e-12) and got_pad == pad
    (left, top), (width, height) = (int(pad[0]), int(pad[1])), resized
    assert (out[top:top + height, left:left + width] == 200).all()  # the image, exactly where the pads say
    inside = np.zeros((32, 64), bool)
    inside[top:top + height, left:left + width] = True
    assert _is_colour(out[~inside], PAD_COLOR, 0).all()  # grey everywhere else


class FixedDraws:
    """A stand-in for numpy's Generator: ``uniform(low, high)`` returns the given fractions of each range, in call
    order (random_affine draws angle, zoom, shear x, shear y, translate x, translate y)."""

    def __init__(self, *fractions):
        self.fractions = list(fractions)

    def uniform(self, low, high, size=None):
        return low + self.fractions.pop(0) * (high - low)


def test_affine_identity_on_a_rectangular_image():
    # translate/scale/rotation 0 on a 32 x 64 image: the output centre is (32, 16), the input centre too
    img, labels = _scene(32, 64, [(4, 6, 30, 22), (40, 10, 60, 30)], [0, 1])
    out, out_labels = random_affine(img, labels, np.random.default_rng(0), degrees=0, translate=0, scale=0, shear=0)
    assert np.array_equal(out, img) and np.array_equal(out_labels, labels)


def test_affine_crop_of_a_rectangular_image_hand_computed():
    # 32 x 64 image, border (-8, -16) -> a 16 x 32 output; with no rotation, zoom or shift the output is the central
    # crop: x_out = x - 32 + 16 = x - 16, y_out = y - 16 + 8 = y - 8
    img, labels = _scene(32, 64, [(20, 10, 40, 14), (40, 4, 60, 20), (0, 0, 10, 6)], [0, 1, 2])
    out, out_labels = random_affine(img, labels, np.random.default_rng(0), translate=0, scale=0, border=(-8, -16))
    assert out.shape == (16, 32, 3) and np.array_equal(out, img[8:24, 16:48])
    # box 0 -> (4, 2, 24, 6); box 1 -> (24, -4, 44, 12) clipped to (24, 0, 32, 12) (8 * 12 of its 20 * 16 = .3 of
    # its area, aspect 1.5: kept); box 2 -> (-16, -8, -6, -2): nothing left, dropped
    np.testing.assert_allclose(out_labels, [[0, 4, 2, 24, 6], [1, 24, 0, 32, 12]])


def test_affine_zoom_out_keeps_small_boxes_whose_area_shrank_with_the_zoom():
    # zoom drawn at the low end of U(1 - .75, 1 + .75) = .25 about the centre (32, 16) of a 32 x 64 image; no
    # rotation, shear or shift. The 40 x 20 box (12, 6, 52, 26) becomes 10 x 5 around the centre: (27, 13.5, 37, 18.5)
    # -- 1/16 of its original area, but all of its zoomed area, so it is kept (area ratio against the zoomed box)
    img, labels = _scene(32, 64, [(12, 6, 52, 26)], [3])
    rng = FixedDraws(0.5, 0.0, 0.5, 0.5, 0.5, 0.5)
    out, out_labels = random_affine(img, labels, rng, degrees=10, translate=0.1, scale=0.75, shear=5)
    np.testing.assert_allclose(out_labels, [[3, 27, 13.5, 37, 18.5]], atol=1e-9)
    assert out.shape == (32, 64, 3)
    assert _is_colour(out[15:17, 29:35], OBJECT_COLOURS[3]).all()  # the object's pixels moved with the box


def test_box_candidates_minimum_side_is_strict():
    before = np.array([[0, 0, 10, 10]] * 3, float)
    after = np.array([[0, 0, 2.0, 10], [0, 0, 10, 2.0], [0, 0, 2.5, 10]], float)  # exactly 2 px wide / high: dropped
    assert box_candidates(before, after).tolist() == [False, False, True]


# ---- planted-bug checks: letterbox's options and rounding, HSV's ranges, the affine's pads, hull and clipping ------
def test_letterbox_scaleup_off_rounding_auto_padding_one_pixel_pad_and_colour():
    out, ratio, pad = letterbox(np.zeros((50, 100, 3), np.uint8), 128, scaleup=False)  # 1.28 capped at 1
    assert out.shape == (128, 128, 3) and tuple(ratio) == (1.0, 1.0) and tuple(pad) == (14.0, 39.0)
    # 37 x .64 = 23.68 -> 24 px wide: ratio 24 / 37, pad (64 - 24) / 2 = 20
    _, ratio, pad = letterbox(np.zeros((100, 37, 3), np.uint8), 64)
    assert tuple(ratio) == pytest.approx((24 / 37, 0.64)) and tuple(pad) == (20.0, 0.0)
    # auto: a portrait photo becomes 128 x 64 (width pad 64 % 32 = 0), not a square
    out, _, pad = letterbox(np.zeros((100, 50, 3), np.uint8), 128, auto=True, stride=32)
    assert out.shape == (128, 64, 3) and tuple(pad) == (0.0, 0.0)
    out, _, _ = letterbox(np.full((63, 64, 3), 200, np.uint8), 64)  # a 1-pixel pad, all of it at the bottom
    assert out.shape == (64, 64, 3) and (out[63] == 114).all()
    out, _, _ = letterbox(np.zeros((32, 64, 3), np.uint8), 64, color=(1, 2, 3))
    assert tuple(out[0, 0]) == (1, 2, 3) and tuple(out[16, 0]) == (0, 0, 0)
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, 3::4] = 255
    out, _, _ = letterbox(stripes, 2)  # shrinking averages (INTER_AREA): 255 x 4 / 16 per 4 x 4 block
    assert np.abs(out.astype(float) - 63.75).max() <= 1


class AtFraction:
    """``uniform`` at a fixed fraction of its range, for every draw (scalar or array)."""

    def __init__(self, fraction):
        self.fraction = fraction

    def uniform(self, low, high, size=None):
        value = low + self.fraction * (high - low)
        return value if size is None else np.full(size, value)


def test_hsv_value_alone_brightens_and_gains_reach_below_one():
    img = np.full((4, 4, 3), 100, np.uint8)
    augment_hsv(img, AtFraction(1.0), hue=0, saturation=0, value=0.5)  # value gain 1 + .5
    assert (img == 150).all()
    img = np.full((4, 4, 3), 100, np.uint8)
    augment_hsv(img, AtFraction(0.0), hue=0, saturation=0.5, value=0.5)  # gains 1 - .5
    assert (img == 50).all()


def test_box_candidates_tall_slivers_and_area_of_non_square_boxes():
    assert box_candidates(np.array([[0, 0, 100, 100.0]]), np.array([[0, 0, 4, 100.0]]), min_area_ratio=0).tolist() \
        == [False]  # aspect 100 / 4 = 25 > 20
    # 9 x 10 left of a 10 x 100 box: 90 / 1000 = .09 < .1
    assert box_candidates(np.array([[0, 0, 10, 100.0]]), np.array([[0, 0, 9, 10.0]])).tolist() == [False]


def test_affine_zoom_in_pad_colour_rotated_hull_and_bottom_clip():
    img, labels = _scene(32, 64, [(24, 12, 40, 20)], [0])
    _, out = random_affine(img, labels, FixedDraws(0.5, 1.0, 0.5, 0.5, 0.5, 0.5), degrees=0, translate=0, scale=0.5,
                           shear=0)
    np.testing.assert_allclose(out, [[0, 20, 10, 44, 22]])  # zoom 1.5 about (32, 16)
    img, labels = _scene(32, 64, [(12, 6, 52, 26)], [3])
    zoomed, _ = random_affine(img, labels, FixedDraws(0.5, 0.0, 0.5, 0.5, 0.5, 0.5), degrees=10, translate=0.1,
                              scale=0.75, shear=5)
    assert tuple(zoomed[0, 0]) == PAD_COLOR  # uncovered by the zoom out: the letterbox grey
    img, labels = _scene(64, 64, [(22, 27, 42, 37)], [1])
    _, out = random_affine(img, labels, FixedDraws(1.0, 0.5, 0.5, 0.5, 0.5, 0.5), degrees=45, translate=0, scale=0,
                           shear=0)
    half = 15 / np.sqrt(2)  # corners (+-10, +-5) turned 45 degrees reach +-15 / sqrt 2 on both axes
    np.testing.assert_allclose(out, [[1, 32 - half, 32 - half, 32 + half, 32 + half]], atol=1e-5)
    img, labels = _scene(32, 64, [(10, 10, 30, 30)], [0])
    _, out = random_affine(img, labels, FixedDraws(0.5, 0.5, 0.5, 0.5, 0.5, 1.0), degrees=0, translate=0.25, scale=0,
                           shear=0)
    np.testing.assert_allclose(out, [[0, 10, 18, 30, 32]])  # shifted down 8, clipped at the bottom (32)


def test_a_canvas_of_any_colour_and_multiscale_sampling_keeps_pixel_centres():
    import torch

    from yolov3.augment import filled_canvas, random_rescale

    canvas = filled_canvas((2, 3), (10, 10, 200))
    assert canvas.shape == (2, 3, 3) and (canvas == [10, 10, 200]).all()
    x = torch.arange(32.0).expand(1, 1, 32, 32).contiguous()
    doubled = [out for out in (random_rescale(x, 64, seed) for seed in range(64)) if out.shape[-1] == 64]
    assert doubled  # half-pixel centres: output k samples input k / 2 - .25
    assert doubled[0][0, 0, 0, :3].tolist() == pytest.approx([0.0, 0.25, 0.75])
