"""Batch jobs: stylize or upscale every image under a folder, a bucket prefix or inside archives.

Ray Data pipeline: the driver lists the input, then either
- staged: read/decode tasks (archives are streamed, never unpacked to disk) -> inference in an actor
  pool holding the model -> encode/write tasks; used for archives (one big archive's members spread
  over the pool), --output-archive shards and GPU actors (decoding stays off the accelerator), or
- fused: each actor of the pool reads, decodes, infers, encodes and writes its own files; used for
  loose files on CPU actors that take the whole cluster, where read/write tasks would only compete
  with them and handing decoded pixels through the object store costs more than the decode itself
  (benchmarks/bench_batch.py).
``pipeline`` (params ``batch.pipeline``: auto | fused | staged) picks one. The same per-image
functions run in a plain loop (`engine="local"`) for benchmarks and Ray-less machines.

Keys: an image's path relative to the input; an archive member's name (under the archive's own
name, without extension, when the input is a folder or prefix holding archives). Outputs mirror
keys under the output with the extension of ``fmt``. Keys that would leave the output prefix
(absolute, "..") are refused and reported, never written.

Resumable and idempotent: a rerun skips keys whose output exists (unless ``overwrite``). Outputs
appear atomically: a local file is written under a temp name and renamed; an object-store PUT or
multipart upload only becomes visible once complete; a tar shard (``output_archive``) likewise.
Temp files left by a killed run are removed when the next run starts. Unreadable, corrupt,
truncated, empty, non-image and oversized inputs do not stop the job: each becomes a row of
``_failures.csv`` under the output (key, source, error) and the exit code is 1.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import struct
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from . import config, output_lock, storage

__all__ = ["BatchSpec", "Summary", "main", "output_key", "plan", "run_batch", "safe_key"]

FAILURES = "_failures.csv"
SUMMARY = "_summary.json"
MAX_MEMBER_BYTES = 1 << 30  # an archive member or object bigger than 1 GiB is refused, not read
_PARTIAL = re.compile(r"(^|/)\.[^/]+\.[0-9a-f]{8}\.partial$")
_TAR_EXT = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_SAVE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class BatchSpec:
    """One batch job. Defaults come from the `batch` section of params.yaml (see from_params)."""
    kind: str  # "stylize" | "upscale"
    model: str  # checkpoint path or models:/NAME@ALIAS
    input: str
    output: str
    scale: int | None = None
    fmt: str = "png"
    overwrite: bool = False
    output_archive: bool = False
    shard_size: int = 64
    preserve_color: bool = False
    tile: int = 1024
    overlap: int = 48
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    read_cpus: float = 0.5
    pipeline: str = "auto"  # auto | fused | staged (module doc)
    max_pixels: int = 178_956_970
    endpoint: str | None = None  # S3-compatible endpoint (else AWS_ENDPOINT_URL)
    device: str = "auto"
    # inference engine in each actor (params: inference; perceptual_core/engines.py); `engine` of
    # run_batch/main is the job runner (ray | local)
    model_engine: str = "auto"
    precision: str = "auto"
    engine_verify: bool = True
    engine_tolerance: dict | None = None
    engine_cache: str | None = None  # inference.onnx_cache, absolute (a worker that cannot write it exports)
    require_promoted: bool = True  # models:/ refs: only versions `promote` moved to champion, or releases

    @classmethod
    def from_params(cls, **kw) -> BatchSpec:
        sec = dict(config.section("batch"))
        sec["fmt"] = sec.pop("format", "png")
        up_tile = sec.pop("upscale_tile", None)
        if kw.get("kind") == "upscale" and up_tile is not None:  # upscaling tiles by output pixels
            sec["tile"] = up_tile
        inf = config.section("inference")
        sec.update(model_engine=inf["engine"], precision=inf["precision"], engine_verify=inf["verify"],
                   engine_tolerance=inf["tolerance"],
                   engine_cache=str(config.resolve(inf["onnx_cache"])) if inf.get("onnx_cache") else None)
        sec.update({k: v for k, v in kw.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in sec.items() if k in known})

    def check(self) -> None:
        if self.kind not in ("stylize", "upscale"):
            raise ValueError(f"kind must be stylize or upscale, got {self.kind!r}")
        if self.fmt != "same" and f".{self.fmt.lower().lstrip('.')}" not in _SAVE_EXT:
            raise ValueError(f"--format {self.fmt!r}: use same or one of {sorted(e[1:] for e in _SAVE_EXT)}")
        for name in ("actors", "shard_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        from perceptual_core.tiling import check_tile

        check_tile(self.tile)
        if self.kind == "upscale" and self.scale:
            from perceptual_core.sr_blocks import check_tile as check_sr_tile

            check_sr_tile(self.tile, self.scale)
        if self.overlap < 0:
            raise ValueError(f"--overlap must be >= 0, got {self.overlap}")
        if not 0 < self.cpus_per_actor or self.read_cpus <= 0 or self.gpus_per_actor < 0:
            raise ValueError("--cpus-per-actor and read_cpus must be > 0 and --gpus >= 0")
        if self.pipeline not in ("auto", "fused", "staged"):
            raise ValueError(f"--pipeline must be auto, fused or staged, got {self.pipeline!r}")
        if self.preserve_color and self.kind != "stylize":
            raise ValueError("--preserve-color only applies to stylize")
        from perceptual_core.options import ENGINES, PRECISIONS

        if self.model_engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {self.model_engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0  # input megapixels of the images done in this run
    started: float = 0.0  # wall-clock times the job began, and the first and the last image left the model
    first_done: float = 0.0
    last_done: float = 0.0
    failures: list = field(default_factory=list)  # (key, source, error)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def megapixels_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0

    @property
    def steady_images_per_s(self) -> float:
        """Images/s between the first and the last image leaving the model: the rate once start-up
        (actors, model load) is over, which is what a large archive sees."""
        span = self.last_done - self.first_done
        return (self.done - 1) / span if self.done > 1 and span > 0 else 0.0

    @property
    def startup_seconds(self) -> float:
        """From the job's start to its first image out of the model (actor start, model load, one image)."""
        return self.first_done - self.started if self.done else 0.0

    def text(self) -> str:
        first = f", first image after {self.startup_seconds:.1f} s" if self.done else ""
        return (f"{self.done} done, {self.skipped} skipped (already there), {self.failed} failed in "
                f"{self.seconds:.1f} s: {self.images_per_s:.2f} images/s, {self.megapixels_per_s:.2f} MP/s{first}")


