"""Peak memory of `perceptual upscale` by input size and scale; prints a table, writes JSON.

    .venv/bin/python benchmarks/memory.py [--sizes 256,512,1024,2048,3000x2000] [--models sr-x4-pixel,sr-x8-pixel]
        [--untiled 256] [--json benchmarks/results/memory_cpu.json]

Each row is one `perceptual upscale PHOTO --model M -o out.png` in a fresh process (the CLI users run,
model loading and PNG writing included), on a real photo resized to size x size (or WxH); peak memory is that
process's maximum resident set size (os.wait4). Rows at the default --tile (params.yaml batch.tile,
the largest output block side, sr_blocks.py), plus --tile 0 (the whole image at once, as before
block-wise upscaling) at the --untiled sizes. The output image itself must fit in memory: 3 bytes
per output pixel (uint8 RGB), shown beside the peak.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _photo(size: str, folder: Path) -> tuple[Path, int, int]:
    """A real photo (the embedded china.jpg, 427x640) resized to size x size (or W x H), as PNG."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    w, h = (int(v) for v in size.split("x")) if "x" in size else (int(size),) * 2
    f = folder / f"photo_{w}x{h}.png"
    if not f.exists():
        Image.fromarray(load_sample_image("china.jpg")).resize((w, h), Image.LANCZOS).save(f)
    return f, w, h


def measure(model: str, src: Path, tile: int | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "pipelines.cli", "upscale", str(src), "--model", model, "-o", str(out)]
    if tile is not None:
        cmd += ["--tile", str(tile)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    out.unlink(missing_ok=True)
    return {"exit": p.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(secs, 1),
            "error": err.strip().splitlines()[-1] if p.returncode else ""}


def main() -> int:
    from pipelines import config
    from pipelines.modelref import scale_from_name
    from pipelines.settings import BatchSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,1024,2048,3000x2000")
    ap.add_argument("--models", default="sr-x4-pixel,sr-x8-pixel")
    ap.add_argument("--untiled", default="256", help="sizes also run with --tile 0 (whole image; x8 at 512² took 23 GB)")
    ap.add_argument("--json", default="benchmarks/results/memory_cpu.json")
    a = ap.parse_args()
    tile = config.load(BatchSettings).upscale_tile
    rows = []
    head = f"{'model':<14}{'input':>11}{'output':>13}{'tile':>6}{'peak RSS':>11}{'output image':>14}{'time':>9}"
    print(head + "\n" + "-" * len(head), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            scale = scale_from_name(model) or int(model.split("-x")[1][0])
            for size in a.sizes.split(","):
                src, w, h = _photo(size, Path(tmp))
                for t in [tile] + ([0] if size in a.untiled.split(",") else []):
                    r = measure(model, src, t, Path(tmp) / "out.png")
                    row = {"model": model, "scale": scale, "input": f"{w}x{h}", "output": f"{w * scale}x{h * scale}",
                           "tile": t, "output_image_mb": round(3 * w * h * scale**2 / 2**20, 1), **r}
                    rows.append(row)
                    peak = f"{r['peak_rss_mb']:,.0f} MB" if r["exit"] == 0 else f"exit {r['exit']}"
                    print(f"{model:<14}{row['input']:>11}{row['output']:>13}{t:>6}{peak:>11}"
                          f"{row['output_image_mb']:>11,.0f} MB{r['seconds']:>8.1f}s", flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                        "command": "perceptual upscale PHOTO --model M -o out.png [--tile T]",
                                        "rows": rows}, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
