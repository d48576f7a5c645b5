"""Drawing detections: labels stay inside the image."""
import numpy as np

from yolov3.draw import class_colour, draw_boxes


def test_label_at_the_right_edge_is_shifted_inside():
    image = np.zeros((60, 100, 3), np.uint8)
    draw_boxes(image, np.array([[90.0, 30.0, 99.0, 50.0]]), np.array([0]), names=["a_long_label"])
    colour = np.array(class_colour(0), np.uint8)
    label_rows = image[:30]  # the label sits above the box (which starts at y=30)
    columns = np.flatnonzero((label_rows == colour).all(axis=2).any(axis=0))
    assert columns.max() == 99  # ends at the right edge instead of running off the image
    assert columns.min() < 90  # so it starts left of the box
