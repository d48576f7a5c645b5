"""Darknet model: sizes and counts against published numbers, decode against hand arithmetic, Darknet pool edges,
class-count rewrite, fusion, checkpoint loading."""
from __future__ import annotations

import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

from yolov3.model import ConvLayer, Darknet, MaxPoolLayer, load_model


def _meta_model(cfg_dir, name: str, **kwargs) -> Darknet:
    """A model on the meta device: shapes and counts without allocating (or initialising) 62 M parameters."""
    with torch.device("meta"):
        return Darknet(cfg_dir / name, **kwargs)


def test_yolov3_parameter_count_and_attributes(cfg_dir):
    model = _meta_model(cfg_dir, "yolov3.cfg")
    num_params, _ = model.info(416)
    assert num_params == 61_949_149  # published trainable count for yolov3.cfg, 80 classes
    assert model.input_size == (608, 608)
    assert model.strides == [32, 16, 8] and model.num_classes == 80
    assert [layer.anchors.shape for layer in model.yolo_layers] == [(3, 2)] * 3
    assert [c.out_channels for c in model.head_convs] == [255, 255, 255]
    assert all(c.bias is not None for c in model.head_convs)
    assert [layer.ignore_thresh for layer in model.yolo_layers] == [0.7, 0.7, 0.7]


def test_batchnorm_running_statistics_move_three_percent_a_batch():
    # BN_MOMENTUM .03 (Darknet's .01 tracks too slowly for short CPU runs) and Darknet's eps 1e-5
    layer = ConvLayer(3, 4, 1, 1, 0, batch_normalize=True, activation="linear").train()
    x = torch.rand(8, 3, 5, 5)
    with torch.no_grad():
        batch_mean = layer.conv(x).mean(dim=(0, 2, 3))
        layer(x)
    torch.testing.assert_close(layer.bn.running_mean, 0.03 * batch_mean)  # from 0: (1 - .03) * 0 + .03 * mean
    assert layer.bn.eps == 1e-5


def test_tiny_anchors_follow_masks(cfg_dir):
    model = Darknet(cfg_dir / "yolov3-tiny.cfg")
    # tiny: mask 3,4,5 on the stride-32 head, 0,1,2 on the stride-16 head; anchors in input pixels
    assert model.yolo_layers[0].anchors.tolist() == [[81, 82], [135, 169], [344, 319]]
    assert model.yolo_layers[1].anchors.tolist() == [[10, 14], [23, 27], [37, 58]]
    assert model.strides == [32, 16]


@pytest.mark.parametrize("name, expected_bflops", [("yolov3.cfg", 65.9), ("yolov3-tiny.cfg", 5.6)])
def test_bflops_match_darknet(cfg_dir, name, expected_bflops):
    # Darknet prints these totals (2 x multiply-adds over conv layers) at 416 x 416
    _, gflops = _meta_model(cfg_dir, name).info(416)
    assert gflops == pytest.approx(expected_bflops, abs=0.05)


def test_flops_of_first_layer_by_hand(cfg_dir):
    # tiny layer 0: 3 -> 16 channels, 3x3, at 416x416: 2 * (3*3*3) * 16 * 416 * 416 = 149,520,384 FLOPs
    model = _meta_model(cfg_dir, "yolov3-tiny.cfg")
    model.module_list = model.module_list[:1]
    assert model.info(416)[1] == pytest.approx(149_520_384 / 1e9, rel=1e-12)


