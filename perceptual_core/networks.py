"""Feed-forward networks of Johnson, Alahi & Fei-Fei (ECCV 2016, supplementary).

Images are RGB tensors (B, 3, H, W) in [0, 1]; both networks end in a scaled
tanh, (tanh(x) + 1) / 2, so outputs also lie in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformNet", "SRNet", "build_model", "count_parameters"]

_NORMS = ("batch", "instance", "none")  # none: not in the paper (SR without batch statistics, as EDSR)


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _ch(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


def _norm(kind: str, c: int) -> list[nn.Module]:
    """The normalisation layer after a conv, as a list (empty for "none", so module indices of the
    batch/instance networks, and thus their checkpoints' keys, stay as they were)."""
    if kind == "none":
        return []
    return [nn.BatchNorm2d(c) if kind == "batch" else nn.InstanceNorm2d(c, affine=True)]


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: str = "zero") -> list[nn.Module]:
    """pad: "zero" (same padding), "reflect" (ReflectionPad2d + unpadded conv) or "none"."""
    if pad == "reflect":
        return [nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride)]
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2 if pad == "zero" else 0)]


def _conv_block(cin, cout, k, stride, pad, norm) -> nn.Sequential:
    return nn.Sequential(*_conv(cin, cout, k, stride, pad), *_norm(norm, cout), nn.ReLU(inplace=True))


