"""Batch jobs (`perceptual batch`) on real photos with the session's real Ray head: folders with
planted bad files, archives in and out, a kill and rerun, a real S3 protocol server (moto) and a
Ray Jobs submission. Networks are small and untrained (the job, not the model, is under test)."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_prepare import png_header_only

from perceptual_core.checkpoint import save_checkpoint
from perceptual_core.io import load_image
from perceptual_core.networks import SRNet, TransformNet
from pipelines import batch, cli, output_lock

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def style_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = TransformNet(norm="instance", padding="reflect", upsample="nearest", width=0.25)
    return save_checkpoint(tmp_path_factory.mktemp("m") / "style.pt", net)


@pytest.fixture(scope="module")
def sr_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = SRNet(4, norm="batch", padding="zero", width=0.25).eval()
    return save_checkpoint(tmp_path_factory.mktemp("m") / "sr.pt", net)


def _photos(data_dir: Path, n: int) -> list[Path]:
    return sorted((data_dir / "BSD100" / "HR").glob("*.png"))[:n]


def _make_folder(d: Path, data_dir: Path, shrink: int) -> tuple[Path, set[str], dict[str, str]]:
    """Real photos (some in a sub-folder; 1/shrink of their size), special cases that must work,
    and bad files that must fail."""
    from PIL import ImageCms

    from perceptual_core.io import save_image

    (d / "sub").mkdir(parents=True)
    photos = [Image.open(p).convert("RGB") for p in _photos(data_dir, 8)]
    photos = [im.resize((im.width // shrink, im.height // shrink), Image.BICUBIC) for im in photos]
    names = [p.name for p in _photos(data_dir, 8)]
    good = set()
    for i, (im, name) in enumerate(zip(photos[:5], names)):
        rel = f"{'sub/' if i < 2 else ''}{name}"
        im.save(d / rel)
        good.add(rel)
    im = photos[5]
    Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257).save(d / "gray16.png")
    save_image(d / "rgb16.png", np.asarray(im).astype(np.uint16) * 257)  # 16-bit colour PNG
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(im.size))
    rgba.save(d / "alpha.png")
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90 degrees clockwise on display
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photos[6].save(d / "rotated.jpg", exif=ex, icc_profile=icc, quality=95)
    photos[7].convert("L").save(d / "sub" / "gray.jpg", quality=95)
    good |= {"gray16.png", "rgb16.png", "alpha.png", "rotated.jpg", "sub/gray.jpg"}
    src = (d / names[2]).read_bytes()
    bad = {"zero.png": "empty", "truncated.png": "corrupt", "garbage.jpg": "not a recognised image",
           "notes.txt": "not a recognised image", "bomb.png": "max_pixels"}
    (d / "zero.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(src[: len(src) // 2])
    (d / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (d / "notes.txt").write_text("not an image\n")
    (d / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (d / ".DS_Store").write_bytes(b"\0\0\0")  # hidden: ignored, not a failure
    return d, good, bad


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data_dir):
    """Photos at half size, for stylize."""
    return _make_folder(tmp_path_factory.mktemp("in") / "photos", data_dir, 2)


@pytest.fixture(scope="module")
def lr_folder(tmp_path_factory, data_dir):
    """The same at a quarter size (120x80), for x4 upscaling."""
    return _make_folder(tmp_path_factory.mktemp("in") / "lr", data_dir, 4)


def _failures(out: Path) -> dict[str, str]:
    with open(out / batch.FAILURES, newline="") as f:
        return {r["key"]: r["error"] for r in csv.DictReader(f)}


def _summary(out: Path) -> dict:
    return json.loads((out / batch.SUMMARY).read_text())


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith("_")}


def test_keys_that_escape_are_refused():
    assert batch.safe_key("./a//b/c.jpg") == "a/b/c.jpg"
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:/x.png", "", "a/..", "..\\x.png"):
        with pytest.raises(ValueError, match="escape the output prefix"):
            batch.safe_key(bad)
    assert batch.output_key("a/b.photo.JPG", "png") == "a/b.photo.png"
    assert batch.output_key("a/b.pgm", "same") == "a/b.png"  # pgm cannot be written: png


def test_folder_stylize_on_ray(ray_address, folder, style_ckpt, tmp_path):
    src, good, bad = folder
    out = tmp_path / "out"
    rc = cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", str(src), "--output", str(out),
                   "--cpus-per-actor", "0.5", "--preserve-color", "--pipeline", "fused"])
    assert rc == 1  # some inputs failed
    assert _files(out) == {batch.output_key(k, "png") for k in good}
    fails = _failures(out)
    assert set(fails) == set(bad)
    for k, reason in bad.items():
        assert reason in fails[k], (k, fails[k])
    s = _summary(out)
    assert (s["done"], s["skipped"], s["failed"]) == (len(good), 0, len(bad))
    assert s["megapixels"] > 0 and s["images_per_s"] > 0
    assert 0 < s["startup_seconds"] < s["seconds"]  # the first image is out before the job ends

    rot_in, rot = load_image(src / "rotated.jpg"), load_image(out / "rotated.png")
    assert rot.pixels.shape == rot_in.pixels.shape  # EXIF orientation applied (portrait)
    assert rot.pixels.shape[0] > rot.pixels.shape[1] and rot.icc_profile == rot_in.icc_profile
    assert load_image(out / "rgb16.png").bit_depth == 16
    a_in, a_out = load_image(src / "alpha.png"), load_image(out / "alpha.png")
    assert np.array_equal(a_in.alpha, a_out.alpha)  # alpha carried unchanged
    # --preserve-color: the output keeps the input's chroma (BT.601 B-Y and R-Y)
    x, y = (load_image(p).to_tensor() for p in (src / good_first(good), out / batch.output_key(good_first(good), "png")))
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    cx, cy = x - (x * w).sum(0), y - (y * w).sum(0)
    inside = ((y > 0.02) & (y < 0.98)).all(0)  # clamping changes chroma at the extremes only
    assert (cx - cy).abs()[:, inside].max() < 2.5 / 255
    assert (x - y).abs().mean() > 0.02  # but it is stylized

    # a rerun skips everything done, and still reports the bad inputs
    rc = cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", str(src), "--output", str(out),
                   "--cpus-per-actor", "0.5", "--preserve-color"])
    assert rc == 1
    s = _summary(out)
    assert (s["done"], s["skipped"], s["failed"]) == (0, len(good), len(bad))


def good_first(good):
    return sorted(k for k in good if k.endswith(".png") and "16" not in k and "alpha" not in k)[0]


def test_upscale_keeps_gray_alpha_and_depth(ray_address, lr_folder, sr_ckpt, tmp_path):
    src, good, _ = lr_folder
    out = tmp_path / "out"
    rc = cli.main(["batch", "upscale", "--model", str(sr_ckpt), "--scale", "4", "--input", str(src),
                   "--output", str(out), "--cpus-per-actor", "0.5", "--format", "same"])
    assert rc == 1
    assert _files(out) == {batch.output_key(k, "same") for k in good}
    g_in, g = load_image(src / "sub/gray.jpg", keep_gray=True), load_image(out / "sub/gray.jpg", keep_gray=True)
    assert g.pixels.shape == (4 * g_in.pixels.shape[0], 4 * g_in.pixels.shape[1], 1)  # grayscale stays grayscale
    g16 = load_image(out / "gray16.png", keep_gray=True)
    assert g16.is_gray and g16.bit_depth == 16
    a = load_image(out / "alpha.png")
    assert a.alpha is not None and a.alpha.shape == a.pixels.shape[:2]
    # the bicubic-upscaled gradient alpha keeps its range
    assert a.alpha.min() < 20 and a.alpha.max() > 235
    # wrong scale is refused with the parameter named, before any work
    assert cli.main(["batch", "upscale", "--model", str(sr_ckpt), "--scale", "8", "--input", str(src),
                     "--output", str(tmp_path / "o8"), "--no-ray"]) == 2
    assert not (tmp_path / "o8").exists()


def test_wrong_model_and_missing_input_are_usage_errors(style_ckpt, sr_ckpt, tmp_path, capsys):
    assert cli.main(["batch", "upscale", "--model", str(style_ckpt), "--input", str(tmp_path),
                     "--output", str(tmp_path / "o")]) == 2
    assert "cannot upscale" in capsys.readouterr().err
    assert cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", str(tmp_path / "nope"),
                     "--output", str(tmp_path / "o")]) == 2
    assert "--input" in capsys.readouterr().err
    assert cli.main(["batch", "stylize", "--model", str(tmp_path / "none.pt"), "--input", str(tmp_path),
                     "--output", str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err


def _archives(folder_src: Path, good: set[str], dst: Path) -> dict[str, set[str]]:
    """A .tar.gz and a .zip of the same photos, each with an entry that tries to escape and, in the
    tar, a symlink; -> {archive: expected keys}."""
    dst.mkdir(parents=True)
    names = sorted(k for k in good if k.endswith(".png"))[:3]
    with tarfile.open(dst / "set-a.tar.gz", "w:gz") as tf:
        for n in names:
            tf.add(folder_src / n, arcname=f"pics/{n}")
        ti = tarfile.TarInfo("../escape.png")
        data = (folder_src / names[0]).read_bytes()
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("pics/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with zipfile.ZipFile(dst / "set-b.zip", "w") as zf:
        for n in names:
            zf.write(folder_src / n, arcname=n)
        zf.writestr(zipfile.ZipInfo("/abs.png"), (folder_src / names[0]).read_bytes())
        zf.writestr("__MACOSX/._x.png", b"junk")  # macOS resource forks are skipped
    return {"set-a": {f"set-a/pics/{n}" for n in names}, "set-b": {f"set-b/{n}" for n in names}}


def test_archives_in_tar_shards_out(ray_address, folder, style_ckpt, tmp_path):
    src, good, _ = folder
    expect = _archives(src, good, tmp_path / "arch")
    keys = expect["set-a"] | expect["set-b"]
    out = tmp_path / "out"
    args = ["batch", "stylize", "--model", str(style_ckpt), "--input", str(tmp_path / "arch"), "--output", str(out),
            "--output-archive", "--shard-size", "4", "--cpus-per-actor", "0.5"]
    assert cli.main(args) == 1
    members = []
    for shard in sorted(out.glob("part-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                members.append(m.name)
                assert Image.open(tf.extractfile(m)).size[0] > 0
    assert sorted(members) == sorted(batch.output_key(k, "png") for k in keys)  # each exactly once
    fails = _failures(out)
    assert any("escape" in e for e in fails.values()) and sum("escape" in e for e in fails.values()) == 2
    assert any("not a regular file" in e for e in fails.values())
    assert not any("__MACOSX" in k for k in fails)
    # rerun: the shards' members count as done, and no shard is written or rewritten
    shards = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.tar")}
    assert cli.main(args) == 1
    s = _summary(out)
    assert (s["done"], s["skipped"]) == (0, len(keys))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.tar")} == shards
    # a single archive as input: keys are its members
    out2 = tmp_path / "out2"
    assert cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", str(tmp_path / "arch/set-b.zip"),
                     "--output", str(out2), "--no-ray"]) == 1
    assert _files(out2) == {batch.output_key(k.split("/", 1)[1], "png") for k in expect["set-b"]}


def test_killed_job_reruns_to_exactly_once(ray_address, data_dir, tmp_path):
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "full.pt", TransformNet(norm="instance", padding="reflect", upsample="nearest"))
    src = tmp_path / "in"
    src.mkdir()
    photos = sorted((data_dir / "BSD100" / "HR").glob("*.png"))[:16]
    for p in photos:  # half size: about 0.4 s each with the full-width network on one thread
        im = Image.open(p).convert("RGB")
        im.resize((im.width // 2, im.height // 2), Image.BICUBIC).save(src / p.name)
    photos = sorted(src.iterdir())
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("perceptual")), "batch", "stylize", "--model", str(ckpt),
           "--input", str(src), "--output", str(out), "--cpus-per-actor", "0.5", "--pipeline", "fused"]
    log = open(tmp_path / "first.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while len(list(out.glob("*.png"))) < 3:
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no outputs appeared"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its group, mid-job
    proc.wait()
    log.close()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 3 <= len(first) < len(photos), "the kill came too late to test anything"
    # a temp file as a crash mid-write leaves it; the rerun must remove it
    (out / f".{photos[-1].name}.0123abcd.partial").write_bytes(b"half")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted([p.name for p in photos] + [batch.FAILURES, batch.SUMMARY])  # no partial files
    for name, mtime in first.items():
        assert (out / name).stat().st_mtime_ns == mtime  # finished outputs were not redone
    s = _summary(out)
    assert s["skipped"] >= len(first) and s["done"] + s["skipped"] == len(photos) and s["failed"] == 0
    for p in photos:
        assert load_image(out / p.name).pixels.shape == load_image(p).pixels.shape


def test_plain_loop_matches_ray(ray_address, lr_folder, sr_ckpt, tmp_path):
    """The plain loop and both Ray pipelines (fused; staged, the default for one actor of 0.5 CPU) agree."""
    src, good, _ = lr_folder
    common = ["batch", "upscale", "--model", str(sr_ckpt), "--input", str(src), "--cpus-per-actor", "0.5"]
    assert cli.main(common + ["--output", str(tmp_path / "ray"), "--pipeline", "fused"]) == 1
    assert cli.main(common + ["--output", str(tmp_path / "staged")]) == 1
    assert cli.main(common + ["--output", str(tmp_path / "plain"), "--no-ray"]) == 1
    assert _files(tmp_path / "ray") == _files(tmp_path / "plain") == _files(tmp_path / "staged")
    assert _failures(tmp_path / "ray") == _failures(tmp_path / "plain") == _failures(tmp_path / "staged")
    for k in _files(tmp_path / "ray"):
        a, b, c = (load_image(tmp_path / d / k, keep_gray=True).pixels.astype(int) for d in ("ray", "plain", "staged"))
        assert np.abs(a - b).max() <= 1 and np.abs(c - b).max() <= 1, k  # threads may round differently by one level


def test_pipeline_choice():
    files = [dict(kind="file", key="a.png")]
    spec = batch.BatchSpec(kind="stylize", model="m.pt", input="in", output="out")
    assert batch.fused(spec, files) and batch.fused(spec, files, cpus=1.0)  # loose files; the pool takes the CPUs
    assert not batch.fused(spec, files, cpus=2.0)  # a CPU left for read/write tasks beside the actor: staged
    assert batch.fused(batch.BatchSpec(**{**spec.__dict__, "actors": 2}), files, cpus=2.0)
    assert not batch.fused(spec, files + [dict(kind="tar", key="b.tar")])  # an archive: members spread by read tasks
    assert not batch.fused(batch.BatchSpec(**{**spec.__dict__, "gpus_per_actor": 1}), files)  # decode off the GPU actor
    assert not batch.fused(batch.BatchSpec(**{**spec.__dict__, "output_archive": True}), files)
    assert not batch.fused(batch.BatchSpec(**{**spec.__dict__, "pipeline": "staged"}), files)
    assert batch.fused(batch.BatchSpec(**{**spec.__dict__, "pipeline": "fused", "gpus_per_actor": 1}), files)
    with pytest.raises(ValueError, match="--pipeline"):
        batch.BatchSpec(**{**spec.__dict__, "pipeline": "both"}).check()
    assert spec.border == 32  # stylize's reflected border (params batch.border)
    with pytest.raises(ValueError, match="--border must be >= 0, got -1"):
        batch.BatchSpec(**{**spec.__dict__, "border": -1}).check()


# --------------------------------------------------------------------------------------- S3

@pytest.fixture(scope="module")
def bucket(folder, s3_endpoint):
    """The session's real S3 protocol server (moto) with the photo folder under in/."""
    import boto3

    url = s3_endpoint
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="batch")
    src, good, bad = folder
    for p in src.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            s3.put_object(Bucket="batch", Key=f"in/{p.relative_to(src).as_posix()}", Body=p.read_bytes())
    s3.put_object(Bucket="batch", Key="in/x/../../../escape.png", Body=(src / good_first(good)).read_bytes())
    return url, s3, good, bad