@pytest.mark.parametrize("height, width", [(64, 64), (96, 160), (256, 192)])
def test_shapes_train_and_eval_small(cfg_dir, height, width):
    torch.manual_seed(0)
    model = Darknet(cfg_dir / "yolov3-small.cfg")
    images = torch.rand(2, 3, height, width)
    raw_maps = model.train()(images)
    expected = [(2, 3, height // s, width // s, 10) for s in (32, 16, 8)]  # 3 anchors, 5 + 5 classes
    assert [tuple(r.shape) for r in raw_maps] == expected
    with torch.no_grad():
        decoded, raw_eval = model.eval()(images, return_raw=True)
    cells = sum(3 * (height // s) * (width // s) for s in (32, 16, 8))
    assert decoded.shape == (2, cells, 10)
    assert [tuple(r.shape) for r in raw_eval] == expected
    # eval output is exactly the concatenated per-layer decode of the raw maps, in cfg order
    again = torch.cat([layer.decode(raw) for layer, raw in zip(model.yolo_layers, raw_eval)], dim=1)
    assert torch.equal(decoded, again)


def test_shapes_tiny_non_square(cfg_dir):
    model = Darknet(cfg_dir / "yolov3-tiny.cfg").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 96, 160))
    # strides 32 and 16: 3 * (3*5) + 3 * (6*10) = 45 + 180
    assert out.shape == (1, 225, 85)


def test_input_size_errors(cfg_dir):
    model = Darknet(cfg_dir / "yolov3-small.cfg")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"expected input \(B, 3, H, W\)"):
        model(torch.rand(1, 1, 64, 64))


def test_decode_by_hand(cfg_dir):
    model = Darknet(cfg_dir / "yolov3-small.cfg")
    layer = model.yolo_layers[2]  # stride 8, anchors 10x12, 16x24, 24x16
    raw = torch.zeros(1, 3, 4, 6, 10)  # (B, A, H, W, 5+C)
    raw[0, 1, 2, 5, :5] = torch.tensor([math.log(3.0), 0.0, math.log(2.0), 0.0, 0.0])
    decoded = layer.decode(raw)  # (1, 3*4*6, 10)
    # row of anchor 1, y 2, x 5 in (A, H, W) order: 1*24 + 2*6 + 5 = 41
    cx, cy, w, h, obj = decoded[0, 41, :5].tolist()
    # sigmoid(log 3) = 3/4 -> cx = (0.75 + 5) * 8 = 46; cy = (0.5 + 2) * 8 = 20; w = 2 * 16; h = 1 * 24
    assert (cx, cy, w, h, obj) == pytest.approx((46.0, 20.0, 32.0, 24.0, 0.5), abs=1e-5)
    # all-zero cell (anchor 0, y 0, x 0): centre of the first cell, the anchor's size, probabilities 0.5
    assert decoded[0, 0].tolist() == pytest.approx([4.0, 4.0, 10.0, 12.0] + [0.5] * 6)
    key = (4, 6, raw.device, raw.dtype)
    grid = layer._grid_cache[key]
    layer.decode(raw)
    assert layer._grid_cache[key] is grid  # cached, not rebuilt


def test_maxpool_size2_stride1_edge_takes_max_of_existing_cells():
    pool = MaxPoolLayer(size=2, stride=1, padding=1)  # yolov3-tiny's last pool
    x = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]).view(1, 1, 2, 2)
    # windows: (0,0) {-1,-2,-3,-4} -> -1; (0,1) {-2,-4} -> -2; (1,0) {-3,-4} -> -3; (1,1) {-4} -> -4.
    # A zero pad would give 0 at every edge output instead.
    assert pool(x).view(2, 2).tolist() == [[-1.0, -2.0], [-3.0, -4.0]]


def test_maxpool_spp_size5_keeps_size_with_neg_inf_padding():
    pool = MaxPoolLayer(size=5, stride=1, padding=4)
    x = -(torch.arange(16.0).view(1, 1, 4, 4) + 1)  # x[i, j] = -(4i + j) - 1, largest at the top-left
    # window rows max(0, i-2)..min(3, i+2): the max sits at (max(0, i-2), max(0, j-2)) -> -(4*that_i + that_j) - 1
    expected = [[-1, -1, -1, -2], [-1, -1, -1, -2], [-1, -1, -1, -2], [-5, -5, -5, -6]]
    assert pool(x).view(4, 4).tolist() == expected


def test_maxpool_stride2_on_odd_size_follows_darknet():
    pool = MaxPoolLayer(size=2, stride=2, padding=1)
    x = -torch.arange(25.0).view(1, 1, 5, 5) - 1  # all negative
    out = pool(x).view(3, 3)
    # Darknet: out = (5 + 1 - 2) // 2 + 1 = 3; the last row/column windows hold one real row/column
    assert out[2].tolist() == [-21.0, -23.0, -25.0]  # x[4, 0], x[4, 2], x[4, 4]
    assert out[0].tolist() == [-1.0, -3.0, -5.0]


def test_num_classes_rewrite(cfg_dir):
    model = Darknet(cfg_dir / "yolov3-tiny.cfg", num_classes=3)
    assert model.num_classes == 3 and all(layer.num_classes == 3 for layer in model.yolo_layers)
    assert [c.out_channels for c in model.head_convs] == [24, 24]  # 3 * (5 + 3)
    assert model.cfg_text.count("classes=3") == 2 and "filters=24" in model.cfg_text
    rebuilt = Darknet(model.cfg_text)  # the stored text alone rebuilds the same model
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape[-1] == 8


