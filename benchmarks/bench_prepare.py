"""Throughput of the prepare_sr stage (and prepare_style) for 1 and 2 Ray workers; prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_prepare.py [--input ../shared/data/coco128_train2017/images]
        [--workers 1 2] [--json benchmarks/results/prepare_cpu.json]

One local Ray instance is started first (its start-up is not counted); each row runs the whole
stage (decode, patches, blur + bicubic LR, PNG, Parquet shards, manifest) with the project's
params, into a temporary folder. Images/s counts source images.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import config, prepare  # noqa: E402
from pipelines.settings import DegradationSettings, PrepareSettings, replace  # noqa: E402
from pipelines.ray_env import ray_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(config.data_dir() / "coco128_train2017" / "images"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kinds", nargs="+", default=["sr", "style"])
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/prepare_cpu.json"))
    a = ap.parse_args()
    inp = Path(a.input)
    rows = []
    secs = {kind: config.load(PrepareSettings, f"prepare_{kind}") for kind in a.kinds}
    deg = config.load(DegradationSettings)
    with ray_session(num_cpus=max(a.workers)) as ray, tempfile.TemporaryDirectory() as tmp:
        for kind in a.kinds:
            for w in a.workers:
                sec = replace(secs[kind], f"prepare_{kind} (--workers)", workers=w)
                s = prepare.prepare(kind, sec, deg, input_dir=inp, out_dir=Path(tmp) / f"{kind}{w}")
                patches = s["patches"]["train"] + s["patches"]["val"]
                rows.append({"stage": f"prepare_{kind}", "workers": w, "images": s["files"],
                             "patches": patches, "seconds": round(s["seconds"], 2),
                             "images_per_s": round(s["files"] / s["seconds"], 2),
                             "patches_per_s": round(patches / s["seconds"], 2)})
        cpus = ray.cluster_resources().get("CPU")
    print(f"\n{'stage':<15}{'workers':>8}{'images':>8}{'patches':>9}{'seconds':>9}{'images/s':>10}{'patches/s':>11}")
    for r in rows:
        print(f"{r['stage']:<15}{r['workers']:>8}{r['images']:>8}{r['patches']:>9}{r['seconds']:>9}"
              f"{r['images_per_s']:>10}{r['patches_per_s']:>11}")
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "ray_cpus": cpus,
            "input": str(inp), "patches_per_image": {k: secs[k].patches_per_image for k in a.kinds}}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
