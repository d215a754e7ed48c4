"""DVC stage `report` and `perceptual report [--schedule-run]`: the benchmark report.

`report` renders reports/benchmark.html (self-contained: images inlined) and benchmark.md (images
under reports/assets/) from the benchmark stages' outputs: the SR table and the speed table laid
out like the paper's, crops side by side, style outputs beside the style image, training loss
curves from MLflow, promotion decisions and the environment.

`--schedule-run` benchmarks the current `champion` models into their own folder (the DVC outputs
stay untouched), appends one dated row per metric to a Parquet history and renders the report
there with trend plots over that history. infra/ schedules it (cron, systemd timer, CronJob).
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import config, owned

# The paper's column order (bicubic, ours l_pixel, SRCNN, ours l_feat), plus the SRCNN retrained here.
METHOD_NAMES = {"bicubic": "bicubic", "pixel": "ours l_pixel", "srcnn-official": "SRCNN (official)",
                "srcnn": "SRCNN (retrained)", "feat": "ours l_feat", "srcnn@champion": "SRCNN (retrained, champion)",
                "pixel@champion": "ours l_pixel (champion)", "feat@champion": "ours l_feat (champion)"}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def environment() -> dict:
    import torch

    from . import tracking

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "torchvision", "ray", "mlflow", "dvc", "numpy"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # not installed where the report is rendered
            versions[mod] = "n/a"
    prov = tracking.provenance()
    return {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpu": f"{cpu} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version(), **versions,
            "git_commit": prov["git_commit"] + (" (dirty)" if prov["git_dirty"] == "true" else ""),
            "dvc_lock_sha256": prov["dvc_lock_sha256"][:16]}


# ------------------------------------------------------------------------------- figures

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def loss_curves(versions: dict) -> bytes | None:
    """Training loss_total (log scale) of each judged model version, read back from MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    from . import tracking

    client = MlflowClient(tracking.tracking_uri())
    curves = {}
    for name, v in sorted(versions.items()):
        if not v.get("run_id"):
            continue
        try:
            hist = client.get_metric_history(v["run_id"], "loss_total")
        except Exception as e:  # a run deleted since: the report says so instead of failing
            print(f"report: no loss curve for {name} v{v['version']}: {e}", file=sys.stderr)
            continue
        if hist:
            pts = sorted((m.step, m.value) for m in hist)
            curves[f"{name} v{v['version']}"] = pts
    if not curves:
        return None
    n = len(curves)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3 * rows), squeeze=False)
    for ax, (label, pts) in zip(axes.flat, curves.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("training loss_total (MLflow)")
    return _png(fig)


def trend_plot(history, keys: list[str]) -> bytes | None:
    """One line per metric key over the scheduled runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if history is None or history.empty:
        return None
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.8 * len(groups)), squeeze=False)
    for ax, (metric, ks) in zip(axes[:, 0], groups.items()):
        for k in ks:
            h = history[history["metric"] == k].sort_values("time")
            ax.plot(h["time"], h["value"], marker="o", label=k.rsplit(".", 1)[0])
        ax.set_title(metric, fontsize=9)
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.suptitle(f"scheduled runs: {history['run'].nunique()} in the history")
    return _png(fig)


# ------------------------------------------------------------------------------- tables

def _fmt(x, nd=2, kind="f"):
    return "—" if x is None else f"{x:.{nd}{kind}}"


def sr_tables(sr: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows): per protocol, the paper's layout (rows scale x set, PSNR / SSIM per method),
    and the VGG distance."""
    res = sr["results"]
    protos = list(dict.fromkeys(p for s in res.values() for by in s.values() for p in by))
    methods = [m for m in METHOD_NAMES if any(m in by_m for s in res.values() for by in s.values()
                                              for by_m in by.values())]
    out = []
    for proto in protos:
        head = ["scale", "set"] + [METHOD_NAMES[m] for m in methods]
        rows, vrows = [], []
        for sk, sets in res.items():
            for set_name, by in sets.items():
                ms = by.get(proto, {})
                rows.append([sk, set_name] + [f"{_fmt(ms[m]['psnr_y'])} / {_fmt(ms[m]['ssim_y'], 4)}" if m in ms
                                              else "—" for m in methods])
                vrows.append([sk, set_name] + [" / ".join(_fmt(v, 1) for k, v in ms[m].items() if k.startswith("vgg_"))
                                               if m in ms else "—" for m in methods])
        lr = "standard MATLAB-bicubic LR" if proto == "standard" else "the paper's LR (Gaussian blur σ, then bicubic)"
        out.append((f"SR: Y-PSNR (dB) / Y-SSIM, {lr}, shave = scale", head, rows))
        vkeys = [k for s in res.values() for by in s.values() for ms in by.values() for m in ms.values()
                 for k in m if k.startswith("vgg_")]
        out.append((f"SR: VGG feature distance to HR ({' / '.join(dict.fromkeys(vkeys))}, lower is better), {lr}",
                    head, vrows))
    return out


def anchor_line(sr: dict) -> str | None:
    """The published anchors (benchmark.PUBLISHED) beside what this run measured on the same rows
    (x4, standard MATLAB-bicubic LR); None when the run measured none of them."""
    from .benchmark import PUBLISHED

    parts = []
    for (method, set_name, scale), (psnr, _) in PUBLISHED.items():
        got = sr["results"].get(f"x{scale}", {}).get(set_name, {}).get("standard", {}).get(method, {}).get("psnr_y")
        if got is not None:
            parts.append(f"{METHOD_NAMES.get(method, method)} x{scale} {set_name} {got:.2f} dB (published {psnr:.2f})")
    return ("Anchors, measured by this run on the standard LR files: " + "; ".join(parts) + ".") if parts else None


def data_line(sr: dict | None, st: dict | None) -> str | None:
    """One line: the data the benchmarks read (a data folder, or the embedded default) and what they
    could not measure without it, with the one `perceptual data fetch` command that brings all of it."""
    from .data_fetch import GROUPS

    data = (sr or {}).get("data") or (st or {}).get("data")
    if not data:
        return None  # results written before the benchmarks recorded it
    gone = [m for m in (sr or {}).get("not_measured") or []]
    gone += [{"set": "the official SRCNN", **m} for m in (sr or {}).get("missing") or [] if m.get("fetch")]
    gone += [{"set": f"the content photo {m['photo']}", **m} for m in (st or {}).get("not_measured") or []]
    names = list(dict.fromkeys(m["set"] for m in gone))
    words = {w for m in gone for w in m["fetch"].split()}
    groups = [g for g in GROUPS if g in words]
    if not names:
        return f"Data: {data}."
    return f"Data: {data}. Not measured: {', '.join(names)}: run `perceptual data fetch {' '.join(groups)}`."


def speed_table(st: dict) -> tuple[str, list[str], list[list[str]]]:
    iters = sorted({int(k[5:-2]) for e in st["speed"].values() for k in e if k.startswith("gatys") and k.endswith("_s")
                    and k[5:-2].isdigit()})
    head = (["size"] + [f"Gatys {n} it (s)" for n in iters] + ["ours (s)", "plain eager (s)"] +
            [f"speedup {n}" for n in iters])
    rows = []
    for size, e in st["speed"].items():
        mark = {n: "" if e.get(f"gatys{n}_measured") else "*" for n in iters}
        rows.append([f"{size}²"] + [f"{e[f'gatys{n}_s']:.1f}{mark[n]}" for n in iters] + [f"{e['ours_s']:.3f}", _fmt(e.get("plain_eager_s"), 3)] +
                    [f"{e[f'speedup{n}']:.0f}x{mark[n]}" for n in iters])
    t = e.get("gatys_timed_iters")
    return (f"Style transfer speed, seconds per image ({st.get('device', 'cpu')}, ours: engine "
            f"{st.get('engine', 'plain eager')}; * extrapolated from {t} timed "
            f"L-BFGS iterations after the first; feed-forward: median after warm-up)", head, rows)


def style_quality_table(st: dict) -> tuple[str, list[str], list[list[str]]]:
    head = ["model", "method", "content loss", "style loss", "TV loss", "total (training weights)", "style vs photo"]
    rows = []
    for model, by in st["quality"].items():
        base = (by.get("photo") or {}).get("style_loss")
        for v, q in by.items():
            label = {"ours": "ours (feed-forward)", "photo": "the photo itself (baseline)"}.get(
                v, f"Gatys {v[5:]} iterations")
            rows.append([model, label, f"{q['content_loss']:.4g}", f"{q['style_loss']:.4g}",
                         _fmt(q.get("tv_loss"), 4, "g"), f"{q['total_loss']:.4g}",
                         f"{q['style_loss'] / base:.3f}" if base else "-"])
    size = st.get("size")
    return ("Style: losses of the outputs on held-out photos" + (f" at {size} px (longer side)" if size else "") +
            ", lower is better. Gatys optimises this same total from the photo with L-BFGS; one iteration is one "
            "L-BFGS step (its strong-Wolfe line search evaluates the loss about twice on average; measured "
            "evaluations per iteration are in the JSON)", head, rows)


# ------------------------------------------------------------------------------- render

class Doc:
    """Builds the HTML (images inlined) and the Markdown (images as files) side by side."""

    def __init__(self, assets: Path):
        self.html: list[str] = []
        self.md: list[str] = []
        self.assets = assets
        self.assets_rel = assets.name
        self.n_images = 0

    def h(self, level: int, text: str):
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += ["", "#" * level + " " + text, ""]

    def p(self, text: str):
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, title: str, head: list[str], rows: list[list[str]]):
        self.html.append(f"<table><caption>{html.escape(title)}</caption><tr>" +
                         "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" +
                         "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                                 for r in rows) + "</table>")
        self.md += [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]

    def images(self, items: list[tuple[str, bytes]], pixelated: bool = False):
        """A row of (caption, png bytes)."""
        cells, md = [], []
        for cap, data in items:
            name = f"img{self.n_images:03d}.png"
            self.n_images += 1
            (self.assets / name).write_bytes(data)
            style = ' style="image-rendering: pixelated"' if pixelated else ""
            cells.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode()}"{style} '
                         f'alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption></figure>')
            md.append(f"![{cap}]({self.assets_rel}/{name})")
        self.html.append('<div class="row">' + "".join(cells) + "</div>")
        self.md += [" ".join(md), ""]

    def write(self, out: Path, title: str):
        css = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
               "text-align:right}caption{font-weight:bold;text-align:left;padding:4px 0}"
               ".row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figure img{width:192px}"
               "figcaption{font-size:12px;max-width:192px}")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>" + "\n".join(self.html) +
                "</body></html>\n")
        from perceptual_core.io import atomic_write

        atomic_write(out / "benchmark.html", lambda f: f.write(page.encode()))
        atomic_write(out / "benchmark.md", lambda f: f.write(("# " + title + "\n" + "\n".join(self.md) + "\n").encode()))


