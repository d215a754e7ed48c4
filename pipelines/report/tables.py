"""The benchmark results as the paper's tables (the SR table, the speed table) and the style losses,
plus the sentences read beside them: the published anchors, and which data was measured or missing.
Plain (title, header, rows) of strings, so the HTML and the Markdown show the same figures.
"""
from __future__ import annotations

# The paper's column order (bicubic, ours l_pixel, SRCNN, ours l_feat), plus the SRCNN retrained here.
METHOD_NAMES = {"bicubic": "bicubic", "pixel": "ours l_pixel", "srcnn-official": "SRCNN (official)",
                "srcnn": "SRCNN (retrained)", "feat": "ours l_feat", "srcnn@champion": "SRCNN (retrained, champion)",
                "pixel@champion": "ours l_pixel (champion)", "feat@champion": "ours l_feat (champion)"}


def _fmt(x, nd=2, kind="f"):
    return "—" if x is None else f"{x:.{nd}{kind}}"


def sr_tables(sr: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows): per protocol, the paper's layout (rows scale x set, PSNR / SSIM per method),
    and the VGG distance."""
    res = sr["results"]
    protos = list(dict.fromkeys(p for s in res.values() for by in s.values() for p in by))
    methods = [m for m in METHOD_NAMES if any(m in by_m for s in res.values() for by in s.values()
                                              for by_m in by.values())]
    out = []
    for proto in protos:
        head = ["scale", "set"] + [METHOD_NAMES[m] for m in methods]
        rows, vrows = [], []
        for sk, sets in res.items():
            for set_name, by in sets.items():
                ms = by.get(proto, {})
                rows.append([sk, set_name] + [f"{_fmt(ms[m]['psnr_y'])} / {_fmt(ms[m]['ssim_y'], 4)}" if m in ms
                                              else "—" for m in methods])
                vrows.append([sk, set_name] + [" / ".join(_fmt(v, 1) for k, v in ms[m].items() if k.startswith("vgg_"))
                                               if m in ms else "—" for m in methods])
        lr = "standard MATLAB-bicubic LR" if proto == "standard" else "the paper's LR (Gaussian blur σ, then bicubic)"
        out.append((f"SR: Y-PSNR (dB) / Y-SSIM, {lr}, shave = scale", head, rows))
        vkeys = [k for s in res.values() for by in s.values() for ms in by.values() for m in ms.values()
                 for k in m if k.startswith("vgg_")]
        out.append((f"SR: VGG feature distance to HR ({' / '.join(dict.fromkeys(vkeys))}, lower is better), {lr}",
                    head, vrows))
    return out


def anchor_line(sr: dict) -> str | None:
    """The published anchors (benchmark.PUBLISHED) beside what this run measured on the same rows
    (x4, standard MATLAB-bicubic LR); None when the run measured none of them."""
    from ..benchmark import PUBLISHED

    parts = []
    for (method, set_name, scale), (psnr, _) in PUBLISHED.items():
        got = sr["results"].get(f"x{scale}", {}).get(set_name, {}).get("standard", {}).get(method, {}).get("psnr_y")
        if got is not None:
            parts.append(f"{METHOD_NAMES.get(method, method)} x{scale} {set_name} {got:.2f} dB (published {psnr:.2f})")
    return ("Anchors, measured by this run on the standard LR files: " + "; ".join(parts) + ".") if parts else None


def scores_line(sr: dict) -> str | None:
    """How many per-image scores this run computed and how many it reused (benchmark score_cache)."""
    sc = sr.get("scores")
    if not sc or not sc.get("reused"):
        return None
    return (f"Scores: {sc['scored']} image scores computed by this run; {sc['reused']} reused, each stored earlier "
            f"(by a run or the release's models/scores.json) under the same weights, image, scale and metric "
            f"settings (pipelines/benchmark/score_cache.py).")


def data_line(sr: dict | None, st: dict | None) -> str | None:
    """One line: the data the benchmarks read (a data folder, or the embedded default) and what they
    could not measure without it, with the one `perceptual data fetch` command that brings all of it."""
    from ..data_fetch import GROUPS

    data = (sr or {}).get("data") or (st or {}).get("data")
    if not data:
        return None  # results written before the benchmarks recorded it
    gone = [m for m in (sr or {}).get("not_measured") or []]
    gone += [{"set": "the official SRCNN", **m} for m in (sr or {}).get("missing") or [] if m.get("fetch")]
    gone += [{"set": f"the content photo {m['photo']}", **m} for m in (st or {}).get("not_measured") or []]
    names = list(dict.fromkeys(m["set"] for m in gone))
    words = {w for m in gone for w in m["fetch"].split()}
    groups = [g for g in GROUPS if g in words]
    if not names:
        return f"Data: {data}."
    return f"Data: {data}. Not measured: {', '.join(names)}: run `perceptual data fetch {' '.join(groups)}`."


def speed_table(st: dict) -> tuple[str, list[str], list[list[str]]]:
    iters = sorted({int(k[5:-2]) for e in st["speed"].values() for k in e if k.startswith("gatys") and k.endswith("_s")
                    and k[5:-2].isdigit()})
    head = (["size"] + [f"Gatys {n} it (s)" for n in iters] + ["ours (s)", "plain eager (s)"] +
            [f"speedup {n}" for n in iters])
    rows = []
    for size, e in st["speed"].items():
        mark = {n: "" if e.get(f"gatys{n}_measured") else "*" for n in iters}
        rows.append([f"{size}²"] + [f"{e[f'gatys{n}_s']:.1f}{mark[n]}" for n in iters] + [f"{e['ours_s']:.3f}", _fmt(e.get("plain_eager_s"), 3)] +
                    [f"{e[f'speedup{n}']:.0f}x{mark[n]}" for n in iters])
    t = e.get("gatys_timed_iters")
    return (f"Style transfer speed, seconds per image ({st.get('device', 'cpu')}, ours: engine "
            f"{st.get('engine', 'plain eager')}; * extrapolated from {t} timed "
            f"L-BFGS iterations after the first; feed-forward: median after warm-up)", head, rows)



def paper_speed_table() -> tuple[str, list[str], list[list[str]]]:
    """The paper's Table 1 (benchmark.PAPER_SPEED) beside the measured one, for reference."""
    from ..benchmark import PAPER_SPEED

    return ("The paper's figures (Titan X GPU, for reference)",
            ["size", "Gatys 100", "Gatys 300", "Gatys 500", "ours", "speedup 500"],
            [[f"{s}²", *(f"{v[n]:.2f}" for n in (100, 300, 500)), f"{v['ours']:.3f}",
              f"{v[500] / v['ours']:.0f}x"] for s, v in PAPER_SPEED.items()])


