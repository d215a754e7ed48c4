"""The measured quality of a model to ship, for its card: on the training objective against Gatys
(style), or benchmark_sr's protocol against bicubic and the official SRCNN (SR), with a sample image."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import config, jobname
from ..settings import BenchmarkSettings, DegradationSettings, plain
from ..settings.release import QualitySettings
from .params import settings


def _photos(paths: list[str], size: int) -> list:
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image

    return [(Path(p).stem, resize_longer(load_image(config.data_dir() / p).to_tensor(), size)) for p in paths]


def _style_release_info(job: str, model, photos, q: QualitySettings, out: Path, trained: dict) -> dict:
    """``trained``: the training record's params (records._job_params): the loss weights the model was
    trained with (release.style may set a style's own), so the score is on that objective."""
    from perceptual_core.io import load_image, save_image

    from ..benchmark import style_objective

    name = jobname.parse(job).style
    _, style_path = style_objective(name)
    weights = {"content": trained["content_weight"], "style": trained["style_weight"], "tv": trained["tv_weight"]}
    style_img = load_image(style_path).to_tensor()
    net = config.loss_network()
    quality, rows, _ = style_quality(model, style_img, weights, photos, net, q)
    sample = out / "samples" / f"{job}_{photos[0][0]}.jpg"
    import torch

    with torch.inference_mode():
        save_image(sample, model(photos[0][1][None])[0].clamp(0, 1))
    return {"style_image": Path(style_path).name, "objective_weights": weights,
            "provenance": settings().provenance.get(name.removesuffix("_fast")),
            "quality": {"size": int(q.size), "photos": [n for n, _ in photos], "mean": quality, "rows": rows},
            "sample": sample.relative_to(out).as_posix()}


def _sr_release_info(job: str, model, out: Path) -> dict:
    """benchmark_sr's protocol (Y channel, shave = scale, both LR protocols, VGG distance to HR) on
    `release.sr_quality.sets`, this network beside bicubic, and a bicubic | network | HR sample."""
    import numpy as np

    from perceptual_core import sr_eval as ev
    from perceptual_core.io import save_image

    from ..benchmark import _crop_box, _data_path, _pairs, score_pairs

    q, bsr = settings().sr_quality, config.load(BenchmarkSettings).sr
    scale = jobname.parse(job).scale
    layers = tuple(bsr.vgg_layers)
    srcnn = model.config["arch"] == "srcnn"
    net = ev.srcnn_method(model, scale) if srcnn else ev.network_method(model, scale)
    methods = {"bicubic": ("bicubic", ev.bicubic_method(scale)), "ours": ("this network", net)}
    official = bsr.srcnn_official.get(scale) if srcnn else None
    if official:  # a retrained SRCNN is judged against the official weights (benchmark.sr.srcnn_official)
        from perceptual_core.srcnn import load_srcnn_mat

        methods["official"] = ("SRCNN, official weights", ev.srcnn_method(load_srcnn_mat(_data_path(official)), scale))
    vgg = config.loss_network() if layers else None
    smp = q.sample
    rows, tiles = [], {}

    def keep(mid, label, p, img, m):
        if p.name == smp.image:
            y0, x0, s = _crop_box(p.hr, int(smp.size))
            tiles[mid], tiles["hr"] = img[y0:y0 + s, x0:x0 + s], p.hr[y0:y0 + s, x0:x0 + s]

    sr, deg = dataclasses.replace(bsr, max_images=None), config.load(DegradationSettings)  # every image of the set
    for set_name in q.sets:
        for protocol, pairs in _pairs(set_name, _data_path(bsr.sets[set_name]), scale, sr, deg).items():
            sample = set_name == smp.set and protocol == bsr.primary  # the strip's image
            per = score_pairs(methods, pairs, scale, vgg, layers, f"release x{scale} {set_name} {protocol}",
                              on_image=keep if sample else None)
            for mid, (label, _) in methods.items():
                mean = {k: round(float(np.mean([r[k] for r in per[mid]])), 5) for k in per[mid][0]}
                rows.append({"set": set_name, "protocol": protocol, "method": mid, "images": len(per[mid]), **mean})
    info = {"quality": {"scale": scale, "sets": list(q.sets), "primary": bsr.primary, "rows": rows,
                        "degradation": plain(deg)}}
    if {"bicubic", "ours", "hr"} <= tiles.keys():
        import torch

        strip = np.concatenate([tiles["bicubic"], tiles["ours"], tiles["hr"]], axis=1)
        f = out / "samples" / f"{job}_{smp.set}_{smp.image}.png"
        save_image(f, torch.from_numpy(strip.astype(np.float32) / 255.0).permute(2, 0, 1))
        info["sample"] = f.relative_to(out).as_posix()
    return info


def style_quality(model, style_img, weights, photos, net, q: QualitySettings):
    """benchmark_style's scoring at the release size; Gatys' images are kept in the user's cache (the same
    key as benchmark_style's), so a model of the same painting and objective, or a re-export, reuses them."""
    from ..benchmark import style_quality as score
    from ..benchmark.gatys_cache import default_store

    return score(model, style_img, weights, photos, net, iters=sorted(int(i) for i in q.gatys_iters),
                 gatys_opts=config.gatys_kwargs(), progress_desc="release quality", store=default_store(None))
