"""Apply a feed-forward network to one image, carrying alpha, bit depth and metadata."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .engines import Engine
from .io import LoadedImage
from .metrics import luma
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


def _forward(model: nn.Module | Engine, x: torch.Tensor, tile: int | None, overlap: int) -> torch.Tensor:
    """model(x) for a (1, 3, H, W) host tensor; larger than ``tile`` on a side -> tiled (only tiles
    go to the model's device; instance norm uses whole-image statistics, see tiling.py). An Engine
    (engines.py) runs untiled images; tiles run on its plain network, whose modules tiling swaps."""
    if isinstance(model, Engine):
        if not (tile and max(x.shape[-2:]) > tile):
            return model(x)
        model = model.model
    p = next(model.parameters())
    if tile and max(x.shape[-2:]) > tile:
        from .tiling import tiled_forward

        return tiled_forward(model, x, tile=tile, overlap=overlap, device=p.device, dtype=p.dtype)
    return model(x.to(p.device, p.dtype)).float().cpu()


def keep_chrominance(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the content's colours with the stylized luma (BT.601 Y).
    Adding the same luma difference to R, G and B leaves Cb and Cr (scaled B-Y and R-Y) unchanged."""
    return (content + (luma(stylized, axis=0) - luma(content, axis=0))).clamp(0, 1)


@torch.no_grad()
def stylize_image(model: nn.Module | Engine, img: LoadedImage, *, preserve_color: bool = False,
                  tile: int | None = None, overlap: int = 48) -> tuple[torch.Tensor, np.ndarray | None]:
    """Return the stylised (3, H, W) tensor in [0,1] and the input's alpha (unchanged).

    preserve_color: keep the input's chrominance (luminance-only transfer). tile: process images
    with a side over ``tile`` in overlapping tiles (None: whole image at once)."""
    x = _rgb_tensor(img, "cpu")
    y = _forward(model, x, tile, overlap).clamp(0, 1)[0]
    if preserve_color:
        y = keep_chrominance(y, x[0])
    return y, img.alpha


@torch.no_grad()
def upscale_image(model: nn.Module | Engine, img: LoadedImage, *, scale: int | None = None, tile: int | None = None,
                  overlap: int = 48) -> tuple[torch.Tensor, np.ndarray | None]:
    """Return the (C, sH, sW) tensor in [0,1] (C = 1 for grayscale input) and the bicubic-upscaled alpha.

    SRCNN checkpoints (which do not know their scale) need ``scale`` and run the official protocol
    (bicubic-upscaled Y restored by the network, Cb/Cr bicubic)."""
    arch = getattr(model, "config", {}).get("arch")
    if arch == "srcnn":
        if not scale:
            raise ValueError("an SRCNN model needs its scale (--scale N; the network does not store it)")
        from .srcnn import srcnn_upscale

        lr = img.to_tensor().permute(1, 2, 0).double().numpy()
        rgb, _ = srcnn_upscale(model.model if isinstance(model, Engine) else model, lr, scale)
        y = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    else:
        if scale and scale != model.scale:
            raise ValueError(f"scale={scale} but the model upscales x{model.scale}")
        y = _forward(model, _rgb_tensor(img, "cpu"), tile, overlap).clamp(0, 1)
        scale = y.shape[-1] // img.pixels.shape[1]
        if img.is_gray:
            y = luma(y, axis=1)
        y = y[0]
    alpha = None
    if img.alpha is not None:
        a = imresize(img.alpha.astype(np.float64), scale)
        alpha = np.clip(np.round(a), 0, np.iinfo(img.alpha.dtype).max).astype(img.alpha.dtype)
    return y, alpha
