"""The one way to get an engine: pick the runner for the request (engine, precision, the model's device),
wrap it in an :class:`Engine` and verify it before handing it out; a cached ONNX graph that fails the
check (exported by older code) is exported afresh, once."""
from __future__ import annotations

import os

import torch
from torch import nn

from .choice import _DTYPES, resolve
from .engine import Engine
from .fast_cpu import fast_cpu_net, tune_cpu_allocator
from .onnx_engine import _OnnxRunner
from .portable import _AutocastRunner, portable_net
from .verify import EngineMismatchError


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
