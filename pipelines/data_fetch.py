"""`perceptual data fetch [set5 set14 bsd100 srcnn styles coco128 | all]`: the public data the
project knows, from its original public locations, verified file by file.

Why: the real-data stages and tests read a data folder (config.data_dir()) that a fresh clone does
not have. ``data_manifest.csv`` beside this module (built by scripts/build_data_manifest.py from the
data folder's SOURCES.md and MANIFEST.sha256, committed) gives every file's relative path, GitHub
raw URL at the recorded commit, size and SHA-256. Each file goes through pipelines.download (pooch:
hash-checked, resumed from a ``.part``, retried) to the same relative path, so a fetched folder is
laid out like ../shared/data. A file already there with the right hash is skipped; a file that can
not be fetched, or whose hash is wrong, stops the run with one line naming it, and every file
fetched before stays. Rows marked ``derive`` are rebuilt from fetched files and hash-checked;
rows marked ``unavailable`` have no public source and are named in one line each.

Destination: PERCEPTUAL_DATA_DIR, else the user's data folder (config.fetch_dir()).
PERCEPTUAL_DATA_MIRROR=URL (or --mirror) fetches MIRROR/<relative path> instead, with the same hashes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from . import config
from .log import get

log = get(__name__)
GROUPS = ("set5", "set14", "bsd100", "srcnn", "styles", "coco128")
MANIFEST = Path(__file__).with_name("data_manifest.csv")


class FetchError(Exception):
    """One line for the user: the file, the URL, and what to do."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the data folder, "/"-separated
    group: str
    bytes: int
    sha256: str
    url: str
    how: str  # download | derive | unavailable
    note: str


def load_manifest(path: Path = MANIFEST) -> list[Entry]:
    with open(path, newline="", encoding="utf-8") as f:
        return [Entry(r["path"], r["group"], int(r["bytes"]), r["sha256"], r["url"], r["how"], r["note"])
                for r in csv.DictReader(f)]


def select(entries: list[Entry], names: list[str]) -> list[Entry]:
    bad = [n for n in names if n not in GROUPS and n != "all"]
    if bad:
        raise FetchError(f"unknown data set {', '.join(bad)}; choose from {', '.join(GROUPS)} or all")
    want = set(GROUPS) if not names or "all" in names else set(names)
    return [e for e in entries if e.group in want]