def render(bench_dirs: dict, out: Path, *, title: str = "perceptual: benchmark report", history=None,
           trend_keys: list[str] | None = None, promotion: Path | None = None) -> Path:
    """Write benchmark.html/.md under ``out`` from the benchmark outputs in ``bench_dirs`` (out_dir: as
    params' benchmark section; the full results, not the headline DVC metrics) and the promotion
    decisions in ``promotion`` (params promote.decisions), when given."""
    from .benchmark import SR_RESULTS, STYLE_RESULTS

    bout = config.resolve(bench_dirs["out_dir"])
    sr, st = _load(bout / SR_RESULTS), _load(bout / STYLE_RESULTS)
    if sr is None and st is None:
        raise FileNotFoundError(f"no benchmark results in {bout} (run `dvc repro benchmark_sr benchmark_style`)")
    promo = _load(promotion) if promotion is not None else None
    out.mkdir(parents=True, exist_ok=True)
    assets = out / "assets"
    # signature for assets made before markers existed: the report page beside them
    owned.remove(assets, "report", "report out_dir/assets", signature="../benchmark.html")
    owned.claim(assets, "report")
    d = Doc(assets)
    env = environment()
    d.p(f"Generated {env['when']} on {env['cpu']}, GPU: {env['gpu']}; registry alias judged: "
        f"{(sr or st)['alias']}.")
    line = data_line(sr, st)
    if line:
        d.p(line)

    if sr:
        d.h(2, "Super-resolution (the paper's Table 2 layout)")
        for t in sr_tables(sr):
            d.table(*t)
        d.p("Methods: " + "; ".join(f"x{k.split('/')[0][1:]} {k.split('/')[1]} = {v}"
                                    for k, v in sr.get("labels", {}).items() if k.split("/")[1] != "bicubic") + ".")
        if sr.get("missing"):
            d.p("Not measured: " + "; ".join(f"x{m['scale']} {m['method']}: "
                                             f"{m['reason'].removeprefix('not measured: ')}" for m in sr["missing"]))
        line = anchor_line(sr)
        if line:
            d.p(line)
        crops = _load(bout / "sr_crops.json") or []
        for scale in sorted({c["scale"] for c in crops}):
            cs = [c for c in crops if c["scale"] == scale]
            order = {m: i for i, m in enumerate(METHOD_NAMES)}
            cs.sort(key=lambda c: order.get(c["method"], 9))
            items = [(f"HR ({cs[0]['image']})", (bout / cs[0]["hr"]).read_bytes())]
            items += [(f"{c['label']}: {c['psnr_y']:.2f} dB / {c['ssim_y']:.4f}", (bout / c["file"]).read_bytes())
                      for c in cs]
            d.h(3, f"x{scale} crops ({cs[0]['image']}, Y-PSNR / SSIM of the whole image)")
            d.images(items, pixelated=True)

    if st:
        d.h(2, "Style transfer (the paper's Table 1 layout)")
        d.table(*speed_table(st))
        from .benchmark import PAPER_SPEED

        d.table("The paper's figures (Titan X GPU, for reference)", ["size", "Gatys 100", "Gatys 300", "Gatys 500",
                                                                     "ours", "speedup 500"],
                [[f"{s}²", *(f"{v[n]:.2f}" for n in (100, 300, 500)), f"{v['ours']:.3f}",
                  f"{v[500] / v['ours']:.0f}x"] for s, v in PAPER_SPEED.items()])
        if st.get("quality"):
            d.table(*style_quality_table(st))
        imgs = _load(bout / "style_images.json") or []
        for (model, photo) in dict.fromkeys((i["model"], i["photo"]) for i in imgs):
            group = [i for i in imgs if i["model"] == model and i["photo"] == photo]
            items = [("style image", (bout / group[0]["style"]).read_bytes())]
            items += [(("ours" if i["method"] == "ours" else f"Gatys {i['method'][5:]} it") +
                       f": content {i['content_loss']:.3g}, style {i['style_loss']:.3g}", (bout / i["file"]).read_bytes())
                      for i in group]
            d.h(3, f"{model} on {photo}")
            d.images(items)
        if st.get("missing"):
            d.p("Not measured: " + "; ".join(f"{m['model']}: {m['reason']}" for m in st["missing"]))

    versions = {**((sr or {}).get("versions") or {}), **((st or {}).get("versions") or {})}
    curves = loss_curves(versions) if versions else None
    if curves:
        d.h(2, "Training loss curves (from MLflow)")
        d.images([("loss_total per training run", curves)])

    if promo:
        d.h(2, "Promotion decisions")
        rows = []
        for dec in promo.get("decisions", promo if isinstance(promo, list) else []):
            rows.append([str(dec.get(k, "")) for k in ("model", "decision", "metric", "challenger_value",
                                                        "champion_value", "delta", "reason")])
        if rows:
            d.table("challenger vs champion", ["model", "decision", "metric", "challenger", "champion", "delta",
                                               "reason"], rows)

    if history is not None and trend_keys:
        png = trend_plot(history, trend_keys)
        if png:
            d.h(2, "Trends over the scheduled runs")
            d.images([("trend", png)])

    d.h(2, "Environment")
    d.table("where and with what this ran", ["item", "value"], [[k, str(v)] for k, v in env.items()])
    d.write(out, title)
    print(f"report: {out / 'benchmark.html'} and {out / 'benchmark.md'}", file=sys.stderr)
    return out / "benchmark.html"


