"""yolov3.detector.Detector: the API gives detect.py's boxes, and the timed passes exclude one-time preparation."""
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import detect  # noqa: E402
from conftest import save_random_checkpoint  # noqa: E402
from yolov3 import Detector  # noqa: E402
from yolov3.model import Darknet  # noqa: E402


def test_detector_gives_detect_py_boxes(easy_data, trained_checkpoint, tmp_path, capsys):
    root = easy_data.parent / "shapes"
    images = [p for p in sorted((root / "images" / "train").glob("*.jpg"))
              if (root / "labels" / "train" / f"{p.stem}.txt").read_text().strip()][:3]  # images holding objects
    source = tmp_path / "images"
    source.mkdir()
    for image in images:
        shutil.copy(image, source / image.name)
    assert detect.main(["--weights", str(trained_checkpoint), "--source", str(source), "--save-json", "--nosave",
                        "--conf-thres", "0.1", "--project", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    entries = json.loads((tmp_path / "out" / "exp" / "detections.json").read_text())
    detector = Detector.from_weights(trained_checkpoint, conf_thres=0.1)
    assert detector.names == ["circle", "rectangle", "triangle", "star", "cross"] and detector.img_size == 128
    found = 0
    for entry in entries:
        ours = detector.detect(entry["source"])  # from the path, read as detect.py reads it
        theirs = entry["detections"]
        assert len(ours) == len(theirs)
        for row, detection in zip(ours.tolist(), theirs):
            assert np.allclose(row[:4], detection["bbox_xyxy"], atol=0.006)  # the JSON rounds to 0.01 px
            assert abs(row[4] - detection["score"]) < 1e-5 and int(row[5]) == detection["class_id"]
        found += len(ours)
    assert found >= 3  # the trained model finds the objects: the comparison is not between empty lists


class SlowFirstCall(torch.nn.Module):
    """A model whose first pass at each input shape takes 0.3 s longer (what one-time preparation does); it counts
    its calls."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen, self.num_classes, self.max_stride = model, set(), model.num_classes, model.max_stride
        self.calls = 0

    def forward(self, x, **kwargs):
        self.calls += 1
        if tuple(x.shape) not in self.seen:
            self.seen.add(tuple(x.shape))
            time.sleep(0.3)
        return self.model(x, **kwargs)


def test_first_image_of_each_size_is_timed_apart_and_run_once(cfg_dir):
    model = SlowFirstCall(Darknet(cfg_dir / "yolov3-small.cfg", num_classes=2).eval())
    detector = Detector(model, torch.device("cpu"), 64, 0.25, 0.45, 300, None, False, names=["a", "b"])
    square, wide = np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)
    _, shape, ms = detector(square)
    assert shape == (64, 64) and ms[1] >= 300 and model.calls == 1  # one pass, not a warm-up and then another
    assert detector.warmup_s >= 0.3 and detector.warmup_shapes == [(64, 64)] and detector.count == 0
    _, _, ms = detector(square)
    assert ms[1] < 250 and detector.count == 1 and detector.times[1] < 0.25  # the 0.3 s is not in the average
    _, shape, ms = detector(wide)
    assert shape == (32, 64) and detector.warmup_shapes == [(64, 64), (32, 64)] and detector.first_passes == 2
    assert detector.warmup_s >= 0.6 and detector.count == 1 and model.calls == 3


def test_evaluate_times_the_first_batch_of_each_shape_apart(easy_data, trained_checkpoint):
    from yolov3.data import create_dataloader, load_data_yaml
    from yolov3.evaluate import EvalOptions, evaluate
    from yolov3.model import load_model

    data = load_data_yaml(easy_data)
    model, _ = load_model(trained_checkpoint)
    loader, _ = create_dataloader(data, "val", 128, 1, None, 0, seed=0, shuffle=False, progress=False)
    slow = SlowFirstCall(model)
    result = evaluate(slow, loader, data["names"], options=EvalOptions(warmup=True, progress=False))
    assert slow.calls == len(loader) >= 2  # every batch once: timing costs no extra pass
    assert result["warmup_s"] >= 0.3 and result["speed_ms"]["inference"] < 150  # 0.3 s in it would be >= 150 ms
    assert not result["speed_ms"]["first_pass_only"]
    slow.seen.clear()
    cold = evaluate(slow, loader, data["names"], options=EvalOptions(progress=False))
    assert cold["warmup_s"] == 0 and cold["speed_ms"]["inference"] >= 300 / len(loader)
    assert cold["mAP50"] == result["mAP50"]
    slow.seen.clear()
    one_batch, _ = create_dataloader(data, "val", 128, 64, None, 0, seed=0, shuffle=False, progress=False)
    only = evaluate(slow, one_batch, data["names"], options=EvalOptions(warmup=True, progress=False))
    assert only["speed_ms"]["first_pass_only"] and only["speed_ms"]["inference"] >= 300 / len(one_batch.dataset)


def test_from_weights_checks_the_names(trained_checkpoint):
    with pytest.raises(ValueError, match="2 names for a model with 5 classes"):
        Detector.from_weights(trained_checkpoint, names=["a", "b"])
    with pytest.raises(ValueError, match="cannot be read as an image"):
        Detector.from_weights(trained_checkpoint).detect(str(trained_checkpoint))


def test_bf16_inference_runs_the_network_in_bf16_and_decodes_in_float32(cfg_dir, randomize):
    from yolov3.model import prepare_for_inference

    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    reference = randomize(Darknet(cfg_dir / "yolov3-tiny.cfg", num_classes=3), images)
    bf16 = randomize(Darknet(cfg_dir / "yolov3-tiny.cfg", num_classes=3), images)
    prepare_for_inference(reference, optimize=False)
    prepare_for_inference(bf16, bf16=True)
    assert bf16.inference_dtype == torch.bfloat16 and reference.inference_dtype is None
    seen = []
    hook = bf16.module_list[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.inference_mode():
        expected, (decoded, raw_maps) = reference(images), bf16(images, return_raw=True)
    hook.remove()
    assert seen == [torch.bfloat16]  # the convs ran under autocast
    assert decoded.dtype == torch.float32 and all(raw.dtype == torch.float32 for raw in raw_maps)
    scores, expected_scores = decoded[..., 4:], expected[..., 4:]
    # 8 mantissa bits through 13 convs: close to float32, but not float32 (so autocast really ran)
    assert (scores - expected_scores).abs().max() < 0.1 and (scores - expected_scores).abs().max() > 1e-4
    assert torch.allclose(decoded[..., :2], expected[..., :2], atol=2.0)  # centres, pixels at 128 px
    prepare_for_inference(bf16, optimize=False)  # back to float32: the same model gives the reference's numbers
    with torch.inference_mode():
        assert torch.allclose(bf16(images), expected, atol=1e-4)


def test_bf16_and_threads_reach_the_detector(trained_checkpoint, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    detector = Detector.from_weights(trained_checkpoint, bf16=True, threads="auto")
    assert detector.model.inference_dtype == torch.bfloat16
    assert detector.governor.threads == 1 and detector.governor.describe().startswith("threads: auto, 1 of")
    plain = Detector.from_weights(trained_checkpoint)
    assert plain.governor.threads is None and plain.model.inference_dtype is None


class ZeroBoxes(torch.nn.Module):
    """An eval-mode model that finds nothing: NMS has no work, so stage times are the code's own."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.max_stride = 2, 32
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(x.shape[0], 1, 7)


def test_batched_images_add_their_per_image_times_once_each():
    detector = Detector(ZeroBoxes().eval(), torch.device("cpu"), 64, 0.25, 0.45, 300, None, False, ["a", "b"])
    image = np.zeros((64, 64, 3), np.uint8)
    detector.run_batch([image, image])  # the first pass at this shape is timed apart
    result = detector.run_batch([image, image])
    assert detector.count == 2
    np.testing.assert_allclose(detector.times * 1000, 2 * result[0][2], rtol=1e-9)  # two images, each stage's time


def test_from_weights_keeps_the_nms_settings_and_80_classes_are_named_as_coco(tmp_path):
    from yolov3.detector import COCO_NAMES, default_names

    coco = [ln.strip() for ln in COCO_NAMES.read_text().splitlines() if ln.strip()]
    assert default_names(80) == coco and coco[:3] == ["person", "bicycle", "car"]
    assert default_names(3) == ["class0", "class1", "class2"]
    detector = Detector.from_weights(save_random_checkpoint(tmp_path / "m.pt"), classes=[1], agnostic=True, max_det=5,
                                     optimize=False)
    assert detector.nms == {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 5, "classes": [1], "agnostic": True}
