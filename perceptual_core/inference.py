"""Apply a feed-forward network to one image, carrying alpha, bit depth and metadata."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .engines import Engine
from .io import LoadedImage, tensor_to_array
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
    (engines/) runs untiled images; tiles run on its plain network, whose modules tiling swaps."""
    if isinstance(model, Engine):
        if not (tile and max(x.shape[-2:]) > tile):
            return model(x)
        model = model.model
    p = next(model.parameters())
    if tile and max(x.shape[-2:]) > tile:
        from .tiling import tiled_forward

        return tiled_forward(model, x, tile=tile, overlap=overlap, device=p.device, dtype=p.dtype)
    return model(x.to(p.device, p.dtype)).float().cpu()


def pad_reflect(x: torch.Tensor, b: int) -> torch.Tensor:
    """(N, C, H, W) reflect-padded by ``b`` px on every side (b < H, W); x itself when b is 0."""
    return torch.nn.functional.pad(x, (b, b, b, b), mode="reflect") if b else x


def keep_chrominance(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the content's colours with the stylized luma (BT.601 Y).
    Adding the same luma difference to R, G and B leaves Cb and Cr (scaled B-Y and R-Y) unchanged."""
    return (content + (luma(stylized, axis=0) - luma(content, axis=0))).clamp(0, 1)


@torch.no_grad()
def stylize_image(model: nn.Module | Engine, img: LoadedImage, *, preserve_color: bool = False, tile: int | None = None,
                  overlap: int = 48, border: int = 0) -> tuple[torch.Tensor, np.ndarray | None]:
    """Return the stylised (3, H, W) tensor in [0,1] and the input's alpha (unchanged).

    preserve_color: keep the input's chrominance (luminance-only transfer). tile: process images
    with a side over ``tile`` in overlapping tiles (None: whole image at once). border: reflect-pad the
    input by this many px (at most the image's side - 1) and crop the output back, so the network's
    own edge treatment falls outside the picture: a trained network otherwise draws the last few pixels
    along each side differently (measured, perceptual_core/artifacts.py: up to 12.6 levels over a 16 px
    band; 32 px of border leave 0.05)."""
    x = _rgb_tensor(img, "cpu")
    b = max(0, min(int(border), x.shape[-2] - 1, x.shape[-1] - 1))
    tile = tile if tile and max(x.shape[-2:]) > tile else None  # the image's size decides, not the border's
    y = _forward(model, pad_reflect(x, b), tile, overlap).clamp(0, 1)[0]
    y = y[:, b:y.shape[-2] - b, b:y.shape[-1] - b]
    if preserve_color:
        y = keep_chrominance(y, x[0])
    return y, img.alpha


@torch.no_grad()
def upscale_image(model: nn.Module | Engine, img: LoadedImage, *, scale: int | None = None,
                  tile: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the upscaled image as an (sH, sW, C) array at the input's bit depth (uint8/uint16; C = 1
    for grayscale input) and the upscaled alpha (MATLAB bicubic, rounded), or None.

    tile: the largest output block side (sr_blocks.py: exact, with a receptive-field halo; memory is
    bounded by the block and the integer output, whatever the input size); None: whole image at once.
    SRCNN checkpoints (which do not know their scale) need ``scale`` and run the official protocol
    (bicubic-upscaled Y restored by the network, Cb/Cr bicubic)."""
    from .sr_blocks import upscale_blockwise

    arch = getattr(model, "config", {}).get("arch")
    h, w = img.pixels.shape[:2]
    bits = img.bit_depth
    if arch == "srcnn":
        if not scale:
            raise ValueError("an SRCNN model needs its scale (--scale N; the network does not store it)")
        from .srcnn import srcnn_upscale

        net = model.model if isinstance(model, Engine) else model
        lr = img.to_tensor().permute(1, 2, 0).double().numpy()

        def block(r0, r1, c0, c1):
            rgb, _ = srcnn_upscale(net, lr[r0:r1, c0:c1], scale)  # uint8, as the official code
            return rgb if bits == 8 else rgb.astype(np.uint16) * 257
    else:
        if scale and scale != model.scale:
            raise ValueError(f"scale={scale} but the model upscales x{model.scale}")
        scale = model.scale
        x = _rgb_tensor(img, "cpu")

        def block(r0, r1, c0, c1):
            y = _forward(model, x[..., r0:r1, c0:c1], None, 0).clamp(0, 1)
            return tensor_to_array((luma(y, axis=1) if img.is_gray else y)[0], bits)
    out = upscale_blockwise(block, (h, w), scale, tile=tile)
    alpha = None
    if img.alpha is not None:
        a = img.alpha.astype(np.float64)
        top = np.iinfo(img.alpha.dtype).max
        alpha = upscale_blockwise(
            lambda r0, r1, c0, c1: np.clip(np.round(imresize(a[r0:r1, c0:c1], scale)), 0, top).astype(img.alpha.dtype),
            (h, w), scale, tile=tile)
    return out, alpha