# ---------------------------------------------------------------------------------------- names

def safe_key(name: str) -> str:
    """Normalise a relative name ("./a//b.jpg" -> "a/b.jpg"); ValueError if it would escape the
    output prefix (absolute, drive letter, ".." part) or is empty."""
    k = str(name).replace("\\", "/")
    parts = [p for p in k.split("/") if p not in ("", ".")]
    if k.startswith("/") or not parts or ".." in parts or re.match(r"^[A-Za-z]:$", parts[0]):
        raise ValueError(f"refused: the name {name!r} would escape the output prefix")
    return "/".join(parts)


def output_key(key: str, fmt: str) -> str:
    """Output name for an input key: same folders and stem, extension from fmt ("same" keeps it
    when it can be written, else png)."""
    p = PurePosixPath(key)
    ext = p.suffix.lower() if fmt == "same" else f".{fmt.lower().lstrip('.')}"
    if ext not in _SAVE_EXT:
        ext = ".png"
    return str(p.with_suffix(ext)) if p.suffix else f"{key}{ext}"


def _archive_kind(name: str) -> str | None:
    n = name.lower()
    return "tar" if n.endswith(_TAR_EXT) else "zip" if n.endswith(".zip") else None


def _archive_stem(name: str) -> str:
    n = name.lower()
    for ext in _TAR_EXT + (".zip",):
        if n.endswith(ext):
            return name[: -len(ext)]
    return name


# ---------------------------------------------------------------------------------- filesystems

