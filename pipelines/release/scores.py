"""`python -m pipelines.release scores`: the benchmarks' reusable work for the release, so a fresh
clone's first `make run` computes only what it trains:
- models/scores.json: the per-image scores of the baselines and the shipped SR models on
  `benchmark_sr`'s default sets (pipelines/benchmark/score_cache.py: keyed by the weights, the image,
  the scale and the metric settings);
- models/gatys/: Gatys' images for `benchmark_style`'s default photos and style jobs
  (pipelines/benchmark/gatys_cache.py).
Run it after a shipped SR model, a default set or style, or a metric changes; tests/test_score_cache.py
recomputes a sample of both and compares.
"""
from __future__ import annotations

from pathlib import Path

from .. import config, jobname
from ..log import get
from ..settings import BenchmarkSettings, DegradationSettings


def shipped_methods(scale: int, sr) -> dict:
    """method id -> (label, fn) as benchmark_sr builds them at ``scale`` for the baselines and the shipped
    SR models (same functions, so the same score keys)."""
    from perceptual_core import zoo
    from perceptual_core.srcnn import load_srcnn_mat

    from ..benchmark import sr_methods
    from ..benchmark.inputs import _data_path

    out = {"bicubic": ("bicubic", sr_methods.bicubic(scale))}
    native, mat = sr_methods.official_weights(scale, sr)
    if native and _data_path(mat).is_file():
        out["srcnn-official"] = ("SRCNN (official)", sr_methods._srcnn_then_bicubic(
            load_srcnn_mat(_data_path(mat)), scale, native))
    for e in zoo.entries():
        if e.task != "upscale":
            continue
        own = jobname.parse(e.name).scale
        net = zoo.load(e.name)
        if e.name.startswith("srcnn-") and scale % own == 0:
            out[e.name] = (e.name, sr_methods._srcnn_then_bicubic(net, scale, own))
        elif own == scale:
            out[e.name] = (e.name, sr_methods.network(net, scale))
    return out


def write_scores(models_dir: Path | None = None) -> Path:
    from perceptual_core import zoo

    from ..benchmark import score_pairs
    from ..benchmark.inputs import sr_sets
    from ..benchmark.score_cache import SHIPPED, ScoreCache
    from ..benchmark.sr import _pairs

    log = get(__name__)
    b = config.load(BenchmarkSettings)
    sr, deg = b.sr, config.load(DegradationSettings)
    sets, missing = sr_sets(sr)
    if missing:
        raise FileNotFoundError(f"release scores: the default sets must all be there: "
                                f"{', '.join(m['set'] + ' (' + m['path'] + ')' for m in missing)}")
    layers = tuple(sr.vgg_layers)
    vgg = config.loss_network() if layers else None
    cache = ScoreCache([])
    for scale in sr.scales:
        methods = shipped_methods(scale, sr)
        for set_name, hr in sets.items():
            for protocol, pairs in _pairs(set_name, hr, scale, sr, deg).items():
                score_pairs(methods, pairs, scale, vgg, layers, f"scores x{scale} {set_name} {protocol}", cache=cache)
    path = Path(models_dir or zoo.models_dir()) / SHIPPED
    path.unlink(missing_ok=True)  # entries of earlier weights or metric code are dropped
    cache.save(path)
    log.info(f"release scores: {len(cache.entries)} image scores ({', '.join(sets)} at "
             f"x{', x'.join(map(str, sr.scales))}, {', '.join(sr.protocols)}) -> {path}")
    return path


def write_gatys(models_dir: Path | None = None) -> list[Path]:
    """models/gatys/: Gatys' snapshots for benchmark_style's default photos (the data folder's and the
    embedded ones) and each default style job, keyed as benchmark_style keys them."""
    from perceptual_core import zoo
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image

    from .. import embedded
    from ..benchmark import style_objective
    from ..benchmark.gatys_cache import SHIPPED_DIR, GatysStore
    from ..benchmark.inputs import _data_path
    from ..benchmark.style import gatys_snapshots
    from ..settings import TrainSettings

    log = get(__name__)
    st, tr = config.load(BenchmarkSettings).style, config.load(TrainSettings).style
    photos = [_data_path(c) for c in st.content if _data_path(c).is_file()]
    photos += embedded.builtin_photos(list(st.content_embedded), "benchmark.style.content_embedded")
    net, gkw, iters = config.loss_network(), config.gatys_kwargs(), sorted(st.gatys_iters)
    folder = Path(models_dir or zoo.models_dir()) / SHIPPED_DIR
    for old in folder.glob("*.safetensors"):
        old.unlink()
    store = GatysStore([folder])  # empty now: every photo is optimised and written there
    for job in tr.jobs:
        weights, style_path = style_objective(job)
        style_img = load_image(style_path).to_tensor()
        w = tuple(float(weights[k]) for k in ("content", "style", "tv"))
        for p in photos:
            gatys_snapshots(resize_longer(load_image(p).to_tensor(), st.size), style_img, net, w, iters, gkw, store)
            log.info(f"release scores: Gatys {job} on {p.name} at {st.size} px, {iters} iterations -> {folder}")
    return sorted(folder.glob("*.safetensors"))


def write_all() -> None:
    write_scores()
    write_gatys()
