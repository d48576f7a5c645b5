"""Winograd convolution F(m x m, 3 x 3) for the 3x3 stride-1 convs of an inference model on CPU.

A direct 3x3 convolution spends 9 multiply-adds per output and input channel. Winograd's minimal filtering
algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016) computes an m x m output
tile from a (m+2) x (m+2) input tile with (m+2)^2 of them, so F(2x2, 3x3) needs 16 / 36 = 2.25x fewer and
F(4x4, 3x3) 36 / 144 = 4x fewer. The work becomes:

    U = G w G^T                 per filter, once            (t^2, C, K)    t = m + 2
    V = B^T d B                 per input tile              (t^2, T, C)    T = tiles in the batch
    M = V @ U                   t^2 matrix products         (t^2, T, K)    (the bulk of the FLOPs)
    Y = A^T M A                 per output tile             (m^2, T, K)

The two tile transforms are written as one matrix product each, with the Kronecker products kron(B^T, B^T) and
kron(A^T, A^T), so the whole convolution is five large torch ops instead of dozens of small ones. The bias is
added to the one entry of M that A^T M A spreads with weight 1 over every output (column 1 of both A^T is all
ones). Transform matrices are those of Lavin & Gray (interpolation points 0, +-1, +-2 for m = 4).

Float32 error grows with m (the F(4x4) matrices hold entries up to 8): measured against ``F.conv2d`` it stays
around 1e-5 relative to the output scale (tests/test_winograd.py). Every output of a tile mixes every input of
it, so a non-finite or huge input spoils its whole m x m tile, not only the outputs whose window holds it (a
trained network's activations are finite and moderate). Used by :mod:`yolov3.fastconv` (what
:meth:`yolov3.model.Darknet.optimize_for_inference` switches on); training never takes this path.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TILE_SIZES", "transform_weights", "winograd_conv3x3"]

TILE_SIZES = (2, 4)  # output tile sizes m with matrices below

# m -> (B^T (t, t), G (t, 3), A^T (m, t)), float64 so the Kronecker products below are exact before rounding
_MATRICES: Dict[int, Tuple[Tensor, Tensor, Tensor]] = {
    2: (torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64),
        torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)),
    4: (torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64),
        torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64),
        torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                     dtype=torch.float64)),
}
_KRONECKER: Dict[int, Tuple[Tensor, Tensor]] = {  # m -> (kron(B^T, B^T) (t^2, t^2), kron(A^T, A^T) (m^2, t^2)), fp32
    m: (torch.kron(bt, bt).float(), torch.kron(at, at).float()) for m, (bt, _g, at) in _MATRICES.items()
}
_KRONECKER_G: Dict[int, Tensor] = {m: torch.kron(g, g).float() for m, (_bt, g, _at) in _MATRICES.items()}  # (t^2, 9)


def _check_tile(m: int) -> None:
    if m not in _MATRICES:
        raise ValueError(f"Winograd output tile size must be one of {TILE_SIZES}, got {m}")


def transform_weights(weight: Tensor, m: int) -> Tensor:
    """Filters ``(K, C, 3, 3)`` -> Winograd domain ``(t*t, C, K)`` float32, ``t = m + 2``: ``G w G^T`` for every
    filter as one matrix product with kron(G, G), in float32 (its rounding, ~1e-7 relative, is far below what the
    float32 tile transforms lose): it runs on a job's first call, which a measuring job pays for each tile size."""
    _check_tile(m)
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected 3x3 filters (K, C, 3, 3), got {tuple(weight.shape)}")
    filters, channels = weight.shape[:2]
    t = m + 2
    # (3, 3, C, K) flattened to (9, C*K): the product's rows come out as (t*t, C, K) with no transpose after it
    flat = weight.detach().float().permute(2, 3, 1, 0).reshape(9, channels * filters)
    return torch.mm(_KRONECKER_G[m].to(weight.device), flat).view(t * t, channels, filters)


def winograd_conv3x3(x: Tensor, weights: Tensor, bias: Tensor | None, m: int) -> Tensor:
    """``F.conv2d(x, w, bias, stride=1, padding=1)`` by Winograd F(m x m, 3 x 3).

    Args:
        x: (N, C, H, W) float32 (any memory format; channels_last avoids a copy).
        weights: ``transform_weights(w, m)``, (t*t, C, K).
        bias: (K,) or None.
    Returns (N, K, H, W) float32 in channels_last memory format.
    """
    _check_tile(m)
    batch, channels, height, width = x.shape
    t = m + 2
    if weights.shape[:2] != (t * t, channels):
        raise ValueError(f"weights {tuple(weights.shape)} do not match F({m}x{m}, 3x3) on {channels} channels")
    filters = weights.shape[2]
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    padded_h, padded_w = tiles_h * m + 2, tiles_w * m + 2
    # pad 1 on top/left (the conv's padding) and enough at the bottom/right for whole tiles; NHWC memory
    padded = F.pad(x, (1, padded_w - width - 1, 1, padded_h - height - 1))
    padded = padded.contiguous(memory_format=torch.channels_last)
    tiles = batch * tiles_h * tiles_w
    # every (t, t) input tile, overlapping by 2, gathered as (t*t, T*C): one strided view, one copy
    row, col = padded_w * channels, channels  # NHWC strides of one row and one column
    d = padded.as_strided((t, t, batch, tiles_h, tiles_w, channels),
                          (row, col, padded_h * row, m * row, m * col, 1)).reshape(t * t, tiles * channels)
    kron_b, kron_a = _KRONECKER[m]
    v = torch.mm(kron_b.to(x.device), d).view(t * t, tiles, channels)  # B^T d B for every tile
    product = torch.bmm(v, weights)  # (t*t, T, K)
    if bias is not None:
        product[t + 1] += bias  # entry (1, 1): A^T M A adds it once to every output of the tile
    y = torch.mm(kron_a.to(x.device), product.view(t * t, tiles * filters))  # (m*m, T*K)
    out = torch.empty(batch, filters, tiles_h * m, tiles_w * m, dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    # scatter the (m, m) output tiles into NHWC rows: (N, Th, m, Tw, m, K) <- (m, m, N, Th, Tw, K)
    out.permute(0, 2, 3, 1).view(batch, tiles_h, m, tiles_w, m, filters).copy_(
        y.view(m, m, batch, tiles_h, tiles_w, filters).permute(2, 3, 0, 4, 1, 5))
    if tiles_h * m != height or tiles_w * m != width:
        out = out[:, :, :height, :width].contiguous(memory_format=torch.channels_last)
    return out