# ------------------------------------------------------------------------------- history

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
    versions = {**((sr or {}).get("versions") or {}), **((st or {}).get("versions") or {})}
    tag = ",".join(f"{n}:v{v['version']}" for n, v in sorted(versions.items()))
    from . import tracking

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
    from . import benchmark

    r = config.section("report")
    alias = alias or r["schedule_alias"]
    root = config.resolve(r["schedule_dir"])
    when = datetime.now(timezone.utc)
    run = when.strftime("%Y%m%dT%H%M%SZ")
    dirs = {"out_dir": str(root / "runs" / run), "metrics_dir": str(root / "runs" / run),
            "plots_dir": str(root / "runs" / run / "plots")}
    print(f"scheduled benchmark {run}: models @{alias} -> {dirs['out_dir']}", file=sys.stderr)
    sr = benchmark.run_sr(alias, dirs)
    st = benchmark.run_style(alias, dirs)
    hist = append_history(config.resolve(r["history"]), history_rows(sr, st, run, when.isoformat()))
    keys = trend_keys(sr, st, config.section("benchmark")["sr"]["primary"])
    return render(dirs, root, title=f"perceptual: scheduled benchmark ({alias} models)", history=hist,
                  trend_keys=keys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="perceptual report", description="render the benchmark report")
    add_args(p)
    return run_cli(p.parse_args(argv))


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule-run", action="store_true",
                   help="benchmark the champion models, append the history, render with trends")
    p.add_argument("--alias", help="with --schedule-run: judge this alias instead (params: report.schedule_alias)")
    p.add_argument("-o", "--output", help="folder for benchmark.html/.md (params: report.out_dir)")


def run_cli(a) -> int:
    if a.schedule_run:
        schedule_run(a.alias)
        return 0
    from . import promote

    b = config.section("benchmark")
    render(b, config.resolve(a.output or config.section("report")["out_dir"]),
           promotion=config.resolve(promote.settings()["decisions"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
