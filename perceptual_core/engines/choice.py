"""Which engine and precision a request means on a device: ``auto`` is ``eager``, in fp32 on CPU and fp16
(autocast) on CUDA; reduced precision only on CUDA and never with ``onnx``. The choices themselves
live in options.py (torch-free, for command-line parsers)."""
from __future__ import annotations

import torch

from ..options import ENGINES, PRECISIONS

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
