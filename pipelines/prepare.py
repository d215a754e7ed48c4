"""The prepare_style and prepare_sr stages: patch datasets from an image folder, on Ray Data.

    python -m pipelines.prepare style|sr [--no-ray]

Each source image is decoded, checked and cut into patches by one Ray Data task
(``map_batches``), so the stage is the same for 9 images here and 80k on a cluster. The
driver streams the results in input order and writes, under ``out_dir``:

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
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import config, owned

ROW_GROUP = 32  # patches per Parquet row group: the unit a streaming reader loads
BATCH_IMAGES = 4  # source images per Ray Data task call


class Reject(Exception):
    """A source file that gives no patch; ``kind`` is a short category for the rejected table."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class PatchSpec:
    kind: str  # "style" | "sr"
    size: int
    resize_shorter: int | None
    crop: str
    patches_per_image: int
    small_images: str
    scales: tuple[int, ...]
    blur_sigma: float
    blur_truncate: float
    seed: int
    max_pixels: int

    @classmethod
    def from_params(cls, kind: str, sec: dict, degradation: dict) -> "PatchSpec":
        name = f"prepare_{kind}"

        def bad(key, why):
            return ValueError(f"params {name}.{key}={sec.get(key)!r}: {why}")

        size, rs = int(sec["size"]), sec.get("resize_shorter")
        if size < 8:
            raise bad("size", "must be at least 8")
        if rs is not None and int(rs) < size:
            raise bad("resize_shorter", f"must be null or at least size={size}")
        if sec["crop"] not in ("random", "center"):
            raise bad("crop", "use random or center")
        n = int(sec["patches_per_image"])
        if n < 1 or (sec["crop"] == "center" and n != 1):
            raise bad("patches_per_image", "must be >= 1, and 1 with crop: center")
        if sec["small_images"] not in ("upscale", "skip"):
            raise bad("small_images", "use upscale or skip")
        scales = tuple(int(s) for s in sec.get("scales") or ()) if kind == "sr" else ()
        if kind == "sr" and (not scales or any(s < 2 or size % s for s in scales)):
            raise bad("scales", f"need one or more integer scales >= 2 that divide size={size}")
        return cls(kind=kind, size=size, resize_shorter=int(rs) if rs is not None else None,
                   crop=sec["crop"], patches_per_image=n, small_images=sec["small_images"], scales=scales,
                   blur_sigma=float(degradation["blur_sigma"]), blur_truncate=float(degradation["blur_truncate"]),
                   seed=int(sec["seed"]), max_pixels=int(sec["max_pixels"]))

    @property
    def image_columns(self) -> list[str]:
        return ["image"] if self.kind == "style" else ["hr"] + [f"lr_x{s}" for s in self.scales]

    def schema(self) -> pa.Schema:
        return pa.schema(
            [("key", pa.string()), ("file", pa.string()), ("patch", pa.int32()), ("split", pa.string()),
             ("src_w", pa.int32()), ("src_h", pa.int32()), ("resized_w", pa.int32()), ("resized_h", pa.int32()),
             ("upscaled", pa.bool_()), ("source_mode", pa.string()),
             ("box_x0", pa.float64()), ("box_y0", pa.float64()), ("box_x1", pa.float64()), ("box_y1", pa.float64()),
             ("source_sha256", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64()),
             ("reject_kind", pa.string()), ("reason", pa.string())]
            + [(c, pa.binary()) for c in self.image_columns])

    def shard_schema(self) -> pa.Schema:
        """What a training loader needs; the rest of a patch's facts are in the manifest."""
        return pa.schema([("key", pa.string()), ("file", pa.string()), ("split", pa.string())]
                         + [(c, pa.binary()) for c in self.image_columns])


# ------------------------------------------------------------------------------ per-image work

def _stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8], "big")


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # 4x faster than 6 for ~10% more bytes
    return buf.getvalue()


