"""The prepare_style and prepare_sr stages: patch datasets from an image folder, on Ray Data.

    python -m pipelines.prepare style|sr [--no-ray]

Each source image is decoded, checked and cut into patches by one Ray Data task
(``map_batches``; the per-image work is pipelines/patches.py), so the stage is the same for 9
images here and 80k on a cluster. The driver (this module) streams the results in input order
and writes, under ``out_dir``:

- ``shards/{train,val}-NNNNN.parquet``: one row per patch, PNG bytes (style: ``image``;
  SR: ``hr`` and ``lr_x{scale}`` per scale), small row groups so readers stream them;
- ``manifest.csv``: key, source file, patch box in source pixels, split, content hashes;
- ``rejected.csv``: every file that gave no patch, with the reason.

Everything random is seeded per file (crop offsets, the train/val split), so identical params
and inputs give byte-identical outputs whatever the number of workers or their order.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import config, owned
from .log import get
from .settings import DegradationSettings, PrepareSettings, plain
from .patches import PatchSpec, _stable_int, image_patches, process_batch  # noqa: F401 - image_patches re-exported

ROW_GROUP = 32  # patches per Parquet row group: the unit a streaming reader loads
BATCH_IMAGES = 4  # source images per Ray Data task call
log = get(__name__)


def list_files(root: Path) -> list[str]:
    """Every regular, non-hidden file under root (posix relative paths, sorted)."""
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(rel.as_posix())
    return sorted(files)


def assign_splits(files: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Hold out round(n * val_fraction) source images (at least one when the fraction is > 0 and n > 1)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1)")
    n_val = round(len(files) * val_fraction)
    if val_fraction > 0 and len(files) > 1:
        n_val = max(1, n_val)
    order = sorted(files, key=lambda f: _stable_int("split", seed, f))
    val = set(order[:n_val])
    return {f: "val" if f in val else "train" for f in files}


class ShardWriter:
    """Parquet shards of at most ``shard_rows`` rows in fixed-size row groups (independent of
    how Ray batched the rows, so reruns are byte-identical)."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema, shard_rows: int):
        self.folder, self.split, self.schema, self.shard_rows = folder, split, schema, shard_rows
        self.pending: list[dict] = []
        self.shard, self.in_shard, self.writer = -1, 0, None
        self.files: list[str] = []

    def add(self, row: dict) -> tuple[str, int]:
        if self.writer is None or self.in_shard == self.shard_rows:
            self._flush()
            self._close()
            self.shard += 1
            self.in_shard = 0
            name = f"{self.split}-{self.shard:05d}.parquet"
            self.files.append(name)
            # PNG bytes are compressed already; zstd on them costs driver CPU for nothing.
            codecs = {f.name: "none" if f.type == pa.binary() else "zstd" for f in self.schema}
            self.writer = pq.ParquetWriter(self.folder / name, self.schema, compression=codecs)
        self.pending.append(row)
        self.in_shard += 1
        if len(self.pending) == ROW_GROUP:
            self._flush()
        return self.files[-1], self.in_shard - 1

    def _flush(self):
        if self.pending and self.writer is not None:
            cols = {f.name: [r[f.name] for r in self.pending] for f in self.schema}
            self.writer.write_table(pa.table(cols, schema=self.schema), row_group_size=ROW_GROUP)
            self.pending = []

    def _close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def close(self):
        self._flush()
        self._close()


MANIFEST_COLUMNS = ["key", "file", "patch", "split", "shard", "row", "src_w", "src_h", "resized_w", "resized_h",
                    "upscaled", "source_mode", "box_x0", "box_y0", "box_x1", "box_y1", "sha256", "source_sha256"]
REJECTED_COLUMNS = ["file", "kind", "reason", "bytes"]


def _results(items: list[dict], spec: PatchSpec, workers: int, use_ray: bool):
    """`process_batch` over the items, BATCH_IMAGES at a time, in input order: Ray Data tasks, or
    this process (`--no-ray`: a GPU box with only torch, pyarrow and PIL; same bytes out)."""
    if not use_ray:
        cols = ("file", "path", "split")
        for i in range(0, len(items), BATCH_IMAGES):
            chunk = items[i:i + BATCH_IMAGES]
            yield process_batch(pa.table({c: [it[c] for it in chunk] for c in cols}), spec)
        return
    import ray

    from .ray_env import ray_session

    with ray_session(num_cpus=workers):
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / BATCH_IMAGES)))
        ds = ds.map_batches(process_batch, fn_kwargs={"spec": spec}, batch_size=BATCH_IMAGES,
                            batch_format="pyarrow", num_cpus=1,
                            compute=ray.data.TaskPoolStrategy(size=workers))
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


