"""Inference engines for the feed-forward networks: the fastest way to run a trained TransformNet/SRNet.

An :class:`Engine` wraps a model loaded with ``checkpoint.load_model`` and is called like it (a (1, 3, H, W)
host tensor in [0, 1] in, the float32 host output out); ``inference.stylize_image``/``upscale_image``
accept one in place of the model. Engines (``build_engine(model, engine=..., precision=...)``):

- ``eager``: PyTorch, rewritten for speed without changing the function computed.
  CPU, fp32: batch norm folded into the convolutions; nearest x2 upsampling + 3x3 conv computed as four
  2x2 convs on the low-resolution map (sub-pixel form: 2.25x fewer multiply-adds, no upsampled copy);
  stride-1 convs through NNPACK (Winograd F(6x6, 3x3) for 3x3 kernels, FFT for 2x2 and 9x9; the
  exact-arithmetic direct conv of oneDNN for strided and transposed ones); instance norm as two fast
  reductions + one fused normalise/ReLU/residual pass written straight into the next conv's padded
  input (no separate padding or pixel-shuffle copies); glibc keeps freed feature maps for reuse
  (:func:`tune_cpu_allocator`). Where NNPACK is missing (no AVX2) oneDNN runs every conv.
  CUDA: the same folded/sub-pixel network in channels_last, under autocast for bf16/fp16.
- ``compile``: ``torch.compile`` of that network (inductor; dynamic shapes). Compiling takes minutes
  on a 2-core CPU and the result was no faster there than ``eager``: meant for long GPU jobs.
- ``onnx``: the network exported to ONNX (TorchScript exporter, opset 17, dynamic H and W) and run by
  onnxruntime (CPU; CUDA where onnxruntime-gpu is installed).
- ``auto``: ``eager``; fp32 on CPU, fp16 (autocast) on CUDA.

Every engine is verified before use: on real photos of several sizes (sample photos shipped in the
scikit-image wheel, unless given) its output must match the plain network's fp32 eager output within
:data:`TOLERANCE`; a mismatch raises :class:`EngineMismatchError` (never a warning). fp32 engines must
agree to half an 8-bit level (max |diff| <= 2e-3 on the [0, 1] output; measured: <= 2e-5 on the trained
networks, <= 2e-4 on high-contrast random ones); bf16/fp16
must keep PSNR >= 40 dB against fp32. Input padding to a multiple of 4 and the 40 px mirror padding of
padding="paper" happen on the host before the engine's graph, the crop after it, so one exported graph
serves every image size (the traced TorchScript graph would otherwise freeze those sizes).

int8 (onnxruntime static QDQ quantisation, per-channel weights, calibrated on COCO photos) was measured
and rejected: 22-25 dB PSNR against fp32 on the style network (bound 40 dB) and little faster on AVX2
without VNNI (benchmarks/speed.py, docs/engines.md).

Tiled inference (images over ``--tile``) always runs the plain network: whole-image instance-norm
statistics need its modules (see tiling.py).
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .networks import MirrorPad, ResidualBlock, SRNet, TransformNet, _pad_bottom_right
from .options import ENGINES, PRECISIONS

__all__ = ["ENGINES", "PRECISIONS", "TOLERANCE", "Engine", "EngineMismatchError", "build_engine", "resolve",
           "export_onnx", "fast_cpu_net", "portable_net", "verification_images", "psnr", "nnpack_available"]

#: Verification bounds on [0, 1] outputs against the plain fp32 network: max_abs (largest |difference|)
#: for fp32 engines, min_psnr (dB) for reduced precision.
TOLERANCE = {"fp32": {"max_abs": 2e-3}, "bf16": {"min_psnr": 40.0}, "fp16": {"min_psnr": 40.0}}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class EngineMismatchError(ValueError):
    """The engine's output differs from the plain network's by more than the tolerance (a ValueError, so
    the CLI reports it as a usage error, exit 2)."""


def nnpack_available() -> bool:
    """NNPACK (built into the x86-64/ARM PyTorch wheels) initialised on this CPU (x86 needs AVX2)."""
    fn = getattr(torch, "_nnpack_available", None)
    try:
        return bool(fn and fn())  # the call also initialises NNPACK, which its conv op needs first
    except RuntimeError:
        return False


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two images in [0, 1] (clamped); inf when identical (metrics.psnr at range 1)."""
    from .metrics import psnr as _psnr

    return _psnr(a.double().clamp(0, 1), b.double().clamp(0, 1), data_range=1.0)


