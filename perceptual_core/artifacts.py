"""Measured artifacts of a stylisation network's output: the checks behind "no checkerboard, no border
frame, no tile seams", so a release bar is a number on the card, not a look at a sample.

- Checkerboard (:func:`lattice_amplitude`): upsampling artifacts are patterns locked to the network's
  stride grid, period 2 or 4 px (Odena et al. 2016). The luma, high-passed (minus a 9x9 binomial blur,
  which removes ramps exactly), is averaged over every pixel of the same phase modulo the period: a
  stride-locked pattern survives that average, texture and noise of random phase fall as 1 / sqrt(pixels)
  (a 512 px photo reads 0.02-0.1 levels). The figure is the RMS of that phase pattern in 8-bit levels.
  (Measured on the shipped models at 512 px, a per-32-px-block version of it read the same within 15 %:
  their patterns are the same everywhere, so the image-wide average loses nothing.)
- Border frame (:func:`border_excess`): a network that treats the image border differently draws a
  frame, or bright or dark blobs along an edge. Its output is compared with the output on the photo
  reflect-padded by more than the receptive field and cropped back, where the same pixels are no longer
  at the border, run with the first run's instance-norm statistics (so the two agree exactly away from
  the edges). Per side: the mean signed difference in the band along that edge (a frame) and the mean
  absolute one (any border effect, a texture drawn differently included).
- White blobs (:func:`white_blobs`): solid discs the output clips to white where the photo has no white
  (the wave and starry_night models draw them, 15-40 px across, on pale stone and lit windows). Networks
  with instance norm are known to do this: a strong local spike carries signal past the normalisation
  (the "droplets" of Karras et al. 2020, StyleGAN2), and once the output tanh saturates there its gradient
  is near zero, so training barely removes it. Brightness alone is no measure: a painted texture may
  have white strokes (wave's foam). Shape is: the figure is the largest fraction of any 16 px square that
  such pixels fill; a disc reads near 1, strokes a few px wide and specks read low.
- Tile seams (:func:`seam_difference`): the tiled output (tiling.py, whole-image instance-norm
  statistics) against the untiled one: PSNR and the largest difference along the tile boundaries.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import luma, psnr
from .tiling import _FrozenInstanceNorm, _norms_needing_stats, _swapped

__all__ = ["lattice_amplitude", "border_excess", "white_blobs", "seam_difference", "norm_stats_of", "LEVELS", "SIDES"]

LEVELS = 255.0  # figures are in 8-bit levels: what a saved image can show
SIDES = ("top", "bottom", "left", "right")


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (H, W) in [0, 1] -> (H, W) full-range BT.601 luma (metrics.luma)."""
    return x.float() if x.dim() == 2 else luma(x.float(), axis=0)[0]


def _high_pass(y: torch.Tensor) -> torch.Tensor:
    """y minus its 9x9 binomial blur (valid region): linear ramps vanish; the period-2 frequencies keep
    all their amplitude, the period-4 ones at least 94 % (the blur's response is cos(w/2)^8 per axis)."""
    k = torch.tensor([1.0, 8.0, 28.0, 56.0, 70.0, 56.0, 28.0, 8.0, 1.0], dtype=torch.float64) / 256
    y4 = y.double()[None, None]
    low = F.conv2d(F.conv2d(y4, k.view(1, 1, 9, 1)), k.view(1, 1, 1, 9))
    return (y4[..., 4:-4, 4:-4] - low)[0, 0]


