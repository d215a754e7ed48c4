"""The :class:`Engine` build_engine returns: a runner behind the plain model's calling convention. Input
padding to a multiple of 4 and the 40 px mirror padding of padding="paper" happen on the host before the
runner's graph, the crop after it, so one exported graph serves every image size (the traced TorchScript
graph would otherwise freeze those sizes). Tiled inference (images over ``--tile``) always runs the plain
network ``Engine.model``: whole-image instance-norm statistics need its modules (see tiling.py).
"""
from __future__ import annotations

import torch
from torch import nn

from ..networks import TransformNet, _pad_bottom_right
from .verify import check_engine


class Engine:
    """A verified fast runner for one model: ``engine(x)`` is ``model(x)`` for a (1, 3, H, W) host
    tensor in [0, 1], returned as float32 on the CPU. ``model``: the plain network (tiling uses it);
    ``config``/``scale``: the model's. ``verified``: the verification report (or None)."""

    def __init__(self, model: nn.Module, engine: str, precision: str, runner, device: torch.device):
        self.model, self.name, self.precision, self.device = model, engine, precision, device
        self.config = model.config
        self.scale = getattr(model, "scale", 1)
        self._runner = runner
        self.verified: dict | None = None

    def __repr__(self) -> str:
        return f"Engine({self.name}, {self.precision}, {self.device}, {self.config.get('arch')})"

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """Host padding the network does in its own forward: to a multiple of 4 and >= 8 px, then the
        40 px mirror padding of padding="paper" (TransformNet); input checks (SRNet). -> (input, crop)."""
        m = self.model
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"engine input must be a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if isinstance(m, TransformNet):
            if h < 1 or w < 1:
                raise ValueError(f"TransformNet needs H, W >= 1, got {h}x{w}")
            x = _pad_bottom_right(x.float(), max(-h % 4, m.MIN_INTERNAL - h), max(-w % 4, m.MIN_INTERNAL - w))
            return m.pad_in(x), (h, w)
        lo = 5 if m.config["padding"] == "reflect" else 1
        if h < lo or w < lo:
            raise ValueError(f"SRNet(padding={m.config['padding']!r}) needs h, w >= {lo}, got {h}x{w}")
        return x.float(), None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self._runner is None:  # a network without a rewrite (e.g. SRCNN): the model itself
                p = next(self.model.parameters())
                y = self.model(x.to(p.device, p.dtype))
            else:
                xp, crop = self.prepare(x)
                y = self._runner(xp)
                if crop is not None:
                    y = y[..., :crop[0], :crop[1]]
                if getattr(self.model, "skip", "none") == "bicubic":  # SRNet's global skip, in fp32
                    y = y.float() + self.model.upscale_input(x.to(y.device, torch.float32))
            y = y.float().cpu()
        return y.clone() if y.is_inference() else y  # a normal tensor: callers may modify it in place

    def verify(self, images: list[torch.Tensor] | None = None, tolerance: dict | None = None) -> dict:
        """Compare with the plain network in fp32 on ``images`` ((1, 3, H, W) in [0, 1]; default: real
        photos at three sizes, :func:`verification_images`); raise EngineMismatchError beyond
        ``tolerance``: {"max_abs": .., "min_psnr": ..}, or such dicts by precision like TOLERANCE (the
        default). -> {"max_abs", "min_psnr", "sizes", "tolerance"}."""
        self.verified = check_engine(self, images, tolerance)
        return self.verified
