"""Super-resolution evaluation with the standard benchmark protocol.

HR images are mod-cropped (top-left) to the scale. With an LR folder (the standard
MATLAB-bicubic LR of Set5/Set14/BSD100) LR files are paired by name; without one,
the LR is made from the mod-cropped HR with MATLAB bicubic (in floating point, as
SRCNN's `demo_SR.m` does). Outputs are quantised to uint8 as they would be saved,
then scored on Y (MATLAB rgb2ycbcr, shave = scale) and on RGB.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .io import is_image_file, load_image
from .metrics import luma, sr_metrics
from .resize import imresize, modcrop

# A method maps an LR image (H, W, C), C = 1 or 3, to (sr_uint8 (sH, sW, C), y_uint8 or
# None). The LR is uint8 when read from a file, float64 in [0,1] when made here.
Method = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def as_float(lr: np.ndarray) -> np.ndarray:
    return lr.astype(np.float64) / 255.0 if lr.dtype == np.uint8 else lr


def bicubic_method(scale: int) -> Method:
    def run(lr: np.ndarray):
        up = imresize(lr, scale)  # uint8 in -> MATLAB's uint8 arithmetic, as the published baselines
        return (up if up.dtype == np.uint8 else to_uint8(up)), None

    return run


def srcnn_method(net, scale: int) -> Method:
    from .srcnn import srcnn_upscale

    def run(lr: np.ndarray):
        return srcnn_upscale(net, lr, scale)

    return run


def network_method(model: torch.nn.Module, scale: int, device: str = "cpu") -> Method:
    """A feed-forward SR network (LR RGB in [0,1] -> SR RGB); grayscale goes through as RGB."""
    model = model.to(device).eval()

    @torch.no_grad()
    def run(lr: np.ndarray):
        gray, lr = lr.shape[-1] == 1, as_float(lr)
        x = torch.from_numpy(np.repeat(lr, 3, axis=-1) if gray else lr).permute(2, 0, 1)[None].float().to(device)
        y = model(x)[0].permute(1, 2, 0).double().cpu().numpy()
        if y.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise ValueError(f"model output {y.shape[:2]} is not {scale}x the input {lr.shape[:2]}")
        sr = to_uint8(y)
        if gray:  # score a grayscale input on the luma of the output
            sr = to_uint8(luma(y))
        return sr, None

    return run


@dataclass
class Pair:
    name: str
    hr: np.ndarray  # uint8 (H, W, C), mod-cropped
    lr: np.ndarray  # (h, w, C): uint8 from an LR file, or float64 in [0,1] made from the HR


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise ValueError(f"no images in {folder}")
    return files


def load_pairs(hr_dir: str | Path | list[Path], scale: int, lr_dir: str | Path | None = None) -> list[Pair]:
    """Pairs of the HR images in ``hr_dir`` (a folder, or a list of image files, named by their stems)."""
    pairs = []
    lr_by_stem = {p.stem: p for p in list_images(lr_dir)} if lr_dir else {}
    for hp in (list(map(Path, hr_dir)) if isinstance(hr_dir, (list, tuple)) else list_images(hr_dir)):
        hr = modcrop(load_image(hp, keep_gray=True).pixels, scale)
        if hr.dtype != np.uint8:
            raise ValueError(f"{hp}: only 8-bit HR images are supported for evaluation")
        if lr_dir:
            lp = lr_by_stem.get(hp.stem)
            if lp is None:
                raise FileNotFoundError(f"no LR image for {hp.name} in {lr_dir}")
            lr8 = load_image(lp, keep_gray=True).pixels
            if lr8.shape[-1] != hr.shape[-1]:  # e.g. grey HR with a 3-channel LR file
                lr8 = lr8[..., :1] if hr.shape[-1] == 1 else np.repeat(lr8, 3, axis=-1)
            want = (hr.shape[0] // scale, hr.shape[1] // scale)
            if lr8.shape[:2] != want:
                raise ValueError(f"{lp}: LR size {lr8.shape[1]}x{lr8.shape[0]} does not pair with HR {hp.name} at x{scale} (expected {want[1]}x{want[0]})")
            lr = lr8
        else:
            lr = imresize(hr.astype(np.float64) / 255.0, 1.0 / scale)
        pairs.append(Pair(hp.stem, hr, lr))
    return pairs


def evaluate(method: Method, pairs: list[Pair], scale: int, progress: Callable | None = None) -> dict:
    """Score ``method`` on ``pairs``; returns {"mean": {...}, "images": [{name, psnr_y, ...}]}."""
    rows = []
    it = progress(pairs) if progress else pairs
    for p in it:
        sr, y = method(p.lr)
        if sr.shape != p.hr.shape:
            raise ValueError(f"{p.name}: output shape {sr.shape} differs from HR {p.hr.shape}")
        rows.append({"name": p.name, **sr_metrics(sr, p.hr, shave=scale, sr_y=y)})
    keys = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
    return {"mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}, "images": rows}


def format_table(result: dict, title: str = "") -> str:
    head = f"{'image':<14}{'PSNR-Y':>9}{'SSIM-Y':>9}{'PSNR-RGB':>10}{'SSIM-RGB':>10}"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for r in result["images"] + [{"name": "mean", **result["mean"]}]:
        if r["name"] == "mean":
            lines.append("-" * len(head))
        lines.append(f"{r['name']:<14}{r['psnr_y']:>9.2f}{r['ssim_y']:>9.4f}{r['psnr_rgb']:>10.2f}{r['ssim_rgb']:>10.4f}")
    return "\n".join(lines)