_FS_CACHE: dict = {}


def filesystem(location: str, endpoint: str | None = None):
    """(pyarrow FileSystem, path) for a local path or a URI; cached per process (tasks reuse it)."""
    key = (location, endpoint)
    if key not in _FS_CACHE:
        if storage.is_uri(location):
            _FS_CACHE[key] = storage.open_uri(location, endpoint)
        else:
            import pyarrow.fs as pafs

            _FS_CACHE[key] = (pafs.LocalFileSystem(), Path(location).expanduser().resolve().as_posix())
    return _FS_CACHE[key]


def _exists(fs, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type != pafs.FileType.NotFound


def put_atomic(fs, path: str, data: bytes) -> None:
    """Write ``data`` so readers never see a partial object: local files via a temp name in the
    same folder + rename; object stores commit an upload only when it completes."""
    import pyarrow.fs as pafs

    parent = path.rsplit("/", 1)[0]
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        name = path.rsplit("/", 1)[1]
        tmp = f"{parent}/.{name}.{secrets.token_hex(4)}.partial"
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)
        except BaseException:
            try:
                fs.delete_file(tmp)
            except (OSError, FileNotFoundError):
                pass
            raise
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def _list_outputs(fs, root: str) -> list[str]:
    if not _exists(fs, root):
        return []
    return storage.list_files(fs, root, include_hidden=True)


def _shard_keys(fs, path: str) -> list[str]:
    with fs.open_input_file(path) as f, tarfile.open(fileobj=f, mode="r:") as tf:
        return [m.name for m in tf.getmembers() if m.isfile()]


# -------------------------------------------------------------------------------------- listing

