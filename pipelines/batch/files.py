"""Where inputs and outputs live: a (pyarrow FileSystem, path) per folder or URI, cached per process, and
atomic writes, so readers and reruns never see a partial output: a local file is written under a temp
name (PARTIAL; a killed run's are removed by the next) and renamed, an object store commits an upload
only once it completes."""
from __future__ import annotations

import re
import secrets
from pathlib import Path

from .. import storage

PARTIAL = re.compile(r"(^|/)\.[^/]+\.[0-9a-f]{8}\.partial$")
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


def exists(fs, path: str) -> bool:
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
