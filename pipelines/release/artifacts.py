"""The artifact checks of a style model to ship (perceptual_core/artifacts.py: stride-locked pattern, border
frame, tile seams) at `release.artifacts.size`, run as `perceptual stylize` runs it (batch.tile,
batch.overlap, batch.border); stored in the manifest and judged on the card. `python -m pipelines.release
artifacts [JOB ...]` measures already shipped models from their files (a re-export measures its own)."""
from __future__ import annotations

import json

from .. import config
from ..log import get
from ..settings import BatchSettings
from ..settings.release import ArtifactSettings
from .params import settings


def artifact_info(model, a: ArtifactSettings) -> dict:
    """Per photo at ``a.size`` px: the stride-locked luma pattern of the output and of the photo (levels),
    the border excess per side against the reflect-padded output under the same instance-norm
    statistics, the tiled output against the untiled one, and the white blobs of the tiled output (what
    a user gets); ``worst`` over the photos."""
    import torch

    from perceptual_core import artifacts as art
    from perceptual_core.inference import pad_reflect
    from perceptual_core.tiling import core_edges, tiled_forward

    from .quality import _photos

    b = config.load(BatchSettings)
    rows = []
    for name, x in _photos(list(a.photos), int(a.size)):
        h, w = x.shape[-2:]
        x = x[None]
        e = max(0, min(b.border, h - 1, w - 1, int(a.pad) - 1))  # the input as stylize_image pads it
        xb = pad_reflect(x, e)

        def crop(t, m):
            return t[0, :, m:t.shape[-2] - m, m:t.shape[-1] - m].clamp(0, 1)

        with torch.inference_mode():
            y = crop(model(xb), e)
            with art.norm_stats_of(model, xb):  # the reference: further from the border, same statistics
                yp = crop(model(pad_reflect(x, int(a.pad))), int(a.pad))
        yt = crop(tiled_forward(model, xb, tile=b.tile, overlap=b.overlap), e)
        edges = [[v - e for v in core_edges(model, n + 2 * e, b.tile)] for n in (h, w)]
        rows.append({"photo": name, "shape": [h, w], "lattice": _levels(art.lattice_amplitude(y)),
                     "lattice_photo": _levels(art.lattice_amplitude(x[0])),
                     "border": art.border_excess(y, yp, int(a.band)), "seams": art.seam_difference(yt, y, *edges),
                     "blobs": art.white_blobs(yt, x[0].clamp(0, 1))})
        get(__name__).info(f"release artifacts: {name} at {h}x{w} px: {json.dumps(rows[-1])}")
    worst = {"lattice_levels": max(max(r["lattice"].values()) for r in rows),
             "lattice_photo_levels": max(max(r["lattice_photo"].values()) for r in rows),
             "frame_levels": max(r["border"][k]["frame"] for r in rows for k in art.SIDES),
             "border_abs_levels": max(r["border"][k]["abs"] for r in rows for k in art.SIDES),
             "seam_psnr_db": min(r["seams"]["psnr_db"] for r in rows),
             "seam_max_levels": max(r["seams"]["seam_max_levels"] for r in rows),
             "blob_fill": max(r["blobs"]["block_fill"] for r in rows)}
    return {"size": int(a.size), "tile": b.tile, "overlap": b.overlap, "border": b.border, "pad": int(a.pad),
            "band": int(a.band),
            "bars": dict(a.bars), "photos": rows, "worst": {k: round(v, 3) for k, v in worst.items()}}


def _levels(by_period: dict) -> dict:
    return {str(p): round(v, 3) for p, v in by_period.items()}  # as JSON keys them


def measure_shipped(jobs: list[str] | None = None) -> list[str]:
    """Measure the shipped style models' artifacts from their files and rewrite their manifest entries
    and cards (all style models when ``jobs`` is empty)."""
    from perceptual_core import zoo

    from .cards import card
    from .publish import _write_manifest

    r = settings()
    if r.artifacts is None:
        raise ValueError("release.artifacts is not set in params.yaml")
    out = config.resolve(r.models_dir)
    models = json.loads((out / "MANIFEST.json").read_text())["models"]
    jobs = jobs or sorted(n for n, e in models.items() if e["task"] == "stylize")
    for job in jobs:
        if job not in models or models[job]["task"] != "stylize":
            raise ValueError(f"{job}: not a shipped style model in {out / 'MANIFEST.json'}")
    for job in jobs:
        e = dict(models[job])
        e["artifacts"] = artifact_info(zoo.load(job, folder=out).eval(), r.artifacts)
        _write_manifest(out, job, e)
        peers = json.loads((out / "MANIFEST.json").read_text())["models"]
        (out / e["card"]).write_text(card(job, e, peers))
    return jobs