def fetch_command(paths: list[str]) -> str | None:
    """`perceptual data fetch GROUP ...` that brings the data-folder paths ``paths`` (files or folders,
    relative, "/"-separated); None when the manifest knows none of them. The stages print it where a
    data set is missing ("not measured: run ...")."""
    want = [p.strip("/") for p in paths]
    groups = {e.group for e in load_manifest() for p in want if e.path == p or e.path.startswith(p + "/")}
    return "perceptual data fetch " + " ".join(g for g in GROUPS if g in groups) if groups else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bsd100_name_map(dest: Path, entries: list[Entry]) -> bytes:
    """BSD100/name_map.csv as SOURCES.md describes it: SelfExSR's img_NNN is the NNN-th BSDS id in string
    order; HR size from the file; 'yes' where the id was pixel-matched with CBSD68 (all but img_023 and
    img_070..img_100)."""
    from PIL import Image

    ids = sorted(Path(e.path).stem for e in entries if e.path.startswith("BSD100/HR/"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["selfexsr_name", "bsds_id", "hr_width", "hr_height", "verified_by_pixel_match_with_CBSD68_original"])
    for i, bsds_id in enumerate(ids, 1):
        with Image.open(dest / "BSD100" / "HR" / f"{bsds_id}.png") as im:
            width, height = im.size
        w.writerow([f"img_{i:03d}", bsds_id, width, height, "n/a (not in CBSD68)" if i == 23 or i >= 70 else "yes"])
    return buf.getvalue().encode()


DERIVED = {"BSD100/name_map.csv": _bsd100_name_map}


def _derive(e: Entry, dest: Path, entries: list[Entry]) -> bool:
    """-> True if written, False if already there with the right hash."""
    target = dest / e.path
    if target.is_file() and _sha256(target.read_bytes()) == e.sha256:
        return False
    if e.path not in DERIVED:
        raise FetchError(f"{e.path}: the manifest says 'derive' but no rule makes it (pipelines/data_fetch.py DERIVED)")
    data = DERIVED[e.path](dest, entries)
    if _sha256(data) != e.sha256:
        raise FetchError(f"{e.path}: derived file has SHA-256 {_sha256(data)}, the manifest says {e.sha256}; "
                         f"not written")
    from perceptual_core.io import atomic_write

    atomic_write(target, lambda f: f.write(data))
    return True


def url_of(e: Entry, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{quote(e.path)}" if mirror else e.url


def fetch(names: list[str], dest: Path, *, mirror: str | None = None, retries: int = 2, progress: bool = True) -> dict:
    """Fetch the groups ``names`` into ``dest``. -> counts {"downloaded", "present", "derived", "bytes",
    "unavailable": [Entry]}. Raises FetchError (one line) on the first file that cannot be had."""
    from tqdm import tqdm

    from . import download

    if retries < 0:
        raise FetchError(f"--retries must be 0 or more, got {retries}")
    entries = load_manifest()
    chosen = select(entries, names)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = dest / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise FetchError(f"cannot write to the data folder {dest} ({err.strerror or err}); "
                         f"set PERCEPTUAL_DATA_DIR to a writable folder") from None
    todo = [e for e in chosen if e.how == "download"]
    out = {"downloaded": 0, "present": 0, "derived": 0, "bytes": 0,
           "unavailable": [e for e in chosen if e.how == "unavailable"]}
    bar = tqdm(total=sum(e.bytes for e in todo), unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               dynamic_ncols=True, disable=not progress)
    try:
        for i, e in enumerate(todo, 1):
            url, base = url_of(e, mirror), bar.n
            bar.set_description(f"file {i}/{len(todo)}", refresh=False)
            bar.set_postfix_str(e.path, refresh=False)
            try:
                got = download.fetch(url, dest / e.path, f"sha256:{e.sha256}", size=e.bytes, retries=retries,
                                     progress=lambda done, _size, base=base: bar.update(base + done - bar.n))
            except download.HashMismatch as err:
                raise FetchError(f"{e.path}: SHA-256 of the download from {url} is {err.actual}, the manifest "
                                 f"says {e.sha256}: refused and deleted") from None
            except download.SizeMismatch as err:
                raise FetchError(f"{e.path}: {url} is {err.actual} bytes, the manifest says {err.expected}: "
                                 f"refused") from None
            except OSError as err:  # offline, refused, 404, cut short: the .part stays for a rerun
                raise FetchError(f"cannot fetch {e.path} from {url}: {getattr(err, 'reason', None) or err}; "
                                 f"data goes to PERCEPTUAL_DATA_DIR={dest} (files fetched so far are kept; "
                                 f"rerun to resume)") from None
            bar.update(base + e.bytes - bar.n)
            out["downloaded" if got else "present"] += 1
            out["bytes"] += e.bytes if got else 0
    finally:
        bar.close()
    for e in chosen:
        if e.how == "derive":
            out["derived"] += _derive(e, dest, entries)
    return out


def cmd_fetch(a) -> int:
    dest = config.fetch_dir()
    try:
        res = fetch(a.sets, dest, mirror=a.mirror or config.data_mirror(), retries=a.retries)
    except FetchError as e:
        log.error(f"error: {e}")
        return 2
    for e in res["unavailable"]:
        print(f"{e.path}: {e.note}")
    print(f"data fetch: {res['downloaded']} downloaded ({res['bytes'] / 1e6:.1f} MB), {res['present']} already "
          f"present, {res['derived']} derived -> {dest}")
    if dest != config.data_dir():
        print(f"the project reads {config.data_dir()}: export PERCEPTUAL_DATA_DIR={dest} to use this folder")
    return 0


def add_cli(subparsers) -> None:
    """Register `data fetch` on the `perceptual` parser's subparsers (sets fn=)."""
    d = subparsers.add_parser("data", help="the benchmark data folder (Set5, Set14, BSD100, SRCNN, styles, COCO)")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("fetch", help="download the public data sets from their original repositories, "
                                      "SHA-256-checked, into PERCEPTUAL_DATA_DIR (else the user's data folder)")
    s.add_argument("sets", nargs="*", metavar="SET", help=f"{' '.join(GROUPS)} or all (the default)")
    s.add_argument("--retries", type=int, default=2, help="retries per file after a failed transfer")
    s.add_argument("--mirror", help="base URL serving the data folder's layout (else PERCEPTUAL_DATA_MIRROR)")
    s.set_defaults(fn=cmd_fetch)