@pytest.mark.parametrize("pipeline", ["staged", "fused"])
@pytest.mark.smoke
def test_s3_bucket_in_and_out(ray_address, bucket, style_ckpt, monkeypatch, pipeline):
    url, s3, good, bad = bucket
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    rc = cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", "s3://batch/in/",
                   "--output", f"s3://batch/out-{pipeline}/", "--endpoint", url, "--cpus-per-actor", "0.5",
                   "--pipeline", pipeline])
    assert rc == 1
    out = f"out-{pipeline}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="batch", Prefix=f"{out}/")["Contents"]}
    assert keys == {f"{out}/{batch.output_key(k, 'png')}" for k in good} | {f"{out}/{batch.FAILURES}",
                                                                           f"{out}/{batch.SUMMARY}",
                                                                           f"{out}/{output_lock.LOCK}"}
    lease = json.loads(s3.get_object(Bucket="batch", Key=f"{out}/{output_lock.LOCK}")["Body"].read())
    assert lease["released"] and lease["pid"] == os.getpid()  # the lease is released, not deleted
    body = s3.get_object(Bucket="batch", Key=f"{out}/{batch.output_key(good_first(good), 'png')}")["Body"].read()
    assert Image.open(io.BytesIO(body)).size == Image.open(io.BytesIO(
        s3.get_object(Bucket="batch", Key=f"in/{good_first(good)}")["Body"].read())).size
    fails = s3.get_object(Bucket="batch", Key=f"{out}/{batch.FAILURES}")["Body"].read().decode()
    rows = {r["key"]: r["error"] for r in csv.DictReader(io.StringIO(fails))}
    assert set(bad) < set(rows) and any("escape" in e for e in rows.values())
    assert all(r.startswith("s3://batch/in/") for r in
               [x["source"] for x in csv.DictReader(io.StringIO(fails))])


