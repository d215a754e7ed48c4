"""What an engine is checked against before use: the plain network's fp32 eager output on real photos of
several sizes, within :data:`TOLERANCE`; a mismatch raises :class:`EngineMismatchError` (never a warning).

fp32 engines must agree to half an 8-bit level (max |diff| <= 2e-3 on the [0, 1] output; measured: <= 2e-5
on the trained networks, <= 2e-4 on high-contrast random ones; on CUDA checked with TF32 off, `exact_fp32`);
bf16/fp16 must keep PSNR >= 40 dB against fp32.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch

from ..options import PRECISIONS

#: Verification bounds on [0, 1] outputs against the plain fp32 network: max_abs (largest |difference|)
#: for fp32 engines, min_psnr (dB) for reduced precision.
TOLERANCE = {"fp32": {"max_abs": 2e-3}, "bf16": {"min_psnr": 40.0}, "fp16": {"min_psnr": 40.0}}


class EngineMismatchError(ValueError):
    """The engine's output differs from the plain network's by more than the tolerance (a ValueError, so
    the CLI reports it as a usage error, exit 2)."""


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two images in [0, 1] (clamped); inf when identical (metrics.psnr at range 1)."""
    from ..metrics import psnr as _psnr

    return _psnr(a.double().clamp(0, 1), b.double().clamp(0, 1), data_range=1.0)


def check_engine(engine, images: list[torch.Tensor] | None = None, tolerance: dict | None = None) -> dict:
    """The comparison of :meth:`Engine.verify <perceptual_core.engines.engine.Engine.verify>`: its report,
    or EngineMismatchError."""
    if tolerance is None:
        tolerance = TOLERANCE
    tol = dict(tolerance.get(engine.precision, {}) if set(tolerance) & set(PRECISIONS) else tolerance)
    unknown = set(tol) - {"max_abs", "min_psnr"}
    if unknown:
        raise ValueError(f"tolerance keys must be max_abs and/or min_psnr, got {sorted(unknown)}")
    if images is None:
        images = verification_images(engine.config.get("arch", "transform"))
    p = next(engine.model.parameters())
    worst_abs, worst_psnr, sizes = 0.0, math.inf, []
    for x in images:
        with exact_fp32(p.device if engine.precision == "fp32" else None):
            with torch.inference_mode():
                ref = engine.model(x.to(p.device, p.dtype)).float().cpu().clamp(0, 1)
            y = engine(x).clamp(0, 1)
        if y.shape != ref.shape:
            raise EngineMismatchError(f"engine {engine.name}: output shape {tuple(y.shape)} != eager "
                                      f"{tuple(ref.shape)} for input {tuple(x.shape)}")
        d = (y - ref).abs().max().item() if torch.isfinite(y).all() else math.inf
        worst_abs, worst_psnr = max(worst_abs, d), min(worst_psnr, psnr(y, ref) if math.isfinite(d) else 0.0)
        sizes.append(tuple(x.shape[-2:]))
    report = {"max_abs": worst_abs, "min_psnr": worst_psnr, "sizes": sizes, "tolerance": tol}
    if worst_abs > tol.get("max_abs", math.inf) or worst_psnr < tol.get("min_psnr", -math.inf):
        raise EngineMismatchError(
            f"engine {engine.name} ({engine.precision}) does not match the eager fp32 network: max |diff| "
            f"{worst_abs:.3g}, PSNR {worst_psnr:.1f} dB on inputs {sizes}; tolerance {tol}")
    return report


@contextmanager
def exact_fp32(device: torch.device | None):
    """On CUDA, TF32 off (cuDNN convolutions and matmuls) while an fp32 engine is checked, for it and the
    reference alike: TF32 rounds every conv's inputs to 10 mantissa bits, the plain network in use too, and two
    fp32 paths that round differently drift apart by more than the fp32 bound (an H200, style-la_muse:
    2.8e-3 max |diff|, 75 dB) without either being wrong. The check is of the engine's arithmetic; in use both
    run with the device's TF32 setting. Elsewhere (CPU, or ``None``) it changes nothing."""
    if device is None or torch.device(device).type != "cuda":
        yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def verification_images(arch: str = "transform", sizes: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """Real photos (astronaut, coffee, chelsea from the scikit-image wheel, a project dependency) resized so
    their longer side is each of ``sizes`` (default 64, 120, 200 for style networks, 24, 40, 60 LR pixels
    for SR), so both odd aspect ratios and sizes that are not multiples of 4 are covered."""
    import importlib.util

    from ..inference import resize_longer
    from ..io import load_image

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
