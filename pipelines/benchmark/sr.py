"""DVC stage `benchmark_sr`: the paper's SR table for this project's models. For each set, scale and LR
protocol in params, every column of sr_methods is scored with Y and RGB PSNR/SSIM (shave = scale) and
the VGG feature distance to the HR image, beside the published anchors the rows are checked against.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from .. import config
from ..settings import BenchmarkSettings, DegradationSettings, plain
from ..settings.bench import BenchSRSettings, CropSettings
from . import score_cache, sr_methods
from .inputs import _data_path, sr_sets
from .registry import log_to_versions, versions
from .results import SR_RESULTS, config_hash, log, out_dirs, progress, sr_headline, write_stage

PROTOCOLS = ("standard", "blur")
# Published x4 Y-PSNR / SSIM on the standard LR files (SelfExSR README) and SRCNN 9-5-5 on Set5
# with MATLAB bicubic LR made from HR (Dong et al., TPAMI): the anchors the rows are checked against.
PUBLISHED = {("bicubic", "Set5", 4): (28.42, 0.8101), ("bicubic", "Set14", 4): (25.99, 0.7023),
             ("bicubic", "BSD100", 4): (25.96, 0.6672), ("srcnn-official", "Set5", 4): (30.48, 0.8628)}


def _blur_lr(hr: np.ndarray, scale: int, deg: DegradationSettings) -> np.ndarray:
    """The paper's LR: Gaussian blur then MATLAB bicubic, float64 in [0,1] (as LR made from HR is)."""
    from perceptual_core.resize import degrade

    x = torch.from_numpy(hr.astype(np.float64) / 255.0).permute(2, 0, 1)[None]
    y = degrade(x, scale, deg.blur_sigma, deg.blur_truncate)
    return y[0].permute(1, 2, 0).numpy()


def _pairs(set_name: str, hr_dir: Path | list[Path], scale: int, sr: BenchSRSettings,
           deg: DegradationSettings | None = None) -> dict[str, list]:
    """protocol -> pairs. The HR images (a folder, or the files of a builtin-photo set) are read once
    per set and scale; the blurred LR is made from them with ``deg`` (None: params' degradation) (the
    standard LR: the set's files where present, else MATLAB bicubic from HR, as for every builtin-photo set)."""
    from perceptual_core import sr_eval as ev

    unknown = [p for p in sr.protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"benchmark.sr.protocols: unknown {unknown}; choose from {PROTOCOLS}")
    lr_dir = _data_path(sr.lr_files.format(set=set_name, scale=scale)) \
        if sr.lr_files and not isinstance(hr_dir, list) else None
    base = ev.load_pairs(hr_dir, scale, lr_dir if lr_dir is not None and lr_dir.is_dir() else None)
    if sr.max_images:
        base = base[: sr.max_images]
    out = {}
    for protocol in sr.protocols:
        if protocol == "standard":
            out[protocol] = base
        else:
            deg = deg or config.load(DegradationSettings)
            out[protocol] = [ev.Pair(p.name, p.hr, _blur_lr(p.hr, scale, deg)) for p in base]
    return out


def _vgg_input(img: np.ndarray, shave: int) -> torch.Tensor:
    x = torch.from_numpy(img[shave:-shave or None, shave:-shave or None]).float().div(255)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, 3)
    return x.permute(2, 0, 1)[None].contiguous()


def _crop_box(hr: np.ndarray, size: int) -> tuple[int, int, int]:
    h, w = hr.shape[:2]
    s = min(size, h, w)
    return (h - s) // 2, (w - s) // 2, s