# ---------------------------------------------------------------------------------- network description

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
    taps = torch.tensor([[[1., 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.float64)  # phase, tap, k
    ph = torch.einsum("aik,bjl,ockl->ocabij", taps, taps, w.double())  # (Cout, Cin, a, b, 2, 2)
    ph = ph.flip(2, 3)  # slot s holds phase 1 - s
    return ph.permute(0, 2, 3, 1, 4, 5).reshape(w.shape[0] * 4, w.shape[1], 2, 2).float()


# ------------------------------------------------------------------------- the fast CPU network (eager)

def _stats(parts: list[torch.Tensor], eps: float):
    """Per-channel mean and 1/sqrt(var + eps) over H, W of the union of ``parts`` (views of one map):
    two fp32 reductions each (PyTorch's cascade sums), combined in float64. Several times faster than
    var_mean's Welford pass on CPU."""
    n = sum(t.shape[-1] * t.shape[-2] for t in parts)
    s = sum(t.sum((2, 3), keepdim=True).double() for t in parts)
    ss = sum(torch.linalg.vector_norm(t, dim=(2, 3), keepdim=True).double().square() for t in parts)
    mean = s / n
    var = (ss / n - mean.square()).clamp_min(0)
    return mean, torch.rsqrt(var + eps)


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
    def __init__(self, L: _Layer, out_pad: int, out_mode: str, use_nnpack: bool):
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
        self.nnpack = use_nnpack and not self.transposed and self.stride == 1
        self.norm = L.norm
        self.relu, self.residual, self.tanh = L.relu, L.residual, L.tanh
        self.out_pad, self.out_mode = out_pad, out_mode

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.zero_pad, self.output_padding)
        if self.nnpack:
            return torch._nnpack_spatial_convolution(x, self.weight, self.bias, [self.zero_pad] * 2)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.zero_pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        y = self.conv(x)
        p = self.out_pad
        if self.subpixel:  # (4C, h + 1, w + 1) -> the 4 phases, each (C, h, w) (see _phase_weights)
            n, c4, h1, w1 = y.shape
            c, h, w = c4 // 4, 2 * (h1 - 1), 2 * (w1 - 1)
            v = y.view(n, c, 2, 2, h1, w1)
            srcs = [v[:, :, 1 - a, 1 - b, a:a + h1 - 1, b:b + w1 - 1] for a in (0, 1) for b in (0, 1)]
        else:
            n, c, h, w = y.shape
            srcs = [y]
        if p or self.subpixel:  # written straight into the next conv's padded input
            buf = y.new_empty(n, c, h + 2 * p, w + 2 * p)
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


class _FastCPUNet(nn.Module):
    """The network as fused fp32 CPU layers (module doc); input: the host-padded image."""

    def __init__(self, layers: list[_Layer], use_nnpack: bool):
        super().__init__()
        needs = [(L.pad, "reflect") if L.pad and not L.upsample else (1, "replicate") if L.upsample and L.pad
                 else (0, "") for L in layers]
        self.in_pad = needs[0]
        self.block_start = [L.block_start for L in layers]
        self.pads = [p for p, _ in needs]
        self.layers = nn.ModuleList(_FastConv(L, *(needs[i + 1] if i + 1 < len(layers) else (0, "")), use_nnpack)
                                    for i, L in enumerate(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, mode = self.in_pad
        x = F.pad(x, (p,) * 4, mode=mode).contiguous() if p else x.contiguous()
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


# --------------------------------------------------------------------- the portable network (ONNX etc.)

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
                new = nn.Conv2d(c.in_channels, 4 * c.out_channels, 2, bias=True)
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


# ----------------------------------------------------------------------------------------------- ONNX

def export_onnx(model: nn.Module, f, opset: int = 17) -> None:
    """Export the portable body of ``model`` to ONNX (file path or binary file object), input "x"
    (1, 3, H, W) and output "y" with dynamic H, W. The input is the host-padded image (Engine.prepare).
    TorchScript exporter (dynamo=False): no onnxscript dependency."""
    import warnings

    net = portable_net(model).cpu().float()
    example = torch.rand(1, 3, 96, 128)
    if isinstance(model, TransformNet) and isinstance(model.pad_in, MirrorPad):
        example = F.pad(example, (model.pad_in.p,) * 4, mode="reflect")
    with warnings.catch_warnings():  # the exporter's deprecation notes; the export is verified instead
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), f, input_names=["x"], output_names=["y"], opset_version=opset,
                          dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "oh", 3: "ow"}}, dynamo=False)


