"""The model card: what the network is, how it was trained and how good it is (measured, against the
release bar), written from its manifest entry."""
from __future__ import annotations

import json

from .. import jobname
from ..train.spec import trained_on
from .params import settings


def card(name: str, e: dict, peers: dict | None = None) -> str:
    """The model card: what it is, how it was trained, how good it is (measured), its hash."""
    tr, lines = e["training"], [f"# {name}", ""]
    if e["task"] == "stylize":
        lines += [f"Fast style transfer network (Johnson et al. 2016; instance norm, reflection padding, "
                  f"nearest-neighbour upsampling, width {e['config'].get('width', 1.0)}) for the style image "
                  f"`{e['style_image']}`: {e.get('provenance') or 'see the data folder SOURCES.md, styles/'}.", ""]
    else:
        c, j = e["config"], jobname.parse(name)
        if j.kind == "srcnn":
            lr = ("MATLAB bicubic downscaling of the HR crop (the standard protocol, SRCNN's own data)"
                  if tr["params"].get("degradation") == "bicubic" else
                  "Gaussian blur then MATLAB bicubic (the paper's protocol)")
            what = (f"SRCNN {c.get('f1', 9)}-{c.get('f2', 1)}-{c.get('f3', 5)} (Dong et al. 2014) retrained here at "
                    f"x{j.scale} with the per-pixel loss on the Y channel of the bicubic-upscaled LR, made by {lr}")
        else:
            norm = "no normalisation" if c.get("norm") == "none" else f"{c.get('norm', 'batch')} norm"
            what = (f"Super-resolution network x{j.scale} (Johnson et al. 2016: residual blocks at the low resolution, "
                    f"then learned upsampling; width {c.get('width', 1.0)}, {norm}) trained "
                    f"with " + ("the feature reconstruction loss l_feat (VGG-16 relu2_2) and TV" if j.loss == "feat"
                                else "the per-pixel loss l_pixel (MSE)")
                    + " on LR made by Gaussian blur then MATLAB bicubic (the paper's protocol)")
            changes = (["a global bicubic skip (the network predicts a correction to the bicubic upscale)"]
                       if c.get("skip") == "bicubic" else []) + (["no batch norm"] if c.get("norm") == "none" else [])
            if changes:
                what += (f"; not the paper's network: {' and '.join(changes)}, which let 2 CPU cores beat bicubic "
                         f"within the training budget (measured: params.yaml release.sr)")
        lines += [what + ".", ""]
    lines += ["## Use", "", "```bash",
              f"perceptual {e['task']} photo.jpg --model {name} -o out.png" +
              (f"     # or --style {jobname.parse(name).style}" if e["task"] == "stylize" else ""), "```", "",
              "## File", "",
              f"- `{e['file']}`: safetensors (tensors only, no pickle), {e['storage']} storage, {e['bytes']:,} bytes",
              f"- SHA-256 `{e['sha256']}` (checked on every load against `MANIFEST.json`)",
              f"- fp16 storage vs the fp32 checkpoint: {e['fp16_psnr_db']} dB PSNR of the output on the quality photos "
              f"(bound 40 dB)", "",
              "## Training (measured)", "",
              (f"- command: `{tr['command']}` (plain PyTorch on one {tr['device']}, torch {tr['torch']}, no Ray; "
               + ("it continues the shipped model, below)" if tr.get("continued_from") else
                  "this GPU-trained model replaces the CPU-trained one)") if tr.get("device") else
               f"- command: `{tr['command']}` (Ray Train, {tr['params'].get('workers')} CPU workers, tracked in "
               f"MLflow run `{tr['mlflow_run_id']}`)"),
              f"- data: {', '.join(tr['data'])} (never a benchmark image)",
              f"- iterations: {e['iterations']:,}; training wall time {(tr['wall_seconds'] or 0) / 3600:.2f} h over all "
              f"legs ({e['iterations'] / max(tr['wall_seconds'] or 1, 1):.3f} it/s over them, on "
              f"{trained_on(tr)}, reports and checkpoints included)",
              *_continued_lines(tr),
              f"- settings: `{json.dumps(tr['params'], sort_keys=True)}`",
              *_tv_size_lines(tr["params"]),
              "- loss (first interval -> last): " + ", ".join(
                  f"{k[5:]} {tr['loss_start'].get(k, float('nan')):.4g} -> {v:.4g}"
                  for k, v in sorted(tr["loss_end"].items(), key=lambda kv: _LOSS_ORDER.get(kv[0], 9))),
              ""]
    if e.get("quality") and e["task"] != "stylize":
        lines += _sr_quality_lines(name, e, peers)
    elif e.get("quality"):
        q, m = e["quality"], e["quality"]["mean"]
        w = e["objective_weights"]
        lines += ["## Quality (measured on photos never trained on)", "",
                  f"Photos {', '.join(q['photos'])} at {q['size']} px on the longer side; losses on the training "
                  f"objective (content {w['content']:g}, style {w['style']:g}, TV {w['tv']:g}); Gatys = L-BFGS from "
                  f"the photo on the same objective, an iteration being one L-BFGS step.", "",
                  "| method | content loss | style loss | total | style vs photo |", "|---|---|---|---|---|"]
        for v, r in sorted(m.items(), key=lambda kv: _row_order(kv[0])):  # the manifest may hold them sorted
            label = {"photo": "the photo itself", "ours": "this network"}.get(v, f"Gatys {v[5:]} iterations")
            lines.append(f"| {label} | {r['content_loss']:.4g} | {r['style_loss']:.4g} | {r['total_loss']:.4g} | "
                         f"{r['style_loss'] / m['photo']['style_loss']:.3f} |")
        g = [v for v in m if v.startswith("gatys")]
        ratio = m["ours"]["style_loss"] / m["photo"]["style_loss"]
        lines += ["", "The release bar:"]
        if g:
            ref = "gatys100" if "gatys100" in m else g[-1]
            ok = m["ours"]["total_loss"] <= m[ref]["total_loss"]
            lines.append(f"- total loss at most Gatys after {ref[5:]} iterations: {'met' if ok else 'NOT met'} "
                         f"({m['ours']['total_loss']:.4g} vs {m[ref]['total_loss']:.4g})")
        lines += [f"- style loss at most 1/3 of the photo's: {'met' if ratio <= 1 / 3 else 'NOT met'} ({ratio:.3f})",
                  "", f"![sample]({e['sample']})", ""]
        if e.get("artifacts"):
            lines += _artifact_lines(e["artifacts"])
    return "\n".join(lines) + "\n"


