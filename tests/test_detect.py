"""detect.py on generated images, a generated video, bad inputs, and a briefly trained model finding objects."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import detect  # noqa: E402
from conftest import record_prepared_models  # noqa: E402
from yolov3.boxes import box_iou, cxcywh_to_xyxy  # noqa: E402
from yolov3 import detect_outputs  # noqa: E402
from yolov3.images import read_image  # noqa: E402
from yolov3.sources import Source, resolve_sources  # noqa: E402


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
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)  # plays at the source's speed
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
    # one JSON entry per image and per frame (3 + 7), even those without detections
    entries = json.loads((out_dir / "detections.json").read_text())
    assert len(entries) == 3 + 7
    assert [e["frame"] for e in entries if e["source"].endswith("clip.avi")] == list(range(7))
    detections = [d for e in entries for d in e["detections"]]
    assert len(detections) == len(rows)
    assert {d["class"] for d in detections} <= {"circle", "rectangle", "triangle", "star", "cross"}
    crops = list((out_dir / "crops").rglob("*.jpg"))
    assert len(crops) == len(rows)
    assert sorted(out_dir / d["crop"] for d in detections) == sorted(crops)


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


def test_inputs_with_the_same_name_keep_their_own_outputs(easy_data, trained_checkpoint, tmp_path, capsys):
    """a/x.jpg, b/x.jpg and a/x.png: three annotated images, label files and sets of crops, each named in its own
    JSON entry (they used to overwrite each other)."""
    inputs = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "a" / "x.png"]
    for image, target in zip(train_images(easy_data)[:3], inputs):
        target.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(target), cv2.imread(str(image)))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in inputs))
    code, out, _ = run(["--weights", trained_checkpoint, "--source", listing, "--project", tmp_path / "out",
                        "--save-txt", "--save-json", "--save-crop", "--conf-thres", "0.3"], capsys)
    assert code == 0
    out_dir = tmp_path / "out" / "exp"
    entries = json.loads((out_dir / "detections.json").read_text())
    assert [e["source"] for e in entries] == [str(p) for p in inputs]
    assert [e["outputs"]["annotated"] for e in entries] == ["x.jpg", "x_2.jpg", "x_3.png"]
    assert [e["outputs"]["labels"] for e in entries] == ["labels/x.txt", "labels/x_2.txt", "labels/x_3.txt"]
    assert "-> x_2.jpg" in out and "-> x_3.png" in out
    originals = [cv2.imread(str(p)).astype(float) for p in inputs]
    for index, entry in enumerate(entries):
        # the annotated image is this input's (with boxes drawn), not one of the others
        annotated = cv2.imread(str(out_dir / entry["outputs"]["annotated"])).astype(float)
        assert int(np.argmin([np.abs(annotated - original).mean() for original in originals])) == index
        labels = (out_dir / entry["outputs"]["labels"]).read_text().splitlines()
        assert len(labels) == len(entry["detections"])
        assert all((out_dir / d["crop"]).is_file() for d in entry["detections"])
    crops = sorted((out_dir / "crops").rglob("*.jpg"))
    assert len(crops) == sum(len(e["detections"]) for e in entries) >= 3
    assert sorted(out_dir / d["crop"] for e in entries for d in e["detections"]) == crops


def test_file_names_that_are_not_utf8(easy_data, trained_checkpoint, tmp_path):
    """Linux file names are bytes, and b'\\xff\\xfe.jpg' is no UTF-8. OpenCV's imwrite and VideoCapture segfault on
    such a name, so detect.py runs in a subprocess here: a crash fails this test instead of ending pytest."""
    folder = tmp_path / "in"
    folder.mkdir()
    image_name, video_name = os.fsdecode(b"\xff\xfe.jpg"), os.fsdecode(b"clip\xff.avi")
    shutil.copy(train_images(easy_data)[0], folder / image_name)
    shutil.copy(train_images(easy_data)[1], folder / "plain.jpg")
    os.rename(write_video(folder / "clip.avi"), folder / video_name)
    listing = tmp_path / "list.txt"  # a list file may name them too: its bytes are no UTF-8 either
    listing.write_bytes(b"\n".join(os.fsencode(folder / name) for name in (image_name, "plain.jpg", video_name)))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # as a UTF-8 terminal: a lone surrogate can't print
    result = subprocess.run([sys.executable, str(REPO / "detect.py"), "--weights", str(trained_checkpoint),
                             "--source", str(listing), "--project", str(tmp_path / "out"), "--save-txt",
                             "--save-json", "--save-crop", "--conf-thres", "0.3"],
                            capture_output=True, env=env, cwd=REPO, timeout=600)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "clip\\xff.avi" in err and "not UTF-8" in err
    out_dir = tmp_path / "out" / "exp"
    entries = json.loads((out_dir / "detections.json").read_bytes().decode("utf-8"))  # strict UTF-8, valid JSON
    assert [e["source"] for e in entries] == [f"{folder}/\\xff\\xfe.jpg", str(folder / "plain.jpg")]
    assert entries[0]["outputs"] == {"annotated": "\\xff\\xfe.jpg", "labels": "labels/\\xff\\xfe.txt"}
    # the outputs keep the input's own name bytes
    saved = cv2.imdecode(np.fromfile(out_dir / image_name, np.uint8), cv2.IMREAD_COLOR)
    assert saved is not None and saved.shape == (128, 128, 3)
    labels = (out_dir / "labels" / os.fsdecode(b"\xff\xfe.txt")).read_text().splitlines()
    assert len(labels) == len(entries[0]["detections"]) > 0
    crops = [p for p in (out_dir / "crops").rglob("*.jpg") if os.fsencode(p.name).startswith(b"\xff\xfe_")]
    assert len(crops) == len(entries[0]["detections"])
    assert all(d["crop"].endswith(".jpg") and "/\\xff\\xfe_" in d["crop"] for d in entries[0]["detections"])


def test_darknet_weights_take_the_class_count_from_names(tmp_path, capsys):
    # a .weights file does not record its class count: the heads are built for the --names count, not the cfg's
    from yolov3.model import Darknet

    cfg = REPO / "cfg" / "yolov3-small.cfg"  # 5 classes
    Darknet(str(cfg), num_classes=2).save_darknet_weights(tmp_path / "two.weights")
    names = tmp_path / "two.names"
    names.write_text("cat\ndog\n")
    image = tmp_path / "im.jpg"
    cv2.imwrite(str(image), np.full((48, 80, 3), 127, np.uint8))
    code, out, err = run(["--weights", tmp_path / "two.weights", "--cfg", cfg, "--names", names, "--source", image,
                          "--project", tmp_path, "--img-size", "64", "--save-json", "--conf-thres", "0"], capsys)
    assert code == 0, err
    entries = json.loads((tmp_path / "exp" / "detections.json").read_text())
    assert {d["class"] for d in entries[0]["detections"]} <= {"cat", "dog"} and entries[0]["detections"]
    # the same from a data YAML's names (--data), the other way a user gives them
    (tmp_path / "pets.yaml").write_text("train: .\nval: .\nnames: [hen, fox]\n")
    code, out, err = run(["--weights", tmp_path / "two.weights", "--cfg", cfg, "--data", tmp_path / "pets.yaml",
                          "--source", image, "--project", tmp_path, "--name", "from_data", "--img-size", "64",
                          "--save-json", "--conf-thres", "0"], capsys)
    assert code == 0, err
    entries = json.loads((tmp_path / "from_data" / "detections.json").read_text())
    assert {d["class"] for d in entries[0]["detections"]} <= {"hen", "fox"} and entries[0]["detections"]
    names.write_text("cat\ndog\nbird\n")  # fits neither the file nor the cfg: the weights' own message
    code, _, err = run(["--weights", tmp_path / "two.weights", "--cfg", cfg, "--names", names, "--source", image,
                        "--project", tmp_path], capsys)
    assert code == 2 and "floats" in err and len(err.strip().splitlines()) == 1


class FixedBoxes(torch.nn.Module):
    """Eval-mode Darknet interface that 'detects' the same three boxes (network pixels, 2 classes) in any image: a
    class-0 box at .9, the same box as class 1 at .8, and another class-0 box elsewhere at .7."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.max_stride, self.input_size = 2, 32, (64, 64)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, return_raw=False):
        rows = torch.tensor([[20.0, 20, 16, 16, 1.0, 0.9, 0.0], [20.0, 20, 16, 16, 1.0, 0.0, 0.8],
                             [48.0, 44, 12, 12, 1.0, 0.7, 0.0]])
        return rows.expand(x.shape[0], 3, 7).clone()


