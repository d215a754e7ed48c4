"""Speed and memory of the core networks on this machine; prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_core.py [--json benchmarks/results/core_cpu.json] [--device cpu]

Times are the median of `--repeat` runs after one warm-up, batch 1, eval mode,
torch.inference_mode (training-step rows: forward + backward of the loss).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perceptual_core.losses import PerceptualLoss  # noqa: E402
from perceptual_core.networks import SRNet, TransformNet, count_parameters  # noqa: E402
from perceptual_core.vgg import VGG16Loss  # noqa: E402


def timeit(fn, repeat: int, device) -> float:
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--json", default="benchmarks/results/core_cpu.json")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []

    def add(what, size, secs, params=None):
        rows.append({"what": what, "size": size, "seconds": secs, "params": params})
        print(f"{what:<38}{size:>10}{secs * 1000:>12.1f} ms", flush=True)

    print(f"{'what':<38}{'input':>10}{'time':>15}")
    style = TransformNet().to(dev).eval()
    for s in sizes:
        x = torch.rand(1, 3, s, s, device=dev)
        with torch.inference_mode():
            add("style transform net (paper)", f"{s}x{s}", timeit(lambda: style(x), a.repeat, dev), count_parameters(style))
    for scale, lr in ((4, 72), (4, 128), (8, 36), (8, 64)):
        sr = SRNet(scale).to(dev).eval()
        x = torch.rand(1, 3, lr, lr, device=dev)
        with torch.inference_mode():
            add(f"SR x{scale} net", f"{lr}x{lr}", timeit(lambda: sr(x), a.repeat, dev), count_parameters(sr))
    vgg = VGG16Loss.pretrained().to(dev)
    crit = PerceptualLoss(vgg, style_weight=1e-5)
    crit.set_style(torch.rand(3, 256, 256, device=dev))
    net = TransformNet().to(dev).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(4, 3, 256, 256, device=dev)

    def step():
        opt.zero_grad()
        crit(net(x), x)["total"].backward()
        opt.step()

    add("style training step (batch 4)", "256x256", timeit(step, a.repeat, dev))
    img = torch.rand(1, 3, 256, 256, device=dev, requires_grad=True)
    add("Gatys: one loss+grad evaluation", "256x256", timeit(lambda: crit(img, img.detach())["total"].backward(), a.repeat, dev))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {"device": str(dev), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "peak_rss_mb": round(peak_mb, 1)}
    if dev.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(dev)
        meta["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    print(f"peak RSS {peak_mb:.0f} MB; {meta}")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