_LOSS_ORDER = {"loss_content": 0, "loss_style": 1, "loss_tv": 2, "loss_pixel": 3, "loss_total": 4}


def _tv_size_lines(p: dict) -> list[str]:
    """A model trained with TV weighed as at tv_size px (losses.tv_scale): what its crops trained with."""
    if not p.get("tv_size") or p.get("tv_weight") is None:
        return []
    from perceptual_core.losses import tv_scale  # the factor training used (train.step.style_criterion)

    f = tv_scale(p["crop"], p["tv_size"])
    return [f"- TV weight {p['tv_weight']:g} as it weighs at {p['tv_size']} px (release.style.tv_size): TV sums over "
            f"pixels while the content and style losses are means, so the {p['crop']}² crops trained with "
            f"{p['tv_weight']:g} x {f:.3g} = {p['tv_weight'] * f:.3g} (the training losses below include it)"]


def _row_order(v: str) -> tuple:
    """the photo, this network, then Gatys by its iterations"""
    return (0, 0) if v == "photo" else (1, 0) if v == "ours" else (2, int(v[5:]) if v[5:].isdigit() else 0)


def _artifact_lines(a: dict) -> list[str]:
    """The artifact checks (perceptual_core/artifacts.py) and their bars, in 8-bit levels."""
    lines = ["## Artifacts (measured)", "",
             f"At {a['size']} px on the longer side, run as `perceptual stylize` runs it (tile {a['tile']}, overlap "
             f"{a['overlap']}, whole-image instance-norm statistics; {a.get('border', 0)} px of reflected border "
             f"around the input, cropped off). Stride-locked pattern: the RMS of the luma "
             f"pattern of period 2 or 4 px that repeats in phase across the image (checkerboard). Border: the "
             f"output against the output on the photo reflect-padded by {a['pad']} px (same instance-norm "
             f"statistics), over the {a['band']} px along each edge: the mean signed difference (a frame), "
             f"worst channel and side, and the mean absolute one (any border effect). Seams: the tiled output "
             f"against the untiled one. White blobs: pixels of the tiled output clipped to white (every channel "
             f"at least 250) where the photo has no white (under 230), as the largest share of any 16 px square "
             f"they fill (a solid disc reads near 1, white strokes and specks low), and the squares they fill "
             f"more than half of.", "",
             "| photo | stride-locked pattern, period 2 / 4 (the photo's) | border frame | border, mean abs | "
             "tiled vs untiled | max at seams | white blobs (squares) |", "|---|---|---|---|---|---|---|"]
    for r in a["photos"]:
        la, lp, b = r["lattice"], r["lattice_photo"], r["border"]
        sides = [v for k, v in b.items() if k != "interior"]
        lines.append(f"| {r['photo']} ({r['shape'][1]}x{r['shape'][0]}) | {la['2']:.2f} / {la['4']:.2f} "
                     f"({lp['2']:.2f} / {lp['4']:.2f}) | {max(v['frame'] for v in sides):.2f} | "
                     f"{max(v['abs'] for v in sides):.2f} | {r['seams']['psnr_db']:.1f} dB | "
                     f"{r['seams']['seam_max_levels']:.2f} | {_blobs(r)} |")
    w, bars = a["worst"], a.get("bars") or {}
    lines += ["", "Levels are 8-bit levels. The release bar:"]
    if "lattice_levels" in bars:
        lines.append(f"- no checkerboard, a stride-locked pattern of at most {bars['lattice_levels']:g} level RMS: "
                     f"{'met' if w['lattice_levels'] <= bars['lattice_levels'] else 'NOT met'} "
                     f"({w['lattice_levels']:.2f}; the photos {w['lattice_photo_levels']:.2f})")
    if "frame_levels" in bars:
        lines.append(f"- no border frame, an edge band within {bars['frame_levels']:g} levels of its colour had the "
                     f"image continued: {'met' if w['frame_levels'] <= bars['frame_levels'] else 'NOT met'} "
                     f"({w['frame_levels']:.2f})")
    if "seam_min_psnr_db" in bars:
        lines.append(f"- no tile seams, the tiled output within {bars['seam_min_psnr_db']:g} dB of the untiled one: "
                     f"{'met' if w['seam_psnr_db'] >= bars['seam_min_psnr_db'] else 'NOT met'} "
                     f"({w['seam_psnr_db']:.1f} dB, at most {w['seam_max_levels']:.2f} levels at the seams)")
    if "blob_fill" in bars and "blob_fill" in w:
        lines.append(f"- no white blobs, at most {bars['blob_fill']:g} of any 16 px square clipped to white where the "
                     f"photo is not: {'met' if w['blob_fill'] <= bars['blob_fill'] else 'NOT met'} "
                     f"({w['blob_fill']:.2f})")
    return lines + [""]


