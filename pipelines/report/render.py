"""The report page from the benchmark stages' full results (not the headline DVC metrics): the SR and
speed tables laid out like the paper's, crops side by side, style outputs beside the style image,
the released style models' bars as measured at export (models/MANIFEST.json), training loss curves,
promotion decisions, trends when there is a history, and the environment.
"""
from __future__ import annotations

from pathlib import Path

from .. import config, owned
from ..log import get
from ..settings import BenchmarkSettings
from .doc import Doc
from .figures import loss_curves, trend_plot
from .sources import environment, judged_versions, load
from .tables import (METHOD_NAMES, anchor_line, data_line, paper_speed_table, promotion_table,
                     released_style_table, scores_line, speed_table, sr_tables, style_quality_table)


def _sr_section(d: Doc, sr: dict, bout: Path) -> None:
    """The SR tables, what was not measured, the anchors, and each scale's crops (``bout``: their folder)."""
    d.h(2, "Super-resolution (the paper's Table 2 layout)")
    for t in sr_tables(sr):
        d.table(*t)
    d.p("Methods: " + "; ".join(f"x{k.split('/')[0][1:]} {k.split('/')[1]} = {v}"
                                for k, v in sr.get("labels", {}).items() if k.split("/")[1] != "bicubic") + ".")
    if sr.get("missing"):
        d.p("Not measured: " + "; ".join(f"x{m['scale']} {m['method']}: "
                                         f"{m['reason'].removeprefix('not measured: ')}" for m in sr["missing"]))
    for line in (anchor_line(sr), scores_line(sr)):
        if line:
            d.p(line)
    crops = load(bout / "sr_crops.json") or []
    for scale in sorted({c["scale"] for c in crops}):
        cs = [c for c in crops if c["scale"] == scale]
        order = {m: i for i, m in enumerate(METHOD_NAMES)}
        cs.sort(key=lambda c: order.get(c["method"], 9))
        items = [(f"HR ({cs[0]['image']})", (bout / cs[0]["hr"]).read_bytes())]
        items += [(f"{c['label']}: {c['psnr_y']:.2f} dB / {c['ssim_y']:.4f}", (bout / c["file"]).read_bytes())
                  for c in cs]
        d.h(3, f"x{scale} crops ({cs[0]['image']}, Y-PSNR / SSIM of the whole image)")
        d.images(items, pixelated=True)


def _style_section(d: Doc, st: dict, bout: Path) -> None:
    """The speed tables (measured, the paper's), the style losses, and each model's outputs on each photo."""
    d.h(2, "Style transfer (the paper's Table 1 layout)")
    d.table(*speed_table(st))
    d.table(*paper_speed_table())
    if st.get("quality"):
        d.table(*style_quality_table(st))
        if st.get("gatys_reused"):
            d.p(f"Gatys: the images of {st['gatys_reused']} photo(s) were optimised earlier (by a run or the release's "
                f"models/gatys/) from the same photo, painting, loss weights and settings, and scored by this run "
                f"(pipelines/benchmark/gatys_cache.py).")
    imgs = load(bout / "style_images.json") or []
    for (model, photo) in dict.fromkeys((i["model"], i["photo"]) for i in imgs):
        group = [i for i in imgs if i["model"] == model and i["photo"] == photo]
        items = [("style image", (bout / group[0]["style"]).read_bytes())]
        items += [(("ours" if i["method"] == "ours" else f"Gatys {i['method'][5:]} it") +
                   f": content {i['content_loss']:.3g}, style {i['style_loss']:.3g}", (bout / i["file"]).read_bytes())
                  for i in group]
        d.h(3, f"{model} on {photo}")
        d.images(items)
    if st.get("missing"):
        d.p("Not measured: " + "; ".join(f"{m['model']}: {m['reason']}" for m in st["missing"]))


def render(bench: BenchmarkSettings, out: Path, *, title: str = "perceptual: benchmark report", history=None,
           trend_keys: list[str] | None = None, promotion: Path | None = None) -> Path:
    """Write benchmark.html/.md under ``out`` from the benchmark outputs under ``bench.out_dir`` (the
    full results, not the headline DVC metrics) and the promotion decisions in ``promotion`` (params
    promote.decisions), when given."""
    from ..benchmark import SR_RESULTS, STYLE_RESULTS

    bout = config.resolve(bench.out_dir)
    sr, st = load(bout / SR_RESULTS), load(bout / STYLE_RESULTS)
    if sr is None and st is None:
        raise FileNotFoundError(f"no benchmark results in {bout} (run `dvc repro benchmark_sr benchmark_style`)")
    promo = load(promotion) if promotion is not None else None
    out.mkdir(parents=True, exist_ok=True)
    assets = out / "assets"
    # signature for assets made before markers existed: the report page beside them
    owned.remove(assets, "report", "report out_dir/assets", signature="../benchmark.html")
    owned.claim(assets, "report")
    d = Doc(assets)
    env = environment()
    d.p(f"Generated {env['when']} on {env['cpu']}, GPU: {env['gpu']}; registry alias judged: "
        f"{(sr or st)['alias']}.")
    line = data_line(sr, st)
    if line:
        d.p(line)
    if sr:
        _sr_section(d, sr, bout)
    if st:
        _style_section(d, st, bout)
    from perceptual_core import zoo  # torch: not at import, so the CLI parser stays torch-free

    released = released_style_table(zoo.entries())
    if released:
        d.h(2, "Released models")
        d.table(*released)

    versions = judged_versions(sr, st)
    curves = loss_curves(versions) if versions else None
    if curves:
        d.h(2, "Training loss curves (from MLflow)")
        d.images([("loss_total per training run", curves)])
    if promo:
        d.h(2, "Promotion decisions")
        table = promotion_table(promo)
        if table:
            d.table(*table)
    png = trend_plot(history, trend_keys) if history is not None and trend_keys else None
    if png:
        d.h(2, "Trends over the scheduled runs")
        d.images([("trend", png)])

    d.h(2, "Environment")
    d.table("where and with what this ran", ["item", "value"], [[k, str(v)] for k, v in env.items()])
    d.write(out, title)
    get(__name__).info(f"report: {out / 'benchmark.html'} and {out / 'benchmark.md'}")
    return out / "benchmark.html"