def _to_rgb8(img) -> np.ndarray:
    """8-bit RGB pixels; 16-bit is rounded down to 8, alpha composited over white."""
    px = img.pixels
    if img.bit_depth == 16:
        px = np.round(px.astype(np.float64) / 257.0)
    if img.alpha is not None:
        a = img.alpha.astype(np.float64)[..., None] / (255.0 if img.bit_depth == 8 else 65535.0)
        px = px * a + 255.0 * (1 - a)
    return np.clip(np.round(px), 0, 255).astype(np.uint8) if px.dtype != np.uint8 else px


def _reject_kind(message: str) -> str:
    for key, kind in (("empty file", "empty"), ("not a recognised image", "not_an_image"),
                      ("max_pixels", "too_large"), ("corrupt or truncated", "corrupt"),
                      ("not supported", "unsupported")):
        if key in message:
            return kind
    return "unreadable"


def image_patches(path: str, file: str, spec: PatchSpec) -> tuple[list[dict], dict]:
    """All patches of one source file, plus its per-file facts. Raises Reject."""
    import torch

    from perceptual_core.io import ImageReadError, load_image
    from perceptual_core.resize import gaussian_blur, imresize

    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise Reject("unreadable", f"cannot read file ({e.strerror or e})") from None
    try:
        img = load_image(path, max_pixels=spec.max_pixels, data=raw)  # read once: hashed and decoded
    except ImageReadError as e:
        msg = str(e).removeprefix(f"{path}: ")
        raise Reject(_reject_kind(msg), msg) from None
    px = _to_rgb8(img)
    h, w = px.shape[:2]
    need = spec.resize_shorter or spec.size
    upscaled = min(h, w) < need
    if upscaled and spec.small_images == "skip":
        raise Reject("too_small", f"{w}x{h} is smaller than the {spec.size}x{spec.size} patch "
                                  f"(shorter side under {need}; small_images: skip)")
    short = spec.resize_shorter or (need if upscaled else None)
    if short is not None and min(h, w) != short:
        f = short / min(h, w)
        nh, nw = (short, max(short, round(w * f))) if h <= w else (max(short, round(h * f)), short)
        px = imresize(px, size=(nh, nw))  # MATLAB bicubic (antialiased), uint8 in and out
    rh, rw = px.shape[:2]
    fy, fx = rh / h, rw / w
    s = spec.size
    facts = dict(src_w=w, src_h=h, resized_w=rw, resized_h=rh, upscaled=upscaled, source_mode=img.source_mode,
                 source_sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
    rows = []
    for k in range(spec.patches_per_image):
        if spec.crop == "center":
            y0, x0 = (rh - s) // 2, (rw - s) // 2
        else:
            rng = np.random.default_rng(_stable_int(spec.seed, file, k))
            y0, x0 = int(rng.integers(0, rh - s + 1)), int(rng.integers(0, rw - s + 1))
        patch = np.ascontiguousarray(px[y0:y0 + s, x0:x0 + s])
        images = {}
        if spec.kind == "style":
            images["image"] = _png(patch)
        else:
            images["hr"] = _png(patch)
            # The paper's recipe, as perceptual_core.resize.degrade: blur once, then bicubic per scale.
            hr = torch.from_numpy(patch).permute(2, 0, 1).to(torch.float64) / 255.0
            blurred = gaussian_blur(hr, spec.blur_sigma, spec.blur_truncate)
            for sc in spec.scales:
                lr = imresize(blurred, 1.0 / sc).clamp_(0, 1)
                images[f"lr_x{sc}"] = _png(lr.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
        first = images[spec.image_columns[0]]
        rows.append(dict(key=f"{file}#{k}", patch=k, box_x0=round(x0 / fx, 2), box_y0=round(y0 / fy, 2),
                         box_x1=round((x0 + s) / fx, 2), box_y1=round((y0 + s) / fy, 2),
                         sha256=hashlib.sha256(first).hexdigest(), **images))
    return rows, facts


def process_batch(batch: pa.Table, spec: PatchSpec) -> pa.Table:
    """Ray Data UDF: source files in, one row per patch or per rejected file out."""
    schema = spec.schema()
    out = {f.name: [] for f in schema}

    def add(row):
        for name in out:
            out[name].append(row.get(name))

    for file, path, split in zip(*(batch.column(c).to_pylist() for c in ("file", "path", "split"))):
        try:
            rows, facts = image_patches(path, file, spec)
        except Reject as e:
            size = os.path.getsize(path) if os.path.exists(path) else None
            add(dict(key=f"{file}#rejected", file=file, split=split, bytes=size, reject_kind=e.kind, reason=str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the stage
            add(dict(key=f"{file}#rejected", file=file, split=split, reject_kind="error",
                     reason=f"unexpected {type(e).__name__}: {e}"))
            continue
        for r in rows:
            add({**facts, **r, "file": file, "split": split})
    return pa.table(out, schema=schema)


# ---------------------------------------------------------------------------------- driver side

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


def prepare(kind: str, sec: dict, degradation: dict, *, input_dir: Path, out_dir: Path,
            metrics_path: Path | None = None, use_ray: bool = True) -> dict:
    """Run one prepare stage; returns its summary (the counts, written to ``metrics_path`` as the DVC
    metrics, plus the rejections by kind, the scales and the seconds)."""
    spec = PatchSpec.from_params(kind, sec, degradation)
    workers, shard_rows = int(sec["workers"]), int(sec["shard_rows"])
    if workers < 1:
        raise ValueError(f"params prepare_{kind}.workers={workers}: must be >= 1")
    if shard_rows < 1:
        raise ValueError(f"params prepare_{kind}.shard_rows={shard_rows}: must be >= 1")
    files = list_files(input_dir)
    if not files:
        raise ValueError(f"{input_dir}: no files to prepare (run the acquire stage, or check prepare_{kind}.input)")
    splits = assign_splits(files, float(sec["val_fraction"]), spec.seed)
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
    summary = {  # the DVC metrics: a few numbers (each file, patch and rejection: manifest.csv, rejected.csv)
        "files": len(files), "images_used": len(used), "rejected": len(rejected),
        "patches": {s: sum(1 for m in manifest if m["split"] == s) for s in ("train", "val")},
        "upscaled_images": len({m["file"] for m in manifest if m["upscaled"]}),
        "patch_size": spec.size,
    }
    if metrics_path is not None:
        from perceptual_core.io import atomic_write

        atomic_write(metrics_path, lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))
    print(f"prepare_{kind}: {len(used)}/{len(files)} images -> {summary['patches']['train']} train + "
          f"{summary['patches']['val']} val patches, {len(rejected)} rejected; {elapsed:.1f} s "
          f"({len(files) / elapsed:.2f} images/s, {f'{workers} workers' if use_ray else 'no Ray'}) -> {out_dir}",
          file=sys.stderr)
    for r in rejected:
        print(f"  rejected {r['file']}: {r['reason']}", file=sys.stderr)
    return {**summary, "rejected_by_kind": kinds, "scales": list(spec.scales), "seconds": elapsed}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def run_stage(kind: str, use_ray: bool = True) -> dict:
    sec = config.section(f"prepare_{kind}")
    metrics = sec.get("metrics")
    return prepare(kind, sec, config.section("degradation"), input_dir=config.resolve(sec["input"]),
                   out_dir=config.resolve(sec["out_dir"]), metrics_path=config.resolve(metrics) if metrics else None,
                   use_ray=use_ray)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=["style", "sr"])
    ap.add_argument("--no-ray", action="store_true", help="in this process, without Ray (same output bytes)")
    a = ap.parse_args(argv)
    from . import run_stage as run_cli

    return run_cli(run_stage, a.kind, use_ray=not a.no_ray)


if __name__ == "__main__":
    sys.exit(main())
