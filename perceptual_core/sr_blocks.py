"""Exact block-wise super-resolution into an integer image: memory bounded by the block, not the image.

An SR output pixel depends only on the LR pixels within the method's receptive field. SRNet: the 9x9
head and the 4 residual blocks' eight 3x3 convolutions reach 12 LR px, the upsampling convolutions
and the 9x9 tail add under 2 more, the bicubic skip 2; SRCNN's protocol: MATLAB bicubic (2 LR px)
then 9-1-5 convolutions (6 HR px). So the LR image is cut into cores, each run with ``HALO`` LR
pixels of real context on every side (clipped at the image border, where the untiled forward sees
the same border), and only the core's output is kept: the untiled result to float rounding, with no
blending (tests/test_sr_blocks.py: at most one 8-bit level, on fewer than 0.1% of pixels).

Why not tiling.tiled_forward: that blends float tiles into a float32 copy of the whole output
(12 bytes per output pixel for RGB), which is what made a x4 upscale of a 2048² photo cost gigabytes.
Here every block is quantised at once into the preallocated uint8/uint16 result (3 or 6 bytes per
output pixel), and ``tile`` bounds a block's OUTPUT side, halo included: SRNet's activations cost
about 950 bytes per output pixel in the plain fp32 network and about 2.4 KB in the CPU eager engine
(measured), so the default 640 (params batch.upscale_tile) keeps a block near 1 GB whatever the
scale, where bounding the input side would grow it with scale squared.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["HALO", "upscale_blockwise", "min_tile", "check_tile"]

#: LR pixels of context around each block's core: more than SRNet's and SRCNN's receptive radius.
HALO = 16
_MIN_CORE = 8  # LR pixels: below this a block is mostly halo (wasted work)


def min_tile(scale: int, halo: int = HALO) -> int:
    """The smallest output block side that leaves a core of _MIN_CORE LR pixels."""
    return (_MIN_CORE + 2 * halo) * scale


def check_tile(tile, scale: int, name: str = "--tile", halo: int = HALO) -> None:
    """ValueError naming ``name`` unless ``tile`` is 0/None (never) or at least ``min_tile(scale)``."""
    if tile and tile < min_tile(scale, halo):
        raise ValueError(f"{name} must be 0 (never) or >= {min_tile(scale, halo)} output pixels for x{scale} "
                         f"(a {halo} px halo on each side of an LR block), got {tile}")


def _split(n: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """[0, n) as ceil(n / core) balanced cores (c0, c1), each with an extent (e0, e1) of the same length
    min(n, core + 2 * halo) holding it with >= halo pixels of context on each side, or the image border:
    extents at the border shift inward rather than shrink, so every block has one shape (an engine
    keeps one set of buffers, and no block is cheaper than it looks)."""
    b = min(n, core + 2 * halo)
    k = 1 if n <= b else -(-n // core)
    cuts = [round(i * n / k) for i in range(k + 1)]
    return [(c0, c1, e0, e0 + b) for c0, c1 in zip(cuts, cuts[1:]) for e0 in [min(max(0, c0 - halo), n - b)]]


def upscale_blockwise(fn: Callable[[int, int, int, int], np.ndarray], lr_hw: tuple[int, int], scale: int, *,
                      tile: int | None, halo: int = HALO) -> np.ndarray:
    """The (scale*h, scale*w, ...) array assembled block by block from ``fn(r0, r1, c0, c1)``, the
    upscaled LR box [r0, r1) x [c0, c1) as a (scale*(r1-r0), scale*(c1-c0), ...) array.

    tile: the largest block output side including the halo; None, 0, or an image whose output fits
    in one tile: one call on the whole image. Raises ValueError naming ``tile`` when it is too small
    for this scale (``min_tile``)."""
    h, w = lr_hw
    s = scale
    if not tile or max(h, w) * s <= tile:
        return fn(0, h, 0, w)
    check_tile(tile, s, "tile", halo)
    core = tile // s - 2 * halo
    out = None
    for r0, r1, e0, e1 in _split(h, core, halo):
        for c0, c1, f0, f1 in _split(w, core, halo):
            y = fn(e0, e1, f0, f1)
            if y.shape[:2] != (s * (e1 - e0), s * (f1 - f0)):
                raise RuntimeError(f"block output {y.shape[:2]} is not x{s} of its input "
                                   f"{(e1 - e0, f1 - f0)}")
            if out is None:  # pages are touched as blocks land
                out = np.empty((s * h, s * w) + y.shape[2:], y.dtype)
            out[s * r0:s * r1, s * c0:s * c1] = y[s * (r0 - e0):s * (r1 - e0), s * (c0 - f0):s * (c1 - f0)]
    return out
