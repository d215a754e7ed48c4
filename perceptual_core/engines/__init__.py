"""Inference engines for the feed-forward networks: the fastest way to run a trained TransformNet/SRNet.

An :class:`Engine` wraps a model loaded with ``checkpoint.load_model`` and is called like it (a (1, 3, H, W)
host tensor in [0, 1] in, the float32 host output out); ``inference.stylize_image``/``upscale_image``
accept one in place of the model. Engines (``build_engine(model, engine=..., precision=...)``):

- ``eager``: PyTorch, rewritten for speed without changing the function computed (fast_cpu.py on CPU,
  portable.py on CUDA; both built from the layer list of layers.py).
- ``compile``: ``torch.compile`` of the portable network (portable.py).
- ``onnx``: the portable network exported to ONNX and run by onnxruntime (onnx_engine.py).
- ``auto``: ``eager``; fp32 on CPU, fp16 (autocast) on CUDA (choice.py).

Every engine is verified against the plain network before use (verify.py); build.py picks the runner
and verifies it, engine.py is the :class:`Engine` it returns.
"""
from __future__ import annotations

from ..options import ENGINES, PRECISIONS
from .build import build_engine
from .choice import resolve
from .engine import Engine
from .fast_cpu import fast_cpu_net, nnpack_available, tune_cpu_allocator
from .onnx_engine import _model_digest, export_onnx  # _model_digest: the cached graph's file name
from .portable import portable_net
from .verify import TOLERANCE, EngineMismatchError, psnr, verification_images

__all__ = ["ENGINES", "PRECISIONS", "TOLERANCE", "Engine", "EngineMismatchError", "build_engine", "resolve",
           "export_onnx", "fast_cpu_net", "portable_net", "verification_images", "psnr", "nnpack_available"]