def lattice_amplitude(img: torch.Tensor, periods: tuple[int, ...] = (2, 4)) -> dict[int, float]:
    """Period -> RMS (8-bit levels) of the luma pattern of that period that repeats in phase over the
    whole image: the high-passed luma averaged over every pixel of the same phase modulo the period.

    img: (3, H, W) or (H, W) in [0, 1], at least 16 px a side."""
    if min(img.shape[-2:]) < 16:
        raise ValueError(f"image of {tuple(img.shape[-2:])} px is too small (16 px a side at least)")
    hp = _high_pass(_luma(img))
    out = {}
    for p in periods:
        h, w = hp.shape[0] // p * p, hp.shape[1] // p * p
        pat = hp[:h, :w].reshape(h // p, p, w // p, p).mean(dim=(0, 2))
        out[p] = float((pat - pat.mean()).pow(2).mean().sqrt()) * LEVELS
    return out


def border_excess(direct: torch.Tensor, padded: torch.Tensor, band: int) -> dict:
    """Per side, over the ``band`` px along that edge: ``frame``, the largest per-channel mean of
    direct - padded (a systematic band of another colour or brightness), and ``abs``, the mean absolute
    difference (any change the border causes, texture included); ``interior``: the mean absolute
    difference away from the edges (near 0 when the padded run used the direct run's instance-norm
    statistics, tiling.norm_stats_of). All in 8-bit levels.

    direct: the output on the image; padded: the output on the image reflect-padded, cropped back to
    the same (3, H, W). Both in [0, 1]."""
    if direct.shape != padded.shape:
        raise ValueError(f"outputs differ in shape: {tuple(direct.shape)} vs {tuple(padded.shape)}")
    h, w = direct.shape[-2:]
    if min(h, w) <= 4 * band:
        raise ValueError(f"image of {h}x{w} px is too small for a {band}-px border band")
    d = (direct.float() - padded.float()) * LEVELS
    bands = dict(zip(SIDES, (d[:, :band], d[:, h - band:], d[:, :, :band], d[:, :, w - band:])))
    out: dict = {k: {"frame": round(float(v.mean((1, 2)).abs().max()), 3), "abs": round(float(v.abs().mean()), 3)}
                 for k, v in bands.items()}
    out["interior"] = round(float(d[:, 2 * band:h - 2 * band, 2 * band:w - 2 * band].abs().mean()), 4)
    return out


def white_blobs(output: torch.Tensor, photo: torch.Tensor, block: int = 16, white: float = 250.0,
                photo_below: float = 230.0) -> dict:
    """White blobs of ``output`` over ``photo`` (both (3, H, W) in [0, 1], the same size): pixels whose
    every channel is at least ``white`` levels where the photo's brightest channel is under
    ``photo_below``. ``block_fill``: the largest fraction of any ``block`` px square (at a stride of half a
    block) that they cover; ``blocks``: how many such squares they cover more than half of; ``area_pct``:
    their share of the image."""
    if output.shape != photo.shape or output.dim() != 3:
        raise ValueError(f"output {tuple(output.shape)} and photo {tuple(photo.shape)} must both be (3, H, W)")
    if min(output.shape[-2:]) < block:
        raise ValueError(f"image of {tuple(output.shape[-2:])} px is too small for a {block}-px block")
    new = (output.float().amin(0) * LEVELS >= white) & (photo.float().amax(0) * LEVELS < photo_below)
    fill = F.avg_pool2d(new.float()[None, None], block, stride=max(1, block // 2))
    return {"block_fill": round(float(fill.max()), 3), "blocks": int((fill > 0.5).sum()),
            "area_pct": round(100 * float(new.float().mean()), 4)}


def seam_difference(tiled: torch.Tensor, untiled: torch.Tensor, rows: list[int], cols: list[int]) -> dict[str, float]:
    """PSNR (dB) of the tiled output against the untiled one, the largest absolute difference anywhere
    and within 8 px of the tile-core boundaries ``rows`` and ``cols`` (tiling.core_edges), in levels."""
    if tiled.shape != untiled.shape:
        raise ValueError(f"outputs differ in shape: {tuple(tiled.shape)} vs {tuple(untiled.shape)}")
    a, b0 = tiled.float().clamp(0, 1), untiled.float().clamp(0, 1)
    d = (a - b0).abs()
    h, w = d.shape[-2:]
    seam = torch.zeros(h, w, dtype=torch.bool)
    for b in rows:
        seam[max(0, b - 8):b + 8] = True
    for b in cols:
        seam[:, max(0, b - 8):b + 8] = True
    dmax = d.amax(0)
    return {"psnr_db": round(psnr(a, b0, data_range=1.0), 2),  # inf when identical
            "max_levels": round(float(dmax.max()) * LEVELS, 3),
            "seam_max_levels": round(float(dmax[seam].max()) * LEVELS, 3) if seam.any() else 0.0}


@contextmanager
def norm_stats_of(model: nn.Module, x: torch.Tensor):
    """Within: every instance-norm layer of ``model`` normalises with the statistics it had on ``x``
    (one forward of x, on the model's device), so an input that differs from x only in part (x padded
    at the border, say) is compared with x without a change of whole-image statistics."""
    norms = _norms_needing_stats(model)
    stats = {}

    def keep(m, inp, out):
        t = inp[0].double()
        stats[m] = (t.mean((0, 2, 3)).cpu(), t.var((0, 2, 3), unbiased=False).cpu())

    hooks = [n.register_forward_hook(keep) for n in norms]
    try:
        p = next(model.parameters())
        with torch.inference_mode():
            model(x.to(p.device, p.dtype))
    finally:
        for h in hooks:
            h.remove()
    with _swapped(model, {n: _FrozenInstanceNorm(n, *stats[n]) for n in norms}):
        yield
