"""The inference workers: an actor holds the model (loaded and engine-verified once per actor, not per
image) and maps decoded rows to output rows; the fused actor and the local loop also read and write
their own files (``process``), so neither hands decoded pixels through the object store."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from .rows import RESULT, image, records, result, row
from .settings import BatchSpec
from .sinks import write_rows
from .sources import read_rows


def _writable(folder: str | None) -> str | None:
    """``folder`` if this process can create and write it (the ONNX cache on a remote node may not
    exist there), else None: the engine then exports its graph without caching it."""
    if not folder:
        return None
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


class Predictor:
    """Holds the model (one per actor) and maps decoded rows to output pixel rows."""

    def __init__(self, spec: BatchSpec, checkpoint: bytes | list, threads: int | None = None):
        import torch

        from perceptual_core.checkpoint import load_model
        from perceptual_core.inference import auto_device

        if isinstance(checkpoint, list):  # [ObjectRef]: shipped once through the object store
            import ray

            checkpoint = ray.get(checkpoint[0])
        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.model = load_model(spec.model, auto_device(spec.device), data=checkpoint)
        arch = self.model.config["arch"]
        if (spec.kind == "stylize") != (arch == "transform"):
            raise ValueError(f"--model {spec.model} holds a {arch!r} network, which cannot {spec.kind}")
        from perceptual_core.engines import build_engine  # verified against the plain network here, once per actor

        self.model = build_engine(self.model, spec.model_engine, spec.precision, verify=spec.engine_verify,
                                  tolerance=spec.engine_tolerance, threads=threads,
                                  cache_dir=_writable(spec.engine_cache))

    def predict(self, r: dict) -> dict:
        from perceptual_core.inference import stylize_image, upscale_image
        from perceptual_core.io import tensor_to_array

        if r["status"] != "ok":
            return r
        s, img = self.spec, image(r)
        tile = s.tile or None
        try:
            if s.kind == "stylize":
                y, alpha = stylize_image(self.model, img, preserve_color=s.preserve_color, tile=tile, overlap=s.overlap,
                                         border=s.border)
                out = tensor_to_array(y, img.bit_depth)
            else:  # tiled by output pixels, quantised block by block (sr_blocks.py)
                out, alpha = upscale_image(self.model, img, scale=s.scale, tile=tile)
        except (RuntimeError, ValueError) as e:  # e.g. out of memory on one huge image
            return row(key=r["key"], source=r["source"], status="failed", error=f"inference failed: {e}")
        h, w, c = out.shape
        return row(key=r["key"], source=r["source"], h=h, w=w, c=c, bits=img.bit_depth, pixels=out.tobytes(),
                   alpha=b"" if alpha is None else alpha.tobytes(), icc=r["icc"], exif=r["exif"],
                   in_mp=r["in_mp"], t=time.time())

    def __call__(self, batch):  # Ray Data: a pandas batch of decoded rows
        import pandas as pd

        return pd.DataFrame([self.predict(r) for r in batch.to_dict("records")])


class FusedWorker(Predictor):
    """The fused pipeline's actor: source rows (loose files) -> read, decode, infer, encode, write."""

    def __init__(self, spec: BatchSpec, checkpoint: bytes | list, threads: int | None = None, done_ref=None):
        super().__init__(spec, checkpoint, threads)
        import ray

        self.done = ray.get(done_ref[0]) if done_ref else frozenset()

    def __call__(self, batch: dict) -> dict:  # numpy batch format: column -> array
        rows = list(process(self, records(batch), self.spec, self.done))
        return {k: [r[k] for r in rows] for k in RESULT}


def process(pred: Predictor, items, spec: BatchSpec, done, bar=None) -> Iterator[dict]:
    """Read, infer and write ``items`` in this process (the local loop and the fused actors) -> result rows."""
    group = []
    for item in items:
        for r in read_rows(item, spec, done):
            if r["status"] == "skipped":
                yield result(r, "skipped")
                continue
            group.append(pred.predict(r))
            if not spec.output_archive or len(group) >= spec.shard_size:
                yield from write_rows(group, spec)
                group = []
        if bar is not None:
            bar.update()
    if group:
        yield from write_rows(group, spec)
