"""Model checkpoints that load without unpickling code.

A checkpoint is a dict of tensors and plain values (`config` to rebuild the network,
`state_dict`, optional `meta`) read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn as nn

from .io import atomic_write
from .networks import build_model

FORMAT = "perceptual-checkpoint-v1"


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict | None = None, **extra) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint."""
    path = Path(path)
    state = {"format": FORMAT, "config": dict(model.config), "state_dict": model.state_dict(), "meta": meta or {}}
    state.update(extra)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def read_checkpoint(path: str | Path, data: bytes | None = None) -> dict:
    """data: the file's bytes when the caller has them (e.g. shipped to remote workers);
    ``path`` then only names it in errors."""
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint (only tensor/plain-value files load safely): {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a perceptual checkpoint (missing format {FORMAT!r})")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu", data: bytes | None = None) -> nn.Module:
    """Rebuild the network stored in a checkpoint, in eval mode."""
    state = read_checkpoint(path, data)
    model = build_model(state["config"])
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the stored config {state['config']}: {e}") from e
    return model.to(device).eval()
