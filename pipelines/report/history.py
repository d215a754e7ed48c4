"""`perceptual report --schedule-run` (infra/ schedules it: cron, systemd timer, CronJob): benchmark the
`champion` models into their own folder (the DVC outputs stay untouched), append one dated row per
metric to a Parquet history and render the report there with trend plots over that history.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .. import config
from ..log import get
from ..settings import ReportSettings
from .render import render
from .sources import judged_versions


def history_rows(sr: dict | None, st: dict | None, run: str, when: str) -> list[dict]:
    """One row per metric: time, run, metric key, value, and the model version it judges."""
    rows = []
    if sr:
        for sk, sets in sr["results"].items():
            for set_name, by in sets.items():
                for proto, by_m in by.items():
                    for m, vals in by_m.items():
                        for k, v in vals.items():
                            rows.append({"metric": f"sr.{sk}.{set_name}.{proto}.{m}.{k}", "value": float(v)})
    if st:
        for model, by in st.get("quality", {}).items():
            for v, q in by.items():
                for k, x in q.items():
                    rows.append({"metric": f"style.{model}.{v}.{k}", "value": float(x)})
        for size, e in st.get("speed", {}).items():
            for k, x in e.items():
                if isinstance(x, float):
                    rows.append({"metric": f"speed.{size}.{k}", "value": x})
    tag = ",".join(f"{n}:v{v['version']}" for n, v in sorted(judged_versions(sr, st).items()))
    from .. import tracking

    commit = tracking.provenance()["git_commit"]
    return [{"time": when, "run": run, **r, "models": tag, "git_commit": commit} for r in rows]


def append_history(path: Path, rows: list[dict]):
    import pandas as pd

    new = pd.DataFrame(rows)
    new["time"] = pd.to_datetime(new["time"], utc=True)
    if path.is_file():
        try:
            old = pd.read_parquet(path)
        except Exception as e:
            raise ValueError(f"{path}: the report history is not readable Parquet ({e}); move it aside to start "
                             f"a new one") from e
        new = pd.concat([old, new], ignore_index=True)
    from perceptual_core.io import atomic_write

    atomic_write(path, lambda f: new.to_parquet(f, index=False))  # a killed run never leaves a half-written history
    return new


def trend_keys(sr: dict | None, st: dict | None, primary: str) -> list[str]:
    keys = []
    if sr:
        for sk, sets in sr["results"].items():
            for set_name, by in sets.items():
                for m in by.get(primary, {}):
                    keys.append(f"sr.{sk}.{set_name}.{primary}.{m}.psnr_y")
    if st:
        keys += [f"style.{model}.ours.total_loss" for model in st.get("quality", {})]
        keys += [f"speed.{size}.ours_s" for size in st.get("speed", {})]
    return keys


def schedule_run(alias: str | None = None) -> Path:
    """Benchmark the `champion` models into the schedule folder, append the history, render."""
    from .. import benchmark

    r = config.load(ReportSettings)
    alias = alias or r.schedule_alias
    root = config.resolve(r.schedule_dir)
    when = datetime.now(timezone.utc)
    run = when.strftime("%Y%m%dT%H%M%SZ")
    dirs = {"out_dir": str(root / "runs" / run), "metrics_dir": str(root / "runs" / run),
            "plots_dir": str(root / "runs" / run / "plots")}
    get(__name__).info(f"scheduled benchmark {run}: models @{alias} -> {dirs['out_dir']}")
    b = benchmark.settings(alias, dirs)
    sr = benchmark.run_sr(b)
    st = benchmark.run_style(b)
    hist = append_history(config.resolve(r.history), history_rows(sr, st, run, when.isoformat()))
    keys = trend_keys(sr, st, b.sr.primary)
    return render(b, root, title=f"perceptual: scheduled benchmark ({alias} models)", history=hist,
                  trend_keys=keys)