def score_pairs(methods: dict, pairs: list, scale: int, vgg, layers: tuple, desc: str,
                on_image=None, cache=None, wanted=None) -> dict[str, list[dict]]:
    """method id -> per-image metrics: Y-PSNR/SSIM (shave = scale) and the VGG distance to HR at
    ``layers``. Image-major: one HR's VGG features live at a time (a set's worth is gigabytes).
    ``on_image(mid, label, pair, output, metrics)`` sees every output (the report's crops); with
    ``wanted(pair)`` only those of the pairs it accepts. ``cache`` (score_cache.ScoreCache): a method
    with a ``score_key`` whose entry is there is not scored again (its output is made only where
    ``on_image`` wants it)."""
    from perceptual_core.losses import feature_loss
    from perceptual_core.metrics import sr_metrics

    from .score_cache import entry_key, pair_digests

    vgg_sha = vgg.info.sha256 if layers else None
    per_m: dict[str, list] = {mid: [] for mid in methods}
    for p in progress(pairs, desc):
        hr_f = None
        show = on_image is not None and (wanted is None or wanted(p))
        images = pair_digests(p) if cache is not None else None
        for mid, (label, fn) in methods.items():
            ident = getattr(fn, "score_key", None) if cache is not None else None
            key = entry_key(ident, p, scale, layers, vgg_sha, images) if ident is not None else None
            m = cache.get(key) if key is not None else None
            if m is not None and not show:
                per_m[mid].append(m)
                continue
            out_img, y = fn(p.lr)
            if out_img.shape != p.hr.shape:
                raise ValueError(f"{desc}: {p.name}: {mid} output {out_img.shape} != HR {p.hr.shape}")
            if m is None:
                m = sr_metrics(out_img, p.hr, shave=scale, sr_y=y)
                if layers:
                    with torch.inference_mode():
                        hr_f = hr_f if hr_f is not None else vgg(_vgg_input(p.hr, scale), layers)
                        f = vgg(_vgg_input(out_img, scale), layers)
                    m.update({f"vgg_{n}": float(feature_loss(f[n], hr_f[n])) for n in layers})
                if key is not None:
                    cache.put(key, m)
            per_m[mid].append(m)
            if show:
                on_image(mid, label, p, out_img, m)
    return per_m


def _save_crop(out: Path, scale: int, mid: str, label: str, p, img: np.ndarray, m: dict, size: int, save_image) -> dict:
    y0, x0, s = _crop_box(p.hr, size)
    d = out / "sr_crops"
    d.mkdir(exist_ok=True)
    files = {}
    for tag, a in (("hr", p.hr), (mid, img)):
        f = d / f"x{scale}_{p.name}_{tag}.png"
        save_image(f, a[y0:y0 + s, x0:x0 + s])
        files[tag] = f.relative_to(out).as_posix()
    return {"scale": scale, "image": p.name, "method": mid, "label": label, "file": files[mid], "hr": files["hr"],
            "psnr_y": round(m["psnr_y"], 2), "ssim_y": round(m["ssim_y"], 4)}


def _table(sets: dict, sr: BenchSRSettings, deg: DegradationSettings, alias: str, vgg, crop: CropSettings, out: Path,
           judged: dict, missing: list, cache=None) -> tuple[dict, list[dict], list[dict]]:
    """({x<scale>: {set: {protocol: {method id: mean figures}}}}, the plots rows, the report's crops
    (``crop``: its set and image, on the primary protocol, saved under ``out``); ``cache``: score_pairs'."""
    from perceptual_core.io import save_image

    layers = tuple(sr.vgg_layers)  # empty: no perceptual-distance column
    results: dict = {}
    rows, crops = [], []
    for scale in sr.scales:
        methods = sr_methods.methods(scale, sr, alias, judged, missing)
        for set_name, hr_dir in sets.items():
            for protocol, pairs in _pairs(set_name, hr_dir, scale, sr, deg).items():
                crop_name = crop.image or pairs[0].name

                def keep(mid, label, p, out_img, m, set_name=set_name, protocol=protocol, crop_name=crop_name):
                    if crop.set == set_name and p.name == crop_name and protocol == sr.primary:
                        crops.append(_save_crop(out, scale, mid, label, p, out_img, m, crop.size, save_image))

                def wanted(p, set_name=set_name, protocol=protocol, crop_name=crop_name):
                    return crop.set == set_name and p.name == crop_name and protocol == sr.primary

                per_m = score_pairs(methods, pairs, scale, vgg, layers,
                                    f"x{scale} {set_name} {protocol} ({len(methods)} methods)", on_image=keep,
                                    cache=cache, wanted=wanted)
                for mid, (label, fn) in methods.items():
                    per = per_m[mid]
                    mean = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
                    results.setdefault(f"x{scale}", {}).setdefault(set_name, {}).setdefault(protocol, {})[mid] = \
                        {k: round(v, 5) for k, v in mean.items()}
                    pub = PUBLISHED.get((mid, set_name, scale)) if protocol == "standard" else None
                    rows.append({"scale": scale, "set": set_name, "protocol": protocol, "method": mid, "label": label,
                                 "images": len(per), **{k: round(v, 5) for k, v in mean.items()},
                                 "published_psnr_y": pub[0] if pub else ""})
                    log(f"x{scale} {set_name:<7} {protocol:<8} {label:<34} PSNR-Y {mean['psnr_y']:.2f} "
                        f"SSIM-Y {mean['ssim_y']:.4f}")
    return results, rows, crops


