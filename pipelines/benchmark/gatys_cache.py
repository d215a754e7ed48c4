"""Gatys et al.'s results kept by what determines them, so `benchmark_style` optimises each photo once.

L-BFGS from the content photo is deterministic: the same photo, painting, loss weights, layers,
optimiser settings and VGG weights give the same images after 100/300/500 iterations. On 2 cores the
500 iterations were the largest part of `benchmark_style` on every run, although nothing that
determines them had changed. The snapshots (float32 tensors, so the scores computed from them are
the ones a fresh run computes) are stored as safetensors under a SHA-256 of all of those inputs and
score_cache.SCORE_VERSION; any change is a new key. Read from the user's cache (gatys/ beside the
SR scores) and from the release's models/gatys/ (the default photos and style, written by
`python -m pipelines.release scores`); `benchmark.style.reuse_gatys: false` optimises anew.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .score_cache import SCORE_VERSION, digest, places, stable_bytes

SHIPPED_DIR = "gatys"  # in the release's models folder


def tensor_digest(t: torch.Tensor) -> str:
    import hashlib

    x = t.detach().to("cpu", torch.float64)
    h = hashlib.sha256(f"{tuple(x.shape)}".encode())
    h.update(stable_bytes(x.numpy()))
    return h.hexdigest()


def gatys_key(content: torch.Tensor, style: torch.Tensor, weights: tuple, iters: list[int], opts: dict,
              vgg_sha: str) -> str:
    return digest({"v": SCORE_VERSION, "content": tensor_digest(content), "style": tensor_digest(style),
                   "weights": [float(w) for w in weights], "iters": sorted(iters), "opts": opts, "vgg": vgg_sha})


class GatysStore:
    """Snapshots by key: read from ``folders`` (first wins), written to the first."""

    def __init__(self, folders: list[Path]):
        self.folders, self.hits, self.misses = folders, 0, 0

    def get(self, key: str) -> tuple[dict[int, torch.Tensor], float] | None:
        from safetensors import safe_open

        for d in self.folders:
            f = d / f"{key}.safetensors"
            if f.is_file():
                try:
                    with safe_open(str(f), "pt") as st:
                        snaps = {int(k.removeprefix("it_")): st.get_tensor(k) for k in st.keys()}
                        evals = float(st.metadata()["evals_per_iteration"])
                except Exception as e:  # noqa: BLE001 - any damage: name the file
                    raise ValueError(f"{f}: not a Gatys cache entry ({e}); delete it to optimise anew") from None
                self.hits += 1
                return snaps, evals
        self.misses += 1
        return None

    def put(self, key: str, snapshots: dict[int, torch.Tensor], evals_per_iteration: float,
            folder: Path | None = None) -> Path | None:
        from safetensors.torch import save

        from perceptual_core.io import atomic_write

        d = folder or (self.folders[0] if self.folders else None)
        if d is None:
            return None
        body = save({f"it_{i}": t.detach().to("cpu", torch.float32).contiguous() for i, t in snapshots.items()},
                    metadata={"evals_per_iteration": repr(float(evals_per_iteration))})
        f = d / f"{key}.safetensors"
        atomic_write(f, lambda fh: fh.write(body))
        return f


def default_store(models_dir: Path | None) -> GatysStore:
    """The user's Gatys cache, then the release's models/gatys/."""
    return GatysStore(places("gatys", SHIPPED_DIR, models_dir))
