"""A fault matrix you can rerun: inject each fault into a real batch job, on 127.0.0.1 only, and count
what was lost.

    python benchmarks/faults.py [--json benchmarks/results/faults.json] [--photos DIR]

Every row runs `perceptual batch stylize --model style-la_muse` (the shipped model) in a subprocess on
real photos (Set14's ×4 LR images from the data folder by default), with `--no-ray` so each row is
seconds, not minutes (the Ray paths of the same faults are tests: tests/test_batch.py kills a Ray
driver mid-job, tests/test_train.py a training worker). For each fault: the exit code, images lost
(an input with neither an output nor a failure row, after the rerun where the row has one),
duplicates, partial files left, and the error line a user sees. Prints a table, writes JSON.

Rows: a second job on the same output; the driver killed (SIGKILL) mid-job, then rerun; the Ray
inference actor killed, one of two Ray nodes killed (under a batch job, and under a 2-worker
training run that must finish on the node left), and a RAY_ADDRESS with no cluster (Ray, not
--no-ray); a full disk (RLIMIT_FSIZE); corrupt archives (truncated .tar.gz, a zip too short for its
directory); a malicious pickle as the checkpoint and as a registry version's artifact; an S3 bucket
that does not exist, an endpoint nothing listens on, credentials the bucket's policy refuses (moto's
IAM enforcement) and a proxy that resets every 4th request (a moto server on 127.0.0.1).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
LIMITED = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, ({n}, {n})); from pipelines import cli; "
           "sys.exit(cli.main(sys.argv[1:]))")


def _cli(args, env=None, code=None, timeout=600):
    cmd = [PY, "-c", code, *args] if code else [str(Path(PY).with_name("perceptual")), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:") or "failed in" in ln]
    return lines[-1][:160] if lines else ""


def _count(inp: Path, out: Path) -> dict:
    """lost / duplicates / partial files for the loose photos of ``inp`` against ``out``."""
    import csv

    stems = [p.stem for p in inp.iterdir() if p.is_file() and p.suffix.lower() in (".png", ".jpg")]
    outs = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))] if out.is_dir() else []
    rows = []
    if (out / "_failures.csv").is_file():
        with open(out / "_failures.csv", newline="") as f:
            rows = [r["key"] for r in csv.DictReader(f)]
    covered = {p.stem for p in outs} | {Path(k).stem for k in rows}
    names = [p.relative_to(out).with_suffix("").as_posix() for p in outs]
    return {"inputs": len(stems), "outputs": len(outs), "failure_rows": len(rows),
            "lost": sum(1 for s in stems if s not in covered),
            "duplicates": len(names) - len(set(names)),
            "partial_files": sum(1 for p in out.rglob("*") if p.name.endswith(".partial")) if out.is_dir() else 0}


def _outputs(out: Path) -> int:
    """Outputs written so far (not the job's own files: _summary.json, the lock, partial files)."""
    return len([p for p in out.glob("*") if not p.name.startswith(("_", "."))]) if out.is_dir() else 0


def _double(inp: Path) -> None:
    """A second copy of every photo in ``inp``: work left when a fault strikes after a few outputs."""
    for i, p in enumerate(sorted(inp.iterdir())):
        shutil.copy(p, inp / f"copy-{i}{p.suffix}")


def row_second_job(inp, work):
    from pipelines import batch, output_lock

    out = work / "out"
    fs, root = batch.filesystem(str(out))
    with output_lock.hold(fs, root, "the first job"):
        r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", str(inp), "--output", str(out),
                  "--no-ray"])
    after = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", str(inp), "--output", str(out),
                  "--no-ray"])
    return r.returncode, _error_line(r.stderr), _count(inp, out), {"then_alone_exit": after.returncode}


def row_killed_driver(inp, work):
    out = work / "out"
    cmd = [str(Path(PY).with_name("perceptual")), "batch", "stylize", "--model", "style-la_muse", "--input",
           str(inp), "--output", str(out), "--no-ray"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and _outputs(out) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _count(inp, out)
    r = _cli(cmd[1:])
    c = _count(inp, out)
    return r.returncode, f"killed after {first['outputs']} outputs; rerun: {_error_line(r.stderr)}", c, {}


def row_full_disk(inp, work):
    out = work / "out"
    r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", str(inp), "--output", str(out), "--no-ray"],
             code=LIMITED.format(n=40_000))
    return r.returncode, _error_line(r.stderr), _count(inp, out), {}