def plan(spec: BatchSpec) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Sources to read: rows {path, kind: file|tar|zip, key (file) or prefix (archive)}, and the
    (key, source, error) of names refused up front. FileNotFoundError names the input."""
    import pyarrow.fs as pafs

    fs, root = filesystem(spec.input, spec.endpoint)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"--input {spec.input}: not found")
    if info.type == pafs.FileType.File:
        kind = _archive_kind(root)
        return [{"path": root, "kind": kind or "file", "key": "" if kind else root.rsplit("/", 1)[-1]}], []
    items, refused = [], []
    for rel in storage.list_files(fs, root, include_hidden=True):
        if _skip_member(rel):
            continue
        kind = _archive_kind(rel)
        try:
            key = safe_key(_archive_stem(rel) if kind else rel)
        except ValueError as e:
            refused.append((rel, f"{spec.input.rstrip('/')}/{rel}", str(e)))
            continue
        items.append({"path": f"{root}/{rel}", "kind": kind or "file", "key": f"{key}/" if kind else key})
    return items, refused


# ------------------------------------------------------------------------- per-image functions

ROW = dict(key="", source="", status="ok", error="", h=0, w=0, c=0, bits=8, pixels=b"", alpha=b"",
           icc=b"", exif=b"", in_mp=0.0, t=0.0)


def _row(**kw) -> dict:
    r = dict(ROW)
    r.update(kw)
    return r


# What reading a damaged archive raises: tarfile/zipfile errors, truncation, bad deflate data
# (zlib.error), malformed headers (struct.error), and pyarrow's ArrowInvalid (a ValueError) when
# zipfile seeks before the start of a file too short to hold its directory.
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, struct.error)


def _members(fs, item: dict, display: str):
    """Yield (key, source, bytes | None, error | None) for one source row."""
    path, kind, key = item["path"], item["kind"], item["key"]
    if kind == "file":
        try:
            size = fs.get_file_info(path).size
            if size is not None and size > MAX_MEMBER_BYTES:
                yield key, display, None, f"file of {size:,} bytes is over the {MAX_MEMBER_BYTES:,} byte limit"
                return
            yield key, display, storage.read_bytes(fs, path), None
        except OSError as e:
            yield key, display, None, f"unreadable: {e}"
        return
    try:
        if kind == "tar":
            with storage.open_input(fs, path) as raw, tarfile.open(fileobj=raw, mode="r|*") as tf:
                for m in tf:  # streaming: members in archive order, nothing unpacked to disk
                    if m.isdir() or _skip_member(m.name):
                        continue
                    src = f"{display}:{m.name}"
                    yield from _member(prefix=key, name=m.name, src=src, size=m.size,
                                       read=(lambda m=m: tf.extractfile(m).read()) if m.isfile() else None)
        else:
            with fs.open_input_file(path) as raw, zipfile.ZipFile(raw) as zf:
                for info in zf.infolist():
                    if info.is_dir() or _skip_member(info.filename):
                        continue
                    yield from _member(prefix=key, name=info.filename, src=f"{display}:{info.filename}",
                                       size=info.file_size, read=lambda info=info: zf.read(info))
    except _ARCHIVE_ERRORS as e:
        yield key or display, display, None, f"archive unreadable or corrupt ({type(e).__name__}: {e})"


def _skip_member(name: str) -> bool:
    """Hidden entries (.DS_Store, ._x) and macOS resource forks; ".." parts are not hidden but
    refused later, so an escaping name is reported rather than silently dropped."""
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") and p not in (".", "..") for p in parts)


def _member(prefix: str, name: str, src: str, size: int, read):
    try:
        key = prefix + safe_key(name)  # the member's own name must stay inside, not just prefix + name
    except ValueError as e:
        yield prefix + name, src, None, str(e)
        return
    if read is None:
        yield key, src, None, "not a regular file (link or device entry), skipped"
    elif size > MAX_MEMBER_BYTES:
        yield key, src, None, f"member of {size:,} bytes is over the {MAX_MEMBER_BYTES:,} byte limit"
    else:
        try:
            yield key, src, read(), None
        except (*_ARCHIVE_ERRORS, RuntimeError) as e:
            yield key, src, None, f"corrupt archive member ({type(e).__name__}: {e})"


def decode(key: str, src: str, data: bytes | None, error: str | None, spec: BatchSpec) -> dict:
    """One row for the inference stage (or a failed row)."""
    from perceptual_core.io import ImageReadError, load_image

    if error:
        return _row(key=key, source=src, status="failed", error=error)
    try:
        img = load_image(src, data=data, keep_gray=spec.kind == "upscale", max_pixels=spec.max_pixels)
    except ImageReadError as e:
        return _row(key=key, source=src, status="failed", error=str(e).removeprefix(f"{src}: "))
    h, w, c = img.pixels.shape
    return _row(key=key, source=src, h=h, w=w, c=c, bits=img.bit_depth, pixels=img.pixels.tobytes(),
                alpha=b"" if img.alpha is None else img.alpha.tobytes(), icc=img.icc_profile or b"",
                exif=img.exif or b"", in_mp=h * w / 1e6)


def _image(row):
    import numpy as np

    from perceptual_core.io import LoadedImage

    dt = np.uint8 if row["bits"] == 8 else np.uint16
    h, w, c = int(row["h"]), int(row["w"]), int(row["c"])
    alpha = np.frombuffer(row["alpha"], dt).reshape(h, w) if len(row["alpha"]) else None
    return LoadedImage(pixels=np.frombuffer(row["pixels"], dt).reshape(h, w, c), alpha=alpha,
                       bit_depth=int(row["bits"]), path=row["source"], source_mode="", icc_profile=row["icc"] or None,
                       exif=row["exif"] or None)


def _writable(folder: str | None) -> str | None:
    """``folder`` if this process can create and write it (the ONNX cache on a remote node may not
    exist there), else None: the engine then exports its graph without caching it."""
    if not folder:
        return None
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


class Predictor:
    """Holds the model (one per actor) and maps decoded rows to output pixel rows."""

    def __init__(self, spec: BatchSpec, checkpoint: bytes | list, threads: int | None = None):
        import torch

        from perceptual_core.checkpoint import load_model
        from perceptual_core.inference import auto_device

        if isinstance(checkpoint, list):  # [ObjectRef]: shipped once through the object store
            import ray

            checkpoint = ray.get(checkpoint[0])
        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.model = load_model(spec.model, auto_device(spec.device), data=checkpoint)
        arch = self.model.config["arch"]
        if (spec.kind == "stylize") != (arch == "transform"):
            raise ValueError(f"--model {spec.model} holds a {arch!r} network, which cannot {spec.kind}")
        from perceptual_core.engines import build_engine  # verified against the plain network here, once per actor

        self.model = build_engine(self.model, spec.model_engine, spec.precision, verify=spec.engine_verify,
                                  tolerance=spec.engine_tolerance, threads=threads,
                                  cache_dir=_writable(spec.engine_cache))

    def predict(self, row: dict) -> dict:
        from perceptual_core.inference import stylize_image, upscale_image
        from perceptual_core.io import tensor_to_array

        if row["status"] != "ok":
            return row
        s, img = self.spec, _image(row)
        tile = s.tile or None
        try:
            if s.kind == "stylize":
                y, alpha = stylize_image(self.model, img, preserve_color=s.preserve_color, tile=tile, overlap=s.overlap)
                out = tensor_to_array(y, img.bit_depth)
            else:  # tiled by output pixels, quantised block by block (sr_blocks.py)
                out, alpha = upscale_image(self.model, img, scale=s.scale, tile=tile)
        except (RuntimeError, ValueError) as e:  # e.g. out of memory on one huge image
            return _row(key=row["key"], source=row["source"], status="failed", error=f"inference failed: {e}")
        h, w, c = out.shape
        return _row(key=row["key"], source=row["source"], h=h, w=w, c=c, bits=img.bit_depth, pixels=out.tobytes(),
                    alpha=b"" if alpha is None else alpha.tobytes(), icc=row["icc"], exif=row["exif"],
                    in_mp=row["in_mp"], t=time.time())

    def __call__(self, batch):  # Ray Data: a pandas batch of decoded rows
        import pandas as pd

        return pd.DataFrame([self.predict(r) for r in batch.to_dict("records")])


class FusedWorker(Predictor):
    """The fused pipeline's actor: source rows (loose files) -> read, decode, infer, encode, write."""

    def __init__(self, spec: BatchSpec, checkpoint: bytes | list, threads: int | None = None, done_ref=None):
        super().__init__(spec, checkpoint, threads)
        import ray

        self.done = ray.get(done_ref[0]) if done_ref else frozenset()

    def __call__(self, batch: dict) -> dict:  # numpy batch format: column -> array
        rows = list(process(self, _records(batch), self.spec, self.done))
        return {k: [r[k] for r in rows] for k in RESULT}


