"""MATLAB-compatible bicubic resampling and the paper's SR degradation.

`imresize` reproduces MATLAB's `imresize(I, scale, 'bicubic')` (antialiased when
shrinking), which made the standard Set5/Set14/BSD100 LR images and defines the
bicubic baseline. The weights follow MATLAB's `contributions()`: cubic kernel with
a = -0.5, kernel stretched by 1/scale when shrinking, symmetric (mirror) borders,
rows normalised to sum to one. Resizing is separable: height first, then width
(MATLAB's order for equal scale factors).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix M with out = M @ in, as MATLAB computes it."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        kernel_width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(x - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based like MATLAB
    w = kernel(x[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    # Mirror out-of-range taps (MATLAB: aux = [1:in, in:-1:1]).
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), taps), idx0.ravel()), w.ravel())
    return m


def output_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return tuple(int(math.ceil(s * scale - 1e-9)) for s in size)  # type: ignore[return-value]


def imresize(
    img: torch.Tensor | np.ndarray,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    antialias: bool = True,
    round_uint8: bool = False,
) -> torch.Tensor | np.ndarray:
    """MATLAB `imresize(img, scale, 'bicubic')` on (..., H, W) tensors or (H, W[, C]) arrays.

    Numpy arrays are taken as MATLAB images (H, W, C); uint8 arrays are resized in
    float64 and rounded back to uint8 after *each* dimension, as MATLAB does for
    uint8 input. Tensors keep their float dtype; set ``round_uint8`` to emulate that
    rounding for tensors holding 0..255 values.
    """
    if isinstance(img, np.ndarray):
        was_uint8 = img.dtype == np.uint8
        arr = img.astype(np.float64)
        squeeze = arr.ndim == 2
        t = torch.from_numpy(arr if squeeze else np.moveaxis(arr, -1, 0))
        out = imresize(t, scale, size, antialias=antialias, round_uint8=was_uint8 or round_uint8)
        res = out.numpy() if squeeze else np.moveaxis(out.numpy(), 0, -1)
        return np.clip(res, 0, 255).astype(np.uint8) if was_uint8 else res
    if img.ndim < 2:
        raise ValueError(f"imresize: expected (..., H, W), got shape {tuple(img.shape)}")
    h, w = img.shape[-2:]
    if size is None:
        if scale is None or scale <= 0:
            raise ValueError(f"imresize: give a positive `scale` or a `size`, got scale={scale}")
        size = output_size((h, w), scale)
        sh = sw = float(scale)
    else:
        sh, sw = size[0] / h, size[1] / w
    dtype = img.dtype if img.is_floating_point() else torch.float64
    x = img.to(dtype)

    def q(t: torch.Tensor) -> torch.Tensor:
        return t.round().clamp(0, 255) if round_uint8 else t

    mh = torch.from_numpy(resize_matrix(h, size[0], sh, antialias)).to(dtype=dtype, device=x.device)
    mw = torch.from_numpy(resize_matrix(w, size[1], sw, antialias)).to(dtype=dtype, device=x.device)
    x = q(torch.matmul(mh, x))  # rows (height) first
    return q(torch.matmul(x, mw.T))


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    radius = max(1, int(math.ceil(truncate * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float = 1.0, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of (..., C, H, W) with replicate borders (kernel radius ceil(truncate*sigma))."""
    if sigma <= 0:
        return img
    k = gaussian_kernel1d(sigma, truncate).tolist()
    r = len(k) // 2
    # Shifted weighted sums: exact for any dtype, and far faster than float64 conv2d on CPU.
    for dim in (-2, -1):
        n = img.shape[dim]
        idx = torch.arange(-r, n + r, device=img.device).clamp_(0, n - 1)
        padded = img.index_select(dim, idx)
        out = padded.narrow(dim, 0, n) * k[0]
        for i in range(1, len(k)):
            out += padded.narrow(dim, i, n) * k[i]
        img = out
    return img


def degrade(hr: torch.Tensor, scale: int, sigma: float = 1.0, truncate: float = 3.0) -> torch.Tensor:
    """The paper's SR input: Gaussian blur (sigma) then bicubic downsampling by ``scale``.

    ``hr`` is (..., C, H, W) float in [0, 1] with H, W multiples of ``scale``; the
    result is clamped to [0, 1].
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"degrade: HR size {h}x{w} is not a multiple of scale={scale}; mod-crop it first")
    return imresize(gaussian_blur(hr, sigma, truncate), 1.0 / scale).clamp_(0, 1)


def modcrop(img, scale: int):
    """Top-left crop of an (H, W[, C]) array or (..., H, W) tensor to multiples of ``scale``."""
    if isinstance(img, np.ndarray):
        h, w = img.shape[:2]
        return img[: h - h % scale, : w - w % scale]
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]
