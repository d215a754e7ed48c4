"""benchmark_style's speed table, the paper's Table 1: seconds per N x N image for the feed-forward
network (on the engine `perceptual stylize` runs, and plain eager) against Gatys after each iteration
count, whose long runs are extrapolated from a few timed L-BFGS iterations (marked so).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from .. import config
from ..settings import InferenceSettings, plain
from ..settings.bench import SpeedSettings
from ..settings.train import StyleTrainSettings
from .inputs import _data_path
from .results import log

# The paper's Table 1 (Titan X, seconds per image) for the report's reference column.
PAPER_SPEED = {256: {"ours": 0.015, 100: 3.17, 300: 9.52, 500: 15.86},
               512: {"ours": 0.05, 100: 10.97, 300: 32.91, 500: 54.85},
               1024: {"ours": 0.21, 100: 42.89, 300: 128.66, 500: 214.44}}


def _square(img: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(img[None], size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1)


def _time_ff(model, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        model(x)  # warm-up: allocator and oneDNN primitive caches
        ts = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _time_gatys(content, style, net, timed: int, kw: dict) -> tuple[float, float]:
    """(setup seconds, median seconds per L-BFGS iteration) over ``timed`` iterations after the first."""
    from perceptual_core.gatys import gatys

    stamps = [time.perf_counter()]
    gatys(content, style, net, iters=timed + 1, callback=lambda i, l: stamps.append(time.perf_counter()), **kw)
    steps = np.diff(stamps)
    return float(steps[0]), float(np.median(steps[1:]))


def _engine(model, sp: SpeedSettings, inf: InferenceSettings):
    """What `perceptual stylize` runs (params' inference section, or `benchmark.speed.engine`), verified."""
    from perceptual_core.engines import build_engine

    return build_engine(model, sp.engine or inf.engine, inf.precision, verify=inf.verify,
                        tolerance=plain(inf.tolerance) or None, cache_dir=config.resolve(inf.onnx_cache)
                        if inf.onnx_cache else None)


def measure_speed(first_model, objectives: dict, photo: Path, net, gkw: dict, sp: SpeedSettings,
                  tr: StyleTrainSettings, inf: InferenceSettings) -> tuple[dict, list[dict], dict]:
    """({speed, speed_model, engine}: the results' part, the plots rows, the bench.speed.* metrics).
    The first style model (or the configured architecture, untrained: speed does not depend on
    weights) on ``photo`` resized to N x N; Gatys on the first job's objective, as scored for quality."""
    from perceptual_core.io import load_image
    from perceptual_core.networks import build_model

    arch = "trained" if first_model is not None else "untrained (no registered style model)"
    model = first_model if first_model is not None else build_model(dict(arch="transform", **plain(tr.network))).eval()
    engine = _engine(model, sp, inf)
    weights, style_path = objectives[tr.jobs[0]] if tr.jobs else ({}, None)
    style_img = load_image(style_path or _data_path(tr.styles[next(iter(tr.styles))])).to_tensor()
    gatys_opts = {**gkw, **{f"{k}_weight": v for k, v in weights.items()}}  # the objective scored for quality
    src = load_image(photo).to_tensor()
    speed, srows, bench = {}, [], {}
    g_iters = sorted(sp.gatys_iters)
    timed = sp.gatys_timed_iters
    for size in sp.sizes:
        x = _square(src, size)
        ff = _time_ff(engine, x[None], sp.repeats)
        eager = _time_ff(model, x[None], sp.repeats)
        setup, per_iter = _time_gatys(x, style_img, net, timed, gatys_opts)
        e = {"ours_s": ff, "plain_eager_s": eager, "gatys_setup_s": setup, "gatys_iter_s": per_iter, "gatys_timed_iters": timed}
        srows.append({"size": size, "method": "ours", "iterations": 0, "seconds": round(ff, 5), "measured": True,
                      "speedup": 1.0, "paper_seconds": PAPER_SPEED.get(size, {}).get("ours", "")})
        for n in g_iters:
            secs = setup + n * per_iter
            e[f"gatys{n}_s"], e[f"speedup{n}"] = secs, secs / ff
            e[f"gatys{n}_measured"] = n <= timed
            srows.append({"size": size, "method": "gatys", "iterations": n, "seconds": round(secs, 3),
                          "measured": n <= timed, "speedup": round(secs / ff, 1),
                          "paper_seconds": PAPER_SPEED.get(size, {}).get(n, "")})
        speed[str(size)] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in e.items()}
        log(f"speed {size}x{size}: ours {ff:.3f} s, Gatys {per_iter:.3f} s/iteration ({timed} timed) -> "
            f"{g_iters[-1]} iterations {e[f'gatys{g_iters[-1]}_s']:.0f} s, {e[f'speedup{g_iters[-1]}']:.0f}x")
        bench[f"bench.speed.{size}.ours_s"] = ff
        bench[f"bench.speed.{size}.speedup{g_iters[-1]}"] = e[f"speedup{g_iters[-1]}"]
    return {"speed": speed, "speed_model": arch, "engine": f"{engine.name} {engine.precision}"}, srows, bench