def row_corrupt_archives(inp, work):
    src = work / "in"
    src.mkdir()
    photos = sorted(inp.iterdir())[:3]
    for p in photos[:1]:
        shutil.copy(p, src / p.name)
    whole = work / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:
        for p in photos:
            tf.add(p, arcname=p.name)
    (src / "cut.tar.gz").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (src / "tiny.zip").write_bytes(b"PK\x03\x04garbage")
    out = work / "out"
    r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", str(src), "--output", str(out), "--no-ray"])
    return r.returncode, _error_line(r.stderr), _count(src, out), {}


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A project-format checkpoint whose pickle, if ever unpickled, writes ``marker``."""
    import torch

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"format": "perceptual-checkpoint-v1", "config": {"arch": "transform"}, "state_dict": {},
                "meta": {"x": Payload()}}, path)
    return path


def row_malicious_checkpoint(inp, work):
    marker = work / "ran"
    evil = _evil_checkpoint(work / "evil.pt", marker)
    out = work / "out"
    r = _cli(["batch", "stylize", "--model", str(evil), "--input", str(inp), "--output", str(out), "--no-ray"])
    return r.returncode, _error_line(r.stderr), _count(inp, out), {"payload_ran": marker.exists()}


def row_malicious_registry_artifact(inp, work):
    """A registry version whose checkpoint artifact is a pickle that would run a command, served by
    alias as batch jobs find models (`models:/NAME@challenger`, a real sqlite registry): refused before
    any work, the payload never runs."""
    from perceptual_core.networks import build_model
    from pipelines import tracking

    marker = work / "ran"
    evil = _evil_checkpoint(work / "model.pt", marker)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "PERCEPTUAL_CACHE_DIR": str(work / "cache")}
    with mock.patch.dict(os.environ, MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"]):
        run_id = tracking.start_run("style-evil", {"job": {"note": "a poisoned registry artifact"}})
        tracking.finish_run(run_id, build_model({"arch": "transform"}), evil, model_name="style-evil",
                            example_hw=(64, 64))
    out = work / "out"
    r = _cli(["batch", "stylize", "--model", "models:/style-evil@challenger", "--allow-unpromoted", "--input",
              str(inp), "--output", str(out), "--no-ray"], env=env)
    return r.returncode, _error_line(r.stderr), _count(inp, out), {"payload_ran": marker.exists()}


@contextlib.contextmanager
def _two_nodes():
    """A 2-node Ray cluster on 127.0.0.1 (`ray start` head + a second node, 1 CPU each, token auth off
    as tests on 127.0.0.1 may): yields (address, env for its clients, the second node's process)."""
    ray_bin = str(Path(PY).with_name("ray"))
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr, nodes = f"127.0.0.1:{port}", []
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        nodes.append(subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       *common], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        _wait_nodes(addr, 1, env)
        nodes.append(subprocess.Popen([ray_bin, "start", f"--address={addr}", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_nodes(addr, 2, env)
        yield addr, {**env, "RAY_ADDRESS": addr}, nodes[1]
    finally:
        for p in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def row_ray_node_loss(inp, work):
    """A batch job (2 inference actors, one per node) on a 2-node Ray cluster on 127.0.0.1; the second
    node (its `ray start --block` process group: raylet, workers) is SIGKILLed at the first output. The
    job must finish on the head: nothing lost or doubled."""
    _double(inp)  # work left for the head after the loss
    with _two_nodes() as (addr, env, second):
        out = work / "out"
        proc = subprocess.Popen([str(Path(PY).with_name("perceptual")), "batch", "stylize", "--model",
                                 "style-la_muse", "--input", str(inp), "--output", str(out), "--actors", "2"],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed, deadline = None, time.time() + 600
        while killed is None and proc.poll() is None and time.time() < deadline:
            n = _outputs(out)
            if n >= 1:  # the model has started; the job writes the rest in seconds
                os.killpg(second.pid, signal.SIGKILL)
                killed = n
            time.sleep(0.05)
        _, err = proc.communicate(timeout=600)
        return proc.returncode, _error_line(err), _count(inp, out), {"killed_after_outputs": killed}


TRAIN = ("import json, sys; from pipelines import train; "
         "s = train.run_job('sr-x4-pixel', overrides=json.loads(sys.argv[1]), ray_overrides={'min_workers': 1}); "
         "print('SUMMARY ' + json.dumps(s))")


def row_ray_node_loss_training(inp, work, iterations: int = 40):
    """A 2-worker training run (sr-x4-pixel on real COCO patches, elastic: train.ray.min_workers 1) on a
    2-node Ray cluster on 127.0.0.1, the second node SIGKILLed after the second checkpoint: Ray Train
    restarts the group from that checkpoint on the node that is left and the run finishes every
    iteration, exit 0. "lost" counts iterations not trained; "duplicates", restarts from zero."""
    from pipelines import prepare as prep
    from pipelines import train
    from pipelines.settings import DegradationSettings, PrepareSettings, build

    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = Path(os.environ.get("PERCEPTUAL_DATA_DIR") or ROOT.parent / "shared" / "data")
    photos = work / "coco"
    photos.mkdir()
    for p in sorted((data / "coco128_train2017" / "images").glob("*.jpg"))[:6]:
        shutil.copy(p, photos / p.name)
    sec = build(PrepareSettings, {**params["prepare_sr"], "patches_per_image": 2}, "params.yaml: prepare_sr")
    prep.prepare("sr", sec, build(DegradationSettings, params["degradation"], "params.yaml: degradation"),
                 input_dir=photos, out_dir=work / "sr", use_ray=False)
    out = work / "sr-x4-pixel"
    spec = {"data": str(work / "sr"), "out_dir": str(out), "iterations": iterations, "report_every": 5,
            "checkpoint_every": 10, "crop": 64, "batch_size": 2}
    with _two_nodes() as (addr, env, second):
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        proc = subprocess.Popen([PY, "-c", TRAIN, json.dumps(spec)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        killed, deadline = None, time.time() + 900
        while killed is None and proc.poll() is None and time.time() < deadline:
            ev = train.read_events(out) if out.is_dir() else []
            ckpt = [e["iteration"] for e in ev if e["event"] == "checkpoint"]
            if ckpt and max(ckpt) >= 20:  # the one before it is surely committed to Ray: lose the node now
                os.killpg(second.pid, signal.SIGKILL)
                killed = max(ckpt)
            time.sleep(0.2)
        stdout, err = proc.communicate(timeout=900)
    summary = next((json.loads(ln[8:]) for ln in stdout.splitlines() if ln.startswith("SUMMARY ")), {})
    starts = [e for e in train.read_events(out) if e["event"] == "start" and e["rank"] == 0] if out.is_dir() else []
    done = int(summary.get("iterations") or 0)
    counts = {"iterations": iterations, "trained": done, "lost": iterations - done,
              "duplicates": sum(1 for e in starts[1:] if e["iteration"] == 0), "partial_files": 0}
    return proc.returncode, _error_line(err), counts, {
        "killed_after_checkpoint": killed, "restarts": summary.get("restarts"),
        "resumed_from": summary.get("resumed_from"), "world_sizes": [e["world_size"] for e in starts]}


def row_ray_actor_killed(inp, work):
    """The inference actor of a Ray batch job (a local instance the job starts) SIGKILLed at the first output:
    Ray Data restarts it and retries its work; nothing lost or doubled, exit 0."""
    import psutil

    # 20 small photos (3 rounds; a copy's name is reused): work left after the kill, which can take a
    # second to land on a busy machine (with 10 the job once wrote them all first; CI, 2026-12-04)
    for _ in range(3):
        _double(inp)
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    out = work / "out"
    proc = subprocess.Popen([str(Path(PY).with_name("perceptual")), "batch", "stylize", "--model", "style-la_muse",
                             "--input", str(inp), "--output", str(out), "--actors", "1"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.time() + 600
    try:
        while killed is None and proc.poll() is None and time.time() < deadline:
            n = _outputs(out)
            if n >= 1:  # the model has started; the job writes the rest in seconds
                for c in psutil.Process(proc.pid).children(recursive=True):  # only this job's processes
                    with contextlib.suppress(psutil.Error):
                        if "MapWorker" in " ".join(c.cmdline()):
                            c.kill()
                            killed = n
            time.sleep(0.05)
        _, err = proc.communicate(timeout=600)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    return proc.returncode, _error_line(err), _count(inp, out), {"killed_after_outputs": killed}


def row_ray_address_dead(inp, work):
    """RAY_ADDRESS names a cluster that is not there (nothing listens): one line naming it, at once
    (Ray itself retries for minutes, silently), nothing written."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    out = work / "out"
    r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", str(inp), "--output", str(out)],
             env={**os.environ, "RAY_ADDRESS": dead}, timeout=300)
    return r.returncode, _error_line(r.stderr), _count(inp, out), {"address": dead}


def _wait_nodes(addr: str, n: int, env: dict, timeout: float = 120) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = subprocess.run([PY, "-c", code, addr], env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise RuntimeError(f"Ray cluster at {addr}: {n} nodes not alive after {timeout} s")


def _moto(env: dict | None = None):
    """A moto S3 server on 127.0.0.1 (``env``: e.g. INITIAL_NO_AUTH_ACTION_COUNT, moto's IAM enforcement)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(PY).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    # Ready when it accepts a connection. An HTTP probe would be an S3 call (ListBuckets) that moto
    # counts against INITIAL_NO_AUTH_ACTION_COUNT, and a probe that times out while moto loads its
    # backend (seconds on a busy machine) is sent again and counted twice.
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def row_s3(inp, work, endpoint, label):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1"}
    t0 = time.perf_counter()
    r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", str(inp), "--output",
              "s3://no-such-bucket/out/", "--endpoint", endpoint, "--no-ray"], env=env)
    return r.returncode, _error_line(r.stderr), _count(inp, work / "none"), \
        {"seconds": round(time.perf_counter() - t0, 1), "case": label}


KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def _s3(endpoint: str, keys: dict | None = None):
    import boto3

    k = keys or KEYS
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=k["AWS_ACCESS_KEY_ID"], aws_secret_access_key=k["AWS_SECRET_ACCESS_KEY"])


def _upload(s3, inp: Path, bucket: str, prefix: str) -> None:
    for p in sorted(inp.iterdir()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{p.name}", Body=p.read_bytes())


def _download(s3, bucket: str, prefix: str, dest: Path) -> None:
    """The job's S3 output as a local folder (for `_count`), partial files included."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for o in page.get("Contents", []):
            f = dest / o["Key"][len(prefix) + 1:]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())


def row_s3_access_denied(inp, work):
    """Credentials that exist but may not read the bucket (moto's IAM enforcement: a user whose only
    permission is s3:ListAllMyBuckets). Refused before any work, in one line naming the input."""
    moto, endpoint = _moto({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})  # the 4 setup calls below
    try:
        import boto3

        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        _s3(endpoint).create_bucket(Bucket="photos")
        iam.create_user(UserName="outsider")
        key = iam.create_access_key(UserName="outsider")["AccessKey"]
        iam.put_user_policy(UserName="outsider", PolicyName="list-buckets-only", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}]}))
        env = {**os.environ, **KEYS, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        out = work / "out"
        r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", "s3://photos/in/", "--output",
                  str(out), "--endpoint", endpoint, "--no-ray"], env=env)
        return r.returncode, _error_line(r.stderr), _count(inp, out), \
            {"traceback": "Traceback" in r.stderr, "secret_in_output": key["SecretAccessKey"] in r.stdout + r.stderr}
    finally:
        os.killpg(moto.pid, signal.SIGTERM)
        moto.wait()


class ResettingProxy:
    """A TCP proxy on 127.0.0.1 that resets (RST) the connection instead of forwarding every n-th
    chunk a client sends (about every n-th HTTP request, since a request's head is one send): a flaky
    network or load balancer in front of S3."""

    def __init__(self, target: str, every: int = 4):
        import threading

        host, port = target.rsplit("//", 1)[-1].split(":")
        self.target, self.every, self.count, self.resets = (host, int(port)), every, 0, 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        import struct
        import threading

        upstream = socket.create_connection(self.target)

        def back():
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                client.close()

        threading.Thread(target=back, daemon=True).start()
        try:
            while data := client.recv(65536):
                with self._lock:
                    self.count += 1
                    reset = self.count % self.every == 0
                    self.resets += reset
                if reset:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self):
        self.sock.close()


def row_s3_resets(inp, work, every: int = 4):
    """Input and output on S3 behind a proxy that resets about every ``every``-th request: pyarrow's
    retry strategy (storage.S3_ATTEMPTS) rides it out; every photo is written once, no partial object left."""
    moto, endpoint = _moto()
    proxy = ResettingProxy(endpoint, every)
    try:
        s3 = _s3(endpoint)
        s3.create_bucket(Bucket="photos")
        _upload(s3, inp, "photos", "in")
        r = _cli(["batch", "stylize", "--model", "style-la_muse", "--input", "s3://photos/in/", "--output",
                  "s3://photos/out/", "--endpoint", proxy.url, "--no-ray"], env={**os.environ, **KEYS})
        out = work / "out"
        _download(s3, "photos", "out", out)
        return r.returncode, _error_line(r.stderr), _count(inp, out), {"resets": proxy.resets}
    finally:
        proxy.close()
        os.killpg(moto.pid, signal.SIGTERM)
        moto.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/faults.json"))
    ap.add_argument("--photos", default=None, help="a folder of photos (default: Set14 x4 LR of the data folder)")
    a = ap.parse_args(argv)
    data = Path(os.environ.get("PERCEPTUAL_DATA_DIR") or ROOT.parent / "shared" / "data")
    photos = Path(a.photos) if a.photos else data / "Set14" / "LR_bicubic_x4"
    rows = []
    moto, endpoint = _moto()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cases = [("second job on the same output", row_second_job),
             ("driver SIGKILL mid-job, then rerun", row_killed_driver),
             ("full disk (RLIMIT_FSIZE 40 kB)", row_full_disk), ("corrupt archives", row_corrupt_archives),
             ("malicious pickle as --model", row_malicious_checkpoint),
             ("malicious pickle as a registry artifact", row_malicious_registry_artifact),
             ("S3: bucket does not exist", lambda i, w: row_s3(i, w, endpoint, "missing bucket")),
             ("S3: endpoint not listening", lambda i, w: row_s3(i, w, dead, "unreachable")),
             ("Ray: the inference actor SIGKILLed", row_ray_actor_killed),
             ("Ray: a node lost mid-job (2 nodes)", row_ray_node_loss),
             ("Ray: a node lost mid-training (2 nodes)", row_ray_node_loss_training),
             ("Ray: RAY_ADDRESS with no cluster", row_ray_address_dead),
             ("S3: access denied (IAM)", row_s3_access_denied),
             ("S3: every 4th request reset", row_s3_resets)]
    try:
        for name, fn in cases:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                inp = work / "photos"
                shutil.copytree(photos, inp)
                rc, line, counts, extra = fn(inp, work)
                if rc == 2:  # refused before any work: nothing read, nothing written, nothing lost
                    counts["lost"], extra["refused"] = 0, True
                rows.append({"fault": name, "exit": rc, **counts, "error_line": line, **extra})
                print(f"{name:<38} exit {rc}  lost {counts['lost']}  dup {counts['duplicates']}  "
                      f"partial {counts['partial_files']}  | {line}", flush=True)
    finally:
        os.killpg(moto.pid, signal.SIGTERM)
        moto.wait()
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"photos": str(photos), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    bad = [r for r in rows if r["lost"] or r["duplicates"] or r["partial_files"] or r.get("payload_ran")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
