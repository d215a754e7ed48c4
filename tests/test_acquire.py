"""The `acquire` stage on real sources: wheel photos, a local folder, a real (moto) S3 server and a
real HTTP server serving a COCO-style zip (interrupted transfer, resume, bad md5, offline reuse)."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.server
import importlib.util
import io
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import reply_with_range
from pipelines import storage
from pipelines.acquire import acquire, main
from pipelines.settings import AcquireSettings, build

BUILTIN = ["skimage:astronaut.png", "skimage:chelsea.png", "skimage:coffee.png", "skimage:hubble_deep_field.jpg",
           "skimage:ihc.png", "skimage:motorcycle_left.png", "skimage:retina.jpg", "skimage:rocket.jpg",
           "matplotlib:grace_hopper.jpg"]


def _cfg(source, **kw) -> AcquireSettings:
    return build(AcquireSettings, {"source": source, "out_dir": "unused", "n_images": None, "seed": 0,
                                   "builtin": BUILTIN, "s3_endpoint": None, **kw}, "test: acquire")


def _rows(out: Path) -> list[dict]:
    with open(out / "sources.csv", newline="") as f:
        return list(csv.DictReader(f))


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _no_leftovers(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.tmp-*")), "temp folder left behind"


@pytest.fixture(scope="module")
def coco_images(data_dir) -> list[Path]:
    imgs = sorted((data_dir / "coco128_train2017" / "images").glob("*.jpg"))
    assert len(imgs) == 128
    return imgs


# ---------------------------------------------------------------------------------- builtin

def test_a_list_of_sources_is_pooled(tmp_path, coco_images):
    """The released models' training set: the wheel photos plus a folder, in one acquired set."""
    folder = coco_images[0].parent
    res = acquire(_cfg(["builtin", str(folder)]), tmp_path / "a")
    assert res["n_files"] == 9 + 128
    origins = {r["origin"].split(":")[0] if ":" in r["origin"] else "folder" for r in _rows(tmp_path / "a")}
    assert origins == {"skimage", "matplotlib", "folder"}
    (tmp_path / "dup").mkdir()
    (tmp_path / "dup" / "skimage_astronaut.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="both map to images/skimage_astronaut.png"):
        acquire(_cfg(["builtin", str(tmp_path / "dup")]), tmp_path / "b")
    _no_leftovers(tmp_path / "b")
    with pytest.raises(ValueError, match="lists a source twice"):
        acquire(_cfg(["builtin", "builtin"]), tmp_path / "c")


def test_builtin_photos_from_the_wheels(tmp_path):
    res = acquire(_cfg("builtin"), tmp_path / "a")
    out = tmp_path / "a"
    rows = _rows(out)
    assert res["n_files"] == 9 and [r["file"] for r in rows] == sorted(r["file"] for r in rows)
    assert list(rows[0]) == ["file", "origin", "bytes", "sha256"]
    wheel = {"skimage": Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data",
             "matplotlib": Path(importlib.util.find_spec("matplotlib").submodule_search_locations[0])
             / "mpl-data" / "sample_data"}
    by_origin = {r["origin"]: r for r in rows}
    assert sorted(by_origin) == sorted(BUILTIN)
    for spec in BUILTIN:
        pkg, name = spec.split(":")
        src = (wheel[pkg] / name).read_bytes()
        r = by_origin[spec]
        assert r["file"] == f"{pkg}_{name}"
        assert (out / "images" / r["file"]).read_bytes() == src  # not re-encoded
        assert int(r["bytes"]) == len(src) and r["sha256"] == hashlib.sha256(src).hexdigest()
    assert res["bytes"] == sum(int(r["bytes"]) for r in rows)
    # Same params, another folder: byte-identical.
    acquire(_cfg("builtin"), tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    # Rerun into an existing folder replaces it (no stale files survive).
    (out / "images" / "stale.jpg").write_bytes(b"x")
    acquire(_cfg("builtin", n_images=3, seed=1), out)
    assert len(list((out / "images").iterdir())) == 3 and len(_rows(out)) == 3


def test_builtin_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="skimage:nope.png"):
        acquire(_cfg("builtin", builtin=["skimage:nope.png"]), tmp_path / "o")
    with pytest.raises(ValueError, match="PACKAGE:FILE"):
        acquire(_cfg("builtin", builtin=["numpy:x.png"]), tmp_path / "o")
    _no_leftovers(tmp_path / "o")


# ------------------------------------------------------------------------------ local folder

def test_local_folder_sampling_and_errors(tmp_path, coco_images):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden_dir").mkdir()
    for i, p in enumerate(coco_images[:30]):
        (src / ("sub" if i % 3 == 0 else "") / p.name).write_bytes(p.read_bytes())
    (src / "notes.txt").write_text("not an image: copied, prepare rejects it")
    (src / ".DS_Store").write_bytes(b"hidden")
    (src / ".hidden_dir" / "x.jpg").write_bytes(coco_images[0].read_bytes())

    everything = acquire(_cfg(str(src)), tmp_path / "all")
    names = [r["file"] for r in everything["rows"]]
    assert len(names) == 31 and "notes.txt" in names and "sub/" + coco_images[0].name in names
    assert not any(n.startswith(".") or "/." in n for n in names)

    r1 = acquire(_cfg(str(src), n_images=10, seed=7), tmp_path / "s1")
    r2 = acquire(_cfg(str(src), n_images=10, seed=7), tmp_path / "s2")
    r3 = acquire(_cfg(str(src), n_images=10, seed=8), tmp_path / "s3")
    assert r1["n_files"] == 10 and _tree(tmp_path / "s1") == _tree(tmp_path / "s2")
    assert [r["file"] for r in r1["rows"]] != [r["file"] for r in r3["rows"]]
    for r in r1["rows"]:
        assert (tmp_path / "s1" / "images" / r["file"]).read_bytes() == (src / r["file"]).read_bytes()
        assert r["origin"] == f"{src}/{r['file']}"

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        acquire(_cfg(str(tmp_path / "missing")), tmp_path / "o")
    _no_leftovers(tmp_path / "o")
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    with pytest.raises(ValueError, match="no files found"):
        acquire(_cfg(str(tmp_path / "empty")), tmp_path / "o")
    _no_leftovers(tmp_path / "o")
    with pytest.raises(ValueError, match="only 31 files"):
        acquire(_cfg(str(src), n_images=100), tmp_path / "o")
    _no_leftovers(tmp_path / "o")
    # out_dir is replaced wholesale, so folders acquire did not make are refused and left intact.
    with pytest.raises(ValueError, match="was not made by acquire"):
        acquire(_cfg(str(src)), tmp_path)
    assert (src / "notes.txt").is_file()
    with pytest.raises(ValueError, match="inside the source folder"):
        acquire(_cfg(str(src)), src / "acquired")
    assert not (src / "acquired").exists()
    # A failed run also removes an older set, which would not match the new params.
    with pytest.raises(FileNotFoundError):
        acquire(_cfg(str(tmp_path / "missing")), tmp_path / "s1")
    _no_leftovers(tmp_path / "s1")


def test_main_reads_params_and_reports_errors(tmp_path, monkeypatch, capsys):
    from pipelines import config

    params = tmp_path / "params.yaml"
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(params))
    params.write_text(f"acquire:\n  source: builtin\n  out_dir: {tmp_path / 'out'}\n  n_images: 2\n  seed: 0\n"
                      f"  builtin: {BUILTIN}\n")
    config._load.cache_clear()
    try:
        assert main([]) == 0
        assert "acquired 2 files" in capsys.readouterr().out and len(_rows(tmp_path / "out")) == 2
        params.write_text(f"acquire:\n  source: {tmp_path / 'nowhere'}\n  out_dir: {tmp_path / 'out'}\n")
        config._load.cache_clear()
        assert main([]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(tmp_path / "nowhere") in err
        _no_leftovers(tmp_path / "out")
    finally:
        config._load.cache_clear()


# ------------------------------------------------------------------------------------------ S3

@pytest.fixture(scope="module")
def moto_s3(coco_images, s3_endpoint):
    """The session's real S3 protocol server (moto, perceptual_services/) with a photos bucket."""
    import boto3

    url = s3_endpoint

    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="photos")
    files = {}
    for i, p in enumerate(coco_images[40:45]):
        key = f"{'sub/' if i < 2 else ''}{p.name}"
        s3.put_object(Bucket="photos", Key=f"train/{key}", Body=p.read_bytes())
        files[key] = p.read_bytes()
    s3.put_object(Bucket="photos", Key="train/.keep", Body=b"")
    s3.put_object(Bucket="photos", Key="other/x.jpg", Body=b"outside the prefix")
    return url, files


