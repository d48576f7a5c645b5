"""Independent oracle: OpenCV's Darknet importer reads the same cfg and the .weights we write, and must decode the
same boxes. This checks the whole chain at once: cfg semantics (padding, Darknet max-pool edges, routes, shortcuts,
upsample), the .weights layout, and the [yolo] decode, for every shipped cfg.

How OpenCV 4.x emits a [yolo] layer (region layer): one row per (y, x, anchor), rows ordered y, then x, then anchor
(our order is anchor, y, x), columns ``cx, cy, w, h`` divided by the input width/height, objectness, then
``objectness * class probability`` zeroed where it is not above 0.2 (the importer's default threshold).

Tolerances: boxes agree within 1e-4 *relative* (|ours - cv| <= 1e-4 * max(|ours|, 1 px)), objectness within 1e-4
*absolute*; class probabilities within 1e-4 absolute after dividing OpenCV's product by objectness where it is kept,
and where OpenCV zeroed the product ours must be <= 0.2 (+1e-4).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yolov3.model import ConvLayer, Darknet, MaxPoolLayer

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
    pytest.skip(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromDarknet (removed in 5.x)", allow_module_level=True)

OPENCV_BN_EPS = 1e-6  # OpenCV's Darknet importer normalises with var + 1e-6 (Darknet's CPU path: std + 1e-6; ours 1e-5)
OPENCV_CLASS_THRESHOLD = 0.2  # region layer default: class scores not above it come out as 0
BOX_RTOL = 1e-4
PROB_ATOL = 1e-4

CASES = [  # (cfg, (height, width)): small inputs keep the big models fast; all non-square except the small cfg
    pytest.param("yolov3.cfg", (128, 160), marks=pytest.mark.slow),
    pytest.param("yolov3-tiny.cfg", (320, 416)),  # large enough that optimized runs Winograd F(4x4) and F(2x2)
    pytest.param("yolov3-spp.cfg", (160, 128), marks=pytest.mark.slow),
    pytest.param("yolov3-small.cfg", (256, 256)),
]


def _pool_inputs(model: Darknet, images: torch.Tensor) -> list:
    """The input of every max-pool layer for ``images`` (list of (pool module, tensor))."""
    captured = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: captured.append((mod, args[0].clone())))
             for m in model.module_list if isinstance(m, MaxPoolLayer)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.mark.parametrize("optimized", [False, True], ids=["plain", "optimized"])
@pytest.mark.parametrize("cfg_name, size", CASES)
def test_matches_opencv(cfg_dir, tmp_path, randomize, cfg_name, size, optimized):
    """``optimized``: after ``optimize_for_inference()`` (fused BN, channels_last, Winograd and oneDNN convs), what
    detect.py and val.py run, against the same OpenCV outputs with the same tolerances."""
    torch.manual_seed(0)
    height, width = size
    images = torch.rand(2, 3, height, width)
    model = randomize(Darknet(cfg_dir / cfg_name), images, seed=1)
    for module in model.module_list:
        if isinstance(module, ConvLayer) and module.bn is not None:
            module.bn.eps = OPENCV_BN_EPS  # compare layer semantics, not the choice of epsilon

    # the weights really exercise the pool edges: some pool inputs are negative, and for every stride-1 pool
    # zero padding would give a different answer than Darknet's "max over the cells that exist"
    for pool, pool_input in _pool_inputs(model, images):
        assert (pool_input < 0).any()
        if pool.stride == 1:
            zero_padded = F.max_pool2d(F.pad(pool_input, pool.pad, value=0.0), pool.size, pool.stride)
            assert not torch.equal(zero_padded, pool(pool_input)), f"pool of size {pool.size} never sees an all-negative edge"

    model.save_darknet_weights(tmp_path / "random.weights")  # before optimizing: fused weights cannot be saved
    if optimized:
        model.optimize_for_inference()
    with torch.inference_mode():
        ours = model(images).numpy()  # (B, N, 5+C)
    net = cv2.dnn.readNetFromDarknet(str(cfg_dir / cfg_name), str(tmp_path / "random.weights"))
    net.setInput(images.numpy())
    cv_outputs = net.forward(net.getUnconnectedOutLayersNames())
    assert len(cv_outputs) == len(model.yolo_layers)

    start = 0
    for layer, cv_out in zip(model.yolo_layers, cv_outputs):
        grid_h, grid_w, anchors = height // layer.stride, width // layer.stride, layer.num_anchors
        count = anchors * grid_h * grid_w
        ours_layer = ours[:, start:start + count].reshape(2, anchors, grid_h, grid_w, -1)
        ours_layer = ours_layer.transpose(0, 2, 3, 1, 4).reshape(2 * count, -1)  # (A, H, W) -> OpenCV's (H, W, A)
        start += count
        theirs = cv_out.reshape(2 * count, -1).astype(np.float64)
        theirs[:, [0, 2]] *= width  # OpenCV normalises boxes by the input size
        theirs[:, [1, 3]] *= height

        box_error = np.abs(ours_layer[:, :4] - theirs[:, :4]) / np.maximum(np.abs(ours_layer[:, :4]), 1.0)
        assert box_error.max() <= BOX_RTOL, f"{cfg_name} stride {layer.stride}: box relative error {box_error.max():.2e}"
        objectness = ours_layer[:, 4]
        assert np.abs(objectness - theirs[:, 4]).max() <= PROB_ATOL
        assert objectness.max() - objectness.min() > 0.2  # outputs are spread, not saturated or constant

        ours_scores = objectness[:, None] * ours_layer[:, 5:]
        kept = theirs[:, 5:] > 0
        assert 0.05 < kept.mean() < 0.95  # both branches of the threshold are exercised
        kept_rows, kept_cols = np.nonzero(kept)
        class_from_cv = theirs[kept_rows, 5 + kept_cols] / theirs[kept_rows, 4]
        assert np.abs(ours_layer[kept_rows, 5 + kept_cols] - class_from_cv).max() <= PROB_ATOL
        assert ours_scores[~kept].max() <= OPENCV_CLASS_THRESHOLD + PROB_ATOL
    assert start == ours.shape[1]
