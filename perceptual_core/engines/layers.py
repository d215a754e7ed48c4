"""The network as a flat list of convolutions, batch norm folded in: the one description of a
TransformNet/SRNet that both rewrites (fast_cpu.py, portable.py) are built from, plus the sub-pixel
weights that replace nearest x2 upsampling + 3x3 conv."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..networks import ResidualBlock, SRNet, TransformNet


@dataclass
class _Layer:
    """One convolution of the network and what follows it up to the next convolution."""
    conv: nn.Module                # nn.Conv2d or nn.ConvTranspose2d (batch norm already folded in)
    pad: int = 0                   # explicit reflection padding of its input (ReflectionPad2d)
    upsample: bool = False         # nearest x2 upsampling before it
    norm: nn.Module | None = None  # InstanceNorm2d left after folding
    relu: bool = False
    residual: int | None = None    # add the residual block's input (centre-cropped by this) after the norm
    block_start: bool = False      # its input is a residual block's input
    tanh: bool = False             # the output layer: (tanh(y) + 1) / 2


def _fold_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """conv followed by eval-mode batch norm as one conv (computed in float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     **({"output_padding": conv.output_padding} if isinstance(conv, nn.ConvTranspose2d) else {}),
                     bias=True).to(conv.weight.device)
    shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)  # out-channel axis
    with torch.no_grad():
        new.weight.copy_((conv.weight.double() * scale.view(shape)).float())
        new.bias.copy_(((b - bn.running_mean.double()) * scale + bn.bias.double()).float())
    return new.eval()


def _layers_of(mods) -> list[_Layer]:
    """Group a flat module sequence into layers: [Upsample] [ReflectionPad2d] conv [norm] [ReLU]."""
    out: list[_Layer] = []
    pre = {}
    for m in mods:
        if isinstance(m, nn.Upsample):
            if m.mode != "nearest" or m.scale_factor not in (2, 2.0):
                raise NotImplementedError(f"engines: unsupported upsampling {m}")
            pre["upsample"] = True
        elif isinstance(m, nn.ReflectionPad2d):
            pre["pad"] = int(m.padding[0])
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                raise NotImplementedError(f"engines: unsupported convolution {m}")
            out.append(_Layer(conv=m, **pre))
            pre = {}
        elif isinstance(m, nn.BatchNorm2d):
            if m.training or not m.track_running_stats:
                raise ValueError("engines need the model in eval mode (batch norm with running statistics)")
            out[-1].conv = _fold_bn(out[-1].conv, m)
        elif isinstance(m, nn.InstanceNorm2d):
            if m.track_running_stats or not m.affine:
                raise NotImplementedError(f"engines: unsupported instance norm {m}")
            out[-1].norm = m
        elif isinstance(m, nn.ReLU):
            out[-1].relu = True
        else:
            raise NotImplementedError(f"engines: unsupported layer {type(m).__name__}")
    return out


def _describe(model: nn.Module) -> list[_Layer]:
    """The convolutions of a TransformNet or SRNet in order, with batch norm folded."""
    if isinstance(model, TransformNet):
        blocks = [list(b) for b in model.encoder] + [model.res] + [list(b) for b in model.decoder[:2]]
        blocks.append(list(model.decoder[2:]))
    elif isinstance(model, SRNet):
        blocks = [list(model.head), model.res] + [list(b) for b in model.up] + [list(model.tail)]
    else:
        raise NotImplementedError(f"engines support TransformNet and SRNet, not {type(model).__name__}")
    layers: list[_Layer] = []
    for blk in blocks:
        if isinstance(blk, nn.Sequential):  # the residual blocks
            for rb in blk:
                assert isinstance(rb, ResidualBlock)
                a, b = _layers_of(rb.body)
                a.block_start, b.residual = True, rb.crop
                if b.relu:
                    raise NotImplementedError("engines: ReLU after the residual sum")
                layers += [a, b]
        else:
            layers += _layers_of(blk)
    layers[-1].tanh = getattr(model, "skip", "none") == "none"  # skip="bicubic": Engine adds the skip path
    return layers


def _phase_weights(w: torch.Tensor) -> torch.Tensor:
    """Weights of a 3x3 conv applied after nearest x2 upsampling, as one 2x2 conv on the low-resolution
    map padded by 1 whose 4 * Cout output channels pixel_shuffle(2) into a (2h + 2) x (2w + 2) map that
    holds the result at [1:-1, 1:-1].

    Along one axis output 2i + a of the upsampled conv sees low-res rows (i - 1, i) with taps
    (k0, k1 + k2) for a = 0 and rows (i, i + 1) with taps (k0 + k1, k2) for a = 1; on the input padded by 1
    they are the 2-tap conv's outputs i (a = 0) and i + 1 (a = 1). Shuffling phase 1 into slot 0 and
    phase 0 into slot 1 puts both at consecutive positions 2p, 2p + 1, shifted by one pixel.
    Reflection padding of the upsampled map is replicate padding of the low-res one, zero is zero."""
    taps = torch.tensor([[[1., 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.float64, device=w.device)  # phase, tap, k
    ph = torch.einsum("aik,bjl,ockl->ocabij", taps, taps, w.double())  # (Cout, Cin, a, b, 2, 2)
    ph = ph.flip(2, 3)  # slot s holds phase 1 - s
    return ph.permute(0, 2, 3, 1, 4, 5).reshape(w.shape[0] * 4, w.shape[1], 2, 2).float()
