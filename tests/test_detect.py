"""detect.py on generated images, a generated video, bad inputs, and a briefly trained model finding objects."""
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import detect  # noqa: E402
from yolov3.boxes import box_iou, cxcywh_to_xyxy  # noqa: E402


def train_images(easy_data):
    """The easy training images that hold objects (a few generated images are empty on purpose)."""
    images = sorted((easy_data.parent / "shapes" / "images" / "train").glob("*.jpg"))
    return [p for p in images if (p.parent.parent.parent / "labels" / "train" / f"{p.stem}.txt").read_text().strip()]


def write_video(path, frames=7, size=(96, 64), fps=12.0, fourcc="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    rng = np.random.default_rng(0)
    for k in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        cv2.circle(frame, (20 + 8 * k, 32), 12, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        writer.write(frame)
    writer.release()
    return path


def frame_count(path):
    capture = cv2.VideoCapture(str(path))
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n, capture


def run(args, capsys):
    code = detect.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_folder_with_images_video_corrupt_and_unknown_files(easy_data, trained_checkpoint, tmp_path, capsys):
    source = tmp_path / "mixed"
    source.mkdir()
    for image in train_images(easy_data)[:3]:
        shutil.copy(image, source / image.name)
    video = write_video(source / "clip.avi")
    (source / "broken.jpg").write_bytes(b"not an image")
    (source / "notes.xyz").write_text("hello")
    code, out, err = run(["--weights", trained_checkpoint, "--source", source, "--project", tmp_path / "out",
                          "--save-txt", "--save-conf", "--save-json", "--save-crop", "--conf-thres", "0.3"], capsys)
    assert code == 0
    assert "skipped" in err and "notes.xyz" in err and "unknown extension '.xyz'" in err
    assert "broken.jpg: cannot be read, skipped" in err
    out_dir = tmp_path / "out" / "exp"
    for image in train_images(easy_data)[:3]:
        saved = cv2.imread(str(out_dir / image.name))
        assert saved is not None and saved.shape == cv2.imread(str(image)).shape
    # one line per image with size, per-class counts and the three timings
    image_lines = [ln for ln in out.splitlines() if ln.startswith("image ")]
    assert len(image_lines) == 3  # the broken image is reported on stderr instead
    assert all("128x128" in ln and "ms pre" in ln and "ms inference" in ln and "ms NMS" in ln for ln in image_lines)
    # the annotated video has as many frames as the source, at its size
    n_in, _ = frame_count(video)
    n_out, _ = frame_count(out_dir / "clip.mp4")
    assert n_in == 7 and n_out == n_in
    capture = cv2.VideoCapture(str(out_dir / "clip.mp4"))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 64)
    capture.release()
    # txt rows parse: class cx cy w h conf, normalised, one file per image and per frame
    label_files = sorted((out_dir / "labels").glob("*.txt"))
    assert {p.stem for p in label_files} >= {image.stem for image in train_images(easy_data)[:3]}
    assert {f"clip_{k}" for k in range(7)} <= {p.stem for p in label_files}
    rows = [ln.split() for p in label_files for ln in p.read_text().splitlines()]
    assert rows, "the trained model should detect something"
    for row in rows:
        assert len(row) == 6 and 0 <= int(row[0]) < 5
        values = [float(v) for v in row[1:]]
        assert all(0 <= v <= 1 for v in values) and values[4] >= 0.3
    detections = json.loads((out_dir / "detections.json").read_text())
    assert len(detections) == len(rows)
    assert {d["class"] for d in detections} <= {"circle", "rectangle", "triangle", "star", "cross"}
    crops = list((out_dir / "crops").rglob("*.jpg"))
    assert len(crops) == len(rows)


def test_trained_model_finds_the_objects(easy_data, trained_checkpoint, tmp_path, capsys):
    """IoU >= 0.5 with every ground-truth box of easy generated images, with the right class."""
    images = train_images(easy_data)[:3]
    assert len(images) == 3
    folder = tmp_path / "imgs"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    code, _, _ = run(["--weights", trained_checkpoint, "--source", folder, "--project", tmp_path, "--name", "find",
                      "--save-txt", "--save-conf", "--nosave"], capsys)
    assert code == 0
    assert not list((tmp_path / "find").glob("*.jpg"))  # --nosave
    for image in images:
        truth = np.loadtxt(image.parent.parent.parent / "labels" / "train" / f"{image.stem}.txt", ndmin=2)
        found = np.loadtxt(tmp_path / "find" / "labels" / f"{image.stem}.txt", ndmin=2)
        iou = box_iou(cxcywh_to_xyxy(torch.tensor(truth[:, 1:5])), cxcywh_to_xyxy(torch.tensor(found[:, 1:5])))
        same_class = torch.tensor(truth[:, :1] == found[None, :, 0])
        best = (iou * same_class).max(dim=1).values
        assert (best >= 0.5).all(), (image.name, best)


def test_class_filter_and_hidden_labels(easy_data, trained_checkpoint, tmp_path, capsys):
    image = train_images(easy_data)[0]
    code, _, _ = run(["--weights", trained_checkpoint, "--source", image, "--project", tmp_path, "--classes", "4",
                      "--save-txt", "--hide-labels", "--hide-conf", "--line-thickness", "1"], capsys)
    assert code == 0
    label = tmp_path / "exp" / "labels" / f"{image.stem}.txt"
    assert all(ln.split()[0] == "4" for ln in label.read_text().splitlines())


def test_truncated_video_keeps_what_was_written(trained_checkpoint, tmp_path, capsys):
    # a recording cut off half way; MJPG AVI stays readable up to the cut (an MP4 without its index would not open)
    video = write_video(tmp_path / "long.avi", frames=30, fourcc="MJPG")
    data = video.read_bytes()
    truncated = tmp_path / "cut.avi"
    truncated.write_bytes(data[: len(data) // 2])
    code, out, err = run(["--weights", trained_checkpoint, "--source", truncated, "--project", tmp_path / "o"],
                         capsys)
    assert code == 0
    written, _ = frame_count(tmp_path / "o" / "exp" / "cut.mp4")
    assert 0 < written < 30
    assert f"{written} frames" in out


def test_class_indices_outside_the_model(easy_data, trained_checkpoint, tmp_path, capsys):
    code, _, err = run(["--weights", trained_checkpoint, "--source", train_images(easy_data)[0],
                        "--project", tmp_path, "--classes", "7"], capsys)
    assert code == 2 and "--classes [7]: the model has classes 0..4" in err


@pytest.mark.parametrize("source, message, code", [
    ("missing_folder", "no such file or folder", 2),
    ("file.xyz", "unknown extension '.xyz'", 2),
    ("*.nothing", "the pattern matched no file", 2),
])
def test_bad_sources(trained_checkpoint, tmp_path, capsys, source, message, code):
    (tmp_path / "file.xyz").write_text("x")
    got, _, err = run(["--weights", trained_checkpoint, "--source", tmp_path / source, "--project", tmp_path],
                      capsys)
    assert got == code and message in err and "Traceback" not in err


def test_nothing_processable_exits_non_zero(trained_checkpoint, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"garbage")
    (folder / "b.png").write_bytes(b"")
    code, out, err = run(["--weights", trained_checkpoint, "--source", folder, "--project", tmp_path], capsys)
    assert code == 1 and "nothing could be processed" in out and "a.jpg" in err


def test_darknet_weights_need_cfg_and_take_names(tmp_path, capsys):
    from yolov3.model import Darknet

    model = Darknet(str(REPO / "cfg" / "yolov3-tiny.cfg"), num_classes=3)
    model.save_darknet_weights(tmp_path / "tiny3.weights")
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.full((70, 90, 3), 127, np.uint8))
    code, _, err = run(["--weights", tmp_path / "tiny3.weights", "--source", image, "--project", tmp_path], capsys)
    assert code == 2 and "cfg" in err
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    code, _, err = run(["--weights", tmp_path / "tiny3.weights", "--cfg", tmp_path / "missing.cfg", "--source", image,
                        "--project", tmp_path], capsys)
    assert code == 2
    cfg3 = tmp_path / "tiny3.cfg"
    cfg3.write_text(model.cfg_text)
    code, _, err = run(["--weights", tmp_path / "tiny3.weights", "--cfg", cfg3, "--names", names, "--source", image,
                        "--project", tmp_path], capsys)
    assert code == 2 and "2 names for a model with 3 classes" in err
    names.write_text("a\nb\nc\n")
    code, out, _ = run(["--weights", tmp_path / "tiny3.weights", "--cfg", cfg3, "--names", names, "--source", image,
                        "--project", tmp_path, "--img-size", "96"], capsys)
    assert code == 0 and "96x96" in out


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        detect.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--source", "--save-txt", "--save-conf", "--save-json", "--save-crop", "--view-img", "--nosave",
                 "--classes", "--agnostic-nms", "--max-det", "--conf-thres", "--iou-thres", "--img-size",
                 "--line-thickness", "--hide-labels", "--hide-conf", "--device", "--names", "--cfg"):
        assert flag in text, flag


def test_preprocess_is_letterboxed_rgb_in_unit_range_and_channels_last():
    # a 100x60 BGR image with distinct channel values: the tensor must be RGB / 255, letterboxed to a multiple of
    # the stride, in channels_last memory (the layout optimize_for_inference gives the weights) without a copy
    from yolov3.augment import letterbox

    image = np.zeros((60, 100, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 120, 250  # B, G, R
    image[20:40, 30:70] = (200, 0, 50)
    detector = detect.Detector(torch.nn.Identity(), torch.device("cpu"), 64, 0.25, 0.45, 300, None, False)
    tensor, ratio, pad = detector.preprocess(image)
    boxed, expected_ratio, expected_pad = letterbox(image, 64, auto=True, stride=32, interpolation=cv2.INTER_LINEAR)
    assert tensor.shape == (1, 3, *boxed.shape[:2]) and boxed.shape[0] % 32 == 0 and boxed.shape[1] % 32 == 0
    assert tensor.is_contiguous(memory_format=torch.channels_last) and tensor.dtype == torch.float32
    expected = torch.from_numpy(boxed[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-7)
    assert (ratio, pad) == (expected_ratio, expected_pad)
    corner = tensor[0, :, boxed.shape[0] // 2, boxed.shape[1] // 2 - 20]  # inside the image, left of the patch
    torch.testing.assert_close(corner, torch.tensor([250, 120, 10]) / 255)