RESULT = ("key", "source", "status", "error", "in_mp", "t")  # the columns of a result row


def _records(batch: dict) -> list[dict]:
    """A numpy-format Ray Data batch (column -> array) as rows of plain Python values."""
    return [dict(zip(batch, vals)) for vals in zip(*(v.tolist() for v in batch.values()))]


def process(pred: Predictor, items, spec: BatchSpec, done, bar=None) -> Iterator[dict]:
    """Read, infer and write ``items`` in this process (the local loop and the fused actors) -> result rows."""
    group = []
    for item in items:
        for row in read_rows(item, spec, done):
            if row["status"] == "skipped":
                yield dict(key=row["key"], source=row["source"], status="skipped", error="", in_mp=0.0, t=0.0)
                continue
            group.append(pred.predict(row))
            if not spec.output_archive or len(group) >= spec.shard_size:
                yield from write_rows(group, spec)
                group = []
        if bar is not None:
            bar.update()
    if group:
        yield from write_rows(group, spec)


def encode(row: dict, spec: BatchSpec) -> tuple[str, bytes | None, str]:
    """(output key, file bytes or None, error)."""
    import numpy as np

    from perceptual_core.io import encode_image

    okey = output_key(row["key"], spec.fmt)
    if row["status"] != "ok":
        return okey, None, row["error"]
    img = _image(row)
    alpha = img.alpha
    if alpha is not None and PurePosixPath(okey).suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        alpha = None  # the user chose a format without alpha
    try:
        return okey, encode_image(okey, np.ascontiguousarray(img.pixels), alpha=alpha, bit_depth=img.bit_depth,
                                  icc_profile=img.icc_profile, exif=img.exif), ""
    except (ValueError, OSError) as e:
        return okey, None, f"cannot encode: {e}"


