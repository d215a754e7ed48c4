"""Outputs: encode each image and write it under its output key, or a group of them as one tar shard
(``output_archive``), each atomically; and what a run finds already there, so a rerun skips it (resumable,
idempotent) and clears what a killed run left half-written."""
from __future__ import annotations

import io
import re
import secrets
import tarfile
import time
from pathlib import PurePosixPath

from .. import storage
from .files import PARTIAL, exists, filesystem, put_atomic
from .keys import output_key
from .rows import image, result
from .settings import BatchSpec


def encode(row: dict, spec: BatchSpec) -> tuple[str, bytes | None, str]:
    """(output key, file bytes or None, error)."""
    import numpy as np

    from perceptual_core.io import encode_image

    okey = output_key(row["key"], spec.fmt)
    if row["status"] != "ok":
        return okey, None, row["error"]
    img = image(row)
    alpha = img.alpha
    if alpha is not None and PurePosixPath(okey).suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        alpha = None  # the user chose a format without alpha
    try:
        return okey, encode_image(okey, np.ascontiguousarray(img.pixels), alpha=alpha, bit_depth=img.bit_depth,
                                  icc_profile=img.icc_profile, exif=img.exif), ""
    except (ValueError, OSError) as e:
        return okey, None, f"cannot encode: {e}"


def write_rows(rows: list[dict], spec: BatchSpec) -> list[dict]:
    """Encode and write a group of rows (one tar shard with output_archive); -> result rows."""
    fs, root = filesystem(spec.output, spec.endpoint)
    results, files = [], []
    for r in rows:
        okey, data, err = encode(r, spec)
        if data is None:
            results.append(result(r, "skipped" if r["status"] == "skipped" else "failed", err))
            continue
        if spec.output_archive:
            files.append((okey, data))
        else:
            try:
                put_atomic(fs, f"{root}/{okey}", data)
            except OSError as e:
                results.append(result(r, "failed", f"cannot write {okey}: {e}"))
                continue
        results.append(result(r, "done", in_mp=float(r["in_mp"]), t=float(r["t"])))
    if files:
        put_atomic(fs, f"{root}/part-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}.tar", _tar_bytes(files))
    return results


def _tar_bytes(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        now = int(time.time())
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), now, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def prepare_output(spec: BatchSpec) -> tuple[set[str], list[str]]:
    """Remove temp files of a killed run; -> (output keys already present, tar shards present)."""
    fs, root = filesystem(spec.output, spec.endpoint)
    present, shards = set(), []
    for rel in storage.list_files(fs, root, include_hidden=True) if exists(fs, root) else []:
        if PARTIAL.search(rel):
            fs.delete_file(f"{root}/{rel}")
        elif spec.output_archive and re.fullmatch(r"part-[^/]+\.tar", rel):
            present.update(_shard_keys(fs, f"{root}/{rel}"))
            shards.append(rel)
        elif not spec.output_archive and not storage.is_hidden(rel):
            present.add(rel)
    return present, shards


def _shard_keys(fs, path: str) -> list[str]:
    with fs.open_input_file(path) as f, tarfile.open(fileobj=f, mode="r:") as tf:
        return [m.name for m in tf.getmembers() if m.isfile()]
