"""The paper's loss functions (Johnson et al. 2016, Sec. 3.2-3.3), batched.

All losses take images in [0,1] RGB, shape (B, 3, H, W), and return the mean over
the batch of the per-image loss:

* feature reconstruction  l_feat = ||phi_j(y_hat) - phi_j(y)||^2 / (C_j H_j W_j)
* style                   l_style = sum_j ||G_j(y_hat) - G_j(y)||_F^2,
                          G_j = phi_j phi_j^T / (C_j H_j W_j)
* total variation         l_TV = sum (x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2
* pixel                   l_pixel = ||y_hat - y||^2 / (C H W)
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vgg import LAYERS, VGG16Loss

CONTENT_LAYERS = ("relu2_2",)
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), normalised by C*H*W."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def feature_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b)  # mean over B*C*H*W == batch mean of ||.||^2/(CHW)


def style_loss(grams: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the squared Frobenius distance, averaged over the batch."""
    total = grams[0].new_zeros(())
    for g, t in zip(grams, targets, strict=True):
        total = total + (g - t).pow(2).sum(dim=(1, 2)).mean()
    return total


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Squared total variation per image, averaged over the batch."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum(dim=(1, 2, 3))
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum(dim=(1, 2, 3))
    return (dh + dw).mean()


def pixel_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b)


def tv_scale(crop: int, size: int | None) -> float:
    """The factor that makes a TV weight meant for ``size`` px images weigh the same on ``crop`` px ones:
    :func:`tv_loss` is a sum over pixels while the feature and style losses are means, so per pixel TV
    counts (size / crop)^2 times more at ``size`` than at ``crop``. A network trained on 256² crops with
    the weight of a 512 px objective learns a quarter of its smoothing (measured: its TV at 512 px stayed
    at the photo's while Gatys on that objective halved it). None: 1."""
    return 1.0 if size is None else (float(size) / float(crop)) ** 2


class PerceptualLoss(nn.Module):
    """Weighted sum of feature, style, TV and pixel losses on a frozen VGG-16.

    Style targets are the Grams of one style image, computed once by
    :meth:`set_style` (the style image is resized so its shorter side is
    ``style_size``, 256 by default). Zero weights skip the corresponding work.
    """

    def __init__(
        self,
        loss_net: VGG16Loss,
        content_layers: Iterable[str] = CONTENT_LAYERS,
        style_layers: Iterable[str] = STYLE_LAYERS,
        content_weight: float = 1.0,
        style_weight: float = 0.0,
        tv_weight: float = 0.0,
        pixel_weight: float = 0.0,
    ):
        super().__init__()
        self.net = loss_net
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        for name in self.content_layers + self.style_layers:
            if name not in LAYERS:
                raise ValueError(f"unknown loss layer {name!r}; choose from {list(LAYERS)}")
        self.weights = {"content": content_weight, "style": style_weight, "tv": tv_weight, "pixel": pixel_weight}
        self.style_grams: list[torch.Tensor] | None = None

    @torch.no_grad()
    def set_style(self, style: torch.Tensor, style_size: int | None = 256) -> None:
        """Compute the target Grams of a (3, H, W) or (1, 3, H, W) style image in [0,1]."""
        s = style if style.ndim == 4 else style[None]
        if style_size:
            h, w = s.shape[-2:]
            f = style_size / min(h, w)
            s = F.interpolate(s, size=(round(h * f), round(w * f)), mode="bilinear", antialias=True, align_corners=False)
        p = next(self.net.parameters())
        feats = self.net(s.to(p.device, p.dtype).clamp(0, 1), self.style_layers)
        self.style_grams = [gram_matrix(feats[n]) for n in self.style_layers]

    def forward(
        self,
        output: torch.Tensor,
        content: torch.Tensor | None = None,
        content_feats: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return a dict with ``total`` and each weighted-in component (unweighted values).

        ``content`` is the target image (content photo for style transfer, HR for
        SR); pass ``content_feats`` instead to reuse precomputed target features.
        """
        w = self.weights
        use_c, use_s = w["content"] != 0, w["style"] != 0
        layers = (self.content_layers if use_c else ()) + (self.style_layers if use_s else ())
        out: dict[str, torch.Tensor] = {}
        total = output.new_zeros(())
        if layers:
            feats = self.net(output, tuple(dict.fromkeys(layers)))
        if use_c:
            if content_feats is None:
                if content is None:
                    raise ValueError("PerceptualLoss: content weight is non-zero but no content target was given")
                with torch.no_grad():
                    content_feats = self.net(content, self.content_layers)
            out["content"] = sum(feature_loss(feats[n], content_feats[n]) for n in self.content_layers)
            total = total + w["content"] * out["content"]
        if use_s:
            if self.style_grams is None:
                raise ValueError("PerceptualLoss: style weight is non-zero; call set_style(style_image) first")
            out["style"] = style_loss([gram_matrix(feats[n]) for n in self.style_layers], self.style_grams)
            total = total + w["style"] * out["style"]
        if w["tv"] != 0:
            out["tv"] = tv_loss(output)
            total = total + w["tv"] * out["tv"]
        if w["pixel"] != 0:
            if content is None:
                raise ValueError("PerceptualLoss: pixel weight is non-zero but no target image was given")
            out["pixel"] = pixel_loss(output, content)
            total = total + w["pixel"] * out["pixel"]
        out["total"] = total
        return out
