"""Shared fixtures: the real data folder and the real (offline) VGG-16 loss network."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERCEPTUAL_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


def pytest_configure(config):
    if not DATA.is_dir():
        raise pytest.UsageError(f"data folder not found: {DATA} (set PERCEPTUAL_DATA_DIR)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory) -> Path:
    """A fresh cache per test session, so the offline conversion itself is exercised."""
    d = tmp_path_factory.mktemp("vgg_cache")
    os.environ["PERCEPTUAL_CACHE_DIR"] = str(d)
    os.environ["PERCEPTUAL_OFFLINE"] = "1"  # CI has no route to download.pytorch.org
    return d


@pytest.fixture(scope="session")
def vgg(weights_cache):
    from perceptual_core.vgg import VGG16Loss

    return VGG16Loss.pretrained(allow_download=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """One real Ray head for the whole session (stages started by `dvc repro` join it through
    RAY_ADDRESS); stopped by the PID we started, which drains and ends its own children."""
    import subprocess
    import sys
    import time

    tmp = ROOT / "tmp" / "ray"  # project-local and short: Ray's socket paths must stay < 108 bytes
    tmp.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp / "head.log", "ab")
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
         "--object-store-memory=400000000"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own process group
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        r = subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env, capture_output=True)
        if r.returncode == 0:
            break
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"ray head did not start; see {tmp / 'head.log'}")
        time.sleep(1)
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ.update(RAY_ADDRESS=address, RAY_TMPDIR=str(tmp), RAY_AUTH_MODE="disabled")
    try:
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        proc.terminate()  # drains, then ends the processes it started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # draining can take 30 s; the group is ours alone
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
