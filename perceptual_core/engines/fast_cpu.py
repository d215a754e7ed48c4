"""The ``eager`` engine on CPU: the network rewritten as fused fp32 layers, the same function computed faster.

Batch norm folded into the convolutions; nearest x2 upsampling + 3x3 conv computed as four
2x2 convs on the low-resolution map (sub-pixel form: 2.25x fewer multiply-adds, no upsampled copy);
stride-1 convs through NNPACK (Winograd F(6x6, 3x3) for 3x3 kernels, FFT for 2x2 and 9x9; the
exact-arithmetic direct conv of oneDNN for strided and transposed ones), except that networks under 64
channels run their 3x3 and strided convs in oneDNN's channels-last direct conv (:func:`_backends`, with
the measurements); instance norm as two fast reductions + one fused normalise/ReLU/residual pass written
straight into the next conv's padded input, in the memory format that conv reads (no separate padding,
layout or pixel-shuffle copies); glibc keeps freed feature maps for reuse
(:func:`tune_cpu_allocator`). Where NNPACK is missing (no AVX2) oneDNN runs every conv.
"""
from __future__ import annotations

import ctypes
import sys

import torch
import torch.nn.functional as F
from torch import nn

from .layers import _Layer, _describe, _phase_weights


def nnpack_available() -> bool:
    """NNPACK (built into the x86-64/ARM PyTorch wheels) initialised on this CPU (x86 needs AVX2)."""
    fn = getattr(torch, "_nnpack_available", None)
    try:
        return bool(fn and fn())  # the call also initialises NNPACK, which its conv op needs first
    except RuntimeError:
        return False