def _fixed_detect(monkeypatch):
    monkeypatch.setattr(detect, "load_for_inference", lambda *args, **kwargs: (FixedBoxes().eval(), None))
    monkeypatch.setattr(detect, "prepare_for_inference", lambda model, **kwargs: model)


def _one_image(tmp_path):
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    return image


@pytest.mark.parametrize("flags, expected", [
    ([], [(0, 0.9), (1, 0.8), (0, 0.7)]),  # per-class NMS: the class-1 box overlaps only another class's
    (["--agnostic-nms"], [(0, 0.9), (0, 0.7)]),  # across classes: the .8 box is suppressed by the .9 one
    (["--max-det", "2"], [(0, 0.9), (1, 0.8)]),  # the best two
    (["--classes", "1"], [(1, 0.8)]),
])
def test_nms_flags_reach_the_detections(tmp_path, monkeypatch, capsys, flags, expected):
    _fixed_detect(monkeypatch)
    image = _one_image(tmp_path)
    code, out, err = run(["--weights", "fixed.pt", "--source", image, "--project", tmp_path, "--img-size", "64",
                          "--save-json", "--nosave", "--no-optimize", "--threads", "1", *flags], capsys)
    assert code == 0, err
    found = json.loads((tmp_path / "exp" / "detections.json").read_text())[0]["detections"]
    assert [(d["class_id"], round(d["score"], 3)) for d in found] == expected
    counts = [sum(c == k for c, _ in expected) for k in (0, 1)]  # the image's line counts boxes per class
    assert ", ".join(f"{n} class{k}" for k, n in enumerate(counts) if n) in out


