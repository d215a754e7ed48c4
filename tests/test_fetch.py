"""`perceptual data fetch` against a real HTTP server on 127.0.0.1 serving a copy of part of the data
folder in the mirror layout (PERCEPTUAL_DATA_MIRROR): byte-identical fetch, refusal by hash, resume of a
partial file, a missing file, no server at all; and the committed manifest against MANIFEST.sha256."""
from __future__ import annotations

import csv
import hashlib
import http.server
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from conftest import reply_with_range
from pipelines import cli, data_fetch
from pipelines.data_fetch import FetchError, fetch

ROOT = Path(__file__).resolve().parents[1]
SET5 = [f"Set5/{d}/{n}.png" for d in ("HR", "LR_bicubic_x4") for n in ("baby", "bird", "butterfly", "head", "woman")]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Files under ``root``; honours ``Range: bytes=N-``; a path in ``drop_once`` gets its full
    Content-Length announced but only half of the body, then the connection is closed (once)."""
    root: Path
    log: list  # (relative path, Range header or None) per request
    drop_once: set

    def do_GET(self):
        rel = urllib.parse.unquote(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        self.log.append((rel, rng))
        f = self.root / rel
        if not f.is_file():
            self.send_error(404)
            return
        body = f.read_bytes()
        start = reply_with_range(self, body, rng)
        if rel in self.drop_once:
            self.drop_once.discard(rel)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, data_dir):
    """A served copy of Set5 -> {"url", "root" (the copy), "log", "drop_once"}."""
    root = tmp_path / "mirror"
    for rel in SET5:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / rel, root / rel)
    handler = type("H", (_Handler,), {"root": root, "log": [], "drop_once": set()})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield {"url": f"http://127.0.0.1:{srv.server_port}", "root": root, "log": handler.log,
           "drop_once": handler.drop_once}
    srv.shutdown()
    srv.server_close()
    t.join()


def _leftovers(dest: Path) -> list[str]:
    """Anything in the data folder that is not a finished file: .part files, pooch temporaries."""
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")
                  if p.is_file() and (p.name.endswith(".part") or p.name.startswith(("tmp", "."))))


def test_fetch_set5_byte_identical_and_idempotent(tmp_path, mirror, data_dir, monkeypatch, capsys):
    dest = tmp_path / "data"
    monkeypatch.setenv("PERCEPTUAL_DATA_DIR", str(dest))
    monkeypatch.setenv("PERCEPTUAL_DATA_MIRROR", mirror["url"])
    assert cli.main(["data", "fetch", "set5"]) == 0
    out, err = capsys.readouterr()
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == sorted(SET5)
    assert all((dest / rel).read_bytes() == (data_dir / rel).read_bytes() for rel in SET5)
    assert "10 downloaded" in out and str(dest) in out
    assert "file 10/10" in err  # progress, on stderr
    assert sorted(rel for rel, _ in mirror["log"]) == sorted(SET5)

    # Again: every file is there with the right hash, so nothing is requested.
    assert fetch(["set5"], dest, mirror=mirror["url"], progress=False) == {
        "downloaded": 0, "present": 10, "derived": 0, "bytes": 0, "unavailable": []}
    assert len(mirror["log"]) == 10
    # A local file with the wrong bytes is downloaded again.
    (dest / SET5[0]).write_bytes(b"not the image")
    assert fetch(["set5"], dest, mirror=mirror["url"], progress=False)["downloaded"] == 1
    assert (dest / SET5[0]).read_bytes() == (data_dir / SET5[0]).read_bytes()


def test_a_corrupted_file_is_refused_by_hash(tmp_path, mirror):
    bad = "Set5/HR/bird.png"
    served = mirror["root"] / bad
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.write_bytes(bytes(data))
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as e:
        fetch(["set5"], dest, mirror=mirror["url"], retries=0, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and bad in msg and "refused" in msg and hashlib.sha256(data).hexdigest() in msg
    assert not (dest / bad).exists() and _leftovers(dest) == []
    assert (dest / "Set5/HR/baby.png").is_file()  # fetched before it: kept


def test_a_partial_file_resumes_with_range(tmp_path, mirror, data_dir):
    rel = "Set5/HR/baby.png"
    full = (data_dir / rel).read_bytes()
    dest = tmp_path / "data"
    (dest / rel).parent.mkdir(parents=True)
    (dest / f"{rel}.part").write_bytes(full[:len(full) // 2])
    assert fetch(["set5"], dest, mirror=mirror["url"], retries=0, progress=False)["downloaded"] == 10
    assert [r for p, r in mirror["log"] if p == rel] == [f"bytes={len(full) // 2}-"]
    assert (dest / rel).read_bytes() == full and _leftovers(dest) == []


def test_a_dropped_connection_is_retried_from_where_it_stopped(tmp_path, mirror, data_dir):
    rel = "Set5/HR/butterfly.png"
    full = (data_dir / rel).read_bytes()
    mirror["drop_once"].add(rel)
    dest = tmp_path / "data"
    # Without a retry: one line naming the file, and the half that arrived kept for the next run.
    with pytest.raises(FetchError, match=f"cannot fetch {re.escape(rel)} .*interrupted at {len(full) // 2} of "
                                         f"{len(full)} bytes"):
        fetch(["set5"], dest, mirror=mirror["url"], retries=0, progress=False)
    assert (dest / f"{rel}.part").read_bytes() == full[:len(full) // 2]
    # Dropped again, then pooch's retry resumes the part.
    mirror["drop_once"].add(rel)
    fetch(["set5"], dest, mirror=mirror["url"], retries=1, progress=False)
    h = len(full) // 2
    assert [r for p, r in mirror["log"] if p == rel] == [None, f"bytes={h}-", f"bytes={h + (len(full) - h) // 2}-"]
    assert (dest / rel).read_bytes() == full and _leftovers(dest) == []


def test_a_missing_file_is_named(tmp_path, mirror):
    gone = "Set5/LR_bicubic_x4/head.png"
    (mirror["root"] / gone).unlink()
    with pytest.raises(FetchError) as e:
        fetch(["set5"], tmp_path / "data", mirror=mirror["url"], retries=2, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and f"cannot fetch {gone} from {mirror['url']}/{gone}: HTTP 404" in msg
    assert [p for p, _ in mirror["log"]].count(gone) == 1  # a 404 is not retried


def test_offline_is_one_line_naming_the_file_and_the_data_dir(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "data"
    monkeypatch.setenv("PERCEPTUAL_DATA_DIR", str(dest))
    assert cli.main(["data", "fetch", "set5", "--retries", "0", "--mirror", f"http://127.0.0.1:{port}"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert f"Set5/HR/baby.png from http://127.0.0.1:{port}/Set5/HR/baby.png" in errors[0]
    assert f"PERCEPTUAL_DATA_DIR={dest}" in errors[0] and "Connection refused" in errors[0]


def test_an_unwritable_data_folder_and_an_unknown_set_are_one_line_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FetchError, match=f"cannot write to the data folder {re.escape(str(blocker / 'd'))}"):
        fetch(["set5"], blocker / "d", progress=False)
    with pytest.raises(FetchError, match="unknown data set set6; choose from set5, set14"):
        fetch(["set6"], tmp_path / "d", progress=False)


def test_manifest_covers_every_file_of_the_data_folder(data_dir):
    entries = {e.path: e for e in data_fetch.load_manifest()}
    recorded = {}
    for line in (data_dir / "MANIFEST.sha256").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        recorded[rel.removeprefix("./")] = digest
    assert set(entries) == set(recorded)
    assert all(entries[p].sha256 == recorded[p] and entries[p].bytes == (data_dir / p).stat().st_size
               for p in recorded)
    raw = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+$")
    fetchable = [e for e in entries.values() if e.how == "download"]
    assert all(raw.match(e.url) for e in fetchable)
    assert len({e.url for e in fetchable}) == len(fetchable)  # no two files from one source
    assert {p: e.how for p, e in entries.items() if e.how != "download"} == {
        "BSD100/name_map.csv": "derive", "coco128_train2017/image_info.csv": "unavailable"}
    assert {g: sum(e.group == g for e in entries.values()) for g in data_fetch.GROUPS} == {
        "set5": 10, "set14": 28, "bsd100": 201, "srcnn": 8, "styles": 17, "coco128": 129}
    # The renames SOURCES.md records, e.g. SelfExSR img_003 is Set5's butterfly.
    assert entries["Set5/LR_bicubic_x4/butterfly.png"].url.endswith("/data/Set5/image_SRF_4/img_003_SRF_4_LR.png")


def test_manifest_is_what_the_build_script_makes(tmp_path, data_dir):
    out = tmp_path / "manifest.csv"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_data_manifest.py"), "--data", str(data_dir),
                    "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == data_fetch.MANIFEST.read_bytes()


def test_derived_name_map_matches_the_data_folder(data_dir):
    entries = data_fetch.load_manifest()
    (e,) = [e for e in entries if e.path == "BSD100/name_map.csv"]
    made = data_fetch.DERIVED[e.path](data_dir, entries)
    assert made == (data_dir / e.path).read_bytes()
    with open(data_dir / e.path, newline="") as f:
        assert sum(r["verified_by_pixel_match_with_CBSD68_original"] == "yes" for r in csv.DictReader(f)) == 68