@pytest.fixture
def aws_env(monkeypatch):
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return monkeypatch


def _check_s3_out(out: Path, files: dict[str, bytes]) -> None:
    assert _tree(out / "images") == files
    assert {r["file"]: r["origin"] for r in _rows(out)} == {k: f"s3://photos/train/{k}" for k in files}


def test_s3_with_endpoint_param(tmp_path, moto_s3, aws_env):
    url, files = moto_s3
    res = acquire(_cfg("s3://photos/train/", s3_endpoint=url), tmp_path / "o")
    assert res["n_files"] == 5
    _check_s3_out(tmp_path / "o", files)
    with pytest.raises(FileNotFoundError, match="s3://photos/nothing"):
        acquire(_cfg("s3://photos/nothing", s3_endpoint=url), tmp_path / "x")
    with pytest.raises(ValueError, match="nosuch://a/b"):
        acquire(_cfg("nosuch://a/b"), tmp_path / "x")
    _no_leftovers(tmp_path / "x")


def test_s3_with_aws_endpoint_url_env(tmp_path, moto_s3, aws_env):
    import pyarrow.fs as pafs

    url, files = moto_s3
    aws_env.setenv("AWS_ENDPOINT_URL", url)
    acquire(_cfg("s3://photos/train"), tmp_path / "o")  # s3_endpoint: null -> the env variable
    _check_s3_out(tmp_path / "o", files)
    # pyarrow 25's from_uri honours the variable on its own too (the S3FileSystem constructor does not).
    fs, path = pafs.FileSystem.from_uri("s3://photos/train")
    assert storage.list_files(fs, path) == sorted(files)