def test_train_mode_backward_reaches_first_layer(cfg_dir):
    torch.manual_seed(0)
    model = Darknet(cfg_dir / "yolov3-small.cfg").train()
    loss = sum(raw.square().mean() for raw in model(torch.rand(2, 3, 64, 64)))
    loss.backward()
    first = model.module_list[0].conv.weight.grad
    assert first is not None and first.abs().sum() > 0


def test_fuse_keeps_outputs(cfg_dir, randomize):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 128)
    model = randomize(Darknet(cfg_dir / "yolov3-small.cfg"), images, seed=3)
    bn = model.module_list[0].bn
    assert bn.running_var.min() < 0.5 or bn.running_var.max() > 2  # the statistics are far from the identity
    with torch.no_grad():
        before = model(images)
        model.fuse()
        after = model(images)
    assert model.is_fused and not any(isinstance(m, ConvLayer) and m.bn is not None for m in model.module_list)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
    with pytest.raises(ValueError, match="fused"):
        model.save_darknet_weights("unused.weights")


def test_load_model_checkpoint_and_errors(cfg_dir, tmp_path, randomize):
    images = torch.rand(1, 3, 64, 64)
    model = randomize(Darknet(cfg_dir / "yolov3-small.cfg", num_classes=2), images, seed=1)
    checkpoint = {"model": model.state_dict(), "cfg_text": model.cfg_text, "names": ["a", "b"], "epoch": 3}
    torch.save(checkpoint, tmp_path / "best.pt")
    loaded, ckpt = load_model(tmp_path / "best.pt")
    assert not loaded.training and ckpt["names"] == ["a", "b"] and loaded.num_classes == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    with pytest.raises(ValueError, match="2 classes, but num_classes=5"):
        load_model(tmp_path / "best.pt", num_classes=5)
    # --cfg beside a .pt: the same cfg (the class count aside) is accepted, another one refused
    same, _ = load_model(tmp_path / "best.pt", cfg=cfg_dir / "yolov3-small.cfg")
    assert same.num_classes == 2
    with pytest.raises(ValueError, match="the checkpoint was trained with a different cfg than .*yolov3-tiny.cfg"):
        load_model(tmp_path / "best.pt", cfg=cfg_dir / "yolov3-tiny.cfg")

    model.save_darknet_weights(tmp_path / "small.weights")
    with pytest.raises(ValueError, match=r"small\.weights: Darknet weights need the model cfg"):
        load_model(tmp_path / "small.weights")
    from_darknet, none = load_model(tmp_path / "small.weights", cfg=cfg_dir / "yolov3-small.cfg", num_classes=2)
    assert none is None
    with torch.no_grad():
        torch.testing.assert_close(from_darknet(images), model(images), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    # a text file, or a checkpoint renamed away from .pt, is named for what it is not, not asked for a cfg
    (tmp_path / "notes.txt").write_text("these are my notes about the run\n")
    shutil.copyfile(tmp_path / "best.pt", tmp_path / "best.bin")
    for name in ("notes.txt", "best.bin"):
        with pytest.raises(ValueError, match=rf"{name}: neither a train\.py checkpoint \(\.pt\) nor a Darknet"):
            load_model(tmp_path / name, cfg=cfg_dir / "yolov3-small.cfg")


@pytest.mark.parametrize("where", ["pt", "darknet"])
def test_load_model_refuses_non_finite_weights_by_name(cfg_dir, tmp_path, where):
    """A diverged model would only give garbage boxes or NaN metrics: val.py and detect.py must not use it."""
    model = Darknet(cfg_dir / "yolov3-small.cfg", num_classes=2)
    broken = [name for name, _ in model.named_buffers() if name.endswith("running_var")][3]
    model.get_buffer(broken)[5] = float("nan")
    if where == "pt":
        path = tmp_path / "best.pt"
        torch.save({"model": model.state_dict(), "cfg_text": model.cfg_text}, path)
        args = {}
    else:
        path = tmp_path / "diverged.weights"
        model.save_darknet_weights(path)
        args = {"cfg": cfg_dir / "yolov3-small.cfg", "num_classes": 2}
    with pytest.raises(ValueError, match=rf"{path.name}: the weights hold NaN or infinite values \(first in '"
                                         rf"{re.escape(broken)}'\)"):
        load_model(path, **args)


def test_load_model_refuses_a_model_entry_that_is_not_a_state_dict(cfg_dir, tmp_path):
    model = Darknet(cfg_dir / "yolov3-small.cfg", num_classes=2)
    torch.save({"model": {"weights": [1, 2]}, "cfg_text": model.cfg_text}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="odd.pt: 'model' is not a state dict of tensors"):
        load_model(tmp_path / "odd.pt")


@pytest.mark.parametrize("size, stride, padding", [(2, 2, 1), (2, 2, 0), (2, 1, 1), (3, 2, 2), (5, 1, 4), (13, 1, 12),
                                                   (3, 1, 1), (1, 1, 0)])
@pytest.mark.parametrize("height, width", [(26, 26), (13, 13), (8, 9), (5, 7)])
def test_maxpool_fast_paths_equal_explicit_neg_inf_padding(size, stride, padding, height, width):
    # the layer avoids padding copies (max_pool2d's own padding, ceil_mode, strided maxima at inference); every
    # path must equal the definition: pad -inf (before = padding // 2, the rest after), then max_pool2d
    pool = MaxPoolLayer(size, stride, padding)
    if height + padding < size or width + padding < size:
        pytest.skip("window larger than the padded map")
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width)) - 1
    expected = F.max_pool2d(F.pad(x, pool.pad, value=float("-inf")), size, stride)
    for tensor in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            assert torch.equal(pool(tensor), expected)
        grad_input = tensor.clone().requires_grad_(True)
        assert torch.equal(pool(grad_input), expected)  # the autograd path (training)


