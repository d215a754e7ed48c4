"""The network in standard ops (folded batch norm, sub-pixel upsampling) for everything but the CPU ``eager``
engine: ``eager`` on CUDA runs it channels_last under autocast for bf16/fp16; ``compile`` is
``torch.compile`` of it (inductor; dynamic shapes; compiling takes minutes on a 2-core CPU and the
result was no faster there than ``eager``: meant for long GPU jobs); ``onnx`` exports it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import _Layer, _describe, _phase_weights


class _PortableNet(nn.Module):
    """The network in standard ops with batch norm folded and sub-pixel upsampling: exports to ONNX
    with dynamic H and W, compiles, and runs channels_last on CUDA. Input: the host-padded image."""

    def __init__(self, layers: list[_Layer]):
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.spec = []
        for L in layers:
            c = L.conv
            if L.upsample:
                new = nn.Conv2d(c.in_channels, 4 * c.out_channels, 2, bias=True).to(c.weight.device)
                with torch.no_grad():
                    new.weight.copy_(_phase_weights(c.weight.detach()))
                    new.bias.copy_(c.bias.detach().repeat_interleave(4))
                c = new
            self.convs.append(c)
            self.norms.append(L.norm if L.norm is not None else nn.Identity())
            self.spec.append((L.pad, L.upsample, int(L.conv.padding[0]), L.relu, L.residual, L.block_start, L.tanh))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = None
        for conv, norm, (pad, up, zpad, relu, residual, start, tanh) in zip(self.convs, self.norms, self.spec):
            if start:
                skip = x
            if up:
                x = F.pad(x, (1,) * 4, mode="replicate") if pad else F.pad(x, (1,) * 4)
                x = F.pixel_shuffle(conv(x), 2)[..., 1:-1, 1:-1]
            else:
                if pad:
                    x = F.pad(x, (pad,) * 4, mode="reflect")
                x = conv(x)
            x = norm(x)
            if relu:
                x = F.relu(x)
            if residual is not None:
                x = x + (skip[..., residual:-residual, residual:-residual] if residual else skip)
            if tanh:
                x = (torch.tanh(x) + 1) / 2
        return x


def portable_net(model: nn.Module) -> nn.Module:
    """The standard-op rewrite of a TransformNet/SRNet body (see :class:`_PortableNet`), on the model's
    device; it shares no modules with ``model`` (a later .to()/channels_last leaves the model alone)."""
    import copy

    return _PortableNet(_describe(copy.deepcopy(model))).eval()


class _AutocastRunner:
    def __init__(self, net, device: torch.device, dtype: torch.dtype, channels_last: bool):
        self.net, self.device, self.dtype, self.cl = net, device, dtype, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.net(x)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.net(x)
