"""export.py / yolov3.exporter: Darknet files that OpenCV's Darknet importer reads to our model's outputs, and ONNX
files that onnxruntime runs to the same outputs (where onnx and onnxruntime are installed)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import save_random_checkpoint
from yolov3.cfgparse import parse_cfg
from yolov3.exporter import ExportError, export_darknet, export_onnx, with_input_size
from yolov3.model import ConvLayer, load_model

REPO = Path(__file__).resolve().parents[1]
OPENCV_BN_EPS = 1e-6  # OpenCV's importer normalises with var + 1e-6 (ours: 1e-5); see test_opencv_oracle.py


def opencv_outputs(cfg_path, weights_path, images):
    """OpenCV's [yolo] outputs reordered to ours: (B, N, 5 + C) with boxes in input pixels and class probabilities
    (OpenCV emits rows (y, x, anchor) and objectness x class probability, zeroed at or below 0.2)."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromDarknet (removed in 5.x)")
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setInput(images.numpy())
    return net.forward(net.getUnconnectedOutLayersNames())


def training_image(easy_data):
    """A 128 px training image holding objects, as the model's (3, H, W) RGB input in [0, 1]."""
    import cv2

    root = easy_data.parent / "shapes"
    path = next(p for p in sorted((root / "images" / "train").glob("*.jpg"))
                if (root / "labels" / "train" / f"{p.stem}.txt").read_text().strip())
    return torch.from_numpy(cv2.imread(str(path))[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255


def compare_with_opencv(model, cv_outputs, ours, height, width):
    batch, start, kept = ours.shape[0], 0, 0
    for layer, cv_out in zip(model.yolo_layers, cv_outputs):
        grid_h, grid_w, anchors = height // layer.stride, width // layer.stride, layer.num_anchors
        count = anchors * grid_h * grid_w
        mine = ours[:, start:start + count].reshape(batch, anchors, grid_h, grid_w, -1)
        mine = mine.transpose(0, 2, 3, 1, 4).reshape(batch * count, -1)  # (A, H, W) -> OpenCV's (H, W, A)
        start += count
        theirs = cv_out.reshape(batch * count, -1).astype(np.float64)
        theirs[:, [0, 2]] *= width
        theirs[:, [1, 3]] *= height
        box_error = np.abs(mine[:, :4] - theirs[:, :4]) / np.maximum(np.abs(mine[:, :4]), 1.0)
        assert box_error.max() <= 1e-4, f"stride {layer.stride}: box relative error {box_error.max():.2e}"
        assert np.abs(mine[:, 4] - theirs[:, 4]).max() <= 1e-4
        kept_rows, kept_cols = np.nonzero(theirs[:, 5:] > 0)
        kept += len(kept_rows)
        class_from_cv = theirs[kept_rows, 5 + kept_cols] / theirs[kept_rows, 4]
        assert np.abs(mine[kept_rows, 5 + kept_cols] - class_from_cv).max(initial=0) <= 1e-4
        assert (mine[:, 4:5] * mine[:, 5:])[theirs[:, 5:] == 0].max() <= 0.2 + 1e-4  # what OpenCV zeroed
    assert start == ours.shape[1]
    assert kept > 0  # some class scores pass OpenCV's threshold: the class columns were compared too


@pytest.mark.parametrize("target", ["darknet", "opencv"])
def test_darknet_export_reads_back_in_opencv_as_our_model(easy_data, trained_checkpoint, tmp_path, capsys, target):
    """``darknet``: the file holds exactly the model's values (our reader gets them back bit for bit), and OpenCV
    computes our model's outputs once our epsilon is set to its own. ``opencv``: the variances are shifted so that
    OpenCV computes the outputs of our model as it is."""
    import export

    assert export.main(["--weights", str(trained_checkpoint), "--out", str(tmp_path / "out"),
                        "--target", target]) == 0
    stem = Path(trained_checkpoint).stem
    out = tmp_path / "out"
    assert capsys.readouterr().out.split() == ["cfg:", str(out / f"{stem}.cfg"), "weights:",
                                               str(out / f"{stem}.weights"), "names:", str(out / f"{stem}.names"),
                                               "data:", str(out / f"{stem}.data")]
    assert (out / f"{stem}.names").read_text() == "circle\nrectangle\ntriangle\nstar\ncross\n"
    assert (out / f"{stem}.data").read_text() == f"classes = 5\nnames = {stem}.names\n"
    exported = parse_cfg(out / f"{stem}.cfg")
    assert (exported.net.options["width"], exported.net.options["height"]) == (128, 128)  # the training size
    assert all(block.options["classes"] == 5 for block in exported.layers if block.type == "yolo")

    model, _ = load_model(trained_checkpoint)
    for module in model.module_list:
        if target == "darknet" and isinstance(module, ConvLayer) and module.bn is not None:
            module.bn.eps = OPENCV_BN_EPS  # compare the exported values, not the choice of epsilon
    torch.manual_seed(0)
    images = torch.stack([training_image(easy_data), torch.rand(3, 128, 128)])  # objects, so classes score > 0.2
    with torch.inference_mode():
        ours = model(images).numpy()
    cv_outputs = opencv_outputs(out / f"{stem}.cfg", out / f"{stem}.weights", images)
    compare_with_opencv(model, cv_outputs, ours, 128, 128)
    if target == "opencv":
        return
    # and our own reader gets the checkpoint's weights back exactly
    reread, _ = load_model(out / f"{stem}.weights", cfg=out / f"{stem}.cfg")
    original, _ = load_model(trained_checkpoint)
    for (name, a), b in zip(original.state_dict().items(), reread.state_dict().values()):
        assert name.endswith("num_batches_tracked") or torch.equal(a, b), name  # a counter .weights do not hold


def test_export_img_size_sets_the_exported_input_size(trained_checkpoint, tmp_path, capsys):
    import export

    assert export.main(["--weights", str(trained_checkpoint), "--out", str(tmp_path), "--img-size", "96"]) == 0
    exported = parse_cfg(tmp_path / f"{Path(trained_checkpoint).stem}.cfg")
    assert (exported.net.options["width"], exported.net.options["height"]) == (96, 96)


def test_with_input_size_replaces_or_adds_the_keys(cfg_dir):
    text = (cfg_dir / "yolov3-tiny.cfg").read_text()
    resized = with_input_size(text, 320, 480)
    parsed = parse_cfg(resized)
    assert (parsed.net.options["height"], parsed.net.options["width"]) == (320, 480)
    assert len(resized.splitlines()) == len(text.splitlines())  # replaced in place, comments kept
    bare = "[net]\nchannels=3\n[convolutional]" + text.split("[convolutional]", 1)[1]  # no width, no height
    added = parse_cfg(with_input_size(bare, 64, 96))
    assert (added.net.options["height"], added.net.options["width"]) == (64, 96)


def test_export_errors(trained_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="img_size must be a positive multiple of the model's stride 32, got 100"):
        export_darknet(trained_checkpoint, tmp_path, img_size=100)
    with pytest.raises(ExportError, match="2 class names for a model with 5 classes"):
        export_darknet(trained_checkpoint, tmp_path, names=["a", "b"])
    model, _ = load_model(trained_checkpoint)
    with pytest.raises(ExportError, match="has been fused"):
        export_darknet(model.fuse(), tmp_path)


def test_onnx_export_runs_in_onnxruntime_as_our_model(trained_checkpoint, tmp_path):
    """Runs where the `onnx` extra is installed (pip install .[onnx]); skipped otherwise."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_onnx(trained_checkpoint, tmp_path / "model.onnx", img_size=96)
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert metadata["names"] == '["circle", "rectangle", "triangle", "star", "cross"]'
    assert metadata["img_size"] == "[96, 96]" and metadata["strides"] == "[32, 16, 8]"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"] and session.get_inputs()[0].shape == [1, 3, 96, 96]
    assert [o.name for o in session.get_outputs()] == ["output"]
    torch.manual_seed(1)
    image = torch.rand(1, 3, 96, 96)
    (theirs,) = session.run(None, {"images": image.numpy()})
    model, _ = load_model(trained_checkpoint)
    with torch.inference_mode():
        ours = model(image).numpy()  # the unfused model: fusing is part of what is checked
    assert theirs.shape == ours.shape == (1, 3 * (9 + 36 + 144), 10)
    assert np.abs(theirs[..., :4] - ours[..., :4]).max() <= 1e-3  # pixels, of boxes up to ~100 px
    assert np.abs(theirs[..., 4:] - ours[..., 4:]).max() <= 1e-5  # probabilities


def test_onnx_export_without_onnx_is_a_clear_error(trained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an environment without the package gives
    with pytest.raises(ExportError, match=r"ONNX export needs the onnx package: pip install onnx \(or pip install"):
        export_onnx(trained_checkpoint, tmp_path / "x.onnx")


def test_export_help_lists_its_flags():
    result = subprocess.run([sys.executable, str(REPO / "export.py"), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for flag in ("--weights", "--cfg", "--names", "--include", "--img-size", "--out", "--opset"):
        assert flag in result.stdout


def test_export_writes_beside_the_weights_by_default_and_names_files_by_their_stem(tmp_path, monkeypatch):
    import export
    from yolov3.model import Darknet

    weights = save_random_checkpoint(tmp_path / "run" / "best.pt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert export.main(["--weights", str(weights)]) == 0
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"best.cfg", "best.weights", "best.names"}
    assert not any((tmp_path / "elsewhere").iterdir())
    paths = export_darknet(weights, tmp_path / "out")
    assert paths["cfg"] == tmp_path / "out" / "best.cfg" and paths["weights"].name == "best.weights"
    assert export_darknet(Darknet(REPO / "cfg" / "yolov3-tiny.cfg"), tmp_path / "o2")["cfg"].name == "model.cfg"


def test_export_py_img_size_reaches_the_onnx_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    import export

    weights = save_random_checkpoint(tmp_path / "tiny.pt")
    assert export.main(["--weights", str(weights), "--out", str(tmp_path / "o"), "--include", "onnx",
                        "--img-size", "64"]) == 0
    graph = onnx.load(str(tmp_path / "o" / "tiny.onnx"))
    assert {e.key: e.value for e in graph.metadata_props}["img_size"] == "[64, 64]"
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]


def test_export_checks_sizes_and_names_keeps_the_callers_model_and_honours_opset(tmp_path):
    import os

    from conftest import MINIMAL_CFG
    from yolov3.model import Darknet

    model = Darknet(MINIMAL_CFG)
    with pytest.raises(ExportError, match="img_size must be a positive multiple"):
        export_darknet(model, tmp_path / "zero", img_size=0)
    with pytest.raises(ExportError, match="3 class names for a model with 2 classes"):
        export_darknet(model, tmp_path / "names", names=["a", "b", "c"])
    before = model.module_list[0].bn.running_var.clone()
    export_darknet(model, tmp_path / "eps", bn_eps=1e-6)
    assert torch.equal(model.module_list[0].bn.running_var, before)  # the caller's model is not changed
    (tmp_path / "m.cfg").write_text(MINIMAL_CFG)  # 2 classes in the cfg, 3 in the weights and the names
    Darknet(str(tmp_path / "m.cfg"), num_classes=3).save_darknet_weights(tmp_path / "m.weights")
    paths = export_darknet(tmp_path / "m.weights", tmp_path / "three", cfg=tmp_path / "m.cfg", names=["a", "b", "c"])
    assert parse_cfg(paths["cfg"]).layers[-1].options["classes"] == 3
    assert paths["names"].read_text() == "a\nb\nc\n"
    onnx = pytest.importorskip("onnx")
    (tmp_path / "onnx").mkdir()
    export_onnx(model, tmp_path / "onnx" / "m.onnx", opset=16)
    assert sorted(os.listdir(tmp_path / "onnx")) == ["m.onnx"]  # no temporary file left beside it
    opsets = {o.domain: o.version for o in onnx.load(str(tmp_path / "onnx" / "m.onnx")).opset_import}
    assert opsets[""] == 16