# --------------------------------------------------------------------------------- Ray Jobs

def test_submit_through_jobs_api(ray_dashboard_url, lr_folder, sr_ckpt, tmp_path):
    from pipelines import jobs

    src, good, _ = lr_folder
    out = tmp_path / "out"
    job = jobs.submit(["upscale", "--model", str(sr_ckpt), "--input", str(src / "sub"), "--output", str(out),
                       "--cpus-per-actor", "0.5"],
                      addr=ray_dashboard_url, env=[f"PATH={Path(sys.executable).parent}:{os.environ['PATH']}"])
    assert jobs.wait(job, ray_dashboard_url, timeout=300, poll=1) == "SUCCEEDED", \
        jobs.client(ray_dashboard_url).get_job_logs(job)[-3000:]
    assert _files(out) == {batch.output_key(k[4:], "png") for k in good if k.startswith("sub/")}
    logs = jobs.client(ray_dashboard_url).get_job_logs(job)
    assert f"{len(_files(out))} done, 0 skipped" in logs
    with pytest.raises(ValueError, match="credentials"):
        jobs.submit(["upscale"], addr=ray_dashboard_url, env=["AWS_SECRET_ACCESS_KEY=x"])


def test_job_environment_carries_no_uri_credentials(monkeypatch, capsys):
    """A password in MLFLOW_TRACKING_URI (or any URI sent with --env) would show in the Ray dashboard
    and the job logs: it is removed, and the note that says so does not repeat it."""
    from pipelines import jobs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example:5000/path?x=1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    env = jobs.job_env(["DB=postgresql://bob:hunter2@[::1]:5432/db", "PLAIN=not a uri: a:b@c"])
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example:5000/path?x=1"
    assert env["DB"] == "postgresql://[::1]:5432/db" and env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["PLAIN"] == "not a uri: a:b@c"
    err = capsys.readouterr().err
    assert "s3cret" not in err and "hunter2" not in err and "MLFLOW_TRACKING_URI" in err and "DB:" in err


