"""The rows that flow between stages, one per image: plain bytes and ints (no arrays), so Ray Data's
pandas/arrow blocks carry them between read tasks, inference actors and write tasks, and the local loop
runs the very same functions. A result row (RESULT) is what the driver counts."""
from __future__ import annotations

from .settings import BatchSpec

ROW = dict(key="", source="", status="ok", error="", h=0, w=0, c=0, bits=8, pixels=b"", alpha=b"",
           icc=b"", exif=b"", in_mp=0.0, t=0.0)
RESULT = ("key", "source", "status", "error", "in_mp", "t")  # the columns of a result row


def row(**kw) -> dict:
    r = dict(ROW)
    r.update(kw)
    return r


def result(r: dict, status: str, error: str = "", in_mp: float = 0.0, t: float = 0.0) -> dict:
    """The result row for image row ``r``."""
    return dict(key=r["key"], source=r["source"], status=status, error=error, in_mp=in_mp, t=t)


def records(batch: dict) -> list[dict]:
    """A numpy-format Ray Data batch (column -> array) as rows of plain Python values."""
    return [dict(zip(batch, vals)) for vals in zip(*(v.tolist() for v in batch.values()))]


def decode(key: str, src: str, data: bytes | None, error: str | None, spec: BatchSpec) -> dict:
    """One row for the inference stage (or a failed row)."""
    from perceptual_core.io import ImageReadError, load_image

    if error:
        return row(key=key, source=src, status="failed", error=error)
    try:
        img = load_image(src, data=data, keep_gray=spec.kind == "upscale", max_pixels=spec.max_pixels)
    except ImageReadError as e:
        return row(key=key, source=src, status="failed", error=str(e).removeprefix(f"{src}: "))
    h, w, c = img.pixels.shape
    return row(key=key, source=src, h=h, w=w, c=c, bits=img.bit_depth, pixels=img.pixels.tobytes(),
               alpha=b"" if img.alpha is None else img.alpha.tobytes(), icc=img.icc_profile or b"",
               exif=img.exif or b"", in_mp=h * w / 1e6)


def image(r: dict):
    """The LoadedImage a decoded (or inferred) row holds."""
    import numpy as np

    from perceptual_core.io import LoadedImage

    dt = np.uint8 if r["bits"] == 8 else np.uint16
    h, w, c = int(r["h"]), int(r["w"]), int(r["c"])
    alpha = np.frombuffer(r["alpha"], dt).reshape(h, w) if len(r["alpha"]) else None
    return LoadedImage(pixels=np.frombuffer(r["pixels"], dt).reshape(h, w, c), alpha=alpha,
                       bit_depth=int(r["bits"]), path=r["source"], source_mode="", icc_profile=r["icc"] or None,
                       exif=r["exif"] or None)
