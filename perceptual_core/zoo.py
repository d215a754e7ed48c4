"""Released models shipped with the project: `models/`, one safetensors file and one card each.

Why safetensors: a shipped file is read by every user, so it must not be able to run code when
loaded. A safetensors file is a JSON header plus raw tensor bytes; nothing in it is unpickled.
The network's config (what `networks.build_model` needs) rides in the header's metadata.

``models/MANIFEST.json`` is the index, committed beside the weights:

    {"models": {"style-la_muse": {"file": "style-la_muse.safetensors", "sha256": "...",
                                  "task": "stylize", "card": "style-la_muse.md", ...}}}

Every load checks the file's SHA-256 against the manifest before reading it, so a truncated,
corrupted or swapped file is refused (naming the file) rather than producing wrong pictures.
Weights may be stored in fp16 to halve the download; they are cast back to fp32 on load (the
release script checks the fp32 output stays within the engines' 40 dB bound of the original).

Names follow the registry's: ``style-NAME``, ``sr-x4-feat``, ``srcnn-x4``; ``--style NAME`` in
the CLI is ``style-NAME``. The folder is ``$PERCEPTUAL_MODELS_DIR`` or ``<project>/models``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .networks import build_model
from .vgg import _sha256_file as sha256_file  # one streaming SHA-256 for weight files

__all__ = ["ZooEntry", "models_dir", "entries", "get", "load", "verify", "save_release", "sha256_file",
           "state_from_bytes", "model_from_bytes", "checkpoint_bytes", "release_to_checkpoint", "task_of", "TASKS"]

MANIFEST = "MANIFEST.json"
FORMAT = "perceptual-zoo-v1"
TASKS = ("stylize", "upscale")


def models_dir() -> Path:
    env = os.environ.get("PERCEPTUAL_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    file: Path
    sha256: str
    task: str  # stylize | upscale
    card: Path | None
    info: dict  # everything else the manifest says (style image, iterations, quality row, ...)


def _manifest(folder: Path) -> dict:
    p = folder / MANIFEST
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text())
    except ValueError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"{p}: expected {{\"models\": {{NAME: {{file, sha256, task}}}}}}")
    return models


def entries(folder: str | Path | None = None) -> list[ZooEntry]:
    """Every shipped model the manifest lists, by name."""
    folder = Path(folder) if folder else models_dir()
    out = []
    for name, m in sorted(_manifest(folder).items()):
        missing = [k for k in ("file", "sha256", "task") if not m.get(k)]
        if missing or m["task"] not in TASKS:
            raise ValueError(f"{folder / MANIFEST}: entry {name!r} lacks {missing or 'a valid task'}")
        info = {k: v for k, v in m.items() if k not in ("file", "sha256", "task", "card")}
        out.append(ZooEntry(name, folder / m["file"], m["sha256"], m["task"],
                            folder / m["card"] if m.get("card") else None, info))
    return out


def get(name: str, folder: str | Path | None = None) -> ZooEntry:
    """The entry named ``name`` (``style-NAME``, ``sr-x4-feat``, ...); ValueError naming the choices."""
    found = {e.name: e for e in entries(folder)}
    if name not in found:
        known = ", ".join(found) or "none"
        raise ValueError(f"unknown model {name!r}: shipped models are {known} (`perceptual models` lists them)")
    return found[name]


def verify(entry: ZooEntry) -> bytes:
    """The file's bytes after checking them against the manifest's SHA-256."""
    if not entry.file.is_file():
        raise FileNotFoundError(f"{entry.name}: weights file missing: {entry.file}")
    data = entry.file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ValueError(f"{entry.file}: SHA-256 {digest[:16]}... does not match the manifest's "
                         f"{entry.sha256[:16]}... (corrupted or replaced; restore it from the release)")
    return data


def task_of(config: dict) -> str:
    return "stylize" if config.get("arch") == "transform" else "upscale"


def photo_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the network itself takes for an RGB batch ``x``: SRCNN works on the (bicubic-upscaled) Y
    channel, every other network on RGB. For checks that run a shipped network directly."""
    if getattr(model, "config", {}).get("arch") == "srcnn":
        from .metrics import y_bt601

        return y_bt601(x, axis=1)
    return x


def state_from_bytes(data: bytes, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(network config, fp32 state dict) from safetensors bytes."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")  # the format: u64 length, JSON header, tensors
        meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{name}: not a perceptual release file (header format {meta.get('format')!r})")
    config = json.loads(meta["config"])
    return config, {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def load(name: str, task: str | None = None, device: str | torch.device = "cpu",
         folder: str | Path | None = None) -> nn.Module:
    """The shipped network ``name`` in eval mode, hash-verified; ``task`` refuses the wrong kind."""
    e = get(name, folder)
    if task and e.task != task:
        raise ValueError(f"model {name!r} is a {e.task} model and cannot {task}")
    return model_from_bytes(verify(e), str(e.file)).to(device)


def model_from_bytes(data: bytes, name: str) -> nn.Module:
    """The network stored in release-file bytes (fp16 weights cast back to fp32), in eval mode."""
    config, state = state_from_bytes(data, name)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{name}: weights do not fit the stored config {config}: {err}") from err
    return model.eval()


def save_release(path: str | Path, model: nn.Module, *, half: bool = True, meta: dict | None = None) -> str:
    """Write ``model`` as a release file (fp16 storage when ``half``); returns its SHA-256."""
    from safetensors.torch import save as st_save

    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "config": json.dumps(dict(model.config), sort_keys=True),
              **{k: str(v) for k, v in (meta or {}).items()}}
    data = st_save(state, metadata=header)
    from .io import atomic_write

    atomic_write(Path(path), lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def checkpoint_bytes(name: str, folder: str | Path | None = None) -> bytes:
    """The shipped model as the bytes of a project checkpoint (`checkpoint.read_checkpoint` format),
    so every consumer of checkpoints (the CLI, batch actors on remote nodes) takes it unchanged."""
    e = get(name, folder)
    return release_to_checkpoint(verify(e), str(e.file), {"release": name, "sha256": e.sha256})


def release_to_checkpoint(data: bytes, origin: str, meta: dict | None = None) -> bytes:
    """Release-file bytes (safetensors) as project-checkpoint bytes; ``origin`` names them in errors."""
    import io

    from .checkpoint import FORMAT as CKPT_FORMAT

    config, state = state_from_bytes(data, origin)
    buf = io.BytesIO()
    torch.save({"format": CKPT_FORMAT, "config": config, "state_dict": state, "meta": meta or {}}, buf)
    return buf.getvalue()
