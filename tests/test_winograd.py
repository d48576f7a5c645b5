"""Winograd F(m x m, 3 x 3) against torch's direct convolution (an independent implementation), and by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yolov3.winograd import _MATRICES, TILE_SIZES, transform_weights, winograd_conv3x3


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("m", TILE_SIZES)
@pytest.mark.parametrize("batch, channels, filters, height, width", [
    (1, 64, 32, 26, 26),  # whole tiles for m = 2, padded tiles for m = 4
    (2, 16, 24, 13, 13),  # odd sizes: padded tiles in both, batch > 1
    (1, 8, 8, 5, 19),  # non-square, one tile row for m = 4
    (3, 3, 5, 1, 1),  # a single cell
])
def test_matches_direct_convolution(m, batch, channels, filters, height, width):
    generator = torch.Generator().manual_seed(m * 100 + channels)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(filters, channels, 3, 3, generator=generator) / (9 * channels) ** 0.5
    bias = torch.randn(filters, generator=generator)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)  # float64 reference
    for layout in (torch.contiguous_format, torch.channels_last):
        out = winograd_conv3x3(x.contiguous(memory_format=layout), transform_weights(weight, m), bias, m)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
        # float32 Winograd: a few 1e-6 of the output scale for F(2x2), ~1e-5 for F(4x4) (entries up to 8)
        assert _relative_error(out.double(), ref) < (2e-6 if m == 2 else 2e-5)
    no_bias = winograd_conv3x3(x, transform_weights(weight, m), None, m)
    assert _relative_error(no_bias.double(), ref - bias.double().view(1, -1, 1, 1)) < (2e-6 if m == 2 else 2e-5)


def test_by_hand_single_channel():
    # all-ones 3x3 filter on a 2x2 input of 1..4 with zero padding: every output is the sum of the whole input (10);
    # a centre-only filter returns the input itself
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    ones = torch.ones(1, 1, 3, 3)
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 1
    for m in TILE_SIZES:
        assert torch.allclose(winograd_conv3x3(x, transform_weights(ones, m), None, m), torch.full((1, 1, 2, 2), 10.0))
        assert torch.allclose(winograd_conv3x3(x, transform_weights(centre, m), torch.tensor([0.5]), m), x + 0.5)


@pytest.mark.parametrize("m", TILE_SIZES)
def test_weight_transform_is_g_w_gt_per_filter(m):
    # U[i*t+j, c, k] = sum over a, b of G[i, a] w[k, c, a, b] G[j, b], here per filter in float64 (the definition),
    # against the one float32 product the module computes
    g = _MATRICES[m][1]
    t = m + 2
    weight = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(m))
    expected = torch.einsum("ia,kcab,jb->ijck", g, weight.double(), g).reshape(t * t, 5, 6)
    got = transform_weights(weight, m)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.allclose(got.double(), expected, rtol=1e-6, atol=1e-7)


def test_weight_transform_shape_and_errors():
    weight = torch.randn(7, 5, 3, 3)
    assert transform_weights(weight, 2).shape == (16, 5, 7)
    assert transform_weights(weight, 4).shape == (36, 5, 7)
    with pytest.raises(ValueError, match="one of"):
        transform_weights(weight, 3)
    with pytest.raises(ValueError, match="3x3 filters"):
        transform_weights(torch.randn(7, 5, 1, 1), 2)
    with pytest.raises(ValueError, match="do not match"):
        winograd_conv3x3(torch.randn(1, 4, 8, 8), transform_weights(weight, 2), None, 2)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(2, 3, 10, 6), (2, 3, 6, 10), (1, 3, 8, 5), (1, 3, 8, 6)])
def test_batched_non_square_maps_and_one_side_padded_match_conv2d(m, shape):
    torch.manual_seed(0)
    x, w, b = torch.randn(shape), torch.randn(4, 3, 3, 3), torch.randn(4)
    expected = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    got = winograd_conv3x3(x, transform_weights(w, m), b, m)
    assert got.shape == expected.shape
    error = ((got.double() - expected).abs().max() / expected.abs().max()).item()
    assert error < (2e-6 if m == 2 else 2e-5)
