"""Tiled inference: run a feed-forward network on an image too large for the accelerator.

Only one tile at a time goes to the device; the output and the blending weights stay on the host.

Geometry. The image is cut into a grid of *cores* (at most ``tile`` x ``tile`` pixels, sizes
balanced, origins multiples of the model's alignment); each core is sent with ``overlap``
pixels of *context* on every side (clipped at the image border). Because every origin is a
multiple of the total stride (4 for TransformNet, 1 for SRNet), each tile's strided convolutions
sample the same grid as the untiled forward, and only the tiles that touch the right/bottom image
border see TransformNet's internal pad to a multiple of 4, exactly as the untiled forward does.
The outputs are blended with separable linear ramps (feathering): across the 2 * overlap pixels
two neighbouring tiles share, a tile's weight rises from 0 to 1 over the middle overlap / 2
pixels (centred on the core boundary; the outer 3/4 overlap pixels of a tile, whose receptive
field is cut the most, get weight 0). Weights are normalised, so they sum to 1 everywhere.
(Measured at overlap 32 / 48, setup below: this ramp 48.9 / 78.6 dB, a ramp over the middle
``overlap`` pixels 42.4 / 59.5 dB. With width 0.25 and tile 64: this ramp 45.7 / 74.5 dB, the
middle-overlap ramp 39.5 / 56.4, a ramp over all 2 * overlap 28.3 / 32.9, a hard cut at the core
boundary 46.5 / 85.8 but with a seam where the residual error jumps.)

Instance norm. InstanceNorm2d normalises with per-image statistics; per-tile statistics would
give each tile its own colours (visible seams). With ``global_norm_stats=True`` every instance-norm
layer gets the mean and (biased) variance of its input over the WHOLE image, as in the untiled
forward: for layer l = 1..L (forward order) a tiled pass runs the network up to layer l, with
layers < l already frozen to their global statistics, and accumulates layer l's input over each
tile's core region (mapped to that layer's resolution and offset, e.g. 1/4 and the 40 px mirror
padding of padding="paper"); the rest of that forward is skipped. A last tiled pass uses all the
frozen statistics. Cost: about (1 + L/2) untiled-forward equivalents more than a plain tiled pass
(measured: TransformNet, L = 15, ~7x). Batch norm must be in eval mode (running statistics).

Accuracy (measured, Set14 photos, random-init TransformNet width 0.5 with its output contrast
raised, instance norm, padding="reflect", upsample="nearest"; the receptive field is +-56 px):
see OVERLAP_ACCURACY below (tile 96; max abs difference 0.069 at overlap 32, 0.0023 at 48).
Per-tile statistics (global_norm_stats=False) give 11.8 dB at overlap 48. padding="paper" (width
0.25, tile 128): 53.2 dB at overlap 32, 83.4 dB at 48. SRNet x4 (batch norm): > 100 dB at overlap
16 LR px. The remaining difference comes only from the truncated receptive field, so a trained
network behaves alike (its effective receptive field is smaller still).
"""

from __future__ import annotations

from contextlib import contextmanager
from fractions import Fraction

import torch
from torch import nn

__all__ = ["tiled_forward", "model_alignment", "model_scale", "check_tile", "core_edges", "MIN_TILE",
           "OVERLAP_ACCURACY"]

#: The smallest tile core (pixels): below it the alignment rounding leaves no core. Callers that take
#: a tile size from users check it with `check_tile` (0 or None there means "never tile").
MIN_TILE = 16


def check_tile(tile, name: str = "--tile") -> None:
    """ValueError naming ``name`` unless ``tile`` is 0/None (never tile) or an int >= MIN_TILE."""
    if tile is None or (isinstance(tile, int) and not isinstance(tile, bool) and (tile == 0 or tile >= MIN_TILE)):
        return
    raise ValueError(f"{name} must be 0 (never tile) or >= {MIN_TILE}, got {tile!r}")


#: Measured PSNR (dB) of tiled vs untiled output by overlap, tile 96, on the setup of the module
#: doc (tests/test_tiling.py): 48 px of context is the default.
OVERLAP_ACCURACY: dict = {16: 26.5, 32: 48.9, 48: 78.6, 64: 114.0}

_PROBE = ((32, 48), (48, 32))  # two input sizes (H, W) whose layer shapes reveal scale and offset


class _StopForward(Exception):
    """Raised by the statistics accumulator to skip the layers after the one being measured."""


def model_alignment(model: nn.Module) -> int:
    """The total stride of the network: tile origins must be multiples of it."""
    cfg = getattr(model, "config", None)
    arch = cfg.get("arch") if isinstance(cfg, dict) else None
    if arch == "transform":
        return 4
    if arch in ("sr", "srcnn"):
        return 1
    a = 1
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            a *= max(m.stride)
    return a


