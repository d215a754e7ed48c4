"""DVC stage `benchmark_style`: content, style and TV loss of each style model's outputs and of Gatys'
results after N iterations on the same held-out photos, all on the objective training optimises, so
the network and the optimisation it replaces are compared on one number; then the speed table.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import config, jobname
from ..settings import BenchmarkSettings, InferenceSettings, LossesSettings, TrainSettings, plain
from .inputs import style_content
from .gatys_cache import default_store, gatys_key
from .registry import judged_models, log_to_versions, versions
from .results import STYLE_RESULTS, config_hash, log, out_dirs, progress, style_headline, write_stage
from .speed import measure_speed


def style_objective(job: str) -> tuple[dict, str]:
    """(weights {content, style, tv}, style image path) of style JOB: exactly what training optimises."""
    from ..train import job_spec

    spec = job_spec(f"style-{job}")
    return spec["weights"], spec["style_image"]


def gatys_snapshots(content: torch.Tensor, style_img: torch.Tensor, net, weights: tuple, iters: list[int],
                    gatys_opts: dict, store=None) -> tuple[dict, float]:
    """({iteration: image} after each of ``iters`` L-BFGS iterations, evaluations per iteration) of Gatys
    from ``content`` on the objective ``weights`` = (content, style, tv); taken from ``store``
    (gatys_cache.GatysStore) when it holds this run, and kept there otherwise."""
    from perceptual_core.gatys import gatys

    opts = {k: gatys_opts[k] for k in ("optimizer", "init", "style_size", "content_layers", "style_layers")}
    key = gatys_key(content, style_img, weights, iters, opts, net.info.sha256) if store is not None else None
    found = store.get(key) if store is not None else None
    if found is None:
        cw, sw, tw = weights
        res = gatys(content, style_img, net, iters=iters[-1], snapshot_at=iters, content_weight=cw,
                    style_weight=sw, tv_weight=tw, **opts)
        found = (res.snapshots, sum(h["evals"] for h in res.history) / len(res.history))
        if store is not None:
            store.put(key, *found)
    return found


def style_quality(model, style_img, weights: dict, photos: list, net, *, iters: list[int], gatys_opts: dict,
                  save: Path | None = None, prefix: str = "", progress_desc: str = "",
                  cache: dict | None = None, store=None) -> tuple[dict, list, list]:
    """Score the photo itself, the network's output and Gatys after each of ``iters`` L-BFGS iterations,
    all on one objective: content_w * l_feat + style_w * l_style + tv_w * l_TV with the training weights
    (Gatys optimises exactly this objective, so its total falls with iterations).

    Returns ({variant: mean scores}, rows per photo, image records); ``save``: write each image there.
    ``cache``: a dict shared between calls on the same style and objective (champion and challenger),
    so Gatys runs once per photo; ``store`` (gatys_cache.GatysStore): Gatys' snapshots kept across runs
    by everything that determines them."""
    from perceptual_core.io import save_image
    from perceptual_core.losses import PerceptualLoss

    crit = PerceptualLoss(net, gatys_opts["content_layers"], gatys_opts["style_layers"], content_weight=1.0,
                          style_weight=1.0, tv_weight=1.0)
    crit.set_style(style_img, gatys_opts["style_size"])
    cw, sw, tw = (float(weights[k]) for k in ("content", "style", "tv"))

    def score(img, c):
        with torch.no_grad():
            r = crit(img[None], content=c[None])
        c_, s_, t_ = float(r["content"]), float(r["style"]), float(r["tv"])
        return {"content_loss": c_, "style_loss": s_, "tv_loss": t_, "total_loss": cw * c_ + sw * s_ + tw * t_}

    rows: dict[str, list] = {}
    qrows, images = [], []
    for pname, c in progress(photos, progress_desc or "style quality"):
        with torch.inference_mode():
            y = model(c[None])[0].clamp(0, 1)
        variants = {"photo": (c, 0), "ours": (y, 0)}
        if iters:
            key = (pname, cw, sw, tw, tuple(iters))
            if cache is None or key not in cache:
                found = gatys_snapshots(c, style_img, net, (cw, sw, tw), iters, gatys_opts, store)
                if cache is not None:
                    cache[key] = found
            snapshots, evals_per_it = found if cache is None else cache[key]
            variants.update({f"gatys{i}": (snapshots[i], i) for i in iters})
        for v, (img, n) in variants.items():
            sc = score(img, c)
            if v.startswith("gatys"):
                sc["evals_per_iteration"] = evals_per_it
            rows.setdefault(v, []).append(sc)
            qrows.append({"model": prefix, "photo": pname, "method": v, "iterations": n, **sc})
            if save is not None and v != "photo":
                f = save / f"{prefix}_{pname}_{v}.png"
                save_image(f, img)
                images.append({"photo": pname, "method": v, "file": f.name,
                               **{k: round(x, 6) for k, x in sc.items()}})
    quality = {v: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for v, rs in rows.items()}
    quality["ours"]["style_ratio"] = quality["ours"]["style_loss"] / quality["photo"]["style_loss"]  # bar: <= 1/3
    return quality, qrows, images


def _score_models(found: list, objectives: dict, photos: list, net, iters: list[int], gkw: dict, out: Path,
                  size: int, store=None) -> tuple[dict, list, list, dict]:
    """({label: quality}, the plots rows, the report's image records under ``out``/style, {label: bench.*
    metrics}) of each judged model; Gatys runs once per style and photo (``store``: and is reused across runs)."""
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image, save_image

    (out / "style").mkdir(exist_ok=True)
    quality, qrows, images, per_model, gatys_cache = {}, [], [], {}, {}
    for label, mv, model in found:
        job = jobname.parse(mv.name).style
        weights, style_path = objectives[job]
        style_img = load_image(style_path).to_tensor()
        save_image(out / "style" / f"{job}_style.png", resize_longer(style_img, size))
        tag = label.replace("@", "_").removeprefix("style-")
        q, rows, imgs = style_quality(model, style_img, weights, photos, net, iters=iters, gatys_opts=gkw,
                                      save=out / "style", prefix=tag, progress_desc=f"{label} vs Gatys",
                                      cache=gatys_cache.setdefault(job, {}), store=store)
        quality[label] = q
        for r in rows:
            r["model"] = label
        qrows += rows
        images += [{"model": label, **i, "file": f"style/{i['file']}", "style": f"style/{job}_style.png"}
                   for i in imgs]
        per_model[label] = {f"bench.{k}": x for k, x in q["ours"].items()}
        per_model[label].update({f"bench.{v}.{k}": x for v, vq in q.items() if v != "ours" for k, x in vq.items()})
        log(f"{label}: ours total {q['ours']['total_loss']:.4g} (style {q['ours']['style_ratio']:.2f} of the "
            f"photo's); " + ", ".join(f"Gatys {i}: {q[f'gatys{i}']['total_loss']:.4g}" for i in iters))
    return quality, qrows, images, per_model


def run_style(b: BenchmarkSettings) -> dict:
    """Stage benchmark_style with settings ``b`` (inputs.settings): the quality and speed tables'
    files, and their figures logged to the judged versions' runs."""
    from perceptual_core import zoo
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image

    from .. import embedded

    st, sp = b.style, b.speed
    ls, tr, inf = config.load(LossesSettings), config.load(TrainSettings).style, config.load(InferenceSettings)
    content, not_measured = style_content(st)  # before any slow work
    data = embedded.describe()
    log(f"benchmark_style: data: {data}; content photos: {', '.join(p.name for p in content)}")
    for m in not_measured:
        log(f"benchmark_style: content photo {m['photo']}: {m['reason']} ({m['path']} is not there)")
    out, met, plots = out_dirs(b)
    net = config.loss_network()
    gkw = config.gatys_kwargs()
    iters = sorted(st.gatys_iters)
    objectives = {job: style_objective(job) for job in tr.jobs}
    what = {k: v for k, v in plain(st).items() if k != "reuse_gatys"}  # how, not what is measured
    cfg = config_hash({"style": what, "losses": plain(ls), "gatys": {k: gkw[k] for k in ("optimizer", "init")},
                       "vgg": net.info.sha256, "weights": {j: w for j, (w, _) in objectives.items()},
                       "objective": "clamped-v2", "content": [p.name for p in content],  # the photos scored
                       "paintings": {j: Path(p).name for j, (_, p) in objectives.items()}})
    # bench.total_loss depends on all of these
    photos = [(c.stem, resize_longer(load_image(c).to_tensor(), st.size)) for c in content]
    t0 = time.perf_counter()
    found, missing = judged_models([f"style-{job}" for job in tr.jobs], b.alias)
    for m in missing:
        log(f"benchmark_style: {m['model']}: skipped ({m['reason']})")
    store = default_store(zoo.models_dir()) if st.reuse_gatys else None
    quality, qrows, images, per_model = _score_models(found, objectives, photos, net, iters, gkw, out, st.size, store)
    if store is not None:
        log(f"benchmark_style: Gatys {store.hits} photo(s) reused (same photo, painting, weights and settings), "
            f"{store.misses} optimised")
    speed, srows, bench = measure_speed(found[0][2] if found else None, objectives, content[0], net, gkw, sp, tr, inf)
    for metrics in per_model.values():
        metrics.update(bench)
    judged = {label: mv for label, mv, _ in found}
    doc = {"alias": b.alias, "config": cfg, "seconds": round(time.perf_counter() - t0, 1), "missing": missing,
           "versions": versions(judged), "quality": quality, "size": st.size, "gatys_iters": iters, **speed,
           "device": "cpu", "threads": torch.get_num_threads(), "data": data,
           "gatys_reused": store.hits if store is not None else 0,
           "content": [str(p) for p in content], "not_measured": not_measured,
           "style_images": {f"style-{j}": p for j, (_, p) in objectives.items()}}
    write_stage((out, met, plots), "style", doc, style_headline(doc),
                {"benchmark_style_quality.csv": qrows, "benchmark_style_speed.csv": srows},
                ("style_images.json", images))
    log_to_versions(judged, per_model, cfg)
    log(f"benchmark_style: done in {doc['seconds']} s -> {out / STYLE_RESULTS}, {plots}/benchmark_style_*.csv "
        f"(headline: {met / 'benchmark_style.json'})")
    return doc
