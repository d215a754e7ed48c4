"""PSNR / SSIM with the MATLAB protocol used by the SR literature.

Y is MATLAB `rgb2ycbcr` (BT.601 studio range, Y in 16..235), computed from uint8
RGB and rounded to uint8 as MATLAB does; a one-channel image is used as-is (no
conversion), like SelfExSR's `compute_difference.m` and SRCNN's demo. ``shave``
pixels are cut from each border (the scale factor, by convention). SSIM is Wang
et al.'s `ssim_index.m`: 11x11 Gaussian window (sigma 1.5), K = (0.01, 0.03),
L = 255, 'valid' filtering, mean of the map; RGB SSIM averages the channels.
"""
from __future__ import annotations

import numpy as np
_Y = np.array([65.481, 128.553, 24.966])
_CB = np.array([-37.797, -74.203, 112.0])
_CR = np.array([112.0, -93.786, -18.214])


def _as_hwc(img: np.ndarray) -> np.ndarray:
    return img[..., None] if img.ndim == 2 else img


def rgb2ycbcr(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr. uint8 in -> uint8 out (rounded); float in [0,1] -> float in [16/255, 235/255]."""
    x = img.astype(np.float64)
    if img.dtype == np.uint8:
        x = x / 255.0
    m = np.stack([_Y, _CB, _CR])  # (3 out, 3 in)
    out = x @ m.T / 255.0 + np.array([16, 128, 128]) / 255.0
    if img.dtype == np.uint8:
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    return out


def ycbcr2rgb(img: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb2ycbcr` for float images in [0,1] (returns float, unclipped)."""
    m = np.linalg.inv(np.stack([_Y, _CB, _CR]) / 255.0)
    return (img.astype(np.float64) - np.array([16, 128, 128]) / 255.0) @ m.T


def y_channel(img: np.ndarray) -> np.ndarray:
    """Y of an (H, W, 3) uint8 image as MATLAB gives it (uint8), or a one-channel image unchanged."""
    img = _as_hwc(img)
    if img.shape[-1] == 1:
        return img[..., 0]
    if img.shape[-1] != 3:
        raise ValueError(f"y_channel: expected 1 or 3 channels, got {img.shape[-1]}")
    return rgb2ycbcr(img)[..., 0]


def _channels(x, axis: int):
    """R, G, B of ``x`` (a NumPy array or a torch tensor) along ``axis``, each keeping that axis."""
    if x.shape[axis] != 3:
        raise ValueError(f"expected 3 colour channels on axis {axis}, got shape {tuple(x.shape)}")
    idx = [slice(None)] * x.ndim
    out = []
    for i in range(3):
        idx[axis] = slice(i, i + 1)
        out.append(x[tuple(idx)])
    return out


def y_bt601(x, axis: int = -1):
    """MATLAB rgb2ycbcr's Y for float RGB in [0, 1] (NumPy or torch; the channel axis is kept, size 1):
    (65.481 R + 128.553 G + 24.966 B + 16) / 255, studio range [16/255, 235/255]. The Y the SR
    metrics score, and the channel SRCNN is trained on."""
    r, g, b = _channels(x, axis)
    return (float(_Y[0]) * r + float(_Y[1]) * g + float(_Y[2]) * b + 16.0) / 255.0


def luma(x, axis: int = -1):
    """Full-range BT.601 luma 0.299 R + 0.587 G + 0.114 B (NumPy or torch, channel axis kept): grey
    stays grey (R = G = B = v gives v). For a grey rendition of colour output, and for transfers that
    keep the content's colours; the SR metrics use :func:`y_bt601` instead."""
    r, g, b = _channels(x, axis)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _shave(img: np.ndarray, shave: int) -> np.ndarray:
    return img[shave:-shave, shave:-shave] if shave > 0 else img


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"metric: image shapes differ: {a.shape} vs {b.shape}")


def psnr(a, b, shave: int = 0, data_range: float = 255.0) -> float:
    """PSNR over all pixels and channels after shaving the border; inf when identical. ``a``, ``b``:
    NumPy arrays (H, W[, C]) or torch tensors (any layout, float64 on the host for the sum); the
    project's one PSNR (the SR tables at 255, engines and fp16 checks at 1.0)."""
    if not isinstance(a, np.ndarray):
        a = a.detach().double().cpu().numpy()
    if not isinstance(b, np.ndarray):
        b = b.detach().double().cpu().numpy()
    _check_pair(a, b)
    d = _shave(a.astype(np.float64), shave) - _shave(b.astype(np.float64), shave)
    mse = float(np.mean(d * d))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def _gauss_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_2d(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from scipy.ndimage import correlate1d

    x, y = a.astype(np.float64), b.astype(np.float64)
    # The Gaussian window is separable: filter the five maps at once, rows then
    # columns, then keep the 'valid' part (MATLAB filter2(..., 'valid')).
    g, r = _gauss_1d(), 5
    maps = np.stack([x, y, x * x, y * y, x * y])
    f = correlate1d(correlate1d(maps, g, axis=1, mode="constant"), g, axis=2, mode="constant")
    mx, my, exx, eyy, exy = f[:, r:-r, r:-r]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sxx, syy, sxy = exx - mx * mx, eyy - my * my, exy - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m.mean())


def ssim(a: np.ndarray, b: np.ndarray, shave: int = 0, data_range: float = 255.0) -> float:
    """SSIM of two (H, W) or (H, W, C) images; mean over channels."""
    _check_pair(a, b)
    a, b = _as_hwc(_shave(a, shave)), _as_hwc(_shave(b, shave))
    if min(a.shape[:2]) < 11:
        raise ValueError(f"ssim: image {a.shape[1]}x{a.shape[0]} (after shave) is smaller than the 11x11 window")
    return float(np.mean([_ssim_2d(a[..., c], b[..., c], data_range) for c in range(a.shape[-1])]))


def sr_metrics(sr: np.ndarray, hr: np.ndarray, shave: int, sr_y: np.ndarray | None = None) -> dict[str, float]:
    """Y and RGB PSNR/SSIM of uint8 images. ``sr_y`` overrides the Y of ``sr`` for Y-only methods (SRCNN)."""
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ValueError("sr_metrics: expects uint8 images (quantise outputs as they would be saved)")
    ys = y_channel(sr) if sr_y is None else sr_y
    yh = y_channel(hr)
    return {
        "psnr_y": psnr(ys, yh, shave),
        "ssim_y": ssim(ys, yh, shave),
        "psnr_rgb": psnr(sr, hr, shave),
        "ssim_rgb": ssim(sr, hr, shave),
    }