# ------------------------------------------------------------------------------ one job per output

def test_a_second_job_on_the_same_output_stops_and_destroys_nothing(lr_folder, sr_ckpt, tmp_path, capsys):
    """While a job holds an output, a second one exits 2 naming the holder, before touching the folder
    (the first job's temp files stay); a holder that died (SIGKILL) leaves no stale lock."""

    src, good, _ = lr_folder
    out = tmp_path / "out"
    out.mkdir()
    partial = out / ".a.png.0123abcd.partial"  # the first job's file in flight
    partial.write_bytes(b"half")
    args = ["batch", "upscale", "--model", str(sr_ckpt), "--input", str(src / "sub"), "--output", str(out),
            "--no-ray"]
    fs, root = batch.filesystem(str(out))
    with output_lock.hold(fs, root, "upscale (the first job)"):
        assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(f"in use by another batch job (pid {os.getpid()}" in line and "the first job" in line for line in err)
    assert partial.read_bytes() == b"half" and not (out / batch.SUMMARY).exists()
    # a holder in another process, killed: the kernel drops its lock
    code = ("import sys, time; from pipelines import batch, output_lock; fs, root = batch.filesystem(sys.argv[1]);"
            "cm = output_lock.hold(fs, root, 'doomed'); cm.__enter__(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    assert cli.main(args) == 2
    proc.kill()
    proc.wait()
    assert cli.main(args) in (0, 1)
    assert _files(out) == {batch.output_key(k[4:], "png") for k in good if k.startswith("sub/")}
    assert not (out / output_lock.LOCK).exists() and not partial.exists()


def test_s3_output_lease(bucket, sr_ckpt, lr_folder, monkeypatch, capsys):
    """On a bucket the lock is a lease object: a live one stops a second job, a stale one is taken over."""
    import time as _time


    url, s3, _, _ = bucket
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    src, good, _ = lr_folder
    key = f"lease/{output_lock.LOCK}"
    args = ["batch", "upscale", "--model", str(sr_ckpt), "--input", str(src / "sub"), "--output", "s3://batch/lease/",
            "--endpoint", url, "--no-ray"]
    live = {"pid": 1, "host": "elsewhere", "started": _time.time(), "renewed": _time.time(), "job": "other"}
    s3.put_object(Bucket="batch", Key=key, Body=json.dumps(live).encode())
    assert cli.main(args) == 2
    assert "pid 1 on elsewhere" in capsys.readouterr().err
    stale = {**live, "renewed": _time.time() - output_lock.STALE_S - 1}
    s3.put_object(Bucket="batch", Key=key, Body=json.dumps(stale).encode())
    assert cli.main(args) in (0, 1)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="batch", Prefix="lease/")["Contents"]}
    assert f"lease/{batch.SUMMARY}" in keys and "lease/" not in keys  # no empty "directory" object left
    assert json.loads(s3.get_object(Bucket="batch", Key=key)["Body"].read())["released"]
    assert cli.main(args) in (0, 1)  # a released lease is free