def _tar_bytes(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        now = int(time.time())
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), now, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def write_rows(rows: list[dict], spec: BatchSpec) -> list[dict]:
    """Encode and write a group of rows (one tar shard with output_archive); -> result rows."""
    fs, root = filesystem(spec.output, spec.endpoint)
    results, files = [], []
    for r in rows:
        okey, data, err = encode(r, spec)
        if data is None:
            status = "skipped" if r["status"] == "skipped" else "failed"
            results.append(dict(key=r["key"], source=r["source"], status=status, error=err, in_mp=0.0, t=0.0))
            continue
        if spec.output_archive:
            files.append((okey, data))
        else:
            try:
                put_atomic(fs, f"{root}/{okey}", data)
            except OSError as e:
                results.append(dict(key=r["key"], source=r["source"], status="failed",
                                    error=f"cannot write {okey}: {e}", in_mp=0.0, t=0.0))
                continue
        results.append(dict(key=r["key"], source=r["source"], status="done", error="", in_mp=float(r["in_mp"]),
                            t=float(r["t"])))
    if files:
        put_atomic(fs, f"{root}/part-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.tar", _tar_bytes(files))
    return results


# ----------------------------------------------------------------------------------- Ray stages

def read_rows(item: dict, spec: BatchSpec, done) -> Iterator[dict]:
    """The read/decode step for one source row: a decoded row per image, or a skipped row for an
    output already there (``done``: output keys; empty with overwrite), or a failed row."""
    fs, root = filesystem(spec.input, spec.endpoint)
    for key, src, data, err in _members(fs, item, _display(spec, root, item["path"])):
        if not err and output_key(key, spec.fmt) in done:
            yield _row(key=key, source=src, status="skipped")
        else:
            yield decode(key, src, data, err, spec)


def _read_stage(batch, spec: BatchSpec, done_ref):
    """Ray Data generator: source rows -> one decoded row per image (a DataFrame each)."""
    import pandas as pd
    import ray

    done = ray.get(done_ref[0]) if done_ref else frozenset()
    for item in batch.to_dict("records"):
        for row in read_rows(item, spec, done):
            yield pd.DataFrame([row])


def _write_stage(batch, spec: BatchSpec):
    import pandas as pd

    return pd.DataFrame(write_rows(batch.to_dict("records"), spec))


def _display(spec: BatchSpec, root: str, path: str) -> str:
    """The source as the user named it (their URI or folder + the relative part)."""
    rel = path[len(root):].lstrip("/")
    return f"{spec.input.rstrip('/')}/{rel}" if rel else spec.input


# -------------------------------------------------------------------------------------- driver

def _checkpoint_bytes(spec: BatchSpec) -> bytes:
    from perceptual_core.checkpoint import read_checkpoint

    from .modelref import check_task, checkpoint_bytes

    if spec.model.startswith("models:/") and spec.require_promoted:
        from .promote import unservable

        why = unservable(spec.model)
        if why:
            raise ValueError(f"--model {spec.model}: {why}; batch jobs serve promoted versions only "
                             f"(`perceptual promote NAME`, or --allow-unpromoted for a trial run)")
    data = checkpoint_bytes(spec.model)
    cfg = read_checkpoint(spec.model, data)["config"]  # fail here, once, not in every actor
    check_task(cfg, spec.model, spec.kind, spec.scale)
    if cfg.get("arch") == "srcnn" and not spec.scale:
        raise ValueError(f"--model {spec.model} is an SRCNN, which needs --scale")
    return data


