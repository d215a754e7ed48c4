"""What a benchmark stage writes. metrics/benchmark_*.json and one file per method or model under
metrics/benchmark_*/ (DVC metrics) hold a handful of headline figures, in columns every row shares, so
`dvc metrics show|diff` stay about a screen wide; plots/benchmark_*.csv (dvc plots)
every figure; `benchmark.out_dir`/sr_results.json and style_results.json the full results the report
renders (means, labels, judged versions, what was not measured and why) beside its image lists.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

from .. import config
from ..log import get
from ..settings import BenchmarkSettings

# The full results under benchmark.out_dir (what the report reads); the metrics files hold the headline.
SR_RESULTS, STYLE_RESULTS = "sr_results.json", "style_results.json"
HEADLINE_SET = "Set5"  # benchmark_sr's headline set (a column per scale), where measured


def log(msg: str) -> None:
    """A benchmark stage's progress line: the `perceptual.benchmark` logger, INFO."""
    get("benchmark").info(msg)


def progress(it, desc: str):
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)


def config_hash(obj) -> str:
    """Two results are comparable only when what was measured is the same: hash of the settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def out_dirs(b: BenchmarkSettings) -> tuple[Path, Path, Path]:
    out, met, plots = (config.resolve(d) for d in (b.out_dir, b.metrics_dir, b.plots_dir))
    for d in (out, met, plots):
        d.mkdir(parents=True, exist_ok=True)
    return out, met, plots


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def write_stage(dirs: tuple[Path, Path, Path], kind: str, doc: dict, headline: tuple[dict, dict],
                plots: dict[str, list], images: tuple[str, list]) -> None:
    """Stage benchmark_``kind``'s files: the full results; the DVC metrics, ``headline`` = (the stage's
    numbers -> metrics_dir/benchmark_KIND.json, {row: numbers} -> one file per row under
    metrics_dir/benchmark_KIND/, replaced whole so a method no longer judged leaves no stale row); the
    plots CSVs ({file name: rows}) and the report's image list (file name, records)."""
    out, met, plot_dir = dirs
    (out / (SR_RESULTS if kind == "sr" else STYLE_RESULTS)).write_text(json.dumps(doc, indent=1))
    stage, rows = headline
    (met / f"benchmark_{kind}.json").write_text(json.dumps(stage, indent=1) + "\n")
    row_dir = met / f"benchmark_{kind}"
    shutil.rmtree(row_dir, ignore_errors=True)
    row_dir.mkdir()
    for name, numbers in rows.items():
        (row_dir / f"{name}.json").write_text(json.dumps(numbers, indent=1) + "\n")
    for name, rows_ in plots.items():
        _write_csv(plot_dir / name, rows_)
    (out / images[0]).write_text(json.dumps(images[1], indent=1))


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def sr_headline(doc: dict, primary: str) -> tuple[dict, dict]:
    """benchmark_sr's DVC metrics: ({wall_seconds}, {method: {`<set>_x<scale>`: Y-PSNR dB}}), each method
    a row of `dvc metrics show` with one column per scale, on Set5 (where not measured: the first set
    that was) and the ``primary`` protocol. A row per method, not a key, keeps the table as narrow as the
    scales are many. Every other figure is in plots/benchmark_sr.csv and out_dir/sr_results.json."""
    rows: dict[str, dict] = {}
    for scale, sets in (doc.get("results") or {}).items():
        if not sets:
            continue
        name = HEADLINE_SET if HEADLINE_SET in sets else next(iter(sets))
        by = sets[name]
        proto = primary if primary in by else next(iter(by))
        for m, v in by[proto].items():
            rows.setdefault(m, {})[f"{name}_{scale}"] = _sig(v["psnr_y"])
    return {"wall_seconds": doc["seconds"]}, rows


def style_headline(doc: dict) -> tuple[dict, dict]:
    """benchmark_style's DVC metrics: the stage's ({speed_size, ours_s, speedup<N>}: the feed-forward
    seconds and the speedup over the longest Gatys run at the largest size; wall_seconds) and {model:
    {total_loss}}, the total loss (training weights) of each judged style model's outputs, a row each
    (`<style>@champion` for the champion judged beside it). Every other figure is in
    plots/benchmark_style_*.csv and out_dir/style_results.json."""
    stage: dict = {}
    if doc.get("speed"):
        size = max(doc["speed"], key=int)
        e = doc["speed"][size]
        n = max((int(k[7:]) for k in e if k.startswith("speedup") and k[7:].isdigit()), default=None)
        stage.update(speed_size=int(size), ours_s=_sig(e["ours_s"], 4),
                     **({f"speedup{n}": _sig(e[f"speedup{n}"], 4)} if n is not None else {}))
    stage["wall_seconds"] = doc["seconds"]
    rows = {label.removeprefix("style-"): {"total_loss": _sig(q["ours"]["total_loss"])}
            for label, q in (doc.get("quality") or {}).items()}
    return stage, rows