def model_scale(model: nn.Module) -> int:
    """Output size / input size (4 or 8 for SRNet, 1 otherwise)."""
    cfg = getattr(model, "config", None)
    if isinstance(cfg, dict) and cfg.get("arch") == "sr":
        return int(cfg["scale"])
    s = getattr(model, "scale", 1)
    return s if isinstance(s, int) and s >= 1 else 1


# --------------------------------------------------------------------------------- geometry

def _split(n: int, tile: int, ov: int, a: int) -> list[tuple[int, int, int, int]]:
    """Cut [0, n) into ceil(n / tile) cores of balanced size <= tile whose boundaries are
    multiples of ``a`` (tile and ov are multiples of a); return (core0, core1, ext0, ext1) with
    the extent = core + ov context per side, clipped to [0, n)."""
    k = -(-n // tile)
    b = [a * -(-(i * n) // (k * a)) for i in range(k)] + [n]  # a * ceil(i * n / (k * a))
    return [(b[i], b[i + 1], max(0, b[i] - ov), min(n, b[i + 1] + ov)) for i in range(k)]


def core_edges(model: nn.Module, n: int, tile: int) -> list[int]:
    """Where tiled_forward's cores meet along an axis of ``n`` input pixels (the seams to look at)."""
    a = model_alignment(model)
    return [c1 for _, c1, _, _ in _split(n, tile // a * a, 0, a)[:-1]]


def _ramp(e0: int, e1: int, n: int, ov: float) -> torch.Tensor:
    """1-D feathering weight over the extent [e0, e1) of an axis of length n (output pixels)."""
    d = torch.arange(e1 - e0, dtype=torch.float64) + 0.5  # distance of pixel centres to the low edge
    w = torch.ones(e1 - e0, dtype=torch.float64)
    if ov > 0:  # 0 up to 3/4 ov from an inner edge, 1 from 5/4 ov (the core boundary is at ov)
        lo, width = 0.75 * ov, 0.5 * ov
        if e0 > 0:
            w = torch.minimum(w, ((d - lo) / width).clamp(0, 1))
        if e1 < n:
            w = torch.minimum(w, ((e1 - e0 - d - lo) / width).clamp(0, 1))
    return w


def _weights(spans, n: int, ov: float) -> list[torch.Tensor]:
    """Per-tile 1-D weights along one axis, normalised to sum to 1 at every pixel."""
    ws = [_ramp(e0, e1, n, ov) for e0, e1 in spans]
    total = torch.zeros(n, dtype=torch.float64)
    for (e0, e1), w in zip(spans, ws):
        total[e0:e1] += w
    return [(w / total[e0:e1]).float() for (e0, e1), w in zip(spans, ws)]


class _Tile:
    __slots__ = ("rows", "cols")

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols  # (core0, core1, ext0, ext1, n) per axis


def _core_range(axis, size: int, r: Fraction, half: Fraction) -> tuple[int, int]:
    """The tile's core along one axis in the coordinates of a feature map of ``size`` pixels
    (r = feature pixels per input pixel, half = feature pixels of padding on the low side).
    The first/last tile also owns the padding beyond the image border."""
    c0, c1, e0, _e1, n = axis
    lo = Fraction(0) if c0 == 0 else (c0 - e0) * r + half
    hi = Fraction(size) if c1 == n else (c1 - e0) * r + half
    if lo.denominator != 1 or hi.denominator != 1 or not 0 <= lo < hi <= size:
        raise RuntimeError(f"cannot map the tile core [{c0}, {c1}) (extent from {e0}) to a feature "
                           f"map of {size} px (scale {r}, offset {half}); increase overlap")
    return int(lo), int(hi)


# ------------------------------------------------------------------------ norm replacements

class _FrozenInstanceNorm(nn.Module):
    """InstanceNorm2d with fixed (whole-image) statistics: x * scale + shift per channel."""

    def __init__(self, norm: nn.InstanceNorm2d, mean: torch.Tensor, var: torch.Tensor):
        super().__init__()
        scale = 1.0 / torch.sqrt(var + norm.eps)
        shift = -mean * scale
        if norm.affine:
            w, b = norm.weight.detach().double().cpu(), norm.bias.detach().double().cpu()
            scale, shift = scale * w, shift * w + b
        self._scale, self._shift, self._cache = scale, shift, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = (self._scale.to(x.device, x.dtype).view(1, -1, 1, 1),
                                self._shift.to(x.device, x.dtype).view(1, -1, 1, 1))
        scale, shift = self._cache[key]
        return torch.addcmul(shift, x, scale)


class _Accumulator(nn.Module):
    """Stands in for the instance-norm layer being measured: adds the per-channel count, mean and
    sum of squared deviations of its input over the current tile's core (float64, Chan's
    parallel combination), then stops the forward."""

    def __init__(self, r_h, half_h, r_w, half_w):
        super().__init__()
        self.map = (r_h, half_h, r_w, half_w)
        self.tile: _Tile | None = None
        self.n = 0
        self.mean = self.m2 = None

    def forward(self, x: torch.Tensor):
        r_h, half_h, r_w, half_w = self.map
        y0, y1 = _core_range(self.tile.rows, x.shape[-2], r_h, half_h)
        x0, x1 = _core_range(self.tile.cols, x.shape[-1], r_w, half_w)
        t = x[0, :, y0:y1, x0:x1].to(torch.float32 if x.device.type == "mps" else torch.float64)
        nt = t.shape[-2] * t.shape[-1]
        mt = t.mean((-2, -1))
        m2t = (t - mt[:, None, None]).square().sum((-2, -1))
        mt, m2t = mt.double().cpu(), m2t.double().cpu()
        if self.mean is None:
            self.n, self.mean, self.m2 = nt, mt, m2t
        else:
            n = self.n + nt
            delta = mt - self.mean
            self.mean = self.mean + delta * (nt / n)
            self.m2 = self.m2 + m2t + delta.square() * (self.n * nt / n)
            self.n = n
        raise _StopForward

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.m2 / self.n  # biased variance, as instance norm uses


@contextmanager
def _swapped(model: nn.Module, replace: dict):
    """Temporarily put replace[m] wherever module m is registered in ``model``."""
    slots = [(parent, name, child) for parent in model.modules()
             for name, child in parent._modules.items() if child is not None and child in replace]
    try:
        for parent, name, child in slots:
            parent._modules[name] = replace[child]
        yield
    finally:
        for parent, name, child in slots:
            parent._modules[name] = child


def _norms_needing_stats(model: nn.Module) -> list[nn.InstanceNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)
            and (m.training or not m.track_running_stats)]


def _probe(model, norms, device, dtype) -> list[tuple[nn.Module, tuple]]:
    """Instance-norm layers in forward order, each with its map from input to feature pixels
    (r, half) per axis, read off the layer input sizes for two probe sizes."""
    seen: list[list] = [[], []]
    run = [0]
    hooks = [m.register_forward_pre_hook(lambda m, args: seen[run[0]].append((m, args[0].shape[-2:])))
             for m in norms]
    try:
        for run[0], (h, w) in enumerate(_PROBE):
            model(torch.zeros(1, 3, h, w, device=device, dtype=dtype))
    finally:
        for hk in hooks:
            hk.remove()
    if [m for m, _ in seen[0]] != [m for m, _ in seen[1]] or len({id(m) for m, _ in seen[0]}) != len(seen[0]):
        raise NotImplementedError("global_norm_stats needs each instance-norm layer to run once per forward")
    (h1, w1), (h2, w2) = _PROBE
    out = []
    for (m, s1), (_, s2) in zip(*seen):
        r_h, r_w = Fraction(s2[0] - s1[0], h2 - h1), Fraction(s2[1] - s1[1], w2 - w1)
        c_h, c_w = s1[0] - h1 * r_h, s1[1] - w1 * r_w  # extra rows/columns: symmetric padding
        out.append((m, (r_h, c_h / 2, r_w, c_w / 2)))
    return out


# ------------------------------------------------------------------------------------ driver

def _plain(y: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) float32 CPU tensor, so callers may modify it in place."""
    y = y.float().cpu()
    if y.is_inference():
        with torch.inference_mode(False):
            y = y.clone()
    return y


def _device_and_dtype(model, x, tile, overlap, device, dtype,
                      global_norm_stats) -> tuple[torch.device, torch.dtype]:
    """Check tiled_forward's arguments (the error names the bad one); -> the device and dtype the tiles
    run at (defaults: the model parameters')."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (1, 3, H, W) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor in [0, 1], got dtype {x.dtype}")
    H, W = x.shape[-2:]
    if H < 1 or W < 1:
        raise ValueError(f"x must have H, W >= 1, got {H}x{W}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_TILE:
        raise ValueError(f"tile must be an int >= {MIN_TILE}, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be an int >= 0, got {overlap!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
    if not isinstance(global_norm_stats, bool):
        raise ValueError(f"global_norm_stats must be a bool, got {global_norm_stats!r}")
    param = next(model.parameters(), None)
    try:
        device = torch.device(device) if device is not None else (
            param.device if param is not None else torch.device("cpu"))
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch.device or device string, got {device!r} ({e})") from None
    if dtype is None:
        dtype = param.dtype if param is not None and param.is_floating_point() else x.dtype
    return device, dtype


def _global_stats(model, norms, tiles, piece, device, dtype) -> dict:
    """Whole-image statistics for the instance-norm layers ``norms``, layer by layer in forward order
    (module doc); ``piece(tile)`` is a tile's input on the device. -> {layer: its _FrozenInstanceNorm}."""
    frozen: dict = {}
    for m, mapping in _probe(model, norms, device, dtype):
        acc = _Accumulator(*mapping)
        with _swapped(model, {**frozen, m: acc}):
            for t in tiles:
                acc.tile = t
                try:
                    model(piece(t))
                except _StopForward:
                    continue
                raise RuntimeError(f"instance-norm layer {m} was not reached")
        frozen[m] = _FrozenInstanceNorm(m, *acc.stats())
    return frozen


def tiled_forward(model: nn.Module, x: torch.Tensor, *, tile: int = 512, overlap: int = 48,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                  global_norm_stats: bool = True) -> torch.Tensor:
    """Run ``model`` on a large image tile by tile.

    x: (1, 3, H, W) float tensor in [0, 1] on the host (CPU). Returns the model output
    (1, C, s*H, s*W) float32 on the CPU (s = model scale, 1 for TransformNet), computed tile by
    tile: input tiles of at most ``tile`` x ``tile`` core pixels plus ``overlap`` context pixels
    on each side (clipped at the image border), moved to ``device`` (default: the model's
    parameters' device) one at a time, cast to ``dtype`` (default: the parameters' dtype; the
    output is cast back to float32), and blended into the output with weights that ramp linearly
    across the overlap (feathering), so there are no seams. Images with H, W <= tile run in one
    piece (identical to model(x)).

    ``tile`` is rounded down and ``overlap`` up to a multiple of the model's alignment (its total
    stride: 4 for TransformNet, 1 for SRNet), so the device gets at most
    (tile + 2 * overlap) x (tile + 2 * overlap) input pixels at a time (plus the small probe below).

    global_norm_stats: give instance-norm layers whole-image statistics (module docstring); this
    costs one tiled pass per instance-norm layer up to that layer (TransformNet: 15 layers, about
    7x a plain tiled pass) and a tiny probe forward (two 32 x 48 inputs) that maps each layer's
    feature coordinates. False: per-tile statistics (visible seams; for comparison only).

    Accuracy vs the untiled forward is limited only by the receptive field cut at ``overlap``
    (TransformNet's reaches +-56 px); see the module docstring for measured PSNRs.

    The model's modules are swapped temporarily (restored on return or error): do not run the
    same model object from another thread meanwhile. Batch norm must be in eval mode.
    """
    device, dtype = _device_and_dtype(model, x, tile, overlap, device, dtype, global_norm_stats)
    H, W = x.shape[-2:]
    if H <= tile and W <= tile:
        with torch.inference_mode():
            return _plain(model(x.to(device, dtype)))

    a = model_alignment(model)
    s = model_scale(model)
    core = tile // a * a
    ov = -(-overlap // a) * a
    if core < a:
        raise ValueError(f"tile must be >= the model's alignment {a}, got {tile}")
    bad_bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if bad_bn:
        raise ValueError("tiled_forward needs batch norm in eval mode (call model.eval()); "
                         "in training mode each tile would use its own batch statistics")

    rows = [(c0, c1, e0, e1, H) for c0, c1, e0, e1 in _split(H, core, ov, a)]
    cols = [(c0, c1, e0, e1, W) for c0, c1, e0, e1 in _split(W, core, ov, a)]
    tiles = [_Tile(r, c) for r in rows for c in cols]
    wy = _weights([(r[2] * s, r[3] * s) for r in rows], H * s, ov * s)
    wx = _weights([(c[2] * s, c[3] * s) for c in cols], W * s, ov * s)

    def piece(t: _Tile) -> torch.Tensor:
        return x[..., t.rows[2]:t.rows[3], t.cols[2]:t.cols[3]].to(device, dtype).contiguous()

    with torch.inference_mode():
        norms = _norms_needing_stats(model) if global_norm_stats else []
        frozen = _global_stats(model, norms, tiles, piece, device, dtype) if norms else {}

        out = None
        with _swapped(model, frozen):
            for i, r in enumerate(rows):
                for j, c in enumerate(cols):
                    y = model(piece(tiles[i * len(cols) + j])).float().cpu()
                    hs, ws = (r[3] - r[2]) * s, (c[3] - c[2]) * s
                    if y.dim() != 4 or y.shape[0] != 1 or tuple(y.shape[-2:]) != (hs, ws):
                        raise RuntimeError(f"tile output {tuple(y.shape)} is not (1, C, {hs}, {ws}): "
                                           f"the model does not scale its input by {s}")
                    if out is None:
                        with torch.inference_mode(False):
                            out = torch.zeros(1, y.shape[1], H * s, W * s)
                    out[..., r[2] * s:r[3] * s, c[2] * s:c[3] * s].addcmul_(
                        y, wy[i][:, None] * wx[j][None, :])
    return out