def _prepare_output(spec: BatchSpec) -> tuple[set[str], list[str]]:
    """Remove temp files of a killed run; -> (output keys already present, tar shards present)."""
    fs, root = filesystem(spec.output, spec.endpoint)
    present, shards = set(), []
    for rel in _list_outputs(fs, root):
        if _PARTIAL.search(rel):
            fs.delete_file(f"{root}/{rel}")
        elif spec.output_archive and re.fullmatch(r"part-[^/]+\.tar", rel):
            present.update(_shard_keys(fs, f"{root}/{rel}"))
            shards.append(rel)
        elif not spec.output_archive and not storage.is_hidden(rel):
            present.add(rel)
    return present, shards


def _finish(spec: BatchSpec, summary: Summary) -> None:
    """Write _failures.csv and _summary.json; a failing write is a one-line error (outputs stay)."""
    try:
        _write_reports(spec, summary)
    except OSError as e:
        raise ValueError(f"--output {spec.output}: {summary.done} outputs written, but the job's report could "
                         f"not be: {storage.describe_error(e)}") from None


def _write_reports(spec: BatchSpec, summary: Summary) -> None:
    fs, root = filesystem(spec.output, spec.endpoint)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "source", "error"])
    w.writerows(sorted(summary.failures))
    put_atomic(fs, f"{root}/{FAILURES}", buf.getvalue().encode())
    info = {k: v for k, v in asdict(summary).items() if k != "failures"}
    info.update(images_per_s=round(summary.images_per_s, 3), megapixels_per_s=round(summary.megapixels_per_s, 3),
                steady_images_per_s=round(summary.steady_images_per_s, 3),
                startup_seconds=round(summary.startup_seconds, 2),
                spec={k: v for k, v in asdict(spec).items()}, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    put_atomic(fs, f"{root}/{SUMMARY}", (json.dumps(info, indent=1) + "\n").encode())


def run_batch(spec: BatchSpec, *, engine: str = "ray", progress: bool = True) -> Summary:
    """Run one batch job. engine: "ray" (Ray Data, local instance or RAY_ADDRESS) or "local" (a plain
    loop in this process, the same per-image functions)."""
    spec.check()
    ckpt = _checkpoint_bytes(spec)
    try:
        items, refused = plan(spec)
    except FileNotFoundError:
        raise
    except OSError as e:  # access denied, a missing bucket, an unreachable endpoint: one line naming the input
        raise ValueError(f"--input {spec.input}: {storage.describe_error(e)}") from None
    fs, root = filesystem(spec.output, spec.endpoint)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(output_lock.hold(fs, root, f"{spec.kind} --model {spec.model} --input {spec.input}",
                                                spec.output))
        except OSError as e:  # the output cannot even be written: say why in one line
            raise ValueError(f"--output {spec.output}: {storage.describe_error(e)}") from None
        return _run_locked(spec, ckpt, items, refused, engine, progress)


def _run_locked(spec: BatchSpec, ckpt: bytes, items: list[dict], refused: list, engine: str, progress: bool):
    """The job itself, with the output's lock held (`pipelines/output_lock.py`)."""
    present, old_shards = _prepare_output(spec)
    done = set() if spec.overwrite else present
    summary = Summary(failures=list(refused), failed=len(refused))
    todo = []
    for it in items:  # loose files already written are skipped here; archive members in the tasks
        if it["kind"] == "file" and output_key(it["key"], spec.fmt) in done and not spec.overwrite:
            summary.skipped += 1
        else:
            todo.append(it)
    t0, summary.started = time.perf_counter(), time.time()
    results = _run_local(spec, ckpt, todo, done, progress) if engine == "local" else _run_ray(spec, ckpt, todo, done)
    for r in results:
        if r["status"] == "done":
            summary.done += 1
            summary.megapixels += r["in_mp"]
            summary.first_done = min(summary.first_done or r["t"], r["t"])
            summary.last_done = max(summary.last_done, r["t"])
        elif r["status"] == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
            summary.failures.append((r["key"], r["source"], r["error"]))
    summary.seconds = time.perf_counter() - t0
    if spec.overwrite and old_shards:  # replaced by this run's shards; removed only once it finished
        fs, root = filesystem(spec.output, spec.endpoint)
        for name in old_shards:
            fs.delete_file(f"{root}/{name}")
    _finish(spec, summary)
    return summary


def _run_local(spec, ckpt, todo, done, progress):
    from tqdm import tqdm

    pred = Predictor(spec, ckpt)
    with tqdm(total=len(todo), unit="src", file=sys.stderr, disable=not progress, desc=spec.kind) as bar:
        yield from process(pred, todo, spec, done, bar)


def fused(spec: BatchSpec, todo: list[dict], cpus: float | None = None) -> bool:
    """Whether the job runs the fused pipeline (module doc): loose files on CPU actors that leave
    no room (``read_cpus``) beside them on the ``cpus`` of the cluster for read and write tasks;
    where there is room, staged decodes and encodes there while the actors infer."""
    if spec.pipeline != "auto":
        return spec.pipeline == "fused"
    if spec.gpus_per_actor or spec.output_archive or any(it["kind"] != "file" for it in todo):
        return False
    return cpus is None or spec.actors * spec.cpus_per_actor + spec.read_cpus > cpus


def _run_ray(spec, ckpt, todo, done):
    import ray

    from .ray_env import ray_session

    if not todo:
        return
    with ray_session():
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = False
        done_ref = [ray.put(frozenset(done))] if done else None
        threads = max(1, int(spec.cpus_per_actor))
        if fused(spec, todo, ray.cluster_resources().get("CPU", 0)):  # no read/write tasks: actors take every CPU
            # a few files per call: Ray's per-call cost (about 15 ms here) shrinks, the pool stays balanced
            per_call = max(1, min(2, len(todo) // (8 * spec.actors)))
            ds = ray.data.from_items(todo, override_num_blocks=-(-len(todo) // per_call))
            ds = ds.map_batches(FusedWorker, fn_constructor_kwargs=dict(spec=spec, checkpoint=[ray.put(ckpt)],
                                                                        threads=threads, done_ref=done_ref),
                                batch_size=per_call, batch_format="numpy", num_cpus=spec.cpus_per_actor,
                                compute=ray.data.ActorPoolStrategy(size=spec.actors))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield from _records(batch)
            return
        ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 200))
        # One archive per read task (each is a stream). Loose files: 8 per task for one actor (fewer
        # tasks); 2 for a pool, so blocks spread evenly over the actors (measured: bench_batch.py).
        read_batch = 1 if any(it["kind"] != "file" for it in todo) else 8 if spec.actors == 1 else 2
        ds = ds.map_batches(_read_stage, fn_kwargs=dict(spec=spec, done_ref=done_ref), batch_size=read_batch,
                            batch_format="pandas", num_cpus=spec.read_cpus)
        ds = ds.map_batches(Predictor, fn_constructor_kwargs=dict(spec=spec, checkpoint=[ray.put(ckpt)], threads=threads),
                            batch_size=1, batch_format="pandas", num_cpus=spec.cpus_per_actor,
                            num_gpus=spec.gpus_per_actor or None,
                            compute=ray.data.ActorPoolStrategy(size=spec.actors))
        ds = ds.map_batches(_write_stage, fn_kwargs=dict(spec=spec), batch_format="pandas", num_cpus=spec.read_cpus,
                            batch_size=spec.shard_size if spec.output_archive else 4)
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            yield from batch.to_dict("records")


def main(argv: list[str] | None = None, **overrides) -> int:
    """`perceptual batch stylize|upscale`: 0 all done, 1 some inputs failed, 2 bad arguments."""
    engine = overrides.pop("engine", None) or "ray"
    spec = BatchSpec.from_params(**overrides)
    summary = run_batch(spec, engine=engine)
    print(summary.text(), file=sys.stderr)
    if summary.failed:
        print(f"failures listed in {spec.output.rstrip('/')}/{FAILURES}", file=sys.stderr)
    return 1 if summary.failed else 0