# ------------------------------------------------------------------------------- coco over HTTP

class _ZipHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    log: list = []  # (method, Range header) per request
    truncate_next = False  # send full headers but half the body, then hang up
    ignore_range = False

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).log.append(("GET", rng))
        body = self.body
        start = reply_with_range(self, body, None if self.ignore_range else rng)
        if type(self).truncate_next:
            type(self).truncate_next = False
            self.wfile.write(body[start:len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def coco_zip(coco_images):
    buf = io.BytesIO()
    members = {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("annotations/annotations.txt", "not an image: must be ignored")
        zf.writestr("train2014/", "")
        for p in coco_images[60:72]:
            zf.writestr(f"train2014/{p.name}", p.read_bytes())
            members[p.name] = p.read_bytes()
    data = buf.getvalue()
    return data, members


@pytest.fixture
def http_server(coco_zip):
    _ZipHandler.body, _ZipHandler.log = coco_zip[0], []
    _ZipHandler.truncate_next = _ZipHandler.ignore_range = False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ZipHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    state = {"url": f"http://127.0.0.1:{srv.server_port}/zips/train2014.zip", "stop": None}

    def stop():
        srv.shutdown()
        srv.server_close()
        t.join()
    state["stop"] = stop
    yield state
    if t.is_alive():
        stop()


def _coco_cfg(url, data, dl, md5=None, n=5):
    return _cfg("coco", n_images=n, seed=3, coco={"url": url, "size": len(data), "download_dir": str(dl),
                                                     "md5": md5 or hashlib.md5(data).hexdigest()})


def test_coco_interrupted_download_resumes_then_reuses_offline(tmp_path, http_server, coco_zip):
    data, members = coco_zip
    dl, url = tmp_path / "downloads", http_server["url"]
    cfg = _coco_cfg(url, data, dl)

    _ZipHandler.truncate_next = True
    with pytest.raises(OSError, match=r"interrupted at \d+ of \d+ bytes.*rerun to resume"):
        acquire(cfg, tmp_path / "o")
    part = dl / "train2014.zip.part"
    assert part.read_bytes() == data[:len(data) // 2]
    assert not (dl / "train2014.zip").exists()
    _no_leftovers(tmp_path / "o")

    res = acquire(cfg, tmp_path / "o")
    assert _ZipHandler.log == [("GET", None), ("GET", f"bytes={len(data) // 2}-")]
    assert (dl / "train2014.zip").read_bytes() == data and not part.exists()
    assert res["n_files"] == 5
    got = _tree(tmp_path / "o" / "images")
    assert len(got) == 5 and all(members[k] == v for k, v in got.items())  # member bytes, untouched
    assert [r["origin"] for r in _rows(tmp_path / "o")] == [f"train2014.zip:train2014/{k}" for k in sorted(got)]

    # The verified archive is reused with the server gone; same sample, same bytes.
    http_server["stop"]()
    acquire(cfg, tmp_path / "o2")
    assert _tree(tmp_path / "o2") == _tree(tmp_path / "o") and len(_ZipHandler.log) == 2
    # All image members (the .txt and the folder entry are not images).
    assert acquire(dataclasses.replace(cfg, n_images=None), tmp_path / "o3")["n_files"] == 12


def test_coco_wrong_md5_deletes_the_download(tmp_path, http_server, coco_zip):
    data, _ = coco_zip
    dl = tmp_path / "downloads"
    with pytest.raises(ValueError, match=f"{http_server['url']}.*md5 expected 0+, got {hashlib.md5(data).hexdigest()}"):
        acquire(_coco_cfg(http_server["url"], data, dl, md5="0" * 32), tmp_path / "o")
    assert list(dl.iterdir()) == []
    _no_leftovers(tmp_path / "o")
    # A wrong size is refused from the announced Content-Length, before the body is fetched.
    bad_size = _coco_cfg(http_server["url"], data, dl)
    bad_size = dataclasses.replace(bad_size, coco=dataclasses.replace(bad_size.coco, size=len(data) + 1))
    with pytest.raises(ValueError, match=f"size expected {len(data) + 1}, got {len(data)}"):
        acquire(bad_size, tmp_path / "o")
    assert list(dl.iterdir()) == []


def test_coco_server_ignoring_range_restarts_from_zero(tmp_path, http_server, coco_zip):
    data, _ = coco_zip
    dl = tmp_path / "downloads"
    dl.mkdir()
    garbage = b"garbage from an older, different file"
    (dl / "train2014.zip.part").write_bytes(garbage)
    _ZipHandler.ignore_range = True
    assert acquire(_coco_cfg(http_server["url"], data, dl, n=2), tmp_path / "o")["n_files"] == 2
    assert _ZipHandler.log == [("GET", f"bytes={len(garbage)}-")]
    assert (dl / "train2014.zip").read_bytes() == data
