"""One way to name a model, for every command: a checkpoint file, a shipped model's name
(`models/`, listed by `perceptual models`: `style-la_muse`, `sr-x4-feat`, ...) or a registry URI
(`models:/NAME@ALIAS`, `models:/NAME/VERSION`).

All three come back as the bytes of a project checkpoint (tensors only, `weights_only` loading),
checked once here against the task: a style network cannot upscale, an x8 model cannot serve
`--scale 4`. Batch jobs ship these bytes to their actors; the CLI loads them directly.
"""
from __future__ import annotations

from pathlib import Path


def checkpoint_bytes(ref: str) -> bytes:
    """The checkpoint bytes ``ref`` names; FileNotFoundError / ValueError naming ``ref`` otherwise."""
    from perceptual_core import zoo

    if ref.startswith("models:/"):
        from . import tracking  # lazily: files and shipped names never import mlflow

        return Path(tracking.resolve_model(ref)).read_bytes()
    p = Path(ref)
    if p.is_file():  # a release-format file (e.g. from scripts/gpu_train.sh) or a project checkpoint
        return zoo.release_to_checkpoint(p.read_bytes(), ref) if p.suffix == ".safetensors" else p.read_bytes()
    if p.exists():
        raise ValueError(f"--model {ref}: not a file")
    names = [e.name for e in zoo.entries()]
    if ref in names:
        return zoo.checkpoint_bytes(ref)
    if p.suffix or "/" in ref or "\\" in ref:  # meant as a file
        raise FileNotFoundError(f"--model {ref}: checkpoint not found")
    raise ValueError(f"--model {ref}: not a checkpoint file, a models:/ URI or a shipped model "
                     f"(shipped: {', '.join(names) or 'none'}; `perceptual models` lists them)")


def scale_from_name(ref: str) -> int | None:
    """The scale an SRCNN's name states (`srcnn-x4`, `models:/srcnn-x4@champion`): an SRCNN network
    does not store one, its name does. None for any other name."""
    from . import jobname

    name = ref[len("models:/"):].split("@")[0].split("/")[0] if ref.startswith("models:/") else ref
    try:
        j = jobname.parse(name)
    except ValueError:
        return None
    return j.scale if j.kind == "srcnn" else None


def check_task(config: dict, ref: str, kind: str, scale: int | None = None) -> None:
    """Refuse a network that cannot do ``kind`` (stylize | upscale) at ``scale``."""
    arch = config.get("arch")
    if (kind == "stylize") != (arch == "transform"):
        raise ValueError(f"--model {ref} holds a {arch!r} network, which cannot {kind}")
    if arch == "sr" and scale and scale != config.get("scale"):
        raise ValueError(f"--scale {scale}: the model {ref} upscales x{config.get('scale')}")
    if arch == "srcnn" and not scale:  # SRCNN refines a bicubic upscale of any factor: the job names it
        raise ValueError(f"--model {ref} is an SRCNN, which needs --scale")


def checked_bytes(ref: str, kind: str, scale: int | None = None) -> tuple[bytes, dict]:
    """(checkpoint bytes, network config) of ``ref``, checked once for ``kind`` at ``scale``: what a
    batch job ships to its actors, so a wrong model fails here, not in every actor."""
    from perceptual_core.checkpoint import read_checkpoint

    data = checkpoint_bytes(ref)
    config = read_checkpoint(ref, data)["config"]
    check_task(config, ref, kind, scale)
    return data, config


def load_model(ref: str, kind: str, device="cpu", scale: int | None = None):
    """(model in eval mode on ``device``, checkpoint bytes) for ``ref`` (a file, a shipped name or a
    models:/ URI), checked for ``kind`` (stylize | upscale) at ``scale``: the one way every command,
    batch job and benchmark loads a model."""
    from perceptual_core.checkpoint import load_model as load_checkpoint

    data, _ = checked_bytes(ref, kind, scale)
    return load_checkpoint(ref, device, data=data), data