def _model_digest(model: nn.Module) -> str:
    h = hashlib.sha256(repr(sorted(model.config.items())).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(f"{torch.__version__} v1".encode())
    return h.hexdigest()[:20]


class _OnnxRunner:
    def __init__(self, model: nn.Module, device: torch.device, threads: int | None, cache_dir):
        import onnxruntime as ort

        data = None
        path = Path(cache_dir) / f"{_model_digest(model)}.onnx" if cache_dir else None
        self.cached = None  # the cache file this graph was read from
        if path is not None and path.is_file():
            data, self.cached = path.read_bytes(), path
        if data is None:
            buf = io.BytesIO()
            export_onnx(model, buf)
            data = buf.getvalue()
            if path is not None:
                from .io import atomic_write

                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda fh: fh.write(data))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.log_severity_level = 3
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("engine 'onnx' on CUDA needs onnxruntime-gpu; this onnxruntime runs on CPU only "
                                 "(use --device cpu or another --engine)")
            providers = ["CUDAExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(data, so, providers=providers)
        self.onnx_bytes = len(data)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.session.run(None, {"x": np.ascontiguousarray(x.detach().cpu().float().numpy())})[0]
        return torch.from_numpy(y)


# --------------------------------------------------------------------------------------------- engine

def resolve(engine: str = "auto", precision: str = "auto", device: str | torch.device = "cpu") -> tuple[str, str]:
    """The concrete (engine, precision) for a request on ``device``; ValueError names a bad parameter."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {ENGINES}, got {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if engine == "auto":
        engine = "eager"
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" and engine != "onnx" else "fp32"
    if precision != "fp32" and dev.type != "cuda":
        raise ValueError(f"--precision {precision} needs a CUDA device (on CPU it is emulated and slower); "
                         "use --precision fp32")
    if precision != "fp32" and engine == "onnx":
        raise ValueError(f"--precision {precision} is not offered with --engine onnx; use fp32")
    return engine, precision


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
        if tolerance is None:
            tolerance = TOLERANCE
        tol = dict(tolerance.get(self.precision, {}) if set(tolerance) & set(PRECISIONS) else tolerance)
        unknown = set(tol) - {"max_abs", "min_psnr"}
        if unknown:
            raise ValueError(f"tolerance keys must be max_abs and/or min_psnr, got {sorted(unknown)}")
        if images is None:
            images = verification_images(self.config.get("arch", "transform"))
        p = next(self.model.parameters())
        worst_abs, worst_psnr, sizes = 0.0, math.inf, []
        for x in images:
            with torch.inference_mode():
                ref = self.model(x.to(p.device, p.dtype)).float().cpu().clamp(0, 1)
            y = self(x).clamp(0, 1)
            if y.shape != ref.shape:
                raise EngineMismatchError(f"engine {self.name}: output shape {tuple(y.shape)} != eager "
                                          f"{tuple(ref.shape)} for input {tuple(x.shape)}")
            d = (y - ref).abs().max().item() if torch.isfinite(y).all() else math.inf
            worst_abs, worst_psnr = max(worst_abs, d), min(worst_psnr, psnr(y, ref) if math.isfinite(d) else 0.0)
            sizes.append(tuple(x.shape[-2:]))
        report = {"max_abs": worst_abs, "min_psnr": worst_psnr, "sizes": sizes, "tolerance": tol}
        if worst_abs > tol.get("max_abs", math.inf) or worst_psnr < tol.get("min_psnr", -math.inf):
            raise EngineMismatchError(
                f"engine {self.name} ({self.precision}) does not match the eager fp32 network: max |diff| "
                f"{worst_abs:.3g}, PSNR {worst_psnr:.1f} dB on inputs {sizes}; tolerance {tol}")
        self.verified = report
        return report


def verification_images(arch: str = "transform", sizes: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """Real photos (astronaut, coffee, chelsea from the scikit-image wheel, a project dependency) resized so
    their longer side is each of ``sizes`` (default 64, 120, 200 for style networks, 24, 40, 60 LR pixels
    for SR), so both odd aspect ratios and sizes that are not multiples of 4 are covered."""
    import importlib.util

    from .inference import resize_longer
    from .io import load_image

    if sizes is None:
        sizes = (24, 40, 60) if arch in ("sr", "srcnn") else (64, 120, 200)
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("verification photos: scikit-image is not installed (pass images=...)")
    root = Path(list(spec.submodule_search_locations)[0]) / "data"
    names = ("astronaut.png", "coffee.png", "chelsea.png")
    out = []
    for i, s in enumerate(sizes):
        img = load_image(root / names[i % len(names)]).to_tensor()
        out.append(resize_longer(img[:3], int(s))[None])
    return out


def build_engine(model: nn.Module, engine: str = "auto", precision: str = "auto", *, verify: bool = True,
                 images: list[torch.Tensor] | None = None, tolerance: dict | None = None,
                 threads: int | None = None, cache_dir: str | os.PathLike | None = None,
                 tune_allocator: bool = True) -> Engine:
    """A verified :class:`Engine` for ``model`` (from checkpoint.load_model; its device is used).

    engine: auto | eager | compile | onnx; precision: auto | fp32 | bf16 | fp16 (bf16/fp16 on CUDA).
    verify: compare with the plain network (Engine.verify) and raise EngineMismatchError on a mismatch.
    cache_dir: keep exported ONNX files there (named by a digest of the weights) for later runs.
    tune_allocator: on CPU, let glibc keep freed feature maps for reuse (:func:`tune_cpu_allocator`)."""
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"model must be a network from checkpoint.load_model, got {type(model).__name__}")
    p = next(model.parameters())
    device = p.device
    engine, precision = resolve(engine, precision, device)
    model.eval()
    arch = model.config.get("arch")
    if arch not in ("transform", "sr"):
        if engine != "eager" or precision != "fp32":
            raise ValueError(f"--engine {engine} / --precision {precision}: a {arch!r} network runs only "
                             "with --engine eager --precision fp32")
        return Engine(model, "eager", "fp32", None, device)
    if device.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    runner = None
    if engine == "onnx":
        runner = _OnnxRunner(model, device, threads, cache_dir)
    elif engine == "eager" and device.type == "cpu":
        runner = fast_cpu_net(model).to(device)
    else:  # eager on CUDA/other devices, compile anywhere
        net = portable_net(model)
        cl = device.type == "cuda"
        if cl:
            net = net.to(memory_format=torch.channels_last)
        if engine == "compile":
            net = torch.compile(net, dynamic=True)
        runner = _AutocastRunner(net, device, _DTYPES[precision], cl)
    eng = Engine(model, engine, precision, runner, device)
    if verify:
        try:
            eng.verify(images, tolerance)
        except EngineMismatchError:
            if getattr(runner, "cached", None) is None:
                raise
            runner.cached.unlink(missing_ok=True)  # a cached graph from older code: export afresh, once
            eng._runner = _OnnxRunner(model, device, threads, cache_dir)
            eng.verify(images, tolerance)
    return eng


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
