"""Training iterations/s of one style job: plain single-process loop, Ray Train 1 worker, Ray Train 2
workers; prints a table, writes JSON.

    .venv/bin/python benchmarks/bench_train.py [--job style-la_muse] [--iterations 40]
        [--json benchmarks/results/train_cpu.json]

Needs the prepare stage's output (`dvc repro prepare_style`). Each row trains the same job with
the project's params for --iterations, reporting every --report-every iterations (each Ray report
blocks ~2 s, so it is counted: the throughput is iterations over the loop's wall time, from the
job's event log). The plain loop runs with one torch thread, as each Ray worker does
(OMP_NUM_THREADS=1), so "per worker" compares like with like. MLflow logs to a temporary store.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import train  # noqa: E402
from pipelines.ray_env import ray_session  # noqa: E402


def loop_rate(out_dir: Path) -> tuple[float, float]:
    ev = train.read_events(out_dir)
    start = max(e["time"] for e in ev if e["event"] == "start")
    reports = [e for e in ev if e["event"] == "report"]
    first = reports[0]
    # from the first report on: model build, VGG load and warm-up are excluded
    its = reports[-1]["iteration"] - first["iteration"]
    wall = reports[-1]["time"] - first["time"]
    return its / wall, reports[-1]["iteration"] / (reports[-1]["time"] - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", default="style-la_muse")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--report-every", type=int, default=10)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/train_cpu.json"))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        over = dict(iterations=a.iterations, report_every=a.report_every, checkpoint_every=a.iterations)
        torch.set_num_threads(1)
        s = train.run_job(a.job, use_ray=False, overrides={**over, "out_dir": f"{tmp}/plain"})
        rows.append(("plain loop (1 process, 1 thread)", 1, *loop_rate(Path(f"{tmp}/plain")), s["wall_seconds"]))
        with ray_session(num_cpus=2):
            for n in (1, 2):
                s = train.run_job(a.job, use_ray=True, overrides={**over, "out_dir": f"{tmp}/ray{n}"},
                                  ray_overrides={"num_workers": n})
                rows.append((f"Ray Train, {n} worker{'s' * (n > 1)}", n, *loop_rate(Path(f"{tmp}/ray{n}")),
                             s["wall_seconds"]))
    base = rows[0][2]
    print(f"\n{a.job}, {a.iterations} iterations, report every {a.report_every}")
    print(f"{'mode':<36}{'workers':>8}{'it/s':>8}{'it/s/worker vs plain':>22}{'img/s':>8}{'job wall s':>12}")
    table = []
    for name, n, rate, _, wall in rows:
        bs = train.job_spec(a.job)["batch_size"]
        table.append({"mode": name, "workers": n, "iterations_per_s": round(rate, 3),
                      "per_worker_vs_plain": round(rate / base, 3), "images_per_s": round(rate * bs * n, 2),
                      "job_wall_seconds": wall})
        print(f"{name:<36}{n:>8}{rate:>8.3f}{rate / base:>22.3f}{rate * bs * n:>8.2f}{wall:>12}")
    meta = {"job": a.job, "iterations": a.iterations, "report_every": a.report_every, "cpus": os.cpu_count(),
            "machine": platform.machine(), "torch": torch.__version__, "spec": train.job_spec(a.job)}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": table}, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
