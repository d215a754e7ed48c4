"""Apply a feed-forward network to one image, carrying alpha, bit depth and metadata."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .io import LoadedImage
from .resize import imresize


def auto_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resize_longer(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (3, H, W) image in [0,1] so its longer side is ``size`` (antialiased bicubic)."""
    f = size / max(img.shape[-2:])
    hw = [max(1, round(s * f)) for s in img.shape[-2:]]
    return torch.nn.functional.interpolate(img[None], size=hw, mode="bicubic", antialias=True)[0].clamp(0, 1)


def _rgb_tensor(img: LoadedImage, device) -> torch.Tensor:
    x = img.to_tensor()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x[None].to(device)


def _luma(y: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return (y * w).sum(1, keepdim=True)


@torch.no_grad()
def stylize_image(model: nn.Module, img: LoadedImage, device="cpu") -> tuple[torch.Tensor, np.ndarray | None]:
    """Return the stylised (3, H, W) tensor in [0,1] and the input's alpha (unchanged)."""
    p = next(model.parameters())
    y = model(_rgb_tensor(img, p.device).to(p.dtype)).float().clamp(0, 1)[0].cpu()
    return y, img.alpha


@torch.no_grad()
def upscale_image(model: nn.Module, img: LoadedImage) -> tuple[torch.Tensor, np.ndarray | None]:
    """Return the (C, sH, sW) tensor in [0,1] (C = 1 for grayscale input) and the bicubic-upscaled alpha."""
    p = next(model.parameters())
    y = model(_rgb_tensor(img, p.device).to(p.dtype)).float().clamp(0, 1)
    scale = y.shape[-1] // img.pixels.shape[1]
    if img.is_gray:
        y = _luma(y)
    alpha = None
    if img.alpha is not None:
        a = imresize(img.alpha.astype(np.float64), scale)
        alpha = np.clip(np.round(a), 0, np.iinfo(img.alpha.dtype).max).astype(img.alpha.dtype)
    return y[0].cpu(), alpha