def test_s3_missing_bucket_and_unreachable_endpoint_are_one_line_errors(bucket, sr_ckpt, lr_folder, monkeypatch,
                                                                        capsys):
    import socket

    url, _, _, _ = bucket
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    src, _, _ = lr_folder
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for endpoint, says in ((url, "the bucket does not exist"), (dead, "cannot reach the endpoint")):
        rc = cli.main(["batch", "upscale", "--model", str(sr_ckpt), "--input", str(src / "sub"),
                       "--output", "s3://no-such-bucket/out/", "--endpoint", endpoint, "--no-ray"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert rc == 2 and err == [f"error: --output s3://no-such-bucket/out/: {says}"], err


def test_a_failing_report_write_is_an_error_and_keeps_the_outputs(lr_folder, sr_ckpt, tmp_path, capsys):
    src, good, _ = lr_folder
    out = tmp_path / "out"
    (out / batch.SUMMARY).mkdir(parents=True)  # the summary's name is taken: its write fails
    rc = cli.main(["batch", "upscale", "--model", str(sr_ckpt), "--input", str(src / "sub"), "--output", str(out),
                   "--no-ray"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    n = sum(1 for k in good if k.startswith("sub/"))
    assert rc == 2 and len(err) == 1 and f"{n} outputs written, but the job's report could not be" in err[0]
    assert _files(out) == {batch.output_key(k[4:], "png") for k in good if k.startswith("sub/")}
    assert not list(out.glob(".*.partial"))


def test_batch_engine_uses_the_onnx_cache(lr_folder, sr_ckpt, tmp_path):
    """inference.onnx_cache reaches the batch actors (it did only for the CLI and the benchmark); a
    cache folder a worker cannot create means no cache, not a failed job."""
    src, good, _ = lr_folder
    cache = tmp_path / "cache"
    spec = batch.BatchSpec.from_params(kind="upscale", model=str(sr_ckpt), input=str(src / "sub"),
                                       output=str(tmp_path / "out"), model_engine="onnx", engine_cache=str(cache))
    s = batch.run_batch(spec, engine="local", progress=False)
    assert s.done == sum(1 for k in good if k.startswith("sub/")) and s.failed == 0
    assert len(list(cache.glob("*.onnx"))) == 1
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    assert batch._writable(str(blocker / "cache")) is None and batch._writable(None) is None


def test_corrupt_archives_are_failures_not_a_dead_job(folder, style_ckpt, tmp_path):
    """A truncated .tar.gz, a zip too short for its directory (pyarrow raised ArrowInvalid there and
    the whole job died with "error: Invalid position") and a zip with a damaged member: each is a
    row in _failures.csv; every good image is still done."""
    src, good, _ = folder
    names = sorted(k for k in good if k.endswith(".png") and "/" not in k)[:2]
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / names[0]).write_bytes((src / names[0]).read_bytes())  # one loose good photo
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:
        for n in names:
            tf.add(src / n, arcname=n)
    (inp / "cut.tar.gz").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (inp / "tiny.zip").write_bytes(b"PK\x03\x04garbage")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", (src / names[1]).read_bytes())
        zf.writestr("b.txt", b"x" * 5000)
    data = bytearray(zbuf.getvalue())
    start = 30 + len("a.png")  # local header + name: the deflate stream of a.png starts here
    data[start + 100:start + 400] = bytes(300)  # damage it
    (inp / "damaged.zip").write_bytes(bytes(data))
    out = tmp_path / "out"
    assert cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", str(inp), "--output", str(out),
                     "--no-ray"]) == 1
    fails = _failures(out)
    assert any(k.startswith("tiny") and "archive unreadable or corrupt" in e for k, e in fails.items()), fails
    assert any(k.startswith("cut") for k in fails) and "damaged/a.png" in fails, fails
    assert names[0] in _files(out)
    assert _summary(out)["done"] >= 1 and not list(out.rglob("*.partial"))


def test_the_size_cap_refuses_huge_files_and_members_without_reading_them(style_ckpt, tmp_path):
    """MAX_MEMBER_BYTES (1 GiB): a loose file over it (sparse here: no disk used) and a tar member whose
    header claims more are failure rows, checked from the size before any byte is read."""
    inp = tmp_path / "in"
    inp.mkdir()
    with open(inp / "huge.png", "wb") as f:
        f.truncate(batch.MAX_MEMBER_BYTES + 1)
    info = tarfile.TarInfo("big.png")
    info.size = batch.MAX_MEMBER_BYTES + 1
    (inp / "claims.tar").write_bytes(info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1024))  # header, no data
    out = tmp_path / "out"
    assert cli.main(["batch", "stylize", "--model", str(style_ckpt), "--input", str(inp), "--output", str(out),
                     "--no-ray"]) == 1
    fails = _failures(out)
    assert "over the" in fails["huge.png"] and "byte limit" in fails["huge.png"]
    assert "over the" in fails["claims/big.png"], fails


def test_a_full_disk_fails_each_write_and_leaves_no_partial_file(lr_folder, sr_ckpt, tmp_path):
    """Writes that fail (a file-size limit stands in for a full disk: the same EFBIG/ENOSPC path) are
    failure rows naming the file, the job exits 1 and leaves no partial file behind."""
    src, good, _ = lr_folder
    out = tmp_path / "out"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000)); from pipelines import cli; "
            "sys.exit(cli.main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "batch", "upscale", "--model", str(sr_ckpt), "--input",
                        str(src / "sub"), "--output", str(out), "--no-ray"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    fails = _failures(out)
    stems = {Path(k).stem for k in good if k.startswith("sub/")}
    written = _files(out)
    assert len(fails) >= 2 and all("File too large" in e for e in fails.values()), fails
    done, failed = {Path(k).stem for k in written}, {Path(k).stem for k in fails}
    assert done | failed == stems and not done & failed  # each image: written whole, or a row
    for k in written:  # the small ones that fit are complete images
        assert load_image(out / k).pixels.size > 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
