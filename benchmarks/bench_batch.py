"""Batch-job throughput on the same 200 real photos: a plain single-process loop (one torch thread)
vs the Ray Data job with 1 and 2 inference actors (one torch thread each); prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_batch.py [--model outputs/train/style-la_muse/model.pt]
        [--max-side 256] [--json benchmarks/results/batch_cpu.json]

Images: the 128 COCO photos and the first 72 BSD100 HR images from PERCEPTUAL_DATA_DIR, resized so
the longer side is --max-side (0: native size, about 4x slower), written as PNG into a temp folder.
The model is the paper's style network (the trained checkpoint when given/present; else random
weights of the same architecture: speed does not depend on the weights). Throughput counts the
whole job (listing, model load, actor start-up, decode, inference, encode, write) from the job's
own summary, and "steady" from the first image out of the model to the last (start-up excluded, which is
what a large archive sees). "Per core" divides by the inference threads (1 for the loop, 1 per actor); Ray's read
and write tasks run on what is left of the machine's CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perceptual_core.checkpoint import save_checkpoint  # noqa: E402
from perceptual_core.io import load_image, save_image  # noqa: E402
from perceptual_core.networks import TransformNet  # noqa: E402
from pipelines import batch, config  # noqa: E402
from pipelines.ray_env import ray_session  # noqa: E402


def make_images(dst: Path, max_side: int) -> float:
    data = config.data_dir()
    files = sorted((data / "coco128_train2017" / "images").glob("*.jpg"))[:128]
    files += sorted((data / "BSD100" / "HR").glob("*.png"))[:72]
    mp = 0.0
    for f in files:
        x = load_image(f).to_tensor()
        if max_side and max(x.shape[-2:]) > max_side:
            s = max_side / max(x.shape[-2:])
            hw = [max(1, round(v * s)) for v in x.shape[-2:]]
            x = torch.nn.functional.interpolate(x[None], size=hw, mode="bicubic", antialias=True)[0].clamp(0, 1)
        save_image(dst / f"{f.stem}.png", x)
        mp += x.shape[-1] * x.shape[-2] / 1e6
    return mp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "outputs/train/style-la_muse/model.pt"))
    ap.add_argument("--max-side", type=int, default=256)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/batch_cpu.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(a.model)
        if not model.is_file():
            torch.manual_seed(0)
            model = save_checkpoint(tmp / "style.pt", TransformNet(norm="instance", padding="reflect", upsample="nearest"))
        src = tmp / "in"
        src.mkdir()
        mp = make_images(src, a.max_side)
        n = len(list(src.iterdir()))
        print(f"{n} images, {mp:.1f} MP in all, model {model}")
        rows = []

        def run(name, engine, actors, cpus, threads):
            spec = batch.BatchSpec.from_params(kind="stylize", model=str(model), input=str(src),
                                               output=str(tmp / f"out-{engine}-{actors}"), actors=actors,
                                               cpus_per_actor=cpus, tile=0)
            t0 = time.perf_counter()
            s = batch.run_batch(spec, engine=engine, progress=False)
            assert s.done == n and s.failed == 0, s.text()
            rows.append(dict(mode=name, inference_threads=threads, images=s.done, seconds=round(s.seconds, 2),
                             images_per_s=round(s.images_per_s, 3), megapixels_per_s=round(s.megapixels_per_s, 3),
                             steady_images_per_s=round(s.steady_images_per_s, 3),
                             wall_with_startup=round(time.perf_counter() - t0, 2)))

        torch.set_num_threads(1)
        run("plain loop (1 process, 1 thread)", "local", 1, 1.0, 1)
        with ray_session(num_cpus=os.cpu_count()):
            run("Ray Data, 1 actor (1 CPU)", "ray", 1, 1.0, 1)
            run("Ray Data, 2 actors (0.75 CPU each)", "ray", 2, 0.75, 2)
    base, base_steady = rows[0]["images_per_s"], rows[0]["steady_images_per_s"]
    print(f"\n{'mode':<38}{'threads':>8}{'img/s':>7}{'MP/s':>7}{'per core':>9}{'steady img/s':>13}"
          f"{'per core':>9}{'seconds':>9}")
    for r in rows:
        r["per_core_vs_plain"] = round(r["images_per_s"] / r["inference_threads"] / base, 3)
        r["steady_per_core_vs_plain"] = round(r["steady_images_per_s"] / r["inference_threads"] / base_steady, 3)
        print(f"{r['mode']:<38}{r['inference_threads']:>8}{r['images_per_s']:>7.2f}{r['megapixels_per_s']:>7.2f}"
              f"{r['per_core_vs_plain']:>9.3f}{r['steady_images_per_s']:>13.2f}{r['steady_per_core_vs_plain']:>9.3f}"
              f"{r['seconds']:>9.1f}")
    print("img/s: the whole job (incl. start-up); steady: first image out of the model to the last; "
          "per core: vs the plain loop")
    meta = dict(images=n, megapixels=round(mp, 2), max_side=a.max_side, model=str(a.model), cpus=os.cpu_count(),
                machine=platform.machine(), torch=torch.__version__)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
