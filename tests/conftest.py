"""Shared pytest setup: the ``slow`` marker, the repository on sys.path, and model helpers used by several files."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable

# One thread per test process, set before torch starts its pools: on a 2-core machine two busy processes with two
# threads each made a 4 s fixture take 150 s (OpenMP threads spin-waiting for a core). Subprocesses inherit this.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# The fast path's preparation cache (yolov3/prepcache.py) lives in the user's home: no test reads or writes it there;
# the cache's own tests point it at a temporary file.
os.environ["YOLOV3_PREP_CACHE"] = "off"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Ctrl-C as an interactive shell gives it: a suite started in the background (nohup, `cmd &` in a script, some CI
# runners) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so the tests of Ctrl-C
# (train.py's and ablate.py's, and their child processes, which inherit an ignored SIGINT across exec) would test
# nothing. A handler installed here is reset to the default in every child at exec.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # let `pytest tests/...` import the package from any working directory
    sys.path.insert(0, str(REPO_ROOT))

CFG_DIR = REPO_ROOT / "cfg"
OFFICIAL_CFGS = ("yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg")
ALL_MODEL_CFGS = OFFICIAL_CFGS + ("yolov3-small.cfg",)


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Each test starts from the same global random state, whatever ran before it: a test that builds a model with
    random weights or draws from numpy's or Python's global generator gives the same result alone, in its file or
    in the whole suite (one did not: its random model found a class in one order of tests and not in another)."""
    import random

    import numpy as np

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than ~10 s on a 2-core CPU (still run by default)")


@torch.no_grad()
def randomize_darknet(model: torch.nn.Module, calibration_images: torch.Tensor, seed: int = 0,
                      beta_range: tuple = (-1.5, 0.5)) -> torch.nn.Module:
    """Give a Darknet model random weights whose activations stay O(1) at any depth, and often go negative.

    Conv weights are He-scaled normal (head convs x0.3 so exp(tw) stays moderate). BatchNorm running statistics are
    first measured on ``calibration_images`` (so depth cannot blow activations up), then perturbed: means shifted by
    0.1 std, variances scaled by U(0.7, 1.4); gamma ~ U(0.5, 1.5), beta ~ U(beta_range) — mostly negative, so
    many leaky outputs (and therefore pool inputs) are negative. Leaves the model in eval mode.
    """
    from yolov3.model import ConvLayer

    generator = torch.Generator().manual_seed(seed)
    conv_layers = [m for m in model.module_list if isinstance(m, ConvLayer)]
    for layer in conv_layers:
        weight = layer.conv.weight
        fan_in = weight[0].numel()
        weight.copy_(torch.randn(weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
        if layer.bn is None:
            weight.mul_(0.3)
            layer.conv.bias.copy_(torch.randn(layer.conv.bias.shape, generator=generator) * 0.5)
        else:
            layer.bn.reset_running_stats()
            layer.bn.momentum = None  # cumulative average: one pass leaves exactly this batch's statistics
    model.train()
    model(calibration_images)
    for layer in conv_layers:
        bn = layer.bn
        if bn is None:
            continue
        channels = bn.num_features
        bn.running_mean.add_(torch.randn(channels, generator=generator) * 0.1 * bn.running_var.sqrt())
        bn.running_var.mul_(torch.empty(channels).uniform_(0.7, 1.4, generator=generator))
        bn.weight.copy_(torch.empty(channels).uniform_(0.5, 1.5, generator=generator))
        bn.bias.copy_(torch.empty(channels).uniform_(*beta_range, generator=generator))
        bn.momentum = 0.03
    return model.eval()


@pytest.fixture
def randomize() -> Callable[..., torch.nn.Module]:
    """The :func:`randomize_darknet` helper."""
    return randomize_darknet


@pytest.fixture(scope="session")
def cfg_dir() -> Path:
    return CFG_DIR


EASY_SHAPES = {"train_images": 8, "val_images": 4, "img_size": 128, "min_objects": 1, "max_objects": 2, "seed": 3}


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory) -> Path:
    """A tiny generated shapes dataset (8 train, 4 val images of 128 px, 1-2 objects each): its data YAML."""
    import yaml

    from yolov3.data import load_data_yaml

    root = tmp_path_factory.mktemp("easy")
    data_yaml = root / "easy.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": "shapes", "train": "images/train", "val": "images/val", "nc": 5,
                                         "names": ["circle", "rectangle", "triangle", "star", "cross"],
                                         "generate": EASY_SHAPES}))
    load_data_yaml(data_yaml)
    return data_yaml


@pytest.fixture(scope="session")
def trained_checkpoint(easy_data, tmp_path_factory) -> Path:
    """A .pt (train.py's checkpoint format) of the small model fitted to ``easy_data``'s 8 training images:
    a real detector of those images for detect/val tests, in a few seconds of CPU. train.py itself is covered by
    test_train.py; here the project's own model, loss and loader are driven directly to keep the fixture fast."""
    from yolov3.config import Config, apply_overrides, to_dict
    from yolov3.data import create_dataloader, load_data_yaml
    from yolov3.loss import YOLOLoss, apply_objectness_prior
    from yolov3.model import Darknet

    torch.manual_seed(0)
    data = load_data_yaml(easy_data)
    config = apply_overrides(Config(), ["train.img_size=128"])
    model = Darknet(str(CFG_DIR / "yolov3-small.cfg"), num_classes=len(data["names"]))
    apply_objectness_prior(model, 0.01)  # skips the phase where the no-object term first pushes every cell down
    loss_fn = YOLOLoss.from_model(model, config.loss)
    loader, _ = create_dataloader(data, "train", 128, 8, None, workers=0, seed=0, shuffle=False, progress=False)
    images, targets, _, _ = next(iter(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        loss, _terms = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()
    # 80 steps leave BatchNorm's running statistics (momentum .03) mostly at their initial values; recompute them
    # exactly on the batch (momentum None = cumulative average over one pass) so eval mode matches training
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model(images)
    path = tmp_path_factory.mktemp("trained") / "easy.pt"
    torch.save({"model": model.state_dict(), "cfg_text": model.cfg_text, "names": data["names"],
                "config": to_dict(config), "epoch": TRAIN_STEPS}, path)
    return path


TRAIN_STEPS = 80  # enough for the small model to fit 8 easy images (final loss well below 1% of the initial)


# the smallest valid model cfg (a 64 px input, one conv, a head and a [yolo] layer with 2 classes), shared by tests
MINIMAL_CFG = """[net]
width=64
height=64

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,13, 16,30, 33,23
classes=2
num=3
"""


class CodeRunningPickle:
    """Unpickling this runs code: it creates the marker file, as a malicious checkpoint or npz would."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def record_prepared_models(monkeypatch, module) -> list:
    """Wrap ``module.prepare_for_inference`` (detect.py's, val.py's) to keep each model it returns: what ran."""
    prepared = []
    real_prepare = module.prepare_for_inference

    def keep_prepared(*args, **kwargs):
        prepared.append(real_prepare(*args, **kwargs))
        return prepared[-1]

    monkeypatch.setattr(module, "prepare_for_inference", keep_prepared)
    return prepared


def save_random_checkpoint(path: Path) -> Path:
    """A train.py-style ``.pt`` of a yolov3-tiny with random weights and two classes, 'a' and 'b'."""
    from yolov3.model import Darknet

    model = Darknet(REPO_ROOT / "cfg" / "yolov3-tiny.cfg", num_classes=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "cfg_text": model.cfg_text, "names": ["a", "b"]}, path)
    return path