def tune_cpu_allocator() -> bool:
    """Serve large tensors from glibc's heap and keep freed ones there for reuse (M_MMAP_THRESHOLD and
    M_TRIM_THRESHOLD to 1 GiB) instead of a fresh mmap per feature map: every fresh map costs page
    faults on first touch. Measured on this project's 2-core VM, one thread, the eager engine at
    1024 x 1024: 4.2-4.4 s -> 2.6-2.8 s of CPU time. Process-wide and it keeps the peak heap mapped
    (RSS does not shrink after a forward); glibc only, a no-op elsewhere. -> whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    # older glibc caps the mmap threshold at 32 MiB (HEAP_MAX / 2); take the largest it accepts
    ok = any(libc.mallopt(M_MMAP_THRESHOLD, v) for v in (1 << 30, 32 << 20))
    return ok and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def _stats(parts: list[torch.Tensor], eps: float):
    """Per-channel mean and 1/sqrt(var + eps) over H, W of the union of ``parts`` (views of one map):
    two fp32 reductions each (PyTorch's cascade sums), combined in float64. Several times faster than
    var_mean's Welford pass on CPU; a single channels-last map through :func:`_sums_channels_last`."""
    n = sum(t.shape[-1] * t.shape[-2] for t in parts)
    t = parts[0]
    if len(parts) == 1 and t.shape[0] == 1 and not t.is_contiguous() \
            and t.is_contiguous(memory_format=torch.channels_last):
        s, ss = _sums_channels_last(t)
    else:
        s = sum(t.sum((2, 3), keepdim=True).double() for t in parts)
        ss = sum(torch.linalg.vector_norm(t, dim=(2, 3), keepdim=True).double().square() for t in parts)
    mean = s / n
    var = (ss / n - mean.square()).clamp_min(0)
    return mean, torch.rsqrt(var + eps)


def _sums_channels_last(t: torch.Tensor, fold: int = 16):
    """Per-channel sum and sum of squares (float64, shape (1, C, 1, 1)) of a (1, C, H, W) channels-last map.
    Reducing over H, W of such a map is a short-row outer reduction that PyTorch runs 4-10x slower than
    the NCHW one; viewed as (H * W / fold, fold * C) rows the column sums vectorise (measured, 38 x 274^2:
    1.4 -> 0.6 ms); the remainder rows are summed apart."""
    c = t.shape[1]
    rows = t.permute(0, 2, 3, 1).reshape(-1, c)
    m = rows.shape[0] // fold * fold
    body = rows[:m].reshape(-1, fold * c)
    s = body.sum(0).view(fold, c).double().sum(0)
    ss = body.square().sum(0).view(fold, c).double().sum(0)
    if m < rows.shape[0]:
        s = s + rows[m:].double().sum(0)
        ss = ss + rows[m:].double().square().sum(0)
    return s.view(1, c, 1, 1), ss.view(1, c, 1, 1)


def _fill_border(buf: torch.Tensor, p: int, mode: str) -> None:
    """Fill the p-pixel frame of ``buf`` from its interior, as F.pad(interior, mode) would."""
    H, W = buf.shape[-2:]
    h, w = H - 2 * p, W - 2 * p
    rf = mode == "reflect"
    for k in range(p):
        buf[..., p - 1 - k, p:p + w] = buf[..., p + 1 + k if rf else p, p:p + w]
        buf[..., p + h + k, p:p + w] = buf[..., p + h - 2 - k if rf else p + h - 1, p:p + w]
    for k in range(p):
        buf[..., p - 1 - k] = buf[..., p + 1 + k if rf else p]
        buf[..., p + w + k] = buf[..., p + w - 2 - k if rf else p + w - 1]


class _FastConv(nn.Module):
    def __init__(self, L: _Layer, backend: str, out_pad: int, out_mode: str, out_format: torch.memory_format):
        super().__init__()
        c = L.conv
        self.transposed = isinstance(c, nn.ConvTranspose2d)
        self.subpixel = L.upsample
        w, b = c.weight.detach(), c.bias.detach()
        if self.subpixel:
            w, b = _phase_weights(w), b.repeat_interleave(4)
        self.register_buffer("weight", w.contiguous().clone())
        self.register_buffer("bias", b.contiguous().clone())
        self.stride = int(c.stride[0])
        # zero padding done by the conv itself; reflect/replicate padding is already in its input
        self.zero_pad = 0 if L.pad else (1 if self.subpixel else int(c.padding[0]))
        if self.transposed:
            self.zero_pad, self.output_padding = int(c.padding[0]), int(c.output_padding[0])
        self.backend = backend
        if backend == "onednn_cl":
            self.weight = self.weight.contiguous(memory_format=torch.channels_last)
        self.norm = L.norm
        self.relu, self.residual, self.tanh = L.relu, L.residual, L.tanh
        self.out_pad, self.out_mode = out_pad, out_mode
        self.out_format = out_format

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.zero_pad, self.output_padding)
        if self.backend == "nnpack":
            return torch._nnpack_spatial_convolution(x, self.weight, self.bias, [self.zero_pad] * 2)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.zero_pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        y = self.conv(x)
        p = self.out_pad
        if self.subpixel:  # (4C, h + 1, w + 1) -> the 4 phases, each (C, h, w) (see _phase_weights)
            n, c4, h1, w1 = y.shape
            c, h, w = c4 // 4, 2 * (h1 - 1), 2 * (w1 - 1)
            v = y.unflatten(1, (c, 2, 2))  # a view in either memory format
            srcs = [v[:, :, 1 - a, 1 - b, a:a + h1 - 1, b:b + w1 - 1] for a in (0, 1) for b in (0, 1)]
        else:
            n, c, h, w = y.shape
            srcs = [y]
        if p or self.subpixel or not y.is_contiguous(memory_format=self.out_format):
            # written straight into the next conv's padded input, in the memory format it reads
            buf = torch.empty(n, c, h + 2 * p, w + 2 * p, dtype=y.dtype, device=y.device,
                              memory_format=self.out_format)
            out = buf[..., p:p + h, p:p + w]
        else:
            buf = out = y
        if self.subpixel:  # interleave the phases while normalising: no pixel_shuffle copy
            o = out.unflatten(3, (w // 2, 2)).unflatten(2, (h // 2, 2))
            dsts = [o[:, :, :, a, :, b] for a in (0, 1) for b in (0, 1)]
        else:
            dsts = [out]
        if self.norm is not None:
            mean, inv = _stats(srcs, self.norm.eps)
            scale = self.norm.weight.double().view(1, -1, 1, 1) * inv
            shift = (self.norm.bias.double().view(1, -1, 1, 1) - mean * scale).float()
            scale = scale.float()
            for src, dst in zip(srcs, dsts):
                torch.addcmul(shift, src, scale, out=dst)
        elif out is not y:
            for src, dst in zip(srcs, dsts):
                dst.copy_(src)
        if self.relu:
            out.relu_()
        if self.residual is not None:
            k = self.residual
            out.add_(skip[..., k:-k, k:-k] if k else skip)
        if self.tanh:
            out.tanh_().add_(1).mul_(0.5)
        if p:
            _fill_border(buf, p, self.out_mode)
        return buf


NARROW = 64  # below this many channels (the widest conv input) a network runs its 3x3 convs channels-last


def _backends(layers: list[_Layer], use_nnpack: bool) -> list[str]:
    """The conv routine per layer: "nnpack" (NCHW), "onednn" (NCHW) or "onednn_cl" (channels-last in and out).

    Narrow networks (the 0.3-width fast style model: 38 channels) run their stride-2 and 3x3 stride-1
    convs in oneDNN's channels-last direct conv, the 9x9 and sub-pixel 2x2 ones in NNPACK. Measured at
    1088^2 on 2 cores (AMD EPYC; AVX2 by ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), whole network,
    with :func:`_sums_channels_last`: width 0.3 263 -> 193 ms (AVX2 268 -> 227), width 0.25 187 -> 149 ms
    (211 -> 181): the stride-2 convs run 3-6x faster channels-last, the 38-channel 3x3 ones 1.4x on
    AVX-512 (AVX2: 0.85x, outweighed). At 64 channels and more
    (width 0.5: 389 -> 370 ms but AVX2 400 -> 499; the full-width style and the SR networks) NNPACK's
    Winograd 3x3 wins and per-channel statistics of wide channels-last maps are slow (no fast outer
    reduction for the sum of squares), so those keep NCHW throughout. Channels-last 9x9 and sub-pixel
    convs lose to NNPACK plus the interleaving writes they would need."""
    narrow = max(L.conv.in_channels for L in layers) < NARROW
    out = []
    for L in layers:
        c = L.conv
        if isinstance(c, nn.ConvTranspose2d):
            out.append("onednn")
        elif narrow and not L.upsample and c.kernel_size[0] <= 3:
            out.append("onednn_cl")
        elif use_nnpack and c.stride[0] == 1:
            out.append("nnpack")
        else:
            out.append("onednn")
    return out


class _FastCPUNet(nn.Module):
    """The network as fused fp32 CPU layers (module doc); input: the host-padded image."""

    def __init__(self, layers: list[_Layer], use_nnpack: bool):
        super().__init__()
        needs = [(L.pad, "reflect") if L.pad and not L.upsample else (1, "replicate") if L.upsample and L.pad
                 else (0, "") for L in layers]
        backends = _backends(layers, use_nnpack)
        fmts = [torch.channels_last if b == "onednn_cl" else torch.contiguous_format for b in backends]
        self.in_pad, self.in_format = needs[0], fmts[0]
        self.block_start = [L.block_start for L in layers]
        self.pads = [p for p, _ in needs]
        self.layers = nn.ModuleList(
            _FastConv(L, backends[i], *(needs[i + 1] if i + 1 < len(layers) else (0, "")),
                      fmts[i + 1] if i + 1 < len(layers) else torch.contiguous_format)
            for i, L in enumerate(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, mode = self.in_pad
        x = F.pad(x, (p,) * 4, mode=mode) if p else x
        x = x.contiguous(memory_format=self.in_format)
        skip = None
        for i, layer in enumerate(self.layers):
            if self.block_start[i]:
                q = self.pads[i]
                skip = x[..., q:-q, q:-q] if q else x
            x = layer(x, skip)
        return x


def fast_cpu_net(model: nn.Module, use_nnpack: bool | None = None) -> nn.Module:
    """The CPU fp32 rewrite of a TransformNet/SRNet body (see the module doc). Its input is the image
    after the host padding of :meth:`Engine.prepare`; use through :func:`build_engine`."""
    import copy

    if use_nnpack is None:
        use_nnpack = nnpack_available()
    return _FastCPUNet(_describe(copy.deepcopy(model)), use_nnpack).eval()  # shares nothing with model
