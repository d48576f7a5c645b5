"""Drawing detections: labels stay inside the image; odd file and class names are drawn, not crashed on."""
import os
from pathlib import Path

import cv2
import numpy as np

from yolov3.draw import class_colour, draw_boxes, place_labels


def test_label_at_the_right_edge_is_shifted_inside():
    image = np.zeros((60, 100, 3), np.uint8)
    draw_boxes(image, np.array([[90.0, 30.0, 99.0, 50.0]]), np.array([0]), names=["a_long_label"])
    colour = np.array(class_colour(0), np.uint8)
    label_rows = image[:30]  # the label sits above the box (which starts at y=30)
    columns = np.flatnonzero((label_rows == colour).all(axis=2).any(axis=0))
    assert columns.max() == 99  # ends at the right edge instead of running off the image
    assert columns.min() < 90  # so it starts left of the box


def test_plot_batch_with_file_and_class_names_that_are_not_utf8(tmp_path):
    """A name with a byte that is not UTF-8 reaches Python as a surrogate escape; cv2.putText segfaulted on it
    (so did cv2.imwrite on such an output path). Run in a subprocess: a segfault must fail the test, not pytest."""
    import subprocess
    import sys

    script = f"""
import os, sys, torch
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from yolov3.draw import plot_batch
folder = os.fsdecode(os.fsencode({str(tmp_path)!r}) + b"/caf\\xe9")
images = torch.rand(2, 3, 64, 64)
targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 1, 0.3, 0.3, 0.2, 0.2]])
paths = [os.fsdecode(b"/data/x\\xff\\xfe.jpg"), "/data/b.jpg"]
grid = plot_batch(images, targets, paths, [os.fsdecode(b"c\\xffat"), "dog"], folder + "/batch.png")
print(grid.shape)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    written = os.fsencode(str(tmp_path)) + b"/caf\xe9/batch.png"
    assert os.path.getsize(written) > 1000
    image = cv2.imdecode(np.fromfile(written, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (64, 128, 3)


def test_contrast_follows_wcag_and_every_palette_colour_gets_readable_text():
    from yolov3.draw import PALETTE_BGR, contrast_ratio, relative_luminance, text_colour

    assert relative_luminance((0, 0, 0)) == 0 and relative_luminance((255, 255, 255)) == 1
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == 21  # (1 + .05) / (0 + .05)
    # pure red (BGR 0, 0, 255): L = 0.2126; against black (0.2126 + .05) / .05 = 5.252, white 1.05 / 0.2626 = 3.998
    assert abs(contrast_ratio((0, 0, 255), (0, 0, 0)) - 5.252) < 1e-9
    assert abs(contrast_ratio((0, 0, 255), (255, 255, 255)) - 1.05 / 0.2626) < 1e-9
    assert text_colour((0, 0, 255)) == (0, 0, 0)
    # sRGB 128 grey: c = 0.50196 -> ((c + .055) / 1.055) ** 2.4 = 0.21586
    assert abs(relative_luminance((128, 128, 128)) - 0.21586) < 1e-5
    for colour in PALETTE_BGR:
        assert contrast_ratio(colour, text_colour(colour)) >= 4.5, colour
    assert text_colour((29, 178, 255)) == (0, 0, 0)  # light orange: dark text
    assert text_colour((133, 0, 82)) == (255, 255, 255)  # dark purple: light text


def test_label_text_on_a_light_colour_is_dark():
    from yolov3.draw import PALETTE_BGR

    light = next(i for i, c in enumerate(PALETTE_BGR) if c == (29, 178, 255))
    image = np.full((80, 120, 3), 128, np.uint8)
    draw_boxes(image, np.array([[10.0, 40.0, 110.0, 75.0]]), np.array([light]), names=["label"], line_thickness=2)
    above = image[:40]  # the label sits above the box, on a grey (128) image
    rows, cols = np.nonzero((above == np.array(PALETTE_BGR[light])).all(axis=2))
    label = above[rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(int)  # the filled label rectangle
    assert label.shape[0] >= 8 and label.shape[1] >= 30
    assert label.sum(axis=2).min() < 60  # near-black text pixels (white text would be the lightest thing there)


def test_best_scoring_label_is_drawn_on_top():
    image = np.zeros((80, 120, 3), np.uint8)
    boxes = np.array([[10.0, 40.0, 110.0, 75.0], [10.0, 40.0, 110.0, 75.0]])  # the same place, best listed first
    draw_boxes(image, boxes, np.array([0, 4]), scores=np.array([0.9, 0.3]), names=["best", "worst"])
    label = image[:40, 10:40]
    best, worst = np.array(class_colour(0), np.uint8), np.array(class_colour(4), np.uint8)
    assert (label == best).all(axis=2).sum() > 50 and not (label == worst).all(axis=2).any()


def test_each_box_line_has_its_own_class_colour():
    image = np.zeros((100, 160, 3), np.uint8)
    # classes 5 and 2 listed, by score, in another order than their indices; no labels, only lines of width 2
    boxes = np.array([[10.0, 20.0, 60.0, 80.0], [90.0, 20.0, 150.0, 80.0]])
    draw_boxes(image, boxes, np.array([5, 2]), scores=np.array([0.4, 0.8]), line_thickness=2, hide_labels=True)
    for (x1, y1, x2, y2), cls in zip(boxes.astype(int), (5, 2)):
        left_edge = image[y1 + 5:y2 - 5, x1]
        assert (left_edge == np.array(class_colour(cls), np.uint8)).all(), cls


def test_line_width_scales_with_the_image_unless_given():
    from yolov3.draw import auto_line_thickness

    assert auto_line_thickness((1000, 1000, 3)) == 3  # 0.003 * 1000
    assert auto_line_thickness((480, 640, 3)) == 2  # 0.003 * 560 = 1.68
    assert auto_line_thickness((100, 200, 3)) == 1  # 0.45 rounds to 0: at least 1
    box, cls = np.array([[100.0, 100.0, 600.0, 500.0]]), np.array([2])

    def drawn(**kwargs):
        return draw_boxes(np.zeros((1000, 1000, 3), np.uint8), box, cls, names=["x"], **kwargs)

    assert np.array_equal(drawn(), drawn(line_thickness=3))
    assert not np.array_equal(drawn(), drawn(line_thickness=2))
    assert np.array_equal(drawn(line_thickness=6), drawn(line_thickness=6))
    column = drawn(line_thickness=6)[300, 90:110]  # across the left edge at x = 100
    assert (column.any(axis=1)).sum() in (6, 7)  # an explicit width is drawn as given


def test_crowded_labels_do_not_cover_each_other():
    # a 6 x 4 grid of touching 40 x 30 boxes (blood cells): every "above" place is the box above's bottom strip
    boxes = np.array([[x, y, x + 40, y + 30] for y in range(20, 140, 30) for x in range(0, 240, 40)], float)
    sizes = [(38, 14)] * len(boxes)
    order = list(range(len(boxes)))
    placed = place_labels(boxes, sizes, (240, 160), order)
    assert placed[0] == (0, 6, 38, 20)  # the first (best) label keeps the usual place, right above its box
    for i, a in enumerate(placed):
        assert 0 <= a[0] and a[2] <= 240 and 0 <= a[1] and a[3] <= 160
        for b in placed[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)


def test_no_box_line_crosses_a_label():
    image = np.zeros((100, 160, 3), np.uint8)
    # the better box's left edge (x = 35) runs down through where the worse box's label goes (its top-left corner);
    # labels are drawn after every box line, so that label interrupts the line instead of being crossed by it
    boxes = np.array([[20.0, 40.0, 60.0, 90.0], [35.0, 10.0, 150.0, 95.0]])
    draw_boxes(image, boxes, np.array([0, 4]), scores=np.array([0.5, 0.9]), names=["a", "b"], line_thickness=2)
    line_colour = np.array(class_colour(4), np.uint8)
    on_line = (image[12:94, 35] == line_colour).all(axis=1)
    assert (~on_line).sum() >= 8  # some rows of the line are label, not line
    first_colour = np.array(class_colour(0), np.uint8)
    assert (image[12:94, 35] == first_colour).all(axis=1).sum() >= 8  # ... and it is the worse box's label


# ---- planted-bug checks: the batch mosaic's colours, box placement on non-square tiles, shape; label order ---------
def test_batch_mosaic_colours_non_square_boxes_odd_counts_and_wide_grids(tmp_path):
    import torch

    from yolov3.draw import plot_batch

    red = torch.zeros(1, 3, 32, 32)
    red[0, 0] = 1.0  # RGB red
    grid = plot_batch(red, torch.zeros(0, 6), [], None, tmp_path / "red.png")
    assert grid[16, 16].tolist() == [0, 0, 255] and cv2.imread(str(tmp_path / "red.png"))[16, 16].tolist() == [0, 0, 255]
    # a 64 wide, 32 high tile: cx .25 x 64 = 16, w .25 x 64 = 16 -> x 8..24; cy .5 x 32 = 16, h 16 -> y 8..24
    wide = plot_batch(torch.zeros(1, 3, 32, 64), torch.tensor([[0, 3, 0.25, 0.5, 0.25, 0.5]]), [], None,
                      tmp_path / "wide.png")
    assert tuple(int(v) for v in wide[20, 24]) == class_colour(3) and wide[20, 4].max() == 0
    three = plot_batch(torch.zeros(3, 3, 32, 32), torch.zeros(0, 6), [], None, tmp_path / "three.png")
    assert three.shape == (64, 64, 3) and three[48, 48].tolist() == [255, 255, 255]  # 2 x 2, the 4th cell empty
    big = plot_batch(torch.zeros(2, 3, 100, 1920), torch.zeros(0, 6), [], None, tmp_path / "big.png")
    assert big.shape == (50, 1920, 3)  # 100 x 3840 scaled by 1920 / 3840


def test_stacked_labels_go_above_then_inside_the_top_then_below():
    boxes = np.array([[10.0, 40.0, 60.0, 90.0]] * 3)
    placed = place_labels(boxes, [(30, 10)] * 3, (100, 120), [0, 1, 2])
    assert [tuple(p) for p in placed] == [(10, 30, 40, 40), (10, 40, 40, 50), (10, 90, 40, 100)]
