"""Choices the inference engines accept, in one place and free of torch, so command-line parsers and
job specs offer and check them without importing torch (2.5 s here). `engines/` documents them."""
from __future__ import annotations

ENGINES = ("auto", "eager", "compile", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