def test_huge_img_size_is_a_one_line_error(easy_data, trained_checkpoint, tmp_path, capsys, monkeypatch):
    # 100000 is a multiple of 32; letterboxing to it would allocate 30 GB: never let a regression get that far
    monkeypatch.setattr(detect.Detector, "__call__", lambda *a: pytest.fail("inference ran at --img-size 100000"))
    code, _, err = run(["--weights", trained_checkpoint, "--source", train_images(easy_data)[0],
                        "--project", tmp_path / "out", "--img-size", "100000"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--img-size must be at most 8192 (a positive multiple of the model's stride), got 100000" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stop_in", ["images", "video"])
def test_ctrl_c_keeps_what_was_processed(easy_data, trained_checkpoint, tmp_path, capsys, monkeypatch, stop_in):
    """Ctrl-C in the 2nd forward pass (images: batches of 2; or the 2nd frame): exit 130, and detections.json is
    valid and holds what the 1st pass found, its annotated outputs written."""
    folder = tmp_path / "in"
    folder.mkdir()
    if stop_in == "images":
        for image in train_images(easy_data)[:3]:
            shutil.copy(image, folder / image.name)
        done = [(str(folder / image.name), None) for image in train_images(easy_data)[:2]]
    else:
        done = [(str(write_video(folder / "clip.avi")), 0)]
    calls = []
    run_batch = detect.Detector.run_batch

    def interrupt_second_call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_batch(self, *args, **kwargs)

    monkeypatch.setattr(detect_outputs, "DETECT_BATCH", 2)
    monkeypatch.setattr(detect.Detector, "run_batch", interrupt_second_call)
    try:
        code, _, err = run(["--weights", trained_checkpoint, "--source", folder, "--project", tmp_path / "out",
                            "--save-json", "--save-txt"], capsys)
    except KeyboardInterrupt:
        pytest.fail("detect.main let Ctrl-C out: a traceback and no detections.json")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    out_dir = tmp_path / "out" / "exp"
    entries = json.loads((out_dir / "detections.json").read_text())
    assert [(e["source"], e["frame"]) for e in entries] == done
    assert sorted(p.name for p in (out_dir / "labels").iterdir()) == \
        sorted(Path(e["outputs"]["labels"]).name for e in entries)
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]
    if stop_in == "video":  # the annotated video is closed properly, with the frame written before Ctrl-C
        assert frame_count(out_dir / "clip.mp4")[0] == 1
    else:  # the annotated images, drawn and saved in the saver's thread, were waited for
        assert all(cv2.imread(str(out_dir / e["outputs"]["annotated"])) is not None for e in entries)


def test_images_of_one_size_share_a_forward_pass_with_the_results_of_single_images(easy_data, trained_checkpoint,
                                                                                    tmp_path, capsys, monkeypatch):
    """Consecutive images are batched (DETECT_BATCH), split where the network size changes or an image cannot be
    read; every image gets the detections it gets alone, and the outputs keep the input order."""
    folder = tmp_path / "in"
    folder.mkdir()
    sources = train_images(easy_data)[:5]
    for k, image in enumerate(sources):
        shutil.copy(image, folder / f"{k}{image.suffix}")
    wide = cv2.resize(cv2.imread(str(sources[0])), (160, 64))  # another network size: a batch of its own
    cv2.imwrite(str(folder / "2b.png"), wide)
    (folder / "3b.jpg").write_bytes(b"garbage")
    sizes = []
    run_batch = detect.Detector.run_batch

    def spy(self, images, letterboxed=None):
        sizes.append(len(images))
        return run_batch(self, images, letterboxed)

    monkeypatch.setattr(detect.Detector, "run_batch", spy)
    code, out, err = run(["--weights", trained_checkpoint, "--source", folder, "--project", tmp_path / "out",
                          "--save-json", "--conf-thres", "0.1"], capsys)
    assert code == 0 and "3b.jpg: cannot be read, skipped" in err
    # 0 1 2 2b 3 3b 4, DETECT_BATCH 4 per gathering: [0 1 2] [2b] | [3] (3b unreadable) [4]
    assert sizes == [3, 1, 1, 1]
    # model inputs: 3 images at one size, 1 at another, then 1 and 1 at the first size: only the last was seen before
    assert "1 images/frames timed; not included: 5 in the first pass at each input size and batch size" in out
    entries = json.loads((tmp_path / "out" / "exp" / "detections.json").read_text())
    assert [Path(e["source"]).name for e in entries] == ["0.jpg", "1.jpg", "2.jpg", "2b.png", "3.jpg", "4.jpg"]
    assert [line.split(":")[0].split()[-1].split("/")[-1] for line in out.splitlines() if line.startswith("image ")] \
        == ["0.jpg", "1.jpg", "2.jpg", "2b.png", "3.jpg", "4.jpg"]
    monkeypatch.setattr(detect_outputs, "DETECT_BATCH", 1)
    code, out, _ = run(["--weights", trained_checkpoint, "--source", folder, "--project", tmp_path / "single",
                        "--save-json", "--conf-thres", "0.1"], capsys)
    assert "4 images/frames timed; not included: 2 in the first pass" in out  # one first pass per image size
    singles = json.loads((tmp_path / "single" / "exp" / "detections.json").read_text())
    assert sizes[4:] == [1] * 6 and len(singles) == len(entries)
    found = 0
    for batched, single in zip(entries, singles):
        assert len(batched["detections"]) == len(single["detections"])
        for a, b in zip(batched["detections"], single["detections"]):
            assert a["class_id"] == b["class_id"] and abs(a["score"] - b["score"]) < 1e-4
            assert np.allclose(a["bbox_xyxy"], b["bbox_xyxy"], atol=0.02)
        found += len(single["detections"])
    assert found >= 3  # a model that finds things: the comparison is not between empty lists


def test_the_next_batch_is_being_read_while_the_model_runs_this_one(easy_data, trained_checkpoint, tmp_path, capsys,
                                                                     monkeypatch):
    """When a batch goes to the model, every image of the batch after it has been handed to the reader's thread:
    its decoding overlaps this forward pass instead of making the model wait."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(11):
        shutil.copy(train_images(easy_data)[k % 3], folder / f"{k:02d}.jpg")
    queued_upto = []  # how many inputs the reader had queued after each get
    get, run_batch = detect_outputs.ImageReader.get, detect.Detector.run_batch
    monkeypatch.setattr(detect_outputs.ImageReader, "get",
                        lambda self, index: (get(self, index), queued_upto.append(self.next_to_queue))[0])
    at_batches = []
    monkeypatch.setattr(detect.Detector, "run_batch",
                        lambda self, *args: (at_batches.append(queued_upto[-1]), run_batch(self, *args))[1])
    code, _, _ = run(["--weights", trained_checkpoint, "--source", folder, "--project", tmp_path / "out"], capsys)
    batch = detect_outputs.DETECT_BATCH
    assert code == 0 and len(at_batches) == -(-11 // batch)
    assert all(queued >= min(11, (k + 2) * batch) for k, queued in enumerate(at_batches)), at_batches


def test_reading_ahead_and_saving_behind_keep_the_input_order(tmp_path):
    """ImageReader decodes ahead in a thread and hands images back by index; BackgroundSaver runs its jobs one at a
    time in the order queued, even when early jobs are slow; an error in its thread reaches the caller."""
    from yolov3.detect_outputs import READ_AHEAD, BackgroundSaver, ImageReader
    from yolov3.sources import Source

    paths = []
    for k in range(6):
        path = tmp_path / f"{k}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), 10 * k, np.uint8))
        paths.append(path)
    (tmp_path / "2.png").write_bytes(b"not an image")
    items = [Source("image", str(p)) for p in paths[:3]] + [Source("video", "v.mp4")] + \
        [Source("image", str(p)) for p in paths[3:]]
    requested = []
    lock = threading.Lock()

    def read(path):
        with lock:
            requested.append(Path(path).name)
        return read_image(path)

    reader = ImageReader(items, read=read, ahead=READ_AHEAD)
    first = reader.get(0)
    time.sleep(0.2)  # the read-ahead has run by now
    with lock:
        assert requested[0] == "0.png" and len(requested) == READ_AHEAD + 1  # the next ones queued, not all
    got = [first] + [reader.get(i) for i in (1, 2, 4, 5, 6)]
    reader.close()
    assert [None if im is None else int(im[0, 0, 0]) for im, _ in got] == [0, 10, None, 30, 40, 50]
    assert all(prepared is None for _, prepared in got)
    prepared = ImageReader(items, prepare=lambda image: image.shape).get(4)
    assert prepared[1] == (8, 8, 3) and int(prepared[0][0, 0, 0]) == 30

    done = []
    saver = BackgroundSaver()
    for k in range(5):
        saver.submit(lambda k=k: (time.sleep(0.05 * (5 - k)), done.append(k)))
    saver.close()
    assert done == [0, 1, 2, 3, 4]
    failing = BackgroundSaver()
    failing.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.close()


@pytest.mark.parametrize("case", ["missing source", "only unreadable images", "bad --classes", "bad --names"])
def test_a_failed_run_leaves_no_run_folder(trained_checkpoint, tmp_path, capsys, case):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"garbage")
    source = {"missing source": tmp_path / "nothing"}.get(case, folder)
    extra = {"bad --classes": ["--classes", "9"], "bad --names": ["--names", tmp_path / "missing.names"]}.get(case, [])
    code, _, err = run(["--weights", trained_checkpoint, "--source", source, "--project", tmp_path / "out", *extra],
                       capsys)
    assert code in (1, 2) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_line_thickness_below_one_is_a_one_line_error(trained_checkpoint, tmp_path, capsys):
    image = tmp_path / "x.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code, _, err = run(["--weights", trained_checkpoint, "--source", image, "--line-thickness", "0",
                        "--project", tmp_path / "out"], capsys)
    assert code == 2 and err.strip() == "error: --line-thickness must be at least 1 (pixels), got 0"
    assert not (tmp_path / "out").exists()


def test_threads_flag_is_checked_and_reported(trained_checkpoint, tmp_path, capsys, monkeypatch):
    prepared = record_prepared_models(monkeypatch, detect)
    with pytest.raises(SystemExit) as exit_info:
        detect.main(["--weights", str(trained_checkpoint), "--source", str(tmp_path), "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads: expected 'auto' or a whole number of threads of at least 1, got '0'" in capsys.readouterr().err
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    assert detect.main(["--weights", str(trained_checkpoint), "--source", str(image), "--nosave", "--threads", "1",
                        "--bf16"]) == 0
    out = capsys.readouterr().out
    assert "threads: 1 (--threads)" in out and ("precision: bf16 autocast" in out or "--bf16 on a CPU without" in out)
    assert [m.inference_dtype for m in prepared] == [torch.bfloat16]  # the model that ran is the bf16 one


def test_a_single_image_runs_the_plain_model_without_the_prep_cache(trained_checkpoint, tmp_path, capsys,
                                                                    monkeypatch):
    """One image cannot pay for a fast path: detect.py runs what --no-optimize runs and leaves the preparation cache
    unread (a corrupt one gets no note); --prep-cache clear still deletes a cache of ours."""
    from yolov3 import fastconv, prepcache

    prepared = record_prepared_models(monkeypatch, detect)
    cache = tmp_path / "prep-cache.json"
    monkeypatch.setenv("YOLOV3_PREP_CACHE", str(cache))
    monkeypatch.setattr(fastconv, "_PREP_CACHE", None)
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    cache.write_text("{not json")
    code, _, err = run(["--weights", trained_checkpoint, "--source", image, "--nosave"], capsys)
    assert code == 0 and "preparation cache" not in err and fastconv._PREP_CACHE is None
    assert not any(isinstance(m, fastconv.FastConvLayer) for m in prepared[0].module_list)
    cache.write_text(json.dumps({"format": prepcache.FORMAT, "version": prepcache.VERSION, "machine": {},
                                 "choices": {}}))
    code, _, _ = run(["--weights", trained_checkpoint, "--source", image, "--nosave", "--prep-cache", "clear"], capsys)
    assert code == 0 and not cache.exists()


def test_exist_ok_never_writes_over_its_own_inputs(easy_data, trained_checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    image = shutil.copy(train_images(easy_data)[0], photos / "a.jpg")
    before = Path(image).read_bytes()
    # --exist-ok into the photos' own folder: a.jpg's annotated copy would be photos/a.jpg itself
    code, _, err = run(["--weights", trained_checkpoint, "--source", photos, "--project", tmp_path,
                        "--name", "photos", "--exist-ok"], capsys)
    assert code == 2 and "--exist-ok: the run folder" in err and "a.jpg" in err and "Traceback" not in err
    assert Path(image).read_bytes() == before and sorted(p.name for p in photos.iterdir()) == ["a.jpg"]
    # without --exist-ok the run gets a folder of its own
    code, out, _ = run(["--weights", trained_checkpoint, "--source", photos, "--project", tmp_path,
                        "--name", "photos"], capsys)
    assert code == 0 and (tmp_path / "photos2" / "a.jpg").is_file() and Path(image).read_bytes() == before


def test_names_in_another_order_than_the_models_are_warned(easy_data, trained_checkpoint, tmp_path, capsys):
    trained = [str(n) for n in torch.load(trained_checkpoint, map_location="cpu", weights_only=True)["names"]]
    image = train_images(easy_data)[0]
    for names, warned in ((trained, False), (trained[::-1], True)):
        names_file = tmp_path / "names.txt"
        names_file.write_text("\n".join(names) + "\n")
        code, _, err = run(["--weights", trained_checkpoint, "--source", image, "--project", tmp_path,
                            "--names", names_file, "--nosave"], capsys)
        assert code == 0
        assert ("differ from the classes the model was trained with" in err) is warned, err
        if warned:
            assert str(trained[::-1]) in err and str(trained) in err


def test_classes_of_a_model_end_at_its_class_count_and_hide_conf_hides_only_the_score(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    image = _one_image(tmp_path)
    argv = ["--weights", "fixed.pt", "--source", image, "--project", tmp_path, "--img-size", "64", "--no-optimize",
            "--threads", "1"]
    code, _, err = run(argv + ["--classes", "2", "--nosave"], capsys)
    assert code == 2 and "--classes [2]: the model has classes 0..1" in err
    drawn = []
    real_draw = detect_outputs.draw_boxes
    monkeypatch.setattr(detect_outputs, "draw_boxes", lambda *a, **k: (drawn.append(k), real_draw(*a, **k))[1])
    code, _, err = run(argv + ["--hide-conf"], capsys)
    assert code == 0, err
    assert drawn and all(k["hide_conf"] is True and k["hide_labels"] is False for k in drawn)
    # the score drawn is the detection's score, not its class
    assert sorted(round(float(s), 3) for k in drawn for s in k["scores"]) == [0.7, 0.8, 0.9]


def test_a_whole_video_is_not_called_truncated(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    video = write_video(tmp_path / "clip.avi")
    code, out, err = run(["--weights", "fixed.pt", "--source", video, "--project", tmp_path, "--img-size", "64",
                          "--no-optimize", "--threads", "1", "--nosave"], capsys)
    assert code == 0, err
    assert "stopped after" not in err + out and "7 frames" in out


def test_save_txt_without_save_conf_writes_five_columns(tmp_path):
    writer = detect_outputs.Writer(tmp_path / "run", ["a"], {}, detect_outputs.SaveOptions(annotated=False, txt=True))
    writer.record(torch.tensor([[10.0, 20, 30, 60, 0.9, 0]]), np.zeros((100, 200, 3), np.uint8), "x", "x.jpg", None,
                  None)
    # cx (10 + 30) / 2 / 200 = .1, cy (20 + 60) / 2 / 100 = .4, w 20 / 200 = .1, h 40 / 100 = .4
    assert (writer.save_dir / "labels" / "x.txt").read_text() == "0 0.100000 0.400000 0.100000 0.400000\n"


def test_counts_crops_line_thickness_and_classes_reach_the_outputs(tmp_path, monkeypatch):
    detections = torch.tensor([[0, 0, 1, 1, 0.9, 1], [0, 0, 1, 1, 0.8, 0], [0, 0, 1, 1, 0.7, 1]])
    assert detect_outputs.describe(detections, ["a", "b"]) == "1 a, 2 b"  # class order, not score order
    calls = []
    monkeypatch.setattr(detect_outputs, "draw_boxes", lambda *a, **k: calls.append((a, k)))
    detect_outputs.annotate(np.zeros((64, 64, 3), np.uint8), torch.tensor([[10.0, 10, 30, 30, 0.9, 1],
                                                                           [5, 5, 20, 20, 0.8, 0]]),
                            ["a", "b"], detect_outputs.DrawStyle(line_thickness=5))
    (args, kwargs), = calls
    assert args[2].tolist() == [1, 0] and kwargs["line_thickness"] == 5
    writer = detect_outputs.Writer(tmp_path / "r", ["a", "b"], {},
                                   detect_outputs.SaveOptions(annotated=False, crop=True, json=True))
    writer.record(torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [10, 10, 20, 20, 0.8, 1], [20, 20, 30, 30, 0.7, 0]]),
                  np.full((40, 40, 3), 100, np.uint8), "x", "x.jpg", None, None)
    crops = [d["crop"] for d in writer.json_entries[0]["detections"]]
    assert crops == ["crops/a/x_1.jpg", "crops/b/x_1.jpg", "crops/a/x_2.jpg"]  # numbered within each class
    assert all((writer.save_dir / crop).is_file() for crop in crops)


def test_detect_flags_reach_the_run_folder(tmp_path, monkeypatch, capsys):
    import yaml

    _fixed_detect(monkeypatch)
    image = _one_image(tmp_path)
    argv = ["--weights", "fixed.pt", "--source", image, "--no-optimize", "--threads", "1", "--nosave"]
    code, _, err = run(argv + ["--project", tmp_path / "a", "--save-txt"], capsys)
    assert code == 0, err
    rows = (tmp_path / "a" / "exp" / "labels" / "im.txt").read_text().splitlines()
    assert len(rows) == 3 and all(len(row.split()) == 5 for row in rows)  # YOLO's five columns without --save-conf
    assert not (tmp_path / "a" / "exp" / "crops").exists()
    assert yaml.safe_load((tmp_path / "a" / "exp" / "config.yaml").read_text())["img_size"] == 64  # as used
    code, _, err = run(argv + ["--project", tmp_path / "b", "--save-crop"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "b" / "exp" / "crops").rglob("*.jpg"))) == 3
    assert not (tmp_path / "b" / "exp" / "labels").exists()
    names = tmp_path / "names.txt"
    names.write_text("cat\n\n  dog  \n")
    assert detect.read_names_file(str(names)) == ["cat", "dog"]


def test_a_video_counts_classes_and_a_short_read_is_named(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    video = write_video(tmp_path / "clip.avi")
    argv = ["--weights", "fixed.pt", "--source", video, "--img-size", "64", "--no-optimize", "--threads", "1",
            "--nosave"]
    code, out, err = run(argv + ["--project", tmp_path / "a"], capsys)
    assert code == 0, err
    assert "7 frames, 14 class0, 7 class1" in out  # per frame: two class-0 boxes and one class-1 box
    real = detect_outputs.frames_read_ahead

    def three_frames(capture):
        frames = real(capture)
        try:
            for _ in range(3):
                yield next(frames)
        finally:
            frames.close()

    monkeypatch.setattr(detect_outputs, "frames_read_ahead", three_frames)
    total = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert total > 3
    code, out, err = run(argv + ["--project", tmp_path / "b"], capsys)
    assert f"stopped after 3 of {total} frames" in err + out


# ---- planted-bug checks: the viewer, webcams, --exist-ok, names, NMS flags, JSON flushing, Ctrl-C while loading ----
FAST = ["--weights", "fixed.pt", "--img-size", "64", "--no-optimize", "--threads", "1"]


def test_view_img_shows_each_result_without_waiting_for_a_key(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    image = _one_image(tmp_path)
    windows, waits = [], []
    monkeypatch.setattr(cv2, "imshow", lambda window, img: windows.append(window))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: waits.append(delay) or -1)
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "p", "--nosave", "--view-img"], capsys)
    assert code == 0, err
    assert windows == [str(image)] and waits == [1]


def test_a_webcam_index_opens_the_camera_and_nosave_writes_no_video(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    video = write_video(tmp_path / "clip.avi")
    assert resolve_sources("0") == ([Source("stream", "0")], [])
    real, opened = cv2.VideoCapture, []
    monkeypatch.setattr(cv2, "VideoCapture", lambda where: (opened.append(where), real(str(video)))[1])
    code, out, err = run(FAST + ["--source", "0", "--project", tmp_path / "cam"], capsys)
    assert code == 0, err
    assert opened == [0] and "stream 1/1 0: 7 frames" in out and (tmp_path / "cam" / "exp" / "stream1.mp4").is_file()
    monkeypatch.setattr(cv2, "VideoCapture", real)
    code, _, err = run(FAST + ["--source", video, "--project", tmp_path / "quiet", "--nosave"], capsys)
    assert code == 0, err
    assert (tmp_path / "quiet" / "exp").is_dir() and not list((tmp_path / "quiet" / "exp").glob("*.mp4"))
    code, _, err = run(FAST + ["--source", video, "--project", tmp_path / "j", "--save-json"], capsys)
    assert code == 0, err
    entries = json.loads((tmp_path / "j" / "exp" / "detections.json").read_text())
    assert [e["frame"] for e in entries] == list(range(7))
    assert all(e["outputs"] == {"annotated": "clip.mp4", "labels": None} for e in entries)


def test_exist_ok_reuses_the_folder_and_refuses_one_holding_inputs(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    image = _one_image(tmp_path)
    for _ in range(2):
        code, out, err = run(FAST + ["--source", image, "--project", tmp_path / "p", "--exist-ok"], capsys)
        assert code == 0, err
    assert not (tmp_path / "p" / "exp2").exists() and f"results saved to {tmp_path / 'p' / 'exp'}" in out
    (tmp_path / "photos").mkdir()
    clip = write_video(tmp_path / "photos" / "clip.mp4")
    before = clip.read_bytes()
    code, _, err = run(FAST + ["--source", tmp_path / "photos", "--project", tmp_path, "--name", "photos",
                               "--exist-ok"], capsys)
    assert code == 2 and "--exist-ok: the run folder" in err and "clip.mp4" in err and clip.read_bytes() == before
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    cv2.imwrite(str(tmp_path / "rel" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    code, _, _ = run(FAST + ["--source", "rel", "--project", ".", "--name", "rel", "--exist-ok"], capsys)
    assert code == 2 and sorted(p.name for p in (tmp_path / "rel").iterdir()) == ["a.png"]


def test_class_zero_iou_flag_names_checks_and_ctrl_c_while_loading(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    image = _one_image(tmp_path)
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "c", "--classes", "0", "--save-json",
                               "--nosave"], capsys)
    assert code == 0, err
    found = json.loads((tmp_path / "c" / "exp" / "detections.json").read_text())[0]["detections"]
    assert [(d["class_id"], round(d["score"], 3)) for d in found] == [(0, 0.9), (0, 0.7)]
    assert detect.parse_args(["--weights", "w.pt", "--source", "x.jpg"]).iou_thres == 0.45
    real_detector, made = detect.Detector, []
    monkeypatch.setattr(detect, "Detector", lambda *a, **k: (made.append(a), real_detector(*a, **k))[1])
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "i", "--iou-thres", "0.6", "--nosave"],
                       capsys)
    assert code == 0 and made[0][4] == 0.6
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "n", "--names", tmp_path / "names.txt"],
                       capsys)
    assert code == 2 and "--names: 3 names for a model with 2 classes" in err
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\nbar\n")
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "l", "--names", tmp_path / "latin.txt"],
                       capsys)
    assert code == 2 and "not UTF-8 text" in err
    monkeypatch.setattr(detect, "load_for_inference",
                        lambda *a, **k: (FixedBoxes().eval(), {"names": ["a", "b"]}))
    (tmp_path / "pets.yaml").write_text("train: .\nval: .\nnames: [b, a]\n")
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "d", "--data", tmp_path / "pets.yaml"],
                       capsys)
    assert "--data names ['b', 'a'] differ from the classes the model was trained with ['a', 'b']" in err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(detect, "load_for_inference", interrupted)
    code, _, err = run(FAST + ["--source", image, "--project", tmp_path / "out"], capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted" and not (tmp_path / "out").exists()


def test_detections_json_is_flushed_while_a_long_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(detect_outputs, "JSON_FLUSH_S", -1.0)
    writer = detect_outputs.Writer(tmp_path / "r", ["a"], {}, detect_outputs.SaveOptions(annotated=False, json=True))
    writer.record(torch.zeros((0, 6)), np.zeros((8, 8, 3), np.uint8), "x", "x.jpg", None, None)
    assert len(json.loads((writer.save_dir / "detections.json").read_text())) == 1  # written before close()


def test_an_input_that_cannot_be_opened_is_skipped(tmp_path, monkeypatch, capsys):
    _fixed_detect(monkeypatch)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "in" / "old.png").mkdir()  # a folder a glob matches
    assert read_image(str(tmp_path / "in" / "old.png")) is None
