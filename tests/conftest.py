"""Shared pytest setup: the ``slow`` marker, the repository on sys.path, and model helpers used by several files."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # let `pytest tests/...` import the package from any working directory
    sys.path.insert(0, str(REPO_ROOT))

CFG_DIR = REPO_ROOT / "cfg"
OFFICIAL_CFGS = ("yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg")
ALL_MODEL_CFGS = OFFICIAL_CFGS + ("yolov3-small.cfg",)


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
