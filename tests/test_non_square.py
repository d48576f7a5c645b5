"""Real photos are not square: detect.py and val.py on portrait and landscape images, against boxes known in the
original image's pixels.

The model is an oracle that needs no training: it "detects" the one white rectangle it sees in its (letterboxed)
input, exactly where the pixels are. Whatever the padding and scale, the box that comes back in the original
image must be the rectangle drawn there; a swap of the horizontal and vertical padding, or of the two scale
ratios, moves it by tens of pixels on these shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import detect
import val

# (width, height) of the original image, the white rectangle's continuous-pixel corners x1, y1, x2, y2. The shapes
# make the letterbox pad a lot on one side only: at 256, 200 x 76 scales to 256 x 97.3 and pads to 256 x 128
# (detect.py's minimal padding) or 256 x 256 (val.py's), 12 to 70 original pixels each side.
CASES = {
    "landscape": ((200, 76), (30, 20, 90, 70)),
    "portrait": ((76, 200), (10, 120, 60, 190)),
    "tall_thin": ((48, 300), (8, 40, 40, 100)),
}
TOLERANCE = 2.5  # pixels: bilinear resizing blurs the rectangle's edge by about one network pixel


class WhiteRectangleOracle(nn.Module):
    """Eval-mode Darknet interface: (B, 1, 5 + C) decoded boxes, in network-input pixels, of the pixels whose three
    channels are all above 0.7 (the white rectangle; the letterbox pads with grey 114/255 = 0.45)."""

    def __init__(self, num_classes: int = 1):
        super().__init__()
        self.num_classes, self.max_stride, self.input_size = num_classes, 32, (256, 256)
        self.anchor = nn.Parameter(torch.zeros(1))  # a parameter, so .parameters() has a device and a dtype

    def forward(self, x, return_raw=False):
        out = torch.zeros(x.shape[0], 1, 5 + self.num_classes)
        for i, image in enumerate(x.float()):
            ys, xs = torch.nonzero((image > 0.7).all(0), as_tuple=True)
            if len(xs):  # pixel centres at i + .5: the continuous box spans min .. max + 1
                x1, x2, y1, y2 = xs.min().item(), xs.max().item() + 1.0, ys.min().item(), ys.max().item() + 1.0
                out[i, 0, :5] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0])
                out[i, 0, 5] = 1.0
        return out


def _write_case(folder, name, size, box, label=True):
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    (folder / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{name}.png"), image)
    if label:
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{name}.txt").write_text(
            f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
            f"{(y2 - y1) / height:.6f}\n")


def _oracle(monkeypatch, module):
    oracle = WhiteRectangleOracle().eval()
    monkeypatch.setattr(module, "prepare_for_inference", lambda model, **kwargs: model)
    return oracle


@pytest.mark.parametrize("img_size", [256, 320])
def test_detect_maps_boxes_back_to_original_pixels_on_non_square_images(tmp_path, monkeypatch, img_size):
    for name, (size, box) in CASES.items():
        _write_case(tmp_path / "src", name, size, box, label=False)
    oracle = _oracle(monkeypatch, detect)
    monkeypatch.setattr(detect, "load_for_inference", lambda *args, **kwargs: (oracle, None))
    assert detect.main(["--weights", "oracle.pt", "--source", str(tmp_path / "src" / "images"), "--save-txt",
                        "--save-json", "--save-crop", "--project", str(tmp_path / "out"), "--name", "exp", "--img-size",
                        str(img_size), "--no-optimize", "--threads", "1"]) == 0
    records = json.loads((tmp_path / "out" / "exp" / "detections.json").read_text())
    found = {Path(r["source"]).stem: r for r in records}
    for name, (size, box) in CASES.items():
        detections = found[name]["detections"]
        assert len(detections) == 1, name
        np.testing.assert_allclose(detections[0]["bbox_xyxy"], box, atol=TOLERANCE, err_msg=name)
        width, height = size
        row = [float(v) for v in (tmp_path / "out" / "exp" / "labels" / f"{name}.txt").read_text().split()]
        x1, y1, x2, y2 = box
        np.testing.assert_allclose(row[1:5], [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                                              (y2 - y1) / height], atol=TOLERANCE / min(width, height), err_msg=name)
        # --save-crop cuts the box out of the original image: the white rectangle, at its size
        crop = cv2.imread(str(tmp_path / "out" / "exp" / detections[0]["crop"]))
        assert abs(crop.shape[0] - (y2 - y1)) <= 3 and abs(crop.shape[1] - (x2 - x1)) <= 3, (name, crop.shape)
        assert crop[2:-2, 2:-2].min() > 200, name


def test_val_scores_non_square_images_and_saves_boxes_in_original_pixels(tmp_path, monkeypatch):
    for name, (size, box) in CASES.items():
        _write_case(tmp_path / "ds", name, size, box)
    (tmp_path / "d.yaml").write_text(f"path: {tmp_path / 'ds'}\ntrain: images\nval: images\nnames: [rect]\n")
    oracle = _oracle(monkeypatch, val)
    monkeypatch.setattr(val, "load_for_inference", lambda *args, **kwargs: (oracle, None))
    summary = val.run(val.parse_args(["--weights", "oracle.pt", "--data", str(tmp_path / "d.yaml"), "--img-size",
                                      "256", "--save-json", "--save-txt", "--project", str(tmp_path / "v"),
                                      "--name", "exp", "--no-optimize", "--batch-size", "2"]))
    assert summary["mAP50"] == pytest.approx(1.0) and summary["mAP50_95"] > 0.9
    predictions = json.loads((tmp_path / "v" / "exp" / "predictions.json").read_text())
    annotations = json.loads((tmp_path / "v" / "exp" / "annotations.json").read_text())
    file_of = {image["id"]: image["file_name"] for image in annotations["images"]}
    assert set(file_of.values()) == {f"{name}.png" for name in CASES}  # file names, not local paths
    size_of = {image["file_name"]: (image["width"], image["height"]) for image in annotations["images"]}
    assert len(predictions) == len(CASES)
    for prediction in predictions:
        name = Path(file_of[prediction["image_id"]]).stem
        size, (x1, y1, x2, y2) = CASES[name]
        assert size_of[file_of[prediction["image_id"]]] == size
        np.testing.assert_allclose(prediction["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=TOLERANCE, err_msg=name)
    for name, ((width, height), (x1, y1, x2, y2)) in CASES.items():  # --save-txt: normalised to the original
        row = np.loadtxt(tmp_path / "v" / "exp" / "labels" / f"{name}.txt", ndmin=2)
        assert row.shape == (1, 5) and row[0, 0] == 0
        np.testing.assert_allclose(row[0, 1:] * [width, height, width, height],
                                   [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], atol=TOLERANCE, err_msg=name)


def test_val_txt_alone_records_what_ran_and_prints_recall(tmp_path, monkeypatch, capsys):
    for name, (size, box) in CASES.items():
        _write_case(tmp_path / "ds", name, size, box)
    # a labelled image without the white rectangle: 3 of 4 truths found, all at score 1
    cv2.imwrite(str(tmp_path / "ds" / "images" / "blank.png"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "ds" / "labels" / "blank.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "d.yaml").write_text(f"path: {tmp_path / 'ds'}\ntrain: images\nval: images\ntest: images\n"
                                     "names: [rect]\n")
    oracle = _oracle(monkeypatch, val)
    monkeypatch.setattr(val, "load_for_inference", lambda *args, **kwargs: (oracle, None))
    val.run(val.parse_args(["--weights", "oracle.pt", "--data", str(tmp_path / "d.yaml"), "--save-txt", "--task",
                            "test", "--iou-thres", "0.5", "--conf-thres", "0.01", "--project", str(tmp_path / "v"),
                            "--name", "exp", "--no-optimize"]))
    assert len((tmp_path / "v" / "exp" / "labels" / "landscape.txt").read_text().splitlines()) == 1
    metrics = json.loads((tmp_path / "v" / "exp" / "metrics.json").read_text())
    assert (metrics["task"], metrics["img_size"], metrics["iou_thres"], metrics["conf_thres"]) == ("test", 256, 0.5,
                                                                                                   0.01)
    assert "P 1.000 R 0.750" in capsys.readouterr().out