def _up_block(cin, cout, upsample, pad, norm) -> nn.Sequential:
    if upsample == "deconv":  # fractionally-strided conv, exactly doubles H and W
        layers = [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]
    else:  # resize-convolution: no checkerboard artifacts
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), *_conv(cin, cout, 3, 1, pad)]
    return nn.Sequential(*layers, *_norm(norm, cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm plus identity, no ReLU after the sum (Gross & Wilber).

    pad="none" is the paper's unpadded block: it shrinks H and W by 4, so the
    skip path is centre-cropped by 2 px on each side.
    """

    def __init__(self, c: int, norm: str, pad: str):
        super().__init__()
        self.crop = 2 if pad == "none" else 0
        self.body = nn.Sequential(
            *_conv(c, c, 3, 1, pad), *_norm(norm, c), nn.ReLU(inplace=True),
            *_conv(c, c, 3, 1, pad), *_norm(norm, c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.crop:
            x = x[..., self.crop:-self.crop, self.crop:-self.crop]
        return x + y


class MirrorPad(nn.Module):
    """Reflection padding by p px per side, repeated in steps when p >= the image size
    (a single ReflectionPad2d needs pad < dim; small images would otherwise fail)."""

    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h > self.p and w > self.p:  # the usual case: one plain reflection
            return F.pad(x, (self.p,) * 4, mode="reflect")
        if h < 2 or w < 2:
            raise ValueError(f"MirrorPad needs H, W >= 2, got {h}x{w}")
        ph = pw = self.p
        while ph or pw:
            h, w = x.shape[-2:]
            sh, sw = min(ph, h - 1), min(pw, w - 1)
            x = F.pad(x, (sw, sw, sh, sh), mode="reflect")
            ph, pw = ph - sh, pw - sw
        return x

    def extra_repr(self) -> str:
        return str(self.p)


def _pad_bottom_right(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    # Reflect where possible; replicate when the image is too small to reflect by that much.
    if ph:
        x = F.pad(x, (0, 0, 0, ph), mode="reflect" if ph < x.shape[-2] else "replicate")
    if pw:
        x = F.pad(x, (0, pw, 0, 0), mode="reflect" if pw < x.shape[-1] else "replicate")
    return x


def _check_input(x: torch.Tensor, name: str) -> tuple[int, int]:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    return x.shape[-2], x.shape[-1]


class TransformNet(nn.Module):
    """Style transfer network (supplementary Table 1).

    padding="paper": 40 px reflection padding of the input, zero "same" padding in the
    down/up-sampling convs and unpadded residual blocks that consume those 80 px
    (256 -> 336 -> 168 -> 84 -> 64 -> 128 -> 256). padding="reflect": no input padding,
    every conv reflection-padded, residual blocks keep their size.

    Any H x W >= 1 x 1 works: the input is padded at the bottom/right to a multiple of 4
    and at least 8 x 8 (so the 1/4-resolution maps are >= 2 x 2, which the reflection
    pads and instance/batch norm in training need), and the output is cropped back.
    Empty inputs raise ValueError. Under torch.export the graph is size-generic but admits
    H, W >= 8 only (> 40 with padding="paper"); see _forward_export.
    """

    MIN_INTERNAL = 8

    def __init__(self, norm: str = "batch", padding: str = "paper", upsample: str = "deconv",
                 width: float = 1.0):
        super().__init__()
        _check("norm", norm, _NORMS)
        _check("padding", padding, ("paper", "reflect"))
        _check("upsample", upsample, ("deconv", "nearest"))
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.config = dict(arch="transform", norm=norm, padding=padding, upsample=upsample,
                           width=float(width))
        c1, c2, c3 = _ch(32, width), _ch(64, width), _ch(128, width)
        paper = padding == "paper"
        pad = "zero" if paper else "reflect"
        self.pad_in = MirrorPad(40) if paper else nn.Identity()
        self.encoder = nn.Sequential(
            _conv_block(3, c1, 9, 1, pad, norm),
            _conv_block(c1, c2, 3, 2, pad, norm),
            _conv_block(c2, c3, 3, 2, pad, norm),
        )
        self.res = nn.Sequential(*[ResidualBlock(c3, norm, "none" if paper else "reflect")
                                   for _ in range(5)])
        self.decoder = nn.Sequential(
            _up_block(c3, c2, upsample, pad, norm),
            _up_block(c2, c1, upsample, pad, norm),
            *_conv(c1, 3, 9, 1, pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = _check_input(x, "TransformNet")
        if torch.compiler.is_exporting():
            return self._forward_export(x, h, w)
        if h < 1 or w < 1:
            raise ValueError(f"TransformNet needs H, W >= 1, got {h}x{w}")
        ph = max(-h % 4, self.MIN_INTERNAL - h)
        pw = max(-w % 4, self.MIN_INTERNAL - w)
        y = self.decoder(self.res(self.encoder(self.pad_in(_pad_bottom_right(x, ph, pw)))))
        return ((torch.tanh(y) + 1) / 2)[..., :h, :w]

    def _forward_export(self, x: torch.Tensor, h, w) -> torch.Tensor:
        """Branch-free twin of the eager path for torch.export with symbolic H, W: the eager
        size tests (max(), `if ph:`, MirrorPad's repeat loop) would specialise the graph to the
        example size. Same result as eager for the sizes it admits: H, W >= 8 (then the bottom/
        right pad is just (-H) % 4 and always < H) and, for padding="paper", H, W > 40 (one
        plain 40 px reflection)."""
        torch._check(h >= self.MIN_INTERNAL)
        torch._check(w >= self.MIN_INTERNAL)
        # Pad to 4 * ceil(size / 4), i.e. by (-size) % 4; written as a floor division because
        # the symbolic sizes of the stride-2 convs then simplify (export runs 2-3x faster than with %).
        x = F.pad(x, (0, (w + 3) // 4 * 4 - w, 0, (h + 3) // 4 * 4 - h), mode="reflect")
        if isinstance(self.pad_in, MirrorPad):
            torch._check(h > self.pad_in.p)
            torch._check(w > self.pad_in.p)
            x = F.pad(x, (self.pad_in.p,) * 4, mode="reflect")
        y = self.decoder(self.res(self.encoder(x)))
        # Crop by gathering rows/columns, not slicing: a sliced view's contiguity depends on
        # whether (-H) % 4 == 0, which export would turn into a guard on the example's size class.
        y = (torch.tanh(y) + 1) / 2
        y = y.index_select(2, torch.arange(h, device=y.device))
        return y.index_select(3, torch.arange(w, device=y.device))


class SRNet(nn.Module):
    """Super-resolution network (supplementary): (B,3,h,w) -> (B,3,scale*h,scale*w).

    Residual blocks keep their size (padded convs), so any LR size works with
    padding="zero"; padding="reflect" needs h, w >= 5 (the 9x9 conv's 4 px reflection).

    skip="bicubic" (not in the paper): the network predicts a correction to the bicubic upscale of
    its input, output = bicubic(x) + tail(...), with no tanh (callers clamp to [0, 1]). A global
    skip (as VDSR and EDSR have) starts training at bicubic instead of at grey, which is what lets
    an l_pixel network beat bicubic after the few thousand iterations 2 CPU cores allow; the paper's
    network, trained 200k iterations, ties bicubic. skip="none" is the paper's.
    """

    SKIPS = ("none", "bicubic")

    def __init__(self, scale: int = 4, norm: str = "batch", padding: str = "zero",
                 width: float = 1.0, skip: str = "none"):
        super().__init__()
        if scale not in (4, 8):
            raise ValueError(f"scale must be 4 or 8, got {scale!r}")
        _check("norm", norm, _NORMS)
        _check("padding", padding, ("zero", "reflect"))
        _check("skip", skip, self.SKIPS)
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.config = dict(arch="sr", scale=int(scale), norm=norm, padding=padding,
                           width=float(width))
        if skip != "none":  # absent from the paper network's config (older checkpoints lack it)
            self.config["skip"] = skip
        self.skip = skip
        self.scale = int(scale)
        c = _ch(64, width)
        self.head = _conv_block(3, c, 9, 1, padding, norm)
        self.res = nn.Sequential(*[ResidualBlock(c, norm, padding) for _ in range(4)])
        self.up = nn.Sequential(*[_up_block(c, c, "deconv", padding, norm)
                                  for _ in range(int(math.log2(scale)))])
        self.tail = nn.Sequential(*_conv(c, 3, 9, 1, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = _check_input(x, "SRNet")
        lo = 5 if self.config["padding"] == "reflect" else 1
        if h < lo or w < lo:
            raise ValueError(f"SRNet(padding={self.config['padding']!r}) needs h, w >= {lo}, "
                             f"got {h}x{w}")
        y = self.tail(self.up(self.res(self.head(x))))
        if self.skip == "bicubic":
            return y + self.upscale_input(x)
        return (torch.tanh(y) + 1) / 2

    def upscale_input(self, x: torch.Tensor) -> torch.Tensor:
        """The skip path of skip="bicubic": PyTorch bicubic (a = -0.75, half-pixel centres) x scale."""
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)


_ARCHS = {"transform": TransformNet, "sr": SRNet}


def build_model(config: dict) -> nn.Module:
    """Rebuild a network from its `.config` dict (e.g. one stored in a checkpoint)."""
    kwargs = dict(config)
    arch = kwargs.pop("arch", None)
    if arch == "srcnn":  # imported here: srcnn.py pulls in the resampling/metrics code
        from .srcnn import SRCNN

        return SRCNN(**kwargs)
    if arch not in _ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(_ARCHS) + ['srcnn']}")
    return _ARCHS[arch](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters (norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())