def _version_metrics(judged: dict, results: dict, primary: str) -> dict[str, dict]:
    """The bench.* metrics of each judged model, at its own scale: every figure, the means over sets on
    the ``primary`` protocol, and bicubic's means on the same images (promotion's floor: a champion must
    beat bicubic)."""
    per_model: dict[str, dict] = {}
    for (name, scale), mv in judged.items():
        mid = sr_methods.method_id(name)
        ms = per_model.setdefault(name, {})
        prim = []
        for set_name, by_proto in results.get(f"x{scale}", {}).items():
            for protocol, by_method in by_proto.items():
                for k, v in (by_method.get(mid) or {}).items():
                    ms[f"bench.{set_name}.x{scale}.{protocol}.{k}"] = v
            if mid in by_proto.get(primary, {}):
                prim.append(by_proto[primary][mid])
        for k in prim[0] if prim else ():
            ms[f"bench.{k}_mean"] = float(np.mean([p[k] for p in prim]))
        base = [bp[primary]["bicubic"] for bp in results.get(f"x{scale}", {}).values()
                if mid in bp.get(primary, {}) and "bicubic" in bp[primary]]
        for k in base[0] if base else ():
            ms[f"bench.bicubic.{k}_mean"] = float(np.mean([p[k] for p in base]))
    return per_model


def run_sr(b: BenchmarkSettings) -> dict:
    """Stage benchmark_sr with settings ``b`` (inputs.settings): the table's files, and its figures
    logged to the judged versions' runs."""
    from perceptual_core import zoo

    from .. import embedded

    sr, deg = b.sr, config.load(DegradationSettings)
    sets, not_measured = sr_sets(sr)  # before any slow work
    data = embedded.describe()
    log(f"benchmark_sr: data: {data}")
    for m in not_measured:
        log(f"benchmark_sr: {m['set']}: {m['reason']} ({m['path']} is not there)")
    if not sets:
        raise FileNotFoundError(f"benchmark.sr.sets: none of the sets is there, nothing to measure; "
                                f"{'; '.join(m['set'] + ': ' + m['reason'] for m in not_measured)}")
    out, met, plots = out_dirs(b)
    vgg = config.loss_network()
    crop = sr.crop or CropSettings(set="")  # none given: from the first set measured
    if crop.set not in sets:  # the report's crops come from a set this run measures
        log(f"benchmark_sr: report crops from {next(iter(sets))} ({crop.set or None} is not measured)")
        crop = dataclasses.replace(crop, set=next(iter(sets)), image=None)
    what = {k: v for k, v in plain(sr).items() if k != "reuse_scores"}  # how, not what is measured
    cfg = config_hash({"sr": what, "degradation": plain(deg), "vgg": vgg.info.sha256, "measured": list(sets)})
    judged: dict = {}
    missing: list = []
    cache = score_cache.default_cache(zoo.models_dir()) if sr.reuse_scores else None
    t0 = time.perf_counter()
    results, rows, crops = _table(sets, sr, deg, b.alias, vgg, crop, out, judged, missing, cache)
    scores = {"reused": cache.hits, "scored": cache.misses} if cache is not None else None
    if cache is not None:
        kept = cache.save()
        log(f"benchmark_sr: {cache.hits} image scores reused (same weights, image and settings), {cache.misses} "
            f"scored" + (f"; kept in {kept}" if kept else ""))
    labels = {f"x{r['scale']}/{r['method']}": r["label"] for r in rows}
    by_name = {n: mv for (n, _), mv in judged.items()}
    doc = {"alias": b.alias, "config": cfg, "seconds": round(time.perf_counter() - t0, 1), "scores": scores,
           "labels": labels,
           "versions": versions(by_name), "missing": missing, "results": results,
           "data": data, "not_measured": not_measured}
    write_stage((out, met, plots), "sr", doc, sr_headline(doc, sr.primary), {"benchmark_sr.csv": rows},
                ("sr_crops.json", crops))
    log_to_versions(by_name, _version_metrics(judged, results, sr.primary), cfg)
    log(f"benchmark_sr: {len(rows)} rows in {doc['seconds']} s -> {out / SR_RESULTS}, "
        f"{plots / 'benchmark_sr.csv'} (headline: {met / 'benchmark_sr.json'})")
    return doc