def test_an_input_width_that_is_not_a_multiple_of_the_stride_is_named():
    with pytest.raises(ValueError, match="height 128 and width 100 must be multiples of 32"):
        Darknet("cfg/yolov3-small.cfg")(torch.rand(1, 3, 128, 100))


def test_structure_checks_default_width_shortcut_activation_and_checkpoint_checks(tmp_path):
    import torch.nn.functional as F

    from conftest import MINIMAL_CFG
    from yolov3.model import default_img_size

    assert default_img_size(Darknet(MINIMAL_CFG.replace("width=64", "width=96")), None) == 96  # [net] width
    head = "\n[convolutional]\nsize=1\nstride=1\npad=1\nfilters=21\nactivation=linear\n\n[yolo]\nmask = 0,1,2\n" \
           "anchors = 10,13, 16,30, 33,23\nclasses=2\nnum=3\n"
    convs = "[net]\nwidth=64\nheight=64\n\n[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\n" \
            "activation=leaky\n\n[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n" \
            "activation=leaky\n"
    with pytest.raises(ValueError, match="routed layers must have the same spatial size"):
        Darknet(convs + "\n[route]\nlayers=0,1\n" + head)
    with pytest.raises(ValueError, match="a shortcut needs both equal"):
        Darknet(convs + "\n[shortcut]\nfrom=0\nactivation=linear\n" + head)
    leaky = ("[net]\nwidth=64\nheight=64\n\n[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n"
             "activation=leaky\n\n[convolutional]\nbatch_normalize=1\nfilters=8\nsize=1\nstride=1\npad=1\n"
             "activation=linear\n\n[shortcut]\nfrom=-2\nactivation=leaky\n" + head)
    torch.manual_seed(0)
    model = Darknet(leaky).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model.module_list[0](x)
        b = model.module_list[1](a)
        assert (a + b < 0).any()
        yolo = model.module_list[4]
        expected = yolo.decode(yolo(model.module_list[3](F.leaky_relu(a + b, 0.1))))
        torch.testing.assert_close(model(x), expected)
    small = Darknet("cfg/yolov3-small.cfg", num_classes=2)
    state = small.state_dict()
    del state["module_list.0.conv.weight"]
    torch.save({"model": state, "cfg_text": small.cfg_text}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="do not fit the checkpoint's own cfg"):
        load_model(tmp_path / "missing.pt")
    torch.save({"model": small.state_dict()}, tmp_path / "nocfg.pt")
    with pytest.raises(ValueError, match="expected a dict with 'model' and 'cfg_text'"):
        load_model(tmp_path / "nocfg.pt")


def test_the_decode_grid_follows_the_width_too():
    layer = Darknet("cfg/yolov3-small.cfg").yolo_layers[2]
    layer.decode(torch.zeros(1, 3, 4, 6, 10))
    decoded = layer.decode(torch.zeros(1, 3, 4, 8, 10))  # the same height, another width
    assert decoded.shape[1] == 3 * 4 * 8
    assert decoded[0, 7, :2].tolist() == [(0.5 + 7) * layer.stride, 0.5 * layer.stride]
