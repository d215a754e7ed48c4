"""DVC stage `acquire`: make a local image set from the source in params section `acquire`.

Sources: ``builtin`` (real photos shipped inside the scikit-image / matplotlib wheels, so a fresh
machine needs no download), ``coco`` (the official MS-COCO zip, downloaded with resume and
verified), a local folder, or a pyarrow URI (s3://bucket/prefix, gs://..., file://...); or a list
of these, whose files are pooled (e.g. ``[builtin, ../shared/data/coco128_train2017/images]``, the
released models' training set); two sources giving the same file name are an error.

Output: ``<out_dir>/images/<name>`` holding the source bytes unchanged (never re-encoded) and
``<out_dir>/sources.csv`` (file,origin,bytes,sha256; ``file`` relative to images/, sorted).
Identical params and inputs give byte-identical outputs. out_dir is built in a sibling temp folder
and swapped in by rename; after a failure there is no out_dir at all (a stale one from earlier
params is removed too), so no later stage can mistake a partial or outdated set for this one.
Because out_dir is replaced wholesale, an existing non-empty folder without sources.csv (not made
by acquire: the project root, a data folder) is refused up front and left alone.
Non-images from a folder/URI source are copied as well: the prepare stage rejects them with a reason.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.util
import io
import os
import random
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from . import config, storage
from .log import get, setup
from .settings import AcquireSettings, plain

log = get(__name__)
__all__ = ["acquire", "builtin_path", "download_verified", "main"]

CHUNK = 1 << 20
ZIP_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Where each package keeps its sample files, relative to the package folder. scikit-learn (a
# requirement of mlflow) ships two colour photos, held out for the embedded benchmark (params benchmark).
BUILTIN_DIRS = {"skimage": "data", "matplotlib": "mpl-data/sample_data", "sklearn": "datasets/images"}


@dataclass(frozen=True)
class _Item:
    name: str  # relative "/"-separated name under images/
    origin: str  # what sources.csv records as the item's source
    open: Callable[[], Any]  # -> binary file-like with .read(n), usable as a context manager


# ------------------------------------------------------------------------------------ sources

def builtin_path(spec: str, key: str = "acquire.builtin") -> Path:
    """The file of a builtin photo PACKAGE:FILE inside the installed package; errors name ``key``
    (the params entry that lists it)."""
    pkg, sep, name = str(spec).partition(":")
    if not sep or not name or pkg not in BUILTIN_DIRS:
        raise ValueError(f"{key}: bad entry {spec!r}; expected PACKAGE:FILE with "
                         f"PACKAGE one of {sorted(BUILTIN_DIRS)}")
    # find_spec on a top-level name locates the package without importing it (skimage and
    # matplotlib take seconds to import).
    found = importlib.util.find_spec(pkg)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"{key}: {spec}: package {pkg!r} is not installed")
    path = Path(list(found.submodule_search_locations)[0]) / BUILTIN_DIRS[pkg] / name
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {spec}: no such file in the installed {pkg} "
                                f"package (looked for {path})")
    return path


def _builtin_items(specs: list[str]) -> list[_Item]:
    items = []
    for spec in specs:
        path = builtin_path(spec)
        pkg, _, name = str(spec).partition(":")
        items.append(_Item(f"{pkg}_{name.replace('/', '_')}", str(spec), lambda p=path: open(p, "rb")))
    return items


def _folder_items(source: str, folder: Path) -> list[_Item]:
    if not folder.exists():
        raise FileNotFoundError(f"acquire.source: folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"acquire.source: not a folder: {folder}")
    names = []
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow dir symlinks: no loops
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            p = Path(dirpath) / fn
            # Symlinked files count (DVC may link data in from its cache); dangling links,
            # sockets and fifos do not.
            if not fn.startswith(".") and p.is_file():
                names.append(p.relative_to(folder).as_posix())
    base = source.rstrip("/")
    return [_Item(n, f"{base}/{n}", lambda p=folder / n: open(p, "rb")) for n in sorted(names)]


def _uri_items(source: str, endpoint: str | None) -> list[_Item]:
    fs, root = storage.open_uri(source, endpoint)
    try:
        names = storage.list_files(fs, root)
    except FileNotFoundError:
        raise FileNotFoundError(f"acquire.source: {source}: not found") from None
    except NotADirectoryError:
        raise ValueError(f"acquire.source: {source}: is a file, expected a folder/prefix") from None
    base = source.rstrip("/")
    return [_Item(n, f"{base}/{n}", lambda p=f"{root}/{n}": storage.open_input(fs, p)) for n in names]


def _zip_items(zf: zipfile.ZipFile, archive: str) -> list[_Item]:
    members = sorted(i.filename for i in zf.infolist()
                     if not i.is_dir() and i.filename.lower().endswith(ZIP_IMAGE_SUFFIXES)
                     and not storage.is_hidden(i.filename) and not i.filename.startswith("__MACOSX/"))
    return [_Item(m.rsplit("/", 1)[-1], f"{archive}:{m}", lambda m=m: zf.open(m)) for m in members]


def _sample(items: list[_Item], n, seed, source: str) -> list[_Item]:
    if not items:
        raise ValueError(f"{source}: no files found (hidden files are skipped)")
    items = sorted(items, key=lambda it: it.name)  # sample from, and write, a name-sorted list
    if n is None:
        return items
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"acquire.n_images must be a positive integer or null, got {n!r}")
    if n > len(items):
        raise ValueError(f"acquire.n_images={n} but {source} has only {len(items)} files")
    picked = random.Random(seed).sample(items, n)
    return sorted(picked, key=lambda it: it.name)


# ----------------------------------------------------------------------------------- download

def _stamp(path: Path, md5: str) -> str:
    st = path.stat()
    return f"{md5} {st.st_size} {st.st_mtime_ns}\n"


def download_verified(url: str, size: int, md5: str, download_dir: Path, *, timeout: float = 60) -> Path:
    """Download ``url`` to ``download_dir/<basename>``, resuming a ``.part`` left by an earlier run.

    The transfer is pipelines.download (pooch with a Range-resuming downloader, shared with `perceptual
    data fetch`). The final name only appears after size and md5 match; a mismatching download is
    deleted and a ValueError names the URL, expected and actual values. An interrupted transfer raises
    OSError and keeps the .part for the next run. A verified archive already there is reused offline
    (a stamp file with md5/size/mtime spares re-hashing 13 GB on every run).
    """
    from tqdm import tqdm

    from . import download

    name = Path(urlsplit(url).path).name
    if not name:
        raise ValueError(f"acquire.coco.url: no file name in {url!r}")
    download_dir.mkdir(parents=True, exist_ok=True)
    final, stamp_file = download_dir / name, download_dir / f"{name}.verified"
    size, md5 = int(size), str(md5).lower()

    if final.is_file():
        if final.stat().st_size == size:
            with contextlib.suppress(OSError):
                if stamp_file.read_text() == _stamp(final, md5):
                    return final
        else:  # not worth hashing: pooch would replace it after a fresh download anyway
            log.warning(f"acquire: {final} does not match size/md5 in params; downloading it again")
            final.unlink()
    stamp_file.unlink(missing_ok=True)

    def bad(what: str, expected, actual) -> ValueError:
        return ValueError(f"download of {url} failed verification: {what} expected {expected}, got {actual}; "
                          f"the bad file was deleted, check acquire.coco in params and rerun")

    bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
               dynamic_ncols=True, delay=0.5)
    try:
        download.fetch(url, final, f"md5:{md5}", size=size, timeout=timeout,
                       progress=lambda done, _total: bar.update(done - bar.n))
    except download.SizeMismatch as e:
        raise bad("size", size, f"{e.actual} (announced by the server)") from None
    except download.HashMismatch as e:
        raise bad("md5", md5, e.actual) from None
    finally:
        bar.close()
    stamp_file.write_text(_stamp(final, md5))
    return final


# ------------------------------------------------------------------------------------- output

def _copy(item: _Item, dest: Path) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with item.open() as src, open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _check_names(items: list[_Item]) -> None:
    seen: dict[str, str] = {}
    for it in items:
        parts = it.name.split("/")
        if it.name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"acquire: unsafe file name {it.name!r} from {it.origin}")
        if it.name in seen:
            raise ValueError(f"acquire: {seen[it.name]} and {it.origin} both map to images/{it.name}")
        seen[it.name] = it.origin


def _write_dataset(items: list[_Item], tmp: Path) -> list[dict]:
    rows = []
    for it in items:
        n, digest = _copy(it, tmp / "images" / it.name)
        rows.append({"file": it.name, "origin": it.origin, "bytes": n, "sha256": digest})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["file", "origin", "bytes", "sha256"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (tmp / "sources.csv").write_text(buf.getvalue(), encoding="utf-8")
    return rows


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp folders of killed runs (their pid no longer exists)."""
    for p in out_dir.parent.glob(f"{out_dir.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove(p)
        except OSError:
            pass  # alive (or not ours): leave it


# --------------------------------------------------------------------------------------- entry

def _items(cfg: AcquireSettings, source: str, out_dir: Path, stack: contextlib.ExitStack) -> tuple[list[_Item], str]:
    """-> (all items of the source, how error messages name the source)."""
    if source == "builtin":
        return _builtin_items(list(cfg.builtin)), "acquire.builtin"
    if source == "coco":
        c = cfg.coco
        missing = [k for k in ("url", "size", "md5", "download_dir") if c is None or not getattr(c, k)]
        if missing:
            raise ValueError(f"acquire.coco: missing {', '.join(missing)} in params")
        archive = download_verified(c.url, c.size, c.md5, config.resolve(c.download_dir))
        try:
            zf = stack.enter_context(zipfile.ZipFile(archive))
        except zipfile.BadZipFile as e:
            raise ValueError(f"{archive}: not a readable zip archive ({e})") from e
        return _zip_items(zf, archive.name), f"{archive} (image members)"
    if storage.is_uri(source):
        return _uri_items(source, cfg.s3_endpoint), source
    folder = config.resolve(source)
    return _folder_items(source, folder), str(folder)


def _check_out_dir(out_dir: Path, source: str) -> None:
    """out_dir gets replaced (and removed after a failure): refuse folders acquire did not make."""
    if out_dir.is_dir() and not (out_dir / "sources.csv").is_file() and any(out_dir.iterdir()):
        raise ValueError(f"acquire.out_dir {out_dir} exists and was not made by acquire (no sources.csv); "
                         f"remove it yourself or choose another out_dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"acquire.out_dir {out_dir} exists and is not a folder")
    if source not in ("builtin", "coco") and not storage.is_uri(source):
        folder = config.resolve(source)
        if out_dir == folder or folder in out_dir.parents:
            raise ValueError(f"acquire.out_dir {out_dir} is inside the source folder {folder}")


def acquire(cfg: AcquireSettings, out_dir: Path) -> dict:
    """Build ``out_dir`` from the `acquire` settings ``cfg`` (see the module docstring).

    Returns {"source", "out_dir", "n_files", "bytes", "rows"} (rows as in sources.csv).
    Raises FileNotFoundError / ValueError (naming the path or URI) for a bad source, OSError for
    an interrupted download; after any failure out_dir does not exist.
    """
    out_dir = Path(out_dir).absolute()
    source = plain(cfg.source)  # a name, or a list of them
    sources = source if isinstance(source, list) else [source]
    if not sources or not all(s and isinstance(s, str) for s in sources):
        raise ValueError(f"acquire.source must be builtin, coco, a folder, a URI or a list of them; got {source!r}")
    if len(set(sources)) != len(sources):
        raise ValueError(f"acquire.source lists a source twice: {source!r}")
    for s in sources:
        _check_out_dir(out_dir, s)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    try:
        with contextlib.ExitStack() as stack:
            items, labels = [], []
            for s in sources:
                found, label = _items(cfg, s, out_dir, stack)
                if not found:
                    raise ValueError(f"{label}: no files found (hidden files are skipped)")
                items += found
                labels.append(label)
            items = _sample(items, cfg.n_images, cfg.seed, " + ".join(labels))
            _check_names(items)
            _remove(tmp)
            tmp.mkdir()
            try:
                rows = _write_dataset(items, tmp)
            except zipfile.BadZipFile as e:  # CRC mismatch inside the archive
                raise ValueError(f"acquire: corrupt member in the coco archive ({e})") from e
        # Swap: out_dir is either absent or complete at every moment.
        old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            _remove(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove(tmp)
        with contextlib.suppress(OSError):
            _remove(out_dir)  # an older set would not match these params
        raise
    with contextlib.suppress(OSError):
        _remove(old)
    total = sum(r["bytes"] for r in rows)
    return {"source": source, "out_dir": str(out_dir), "n_files": len(rows), "bytes": total, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipelines.acquire", description=__doc__.split("\n\n")[0],
                            epilog="All settings come from the `acquire` section of params.yaml.").parse_args(argv)
    setup()
    try:
        cfg = config.load(AcquireSettings)
        res = acquire(cfg, config.resolve(cfg.out_dir))
    except KeyError as e:
        log.error(f"error: {e.args[0] if e.args else e}")
        return 2
    except (OSError, ValueError) as e:  # they name the path / URI / URL and what to do
        log.error(f"error: {e}")
        return 2
    print(f"acquired {res['n_files']} files, {res['bytes']:,} bytes from {res['source']} -> {res['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