def style_quality_table(st: dict) -> tuple[str, list[str], list[list[str]]]:
    head = ["model", "method", "content loss", "style loss", "TV loss", "total (training weights)", "style vs photo"]
    rows = []
    for model, by in st["quality"].items():
        base = (by.get("photo") or {}).get("style_loss")
        for v, q in by.items():
            label = {"ours": "ours (feed-forward)", "photo": "the photo itself (baseline)"}.get(
                v, f"Gatys {v[5:]} iterations")
            rows.append([model, label, f"{q['content_loss']:.4g}", f"{q['style_loss']:.4g}",
                         _fmt(q.get("tv_loss"), 4, "g"), f"{q['total_loss']:.4g}",
                         f"{q['style_loss'] / base:.3f}" if base else "-"])
    size = st.get("size")
    return ("Style: losses of the outputs on held-out photos" + (f" at {size} px (longer side)" if size else "") +
            ", lower is better. Gatys optimises this same total from the photo with L-BFGS; one iteration is one "
            "L-BFGS step (its strong-Wolfe line search evaluates the loss about twice on average; measured "
            "evaluations per iteration are in the JSON)", head, rows)


def released_style_table(entries) -> tuple[str, list[str], list[list[str]]] | None:
    """The shipped style models' release bars as measured at export (their manifest entries: the quality
    table at 512 px, the artifact checks at 2048 px); None when none is shipped."""
    rows = []
    for e in entries:
        if e.task != "stylize":
            continue
        m, a = (e.info.get("quality") or {}).get("mean", {}), e.info.get("artifacts") or {}
        ours, photo, g100 = m.get("ours"), m.get("photo"), m.get("gatys100")
        w, bars = a.get("worst", {}), a.get("bars", {})

        def judged(v, bar, fmt, lower=True):
            if v is None:
                return "—"
            ok = bar is None or (v <= bar if lower else v >= bar)
            return fmt.format(v) + ("" if bar is None else (" (met)" if ok else " (NOT met)"))

        rows.append([e.name, f"{e.info.get('iterations', 0):,}",
                     judged(ours["style_loss"] / photo["style_loss"], 1 / 3, "{:.3f}") if ours and photo else "—",
                     judged(ours["total_loss"], g100["total_loss"], "{:.4g} vs " + f"{g100['total_loss']:.4g}")
                     if ours and g100 else "—",
                     judged(w.get("lattice_levels"), bars.get("lattice_levels"), "{:.2f}"),
                     judged(w.get("frame_levels"), bars.get("frame_levels"), "{:.2f}"),
                     judged(w.get("seam_psnr_db"), bars.get("seam_min_psnr_db"), "{:.1f} dB", lower=False),
                     judged(w.get("blob_fill"), bars.get("blob_fill"), "{:.2f}")])
    if not rows:
        return None
    return ("Released style models (models/, measured at export: losses at 512 px on held-out photos, artifacts at "
            "2048 px in 8-bit levels; the release bar in brackets)",
            ["model", "iterations", "style vs photo (≤ 1/3)", "total vs Gatys 100 (≤)", "stride-locked pattern",
             "border frame", "tiled vs untiled", "white blobs"], rows)


def promotion_table(promo) -> tuple[str, list[str], list[list[str]]] | None:
    """The decisions of `perceptual promote` (its decisions file), None when there are none."""
    rows = []
    for dec in promo.get("decisions", promo if isinstance(promo, list) else []):
        rows.append([str(dec.get(k, "")) for k in ("model", "decision", "metric", "challenger_value",
                                                    "champion_value", "delta", "reason")])
    if not rows:
        return None
    return "challenger vs champion", ["model", "decision", "metric", "challenger", "champion", "delta", "reason"], rows
