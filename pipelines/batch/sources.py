"""Inputs: list a folder, file, bucket prefix or archive, then read each image's bytes (archives streamed,
never unpacked to disk). An unreadable, corrupt, truncated or oversized input is a failed row, never a
dead job: it becomes a line of _failures.csv."""
from __future__ import annotations

import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator

from .. import storage
from .files import filesystem
from .keys import archive_kind, archive_stem, output_key, safe_key, skip_member
from .rows import decode, row
from .settings import BatchSpec

MAX_MEMBER_BYTES = 1 << 30  # an archive member or object bigger than 1 GiB is refused, not read

# What reading a damaged archive raises: tarfile/zipfile errors, truncation, bad deflate data
# (zlib.error), malformed headers (struct.error), and pyarrow's ArrowInvalid (a ValueError) when
# zipfile seeks before the start of a file too short to hold its directory.
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, struct.error)


def plan(spec: BatchSpec) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Sources to read: rows {path, kind: file|tar|zip, key (file) or prefix (archive)}, and the
    (key, source, error) of names refused up front. FileNotFoundError names the input."""
    import pyarrow.fs as pafs

    fs, root = filesystem(spec.input, spec.endpoint)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"--input {spec.input}: not found")
    if info.type == pafs.FileType.File:
        kind = archive_kind(root)
        return [{"path": root, "kind": kind or "file", "key": "" if kind else root.rsplit("/", 1)[-1]}], []
    items, refused = [], []
    for rel in storage.list_files(fs, root, include_hidden=True):
        if skip_member(rel):
            continue
        kind = archive_kind(rel)
        try:
            key = safe_key(archive_stem(rel) if kind else rel)
        except ValueError as e:
            refused.append((rel, f"{spec.input.rstrip('/')}/{rel}", str(e)))
            continue
        items.append({"path": f"{root}/{rel}", "kind": kind or "file", "key": f"{key}/" if kind else key})
    return items, refused


def read_rows(item: dict, spec: BatchSpec, done) -> Iterator[dict]:
    """The read/decode step for one source row: a decoded row per image, or a skipped row for an
    output already there (``done``: output keys; empty with overwrite), or a failed row."""
    fs, root = filesystem(spec.input, spec.endpoint)
    for key, src, data, err in _members(fs, item, _display(spec, root, item["path"])):
        if not err and output_key(key, spec.fmt) in done:
            yield row(key=key, source=src, status="skipped")
        else:
            yield decode(key, src, data, err, spec)


def _display(spec: BatchSpec, root: str, path: str) -> str:
    """The source as the user named it (their URI or folder + the relative part)."""
    rel = path[len(root):].lstrip("/")
    return f"{spec.input.rstrip('/')}/{rel}" if rel else spec.input


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
                    if m.isdir() or skip_member(m.name):
                        continue
                    src = f"{display}:{m.name}"
                    yield from _member(prefix=key, name=m.name, src=src, size=m.size,
                                       read=(lambda m=m: tf.extractfile(m).read()) if m.isfile() else None)
        else:
            with fs.open_input_file(path) as raw, zipfile.ZipFile(raw) as zf:
                for info in zf.infolist():
                    if info.is_dir() or skip_member(info.filename):
                        continue
                    yield from _member(prefix=key, name=info.filename, src=f"{display}:{info.filename}",
                                       size=info.file_size, read=lambda info=info: zf.read(info))
    except _ARCHIVE_ERRORS as e:
        yield key or display, display, None, f"archive unreadable or corrupt ({type(e).__name__}: {e})"


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
