"""Drawing detections: labels stay inside the image; odd file and class names are drawn, not crashed on."""
import os
from pathlib import Path

import cv2
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
