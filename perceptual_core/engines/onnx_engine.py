"""The ``onnx`` engine: the portable network exported to ONNX (TorchScript exporter, opset 17, dynamic H and W)
and run by onnxruntime (CPU; CUDA where onnxruntime-gpu is installed); with a cache_dir, exported graphs are
kept there under a digest of the weights, so later runs skip the export.

int8 (onnxruntime static QDQ quantisation, per-channel weights, calibrated on COCO photos) was measured
and rejected: 22-25 dB PSNR against fp32 on the style network (bound 40 dB) and little faster on AVX2
without VNNI (benchmarks/speed.py, docs/engines.md).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..networks import MirrorPad, TransformNet
from .portable import portable_net


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
                from ..io import atomic_write

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
