"""The main job until the DVC pipeline lands (`make run` / `perceptual run`).

1. prepares and verifies the VGG-16 loss network weights;
2. scores bicubic and the official SRCNN on the SR sets in params (x4, both the
   standard LR files and LR made here with MATLAB bicubic), against the published
   numbers;
3. runs the Gatys baseline on one content/style pair and times it.
Results go to ``run.out_dir``: sr_baselines.json, summary.md, the stylised image.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from . import config
from .sr_eval import run_sr_eval

# Published x4 Y-PSNR / SSIM (SelfExSR README; SRCNN 9-5-5 Set5 from Dong et al. TPAMI).
PUBLISHED = {
    ("bicubic", "Set5"): (28.42, 0.8101), ("bicubic", "Set14"): (25.99, 0.7023), ("bicubic", "BSD100"): (25.96, 0.6672),
    ("srcnn-official", "Set5", "matlab-bicubic-from-hr"): (30.48, None),
}


def main(progress=None) -> int:
    from perceptual_core.gatys import gatys
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image, save_image

    run = config.section("run")
    out = config.resolve(run["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    data = config.data_dir()
    scale = int(run["scale"])
    lines = ["# perceptual: baselines run", ""]

    # 1. Loss network.
    net = config.loss_network()
    info = net.info
    print(f"VGG-16 weights: {info.source} {info.path} sha256={info.sha256} (verified)")
    lines += [f"VGG-16 weights: source `{info.source}`, sha256 `{info.sha256}` (verified)", ""]

    # 2. SR baselines.
    srcnn = str(data / run["srcnn_weights"])
    rows = []
    for name in run["sr_sets"]:
        hr = data / name / "HR"
        lr = data / name / f"LR_bicubic_x{scale}"
        for method, lr_dir in (("bicubic", lr), ("srcnn-official", lr), ("bicubic", None), ("srcnn-official", None)):
            if lr_dir is not None and not Path(lr_dir).is_dir():
                continue
            res = run_sr_eval(method, str(hr), scale, lr_dir=str(lr_dir) if lr_dir else None,
                              weights=srcnn if method != "bicubic" else None, progress=progress, quiet=True)
            key = (method, name) if lr_dir else (method, name, "matlab-bicubic-from-hr")
            rows.append({"set": name, "method": method, "lr": res["lr"], **res["mean"],
                         "published": PUBLISHED.get(key)})
    # DVC metrics: {set: {method@lr: {psnr_y, ssim_y, psnr_rgb, ssim_rgb}}}
    metrics: dict = {}
    for r in rows:
        lr_tag = "matlab_lr" if r["lr"] == "matlab-bicubic-from-hr" else "standard_lr"
        metrics.setdefault(r["set"], {})[f"{r['method']}@{lr_tag}"] = {k: round(r[k], 5) for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")}
    (out / "sr_baselines.json").write_text(json.dumps(metrics, indent=1))
    lines += [f"## SR baselines, x{scale}, Y-PSNR/SSIM (MATLAB protocol, shave {scale})", "",
              "| set | method | LR | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB | published Y |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pub = r["published"]
        pubs = "" if not pub else f"{pub[0]:.2f}" + (f" / {pub[1]:.4f}" if pub[1] else "")
        lrs = "standard files" if r["lr"] != "matlab-bicubic-from-hr" else "MATLAB bicubic from HR"
        lines.append(f"| {r['set']} | {r['method']} | {lrs} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | "
                     f"{r['psnr_rgb']:.2f} | {r['ssim_rgb']:.4f} | {pubs} |")

    # 3. Gatys baseline.
    kw = config.gatys_kwargs()
    content = resize_longer(load_image(data / run["gatys_content"]).to_tensor(), int(run["gatys_size"]))
    style = load_image(data / run["gatys_style"]).to_tensor()
    iters = int(run["gatys_iters"])
    bar = progress(range(iters), "gatys", unit="it") if progress else None
    ticks = iter(bar) if bar is not None else None
    t0 = time.perf_counter()
    res = gatys(content, style, net, iters=iters, callback=(lambda i, l: next(ticks, None)) if ticks else None, **kw)
    secs = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    img_path = save_image(out / "gatys.png", res.image)
    h0, h1 = res.history[0], res.history[-1]
    lines += ["", f"## Gatys baseline ({kw['optimizer']}, {iters} iterations, {content.shape[-1]}x{content.shape[-2]})", "",
              f"- {run['gatys_content']} in the style of {run['gatys_style']}: `{img_path.name}`",
              f"- loss {h0['total']:.4g} -> {h1['total']:.4g} (content {h1.get('content', 0):.4g}, style {h1.get('style', 0):.4g})",
              f"- {secs:.1f} s on {platform.processor() or platform.machine()} with torch {torch.__version__} "
              f"({secs / max(iters, 1):.3f} s per iteration)"]
    (out / "gatys_history.json").write_text(json.dumps(res.history))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out}")
    return 0
