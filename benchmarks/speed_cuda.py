"""Inference speed on a GPU: the style network through each engine and precision at 256² to 2048², and
one Gatys iteration on the same VGG-16 layers, beside the paper's Titan X figures. Prints a table and
writes JSON. Needs only torch (no Ray, MLflow, onnxruntime or data folder), so it runs on a bare GPU
machine (scripts/gpu_check.sh prepares its inputs and runs it there).

    python benchmarks/speed_cuda.py --weights models/style-la_muse.safetensors --photo tmp/gpu/photo.pt --json OUT.json
    python benchmarks/speed_cuda.py --device cpu --sizes 64 128 --repeats 1    # a smoke run anywhere

Rows: plain (the unmodified network, fp32), eager fp32 / bf16 / fp16 (perceptual_core.engines: folded
batch norm, sub-pixel upsampling, channels_last, autocast), compile fp32 / fp16 (torch.compile of the
same). Each engine is verified against plain fp32 on the photo at 3 sizes first (fp32: max |diff| <=
2e-3, bf16/fp16: >= 40 dB, engines.TOLERANCE); the table's PSNR is measured again at every size.
Times: median seconds over --repeats runs after --warmup runs, batch 1, the input already on the
device, torch.cuda.synchronize() around each run (the engine's graph only: no host copy). Peak memory:
torch.cuda.max_memory_allocated per row and size. Gatys: seconds of one content+style loss forward and
backward through VGG-16 to relu4_3 (the paper's loss layers; random weights: the time does not depend
on them) -> x 100/300/500 iterations, and the speedup over the fastest verified engine.

--weights: a perceptual style checkpoint or a release .safetensors file (models/; default outputs/train/style-la_muse/model.pt; random weights of
the paper's architecture when missing: same speed, and the fp16/bf16 PSNR then says less). --photo: a
(3, H, W) uint8 tensor saved by torch.save (scripts/gpu_check.sh makes one from chicago.jpg), or an
image file (needs pillow); without one a smooth synthetic image is used.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perceptual_core import engines  # noqa: E402
from perceptual_core.networks import TransformNet  # noqa: E402

PAPER_TITANX = {256: 0.015, 512: 0.05, 1024: 0.21}  # Johnson et al. 2016, Table 1, ours (s/image)
PAPER_GATYS = {256: (3.17, 9.52, 15.86), 512: (10.97, 32.91, 54.85), 1024: (42.89, 128.66, 214.44)}  # 100/300/500 it
ROWS = (("plain", "fp32"), ("eager", "fp32"), ("eager", "bf16"), ("eager", "fp16"),
        ("compile", "fp32"), ("compile", "fp16"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_photo(path: str | None, size: int) -> torch.Tensor:
    """(1, 3, size, size) float in [0, 1]: a centre square of the photo, bicubic-resized."""
    if path and Path(path).suffix == ".pt":
        x = torch.load(path, weights_only=True).float() / 255
    elif path:
        from perceptual_core.io import load_image

        x = load_image(path).to_tensor()
    else:  # smooth gradients and discs: photo-like statistics without a file
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 512), torch.linspace(0, 1, 512), indexing="ij")
        disc = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.05).float()
        x = torch.stack([xx, yy * (1 - disc) + disc * 0.8, 0.5 + 0.4 * torch.sin(8 * xx * yy)])
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def load_style_net(path: str | None, device: torch.device) -> tuple[nn.Module, str]:
    if path and Path(path).suffix == ".safetensors":  # a release file (models/): travels with the code
        from perceptual_core.zoo import model_from_bytes

        return model_from_bytes(Path(path).read_bytes(), str(path)).to(device).eval(), str(path)
    if path and Path(path).is_file():
        from perceptual_core.checkpoint import load_model

        return load_model(path, device), str(path)
    torch.manual_seed(0)
    net = TransformNet(norm="instance", padding="reflect", upsample="nearest")
    return net.to(device).eval(), "random weights (paper architecture)"


def vgg_to_relu4_3() -> nn.Sequential:
    """VGG-16's layers up to relu4_3 (torchvision's `features[:23]` layout), random weights."""
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


def gatys_iteration_s(size: int, device: torch.device, repeats: int) -> float:
    """One L-BFGS objective evaluation: content (relu2_2, the paper's) + Gram style losses at
    relu1_2/2_2/3_3/4_3, forward and backward to the image."""
    vgg = vgg_to_relu4_3().to(device).eval().requires_grad_(False)
    taps = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3"}

    def feats(x):
        out = {}
        for i, m in enumerate(vgg):
            x = m(x)
            if i in taps:
                out[taps[i]] = x
        return out

    def gram(f):
        b, c, h, w = f.shape
        f = f.flatten(2)
        return f @ f.transpose(1, 2) / (c * h * w)

    content = torch.rand(1, 3, size, size, device=device)
    with torch.no_grad():
        target = feats(content)
        grams = {k: gram(v) for k, v in feats(torch.rand(1, 3, 256, 256, device=device)).items()}
    img = content.clone().requires_grad_(True)

    def step():
        f = feats(img)
        loss = F.mse_loss(f["relu2_2"], target["relu2_2"]) + sum(F.mse_loss(gram(f[k]), g) for k, g in grams.items())
        loss.backward()
        img.grad = None

    return median_time(step, device, repeats, 2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--weights", default=str(ROOT / "outputs/train/style-la_muse/model.pt"))
    ap.add_argument("--photo")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rows", nargs="+", default=[f"{e}:{p}" for e, p in ROWS],
                    help="engine:precision pairs (plain:fp32 is the reference and always runs)")
    ap.add_argument("--gatys-sizes", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/speed_cuda.json"))
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    model, weights = load_style_net(a.weights, device)
    photos = {s: load_photo(a.photo, s) for s in a.sizes}
    verify_imgs = [load_photo(a.photo, s) for s in (64, 120, 200)]
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                weights=weights, photo=a.photo or "synthetic", repeats=a.repeats, warmup=a.warmup,
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)  # "plain fp32" convs use TF32 when True
    print(f"# {meta['device']}, torch {meta['torch']}, weights: {weights}", flush=True)
    results: list[dict] = []
    refs: dict[int, torch.Tensor] = {}
    pairs = [("plain", "fp32")] + [tuple(r.split(":")) for r in a.rows if r != "plain:fp32"]
    for eng_name, prec in pairs:
        row = dict(engine=eng_name, precision=prec, sizes={})
        t0 = time.perf_counter()
        try:
            if eng_name == "plain":
                def run(x, m=model):
                    return m(x)
            else:
                eng = engines.build_engine(model, eng_name, prec, images=verify_imgs)
                row["verified"] = {k: eng.verified[k] for k in ("max_abs", "min_psnr")}

                def run(x, e=eng):
                    return e._runner(e.prepare(x)[0])
        except Exception as e:  # a row that cannot run (e.g. bf16 on an old GPU) is reported, not fatal
            row["error"] = f"{type(e).__name__}: {e}"
            print(f"{eng_name:>8} {prec:>5}  FAILED: {row['error'][:300]}", flush=True)
            results.append(row)
            continue
        row["build_s"] = round(time.perf_counter() - t0, 2)
        for s in a.sizes:
            x = photos[s].to(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with torch.inference_mode():
                sec = median_time(lambda: run(x), device, a.repeats, a.warmup)
                y = run(x)[..., :s, :s].float()
            if eng_name == "plain":
                refs[s] = y
            cell = dict(median_s=sec, psnr_vs_plain_db=engines.psnr(y, refs[s]))
            if device.type == "cuda":
                cell["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            row["sizes"][str(s)] = cell
            print(f"{eng_name:>8} {prec:>5} {s:>5}²  {sec * 1e3:9.2f} ms  PSNR {cell['psnr_vs_plain_db']:6.1f} dB"
                  f"  {cell.get('peak_mem_mb', '')}", flush=True)
            del x, y
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)  # partial results survive a time limit
            Path(a.json).write_text(json.dumps(dict(meta=meta, style=results + [row], partial=True), indent=1,
                                               default=str))
        results.append(row)
    gatys = {}
    for s in a.gatys_sizes:
        try:
            gatys[str(s)] = gatys_iteration_s(s, device, max(3, a.repeats // 4))
        except RuntimeError as e:  # out of memory at the largest size
            gatys[str(s)] = None
            print(f"gatys {s}: {e}", flush=True)
    ok = [r for r in results if "error" not in r]
    print(f"\n{'engine':<9}{'prec':<6}" + "".join(f"{str(s) + '² (s)':>12}" for s in a.sizes) + f"{'min PSNR':>10}")
    for r in ok:
        cells = "".join(f"{r['sizes'][str(s)]['median_s']:>12.4f}" for s in a.sizes)
        mp = min(c["psnr_vs_plain_db"] for c in r["sizes"].values())
        print(f"{r['engine']:<9}{r['precision']:<6}{cells}{mp:>10.1f}")
    print(f"{'paper':<9}{'TitanX':<6}" + "".join(f"{PAPER_TITANX.get(s, float('nan')):>12.4f}" for s in a.sizes))
    speed = {}
    verified = [r for r in ok if r["engine"] != "plain"] or ok
    for s, it_s in gatys.items():
        if it_s is None or s not in verified[0]["sizes"]:
            continue
        best = min(verified, key=lambda r: r["sizes"][s]["median_s"])
        ff = best["sizes"][s]["median_s"]
        speed[s] = dict(iteration_s=it_s, fastest=f"{best['engine']} {best['precision']}", feed_forward_s=ff,
                        **{f"speedup_{n}": n * it_s / ff for n in (100, 300, 500)})
        paper = PAPER_GATYS.get(int(s))
        print(f"Gatys {s}²: {it_s * 1e3:.1f} ms/iteration; 100/300/500 it = "
              + "/".join(f"{n * it_s:.2f}" for n in (100, 300, 500)) + " s; speedup over "
              f"{speed[s]['fastest']}: " + "/".join(f"{speed[s][f'speedup_{n}']:.0f}x" for n in (100, 300, 500))
              + (f"  (paper, Titan X: {'/'.join(f'{v:.2f}' for v in paper)} s)" if paper else ""))
    out = dict(meta=meta, style=results, gatys_speedup=speed, paper_titanx=PAPER_TITANX, paper_gatys=PAPER_GATYS)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {a.json}")
    return out


if __name__ == "__main__":
    main()