def prepare(kind: str, sec: PrepareSettings, degradation: DegradationSettings, *, input_dir: Path, out_dir: Path,
            metrics_path: Path | None = None, use_ray: bool = True) -> dict:
    """Run one prepare stage (``sec``: its settings, prepare_style or prepare_sr); returns its summary (the
    counts, the rejections by kind, the scales and the seconds); ``metrics_path`` gets the DVC metrics: images
    used, rejected and patches (train + val)."""
    spec = PatchSpec.from_params(kind, plain(sec), plain(degradation))
    workers, shard_rows = int(sec.workers), int(sec.shard_rows)
    if workers < 1:
        raise ValueError(f"params prepare_{kind}.workers={workers}: must be >= 1")
    if shard_rows < 1:
        raise ValueError(f"params prepare_{kind}.shard_rows={shard_rows}: must be >= 1")
    files = list_files(input_dir)
    if not files:
        raise ValueError(f"{input_dir}: no files to prepare (run the acquire stage, or check prepare_{kind}.input)")
    splits = assign_splits(files, float(sec.val_fraction), spec.seed)
    stage = f"prepare_{kind}"
    owned.check_deletable(out_dir, stage, f"{stage}.out_dir", signature="manifest.csv")  # before any work

    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    owned.claim(tmp, stage)
    t0 = time.perf_counter()
    try:
        writers = {s: ShardWriter(tmp / "shards", s, spec.shard_schema(), shard_rows) for s in ("train", "val")}
        manifest, rejected, used = [], [], set()
        items = [{"file": f, "path": str(input_dir / f), "split": splits[f]} for f in files]
        for table in _results(items, spec, workers, use_ray):
            for row in table.to_pylist():
                if row["reject_kind"] is not None:
                    rejected.append({"file": row["file"], "kind": row["reject_kind"],
                                     "reason": row["reason"], "bytes": row["bytes"]})
                    continue
                used.add(row["file"])
                shard, idx = writers[row["split"]].add(row)
                manifest.append({**{c: row.get(c) for c in MANIFEST_COLUMNS}, "shard": f"shards/{shard}", "row": idx})
        for w in writers.values():
            w.close()
        elapsed = time.perf_counter() - t0
        if not manifest:
            reasons = "; ".join(f"{r['file']}: {r['reason']}" for r in rejected[:5])
            raise ValueError(f"{input_dir}: no usable images among {len(files)} files ({reasons}"
                             f"{' ...' if len(rejected) > 5 else ''})")
        _write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, manifest)
        _write_csv(tmp / "rejected.csv", REJECTED_COLUMNS, rejected)
        owned.remove(out_dir, stage, f"{stage}.out_dir", signature="manifest.csv")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kinds: dict[str, int] = {}
    for r in rejected:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    summary = {  # the counts (each file, patch and rejection: manifest.csv, rejected.csv)
        "files": len(files), "images_used": len(used), "rejected": len(rejected),
        "patches": {s: sum(1 for m in manifest if m["split"] == s) for s in ("train", "val")},
        "upscaled_images": len({m["file"] for m in manifest if m["upscaled"]}),
        "patch_size": spec.size,
    }
    if metrics_path is not None:
        from perceptual_core.io import atomic_write

        # the DVC metrics: three numbers, in the columns both prepare stages share in `dvc metrics show`
        headline = {"images": len(used), "rejected": len(rejected), "patches": len(manifest)}
        atomic_write(metrics_path, lambda f: f.write((json.dumps(headline, indent=2) + "\n").encode()))
    log.info(f"prepare_{kind}: {len(used)}/{len(files)} images -> {summary['patches']['train']} train + "
             f"{summary['patches']['val']} val patches, {len(rejected)} rejected; {elapsed:.1f} s "
             f"({len(files) / elapsed:.2f} images/s, {f'{workers} workers' if use_ray else 'no Ray'}) -> {out_dir}")
    for r in rejected:
        log.info(f"  rejected {r['file']}: {r['reason']}")
    return {**summary, "rejected_by_kind": kinds, "scales": list(spec.scales), "seconds": elapsed}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def run_stage(kind: str, use_ray: bool = True) -> dict:
    """The stage's entry point: its settings from params.yaml (prepare_KIND, degradation), read once."""
    sec = config.load(PrepareSettings, f"prepare_{kind}")
    metrics = config.resolve(sec.metrics) if sec.metrics else None
    return prepare(kind, sec, config.load(DegradationSettings), input_dir=config.resolve(sec.input),
                   out_dir=config.resolve(sec.out_dir), metrics_path=metrics, use_ray=use_ray)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["style", "sr"])
    ap.add_argument("--no-ray", action="store_true", help="in this process, without Ray (same output bytes)")
    a = ap.parse_args(argv)
    from . import run_stage as run_cli

    return run_cli(run_stage, a.kind, use_ray=not a.no_ray)


if __name__ == "__main__":
    sys.exit(main())
