"""Per-image SR scores that are the same on every run, kept by what determines them.

A method's figures on one image depend only on what went in: the method's weights (bicubic has
none), the HR image and its LR, the scale, the VGG layers and weights, and the metrics' code. The
baselines (bicubic, the official SRCNN) and a shipped champion are scored on the same images run
after run, and on 2 cores that repeated work was most of `benchmark_sr`'s time (a VGG forward per
method and image). So each entry is stored under a SHA-256 of all of those inputs, SCORE_VERSION
included (raise it whenever a metric's code changes): a changed input is a new key, never a stale
figure. A method whose weights are not hashed (no `score_key`) is always scored.

Entries are read from the user's cache (PERCEPTUAL_CACHE_DIR, else the platform cache dir, under
scores/) and from the release's `models/scores.json` (the shipped models and the baselines on the
default sets, written by `python -m pipelines.release scores`), so a fresh clone's first `make run`
scores only its own challengers. `benchmark.sr.reuse_scores: false` scores everything anew.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

# Raise when anything in perceptual_core.metrics, sr_eval, resize, srcnn or the VGG distance changes
# what a score is: every stored entry then misses.
SCORE_VERSION = 2  # 2: float arrays hashed at 6 decimals
SHIPPED = "scores.json"  # in the release's models folder


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def stable_bytes(a: np.ndarray) -> bytes:
    """An image array's bytes for a key. Float arrays (an LR made from HR, a blurred one, a resized photo)
    at 6 decimals: their last bits differ between CPUs and BLAS builds (measured: a float64 LR of Set5 made
    on two machines), which would make every machine miss the release's entries."""
    if a.dtype.kind == "f":
        a = np.round(a.astype(np.float64, copy=False), 6)  # tensor_digest passes float64 already
    return np.ascontiguousarray(a).tobytes()


def array_digest(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(stable_bytes(a))
    return h.hexdigest()


def model_key(kind: str, model, **extra) -> dict:
    """The identity of a network method: its class, config and weights' values (float32, so an fp16
    release and its fp32 registry copy are the same method)."""
    from perceptual_core.vgg import state_dict_sha256

    cfg = getattr(model, "config", None)
    return {"method": kind, "class": type(model).__name__, "config": dict(cfg) if cfg else None,
            "weights": state_dict_sha256(model.state_dict()), **extra}


def pair_digests(pair) -> dict:
    """The image part of an entry's key (hashed once per pair, whatever the number of methods)."""
    return {"hr": array_digest(pair.hr), "lr": array_digest(pair.lr)}


def entry_key(method: dict, pair, scale: int, layers: tuple, vgg_sha: str | None, images: dict | None = None) -> str:
    """``images``: pair_digests(pair), when already computed."""
    return digest({"v": SCORE_VERSION, "method": method, **(images or pair_digests(pair)),
                   "scale": scale, "layers": list(layers), "vgg": vgg_sha if layers else None})


class ScoreCache:
    """{key: metrics} from ``files`` (the first is written back by ``save``), with hit/miss counts."""

    def __init__(self, files: list[Path]):
        self.files, self.entries, self.hits, self.misses, self._new = files, {}, 0, 0, {}
        for f in reversed(files):  # the first file wins
            if f.is_file():
                try:
                    self.entries.update(json.loads(f.read_text())["entries"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{f}: not a score cache ({e}); delete it to score anew") from None

    def get(self, key: str) -> dict | None:
        hit = self.entries.get(key)
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return dict(hit) if hit is not None else None

    def put(self, key: str, metrics: dict) -> None:
        self.entries[key] = self._new[key] = dict(metrics)

    def save(self, path: Path | None = None) -> Path | None:
        """Merge the entries scored since loading into ``path`` (default: the first file)."""
        from perceptual_core.io import atomic_write

        path = path or (self.files[0] if self.files else None)
        if path is None or not self._new:
            return None
        held = json.loads(path.read_text())["entries"] if path.is_file() else {}
        held.update(self._new)
        body = json.dumps({"version": SCORE_VERSION, "entries": dict(sorted(held.items()))}, indent=0).encode()
        atomic_write(path, lambda f: f.write(body))
        return path


def places(user: str, shipped: str, models_dir: Path | None) -> list[Path]:
    """Where reusable benchmark work is read: the user's cache (PERCEPTUAL_CACHE_DIR or the platform's,
    under scores/), then the release's models folder (None: the user's only)."""
    from perceptual_core.vgg import cache_dir

    return [cache_dir() / "scores" / user] + ([Path(models_dir) / shipped] if models_dir is not None else [])


def default_cache(models_dir: Path | None) -> ScoreCache:
    """The user's score cache, then the release's shipped scores."""
    return ScoreCache(places("benchmark_sr.json", SHIPPED, models_dir))
