"""Gatys et al. optimisation-based style transfer, on the same loss network and losses.

This is the baseline the paper compares speed and quality against: the image itself
is optimised (L-BFGS or Adam) to minimise the content + style + TV loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from .losses import CONTENT_LAYERS, STYLE_LAYERS, PerceptualLoss
from .vgg import VGG16Loss


@dataclass
class GatysResult:
    image: torch.Tensor  # (3, H, W) in [0,1]
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per iteration
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # iteration count -> (3, H, W) image


def _initial_image(c: torch.Tensor, init: str, seed: int) -> torch.Tensor:
    """The image the optimisation starts from: a copy of the content or uniform noise (seeded)."""
    if init == "content":
        return c.clone(memory_format=torch.contiguous_format)  # L-BFGS views each gradient flat
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c.shape, generator=g).to(c)


def _optimizer(x: torch.Tensor, optimizer: str, lr: float | None) -> torch.optim.Optimizer:
    """L-BFGS (one step: one iteration, strong-Wolfe line search) or Adam over the image ``x``."""
    if optimizer == "lbfgs":
        return torch.optim.LBFGS([x], lr=lr or 1.0, max_iter=1, max_eval=25, history_size=100,
                                 line_search_fn="strong_wolfe")
    return torch.optim.Adam([x], lr=lr or 1e-2)


def gatys(
    content: torch.Tensor,
    style: torch.Tensor,
    loss_net: VGG16Loss,
    *,
    iters: int = 500,
    optimizer: str = "lbfgs",
    init: str = "content",
    content_weight: float = 1.0,
    style_weight: float = 1e-5,
    tv_weight: float = 1e-6,
    lr: float | None = None,
    style_size: int | None = 256,
    content_layers=CONTENT_LAYERS,
    style_layers=STYLE_LAYERS,
    seed: int = 0,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    snapshot_at: Iterable[int] = (),
) -> GatysResult:
    """Optimise an image for ``iters`` iterations; (3,H,W) tensors in [0,1] in and out.

    How an iteration is counted (as the paper counts them): with L-BFGS one iteration is one
    optimizer step, whose strong-Wolfe line search evaluates loss and gradient once or more
    (each history entry records ``evals``; about 2 on average here); with Adam one gradient step.

    The objective is the loss of the image that is returned, ``clamp(x, 0, 1)``: pixels pushed
    out of range stop receiving gradient instead of being clipped after the fact. Optimising the
    unclamped image and clipping at the end scored a *different* image than the one optimised,
    and its loss rose from 100 to 500 iterations. With the line search's sufficient decrease, the
    loss of the returned image never increases from one iteration to the next.
    ``snapshot_at``: iteration counts after which to keep a copy of the image (one run gives the
    100/300/500 results).
    """
    if iters < 0:
        raise ValueError(f"gatys: iters must be >= 0, got {iters}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"gatys: optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"gatys: init must be 'content' or 'noise', got {init!r}")
    p = next(loss_net.parameters())
    c = content.to(p.device, p.dtype)[None]
    crit = PerceptualLoss(loss_net, content_layers, style_layers, content_weight, style_weight, tv_weight)
    crit.set_style(style, style_size)
    with torch.no_grad():
        cfeats = loss_net(c, crit.content_layers)
    x = _initial_image(c, init, seed).requires_grad_(True)
    opt = _optimizer(x, optimizer, lr)
    history: list[dict[str, float]] = []
    snaps, snapshots = set(snapshot_at), {}
    first: dict[str, float] = {}

    evals = [0]

    def closure():
        opt.zero_grad(set_to_none=True)
        losses = crit(x.clamp(0, 1), content_feats=cfeats)
        losses["total"].backward()
        evals[0] += 1
        if not first:  # the loss at the start of the iteration (L-BFGS may evaluate again)
            first.update({k: float(v.detach()) for k, v in losses.items()})
        return losses["total"]

    for i in range(iters):
        first.clear()
        evals[0] = 0
        opt.step(closure)
        history.append({**first, "evals": evals[0]})
        if i + 1 in snaps:
            snapshots[i + 1] = x.detach()[0].clamp(0, 1).clone()
        if callback:
            callback(i, history[-1])
    # x itself is never clamped in place (that would break L-BFGS' curvature pairs); the
    # objective already saw the clamped image, so clamping here returns exactly what was scored.
    return GatysResult(x.detach()[0].clamp(0, 1), history, snapshots)
