"""Batch-job throughput on the same 200 real photos: a plain single-process loop (one torch thread)
vs the Ray Data job with 1 and 2 inference actors (one torch thread each), fused and staged pipelines
(pipelines/batch/); prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_batch.py [--model outputs/train/style-la_muse/model.pt]
        [--max-side 0] [--auto-only] [--repeat 1] [--json benchmarks/results/batch_cpu.json]
    # one round: about 15 min on 2 cores (--auto-only: about 9)

Images: the 128 COCO photos and the first 72 BSD100 HR images from PERCEPTUAL_DATA_DIR, resized so
the longer side is --max-side (default 0: their native size, 47 MP in all; 256: about 4x faster, where
Ray's fixed start-up weighs more), written as PNG into a temp folder.
The model is the paper's style network (the trained checkpoint when given/present; else random
weights of the same architecture: speed does not depend on the weights). Throughput counts the
whole job (listing, model load, actor start-up, decode, inference, encode, write) from the job's
own summary, and "steady" from the first image out of the model to the last (start-up excluded, which is
what a large archive sees). "Per core" divides by the inference threads (1 for the loop, 1 per actor); the fused
rows use exactly those cores, while the staged rows' read and write tasks also run on what is left of the
machine's CPUs (so staged with 1 actor uses part of the second core too). --repeat N runs every row N times,
round by round, and compares each Ray row with the plain loop of its own round (this VM's speed drifts by
about 10% over minutes); the table gives medians and the range. The plain loops run with no Ray instance
up. "2 plain loops" runs the same job as two no-Ray processes, one per core, each on half the files: what
this machine gives when both its cores work (0.96-1.03 per core on this 2-vCPU VM), the ceiling for 2
actors; "vs 2 loops" compares the 2-actor rows with it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def _local_half(model: str, src: str, out: str, files: list[str]) -> dict:
    """One of the two no-Ray loops: its share of the files, one torch thread (a spawned process)."""
    torch.set_num_threads(1)
    part = Path(out + "-in")
    part.mkdir(parents=True)
    for f in files:
        shutil.copy(Path(src) / f, part / f)
    spec = batch.BatchSpec.from_params(kind="stylize", model=model, input=str(part), output=out, tile=0)
    s = batch.run_batch(spec, engine="local", progress=False)
    return dict(done=s.done, failed=s.failed, start=time.time() - s.seconds, end=time.time(),
                first=s.first_done, last=s.last_done)


def two_loops(model: Path, src: Path, out: Path) -> dict:
    """The same job as two plain loops in two processes, one per core, no Ray: what this machine gives
    when both cores work (shared caches and memory bandwidth; on a VM possibly SMT siblings)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    files = sorted(p.name for p in src.iterdir())
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        res = list(ex.map(_local_half, [str(model)] * 2, [str(src)] * 2, [str(out / "a"), str(out / "b")],
                          [files[0::2], files[1::2]]))
    done = sum(r["done"] for r in res)
    assert done == len(files) and not any(r["failed"] for r in res), res
    span = max(r["end"] for r in res) - min(r["start"] for r in res)
    steady = (done - 2) / max(r["last"] - r["first"] for r in res)  # both loops' images, over the longer span
    return dict(done=done, seconds=span, steady=steady)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "outputs/train/style-la_muse/model.pt"))
    ap.add_argument("--max-side", type=int, default=0)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/batch_cpu.json"))
    ap.add_argument("--auto-only", action="store_true", help="only the pipeline each pool size gets by default")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every row, interleaved: this VM's speed drifts by about 10%% from minute to "
                         "minute, so each Ray row is compared with the plain loop of its own round; medians reported")
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
        print(f"{n} images, {mp:.1f} MP in all, model {model}, {a.repeat} round(s)")
        runs = []

        def run(rnd, name, engine, actors, cpus, threads, pipeline="auto"):
            out = tmp / f"out-{engine}-{actors}-{pipeline}"
            spec = batch.BatchSpec.from_params(kind="stylize", model=str(model), input=str(src), output=str(out),
                                               actors=actors, cpus_per_actor=cpus, tile=0, pipeline=pipeline)
            if engine == "ray":  # the pipeline run_batch picks (auto) must be the one the row names
                import ray

                picked = "fused" if batch.fused(spec, [dict(kind="file")], ray.cluster_resources().get("CPU")) else "staged"
                assert picked in name, (name, picked)
            s = batch.run_batch(spec, engine=engine, progress=False)
            assert s.done == n and s.failed == 0, s.text()
            shutil.rmtree(out)
            runs.append(dict(round=rnd, mode=name, inference_threads=threads, images=s.done, seconds=round(s.seconds, 2),
                             images_per_s=round(s.images_per_s, 3), megapixels_per_s=round(s.megapixels_per_s, 3),
                             steady_images_per_s=round(s.steady_images_per_s, 3),
                             startup_seconds=round(s.startup_seconds, 2)))
            print(f"  round {rnd}: {name}: {s.text()}", flush=True)

        torch.set_num_threads(1)
        for rnd in range(a.repeat):
            # the plain loops run with no Ray instance up, whose background processes would slow them
            run(rnd, "plain loop (1 process, 1 thread)", "local", 1, 1.0, 1)
            t = two_loops(model, src, tmp / f"out-two-loops-{rnd}")
            runs.append(dict(round=rnd, mode="2 plain loops (2 processes, no Ray)", inference_threads=2, images=t["done"],
                             seconds=round(t["seconds"], 2), images_per_s=round(t["done"] / t["seconds"], 3),
                             megapixels_per_s=round(mp / t["seconds"], 3), steady_images_per_s=round(t["steady"], 3),
                             startup_seconds=None))
            with ray_session(num_cpus=os.cpu_count()):
                # the default (pipeline auto) first: staged for 1 actor (a CPU is left), fused for 2
                run(rnd, "Ray Data staged (auto), 1 actor (1 CPU)", "ray", 1, 1.0, 1)
                run(rnd, "Ray Data fused (auto), 2 actors (1 CPU each)", "ray", 2, 1.0, 2)
                if not a.auto_only:
                    run(rnd, "Ray Data fused, 1 actor (1 CPU)", "ray", 1, 1.0, 1, "fused")
                    run(rnd, "Ray Data staged, 2 actors (0.75 CPU each)", "ray", 2, 0.75, 2, "staged")
    for r in runs:  # each run against the plain loop (and the two loops) of its own round
        plain = next(p for p in runs if p["round"] == r["round"] and p["mode"].startswith("plain loop"))
        two = next(p for p in runs if p["round"] == r["round"] and p["mode"].startswith("2 plain loops"))
        r["per_core_vs_plain"] = round(r["images_per_s"] / r["inference_threads"] / plain["images_per_s"], 3)
        r["steady_per_core_vs_plain"] = round(r["steady_images_per_s"] / r["inference_threads"]
                                              / plain["steady_images_per_s"], 3)
        if r["inference_threads"] == 2:
            r["vs_two_loops"] = round(r["images_per_s"] / two["images_per_s"], 3)
            r["steady_vs_two_loops"] = round(r["steady_images_per_s"] / two["steady_images_per_s"], 3)
    rows = []
    for mode in dict.fromkeys(r["mode"] for r in runs):  # medians over the rounds, in run order
        rs = [r for r in runs if r["mode"] == mode]
        row = dict(mode=mode, inference_threads=rs[0]["inference_threads"], rounds=len(rs))
        for k in ("images_per_s", "megapixels_per_s", "steady_images_per_s", "startup_seconds", "per_core_vs_plain",
                  "steady_per_core_vs_plain", "vs_two_loops", "steady_vs_two_loops"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                row[k] = round(_median(vals), 3)
                row[k + "_range"] = [min(vals), max(vals)]
        rows.append(row)
    print(f"\n{'mode':<46}{'img/s':>7}{'MP/s':>7}{'per core':>9}{'range':>13}{'steady':>8}{'per core':>9}"
          f"{'first (s)':>10}{'vs 2 loops':>11}{'steady':>7}")
    for r in rows:
        lo, hi = r["per_core_vs_plain_range"]
        first = f"{r['startup_seconds']:>10.1f}" if "startup_seconds" in r else f"{'':>10}"
        vs2 = f"{r['vs_two_loops']:>11.3f}{r['steady_vs_two_loops']:>7.3f}" if "vs_two_loops" in r else ""
        print(f"{r['mode']:<46}{r['images_per_s']:>7.2f}{r['megapixels_per_s']:>7.2f}{r['per_core_vs_plain']:>9.3f}"
              f"{f'{lo:.3f}-{hi:.3f}':>13}{r['steady_images_per_s']:>8.2f}{r['steady_per_core_vs_plain']:>9.3f}"
              f"{first}{vs2}")
    print("medians over the rounds; img/s: the whole job (incl. start-up); steady: first image out of the model to "
          "the last; per core: vs the plain loop of the same round (range: min-max over rounds); first (s): start "
          "to the first image out; vs 2 loops: vs two no-Ray loops, one per core")
    meta = dict(images=n, megapixels=round(mp, 2), max_side=a.max_side, model=str(a.model), cpus=os.cpu_count(),
                machine=platform.machine(), torch=torch.__version__, rounds=a.repeat)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