def _blobs(r: dict) -> str:
    b = r.get("blobs")  # a model measured before the blob check has none
    return f"{b['block_fill']:.2f} ({b['blocks']})" if b else "—"


def _continued_lines(tr: dict) -> list[str]:
    """A model continued from a shipped one: what it started from and how the iterations split."""
    c = tr.get("continued_from")
    if not c:
        return []
    if c.get("iterations") is None:
        return [f"- started from the weights of `{c['ref']}` (checkpoint SHA-256 `{c['checkpoint_sha256'][:12]}...`)"]
    run = (f"MLflow run `{c['mlflow_run_id']}`" if c.get("mlflow_run_id") else c.get("device") or "an earlier run")
    return [f"- continued from the shipped `{c['ref']}` (SHA-256 `{c['sha256'][:12]}...`: {c['iterations']:,} iterations, "
            f"{(c.get('wall_seconds') or 0) / 3600:.2f} h, {run}) for {c['run_iterations']:,} more "
            f"({c['run_seconds'] / 3600:.2f} h; a fresh Adam, its first interval's loss "
            f"{c['run_loss_start'].get('loss_total', float('nan')):.4g}); the figures above and below count both"]


def _sr_quality_lines(name: str, e: dict, peers: dict | None = None) -> list[str]:
    """The card's SR table (measured; published figures labelled) and the release bar it is held to."""
    from ..benchmark import PUBLISHED

    q = e["quality"]
    rows, scale, loss = q["rows"], q["scale"], jobname.parse(name).loss
    vgg = sorted(k for k in rows[0] if k.startswith("vgg_"))
    d = q["degradation"]
    trained = {k: "" for k in ("bicubic", "blur")}
    trained[e["training"]["params"].get("degradation", "blur")] = " (how it was trained)"
    lines = ["## Quality (measured on benchmark images never trained on)", "",
             f"Y channel (MATLAB BT.601), {scale} px shaved at the border; LR protocols: `standard` = the set's "
             f"bicubic LR files{trained['bicubic']}, `blur` = Gaussian blur sigma {d['blur_sigma']} then MATLAB "
             f"bicubic{trained['blur']}. VGG = feature reconstruction distance to HR (lower is better).", "",
             "| set | LR | method | Y-PSNR (dB) | SSIM | " + " | ".join(f"VGG {k[4:]}" for k in vgg) + " |",
             "|---|---|---|---|---|" + "---|" * len(vgg)]
    for r in rows:
        label = {"bicubic": "bicubic", "official": "SRCNN, official weights"}.get(r["method"], "this network")
        pub = PUBLISHED.get((r["method"], r["set"], scale)) if r["protocol"] == "standard" else None
        lines.append(f"| {r['set']} | {r['protocol']} | {label} | {r['psnr_y']:.2f}"
                     + (f" (published {pub[0]:.2f})" if pub else "") + f" | {r['ssim_y']:.4f} | "
                     + " | ".join(f"{r[k]:.4g}" for k in vgg) + " |")
    by = {(r["set"], r["protocol"], r["method"]): r for r in rows}
    keys = sorted({(r["set"], r["protocol"]) for r in rows})
    lines += ["", "The release bar:"]
    bars = settings().sr_quality.bars
    if jobname.parse(name).kind == "srcnn":
        gap = float(bars["srcnn_within_db"])
        diffs = {k: by[(*k, "ours")]["psnr_y"] - by[(*k, "official")]["psnr_y"] for k in keys
                 if k[1] == "standard" and (*k, "official") in by}
        ok = bool(diffs) and all(d >= -gap for d in diffs.values())
        lines.append(f"- within {gap:.1f} dB Y-PSNR of the official SRCNN weights on the standard protocol on every "
                     f"set: {'met' if ok else 'NOT met'} (" + ", ".join(
                         f"{s} {by[(s, p, 'ours')]['psnr_y']:.2f} vs {by[(s, p, 'official')]['psnr_y']:.2f} dB, "
                         f"{d:+.2f}" for (s, p), d in diffs.items()) + ")")
    elif loss == "pixel":
        least = float(bars["pixel_gain_db"][f"x{scale}"])
        gains = {k: by[(*k, "ours")]["psnr_y"] - by[(*k, "bicubic")]["psnr_y"] for k in keys if k[1] == q["primary"]}
        ok = all(g >= least and g > 0 for g in gains.values())
        what = f"at least {least:.1f} dB Y-PSNR above" if least else "a higher Y-PSNR than"
        lines.append(f"- {what} bicubic on the {q['primary']} protocol on every set: "
                     f"{'met' if ok else 'NOT met'} (" + ", ".join(f"{s} {g:+.2f} dB" for (s, _), g in gains.items())
                     + ")")
    else:
        k0 = "vgg_" + e["training"]["params"].get("feat_layer", "relu2_2")
        if k0 in rows[0]:
            ok = all(by[(*k, "ours")][k0] < by[(*k, "bicubic")][k0] for k in keys)
            lines.append(f"- lower VGG {k0[4:]} distance to HR than bicubic on every set and protocol: "
                         f"{'met' if ok else 'NOT met'} (" + ", ".join(
                             f"{s} {p} {by[(s, p, 'ours')][k0]:.4g} vs {by[(s, p, 'bicubic')][k0]:.4g}"
                             for s, p in keys) + ")")
            px = (peers or {}).get(f"sr-x{scale}-pixel")  # the shipped l_pixel model at this scale
            if px and px.get("quality"):
                pby = {(r["set"], r["protocol"]): r for r in px["quality"]["rows"] if r["method"] == "ours"}
                both = [k for k in keys if k in pby]
                ok = all(by[(*k, "ours")][k0] < pby[k][k0] for k in both)
                lines.append(f"- lower than the shipped sr-x{scale}-pixel on every set and protocol: "
                             f"{'met' if ok else 'NOT met'} (" + ", ".join(
                                 f"{s} {p} {by[(s, p, 'ours')][k0]:.4g} vs {pby[(s, p)][k0]:.4g}"
                                 for s, p in both) + "); its Y-PSNR is lower, as the paper's l_feat column")
    if e.get("sample"):
        lines += ["", f"Centre crop, {q['primary']} protocol: bicubic | this network | HR", "",
                  f"![sample]({e['sample']})"]
    return lines + [""]
