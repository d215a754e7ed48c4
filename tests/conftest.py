"""Shared fixtures: the real data folder, the real (offline) VGG-16 loss network, and the local services
(Ray head with Jobs API, MLflow server, S3 endpoint) started once per session by perceptual_services/."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERCEPTUAL_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


def pytest_configure(config):
    if not DATA.is_dir():
        raise pytest.UsageError(f"data folder not found: {DATA} (set PERCEPTUAL_DATA_DIR)")


@pytest.fixture(autouse=True)
def perceptual_logging():
    """The `perceptual` loggers as every entry point sets them up (pipelines/log.py: INFO, bare lines on
    the current stderr), so capsys sees a library function's messages whichever function a test calls;
    reset for each test (a `perceptual -q` call would leave WARNING behind)."""
    import logging

    from pipelines import log

    log.setup(logging.INFO)


def reply_with_range(handler, body: bytes, rng: str | None) -> int:
    """For the test HTTP servers: send the status and headers of a GET answered from ``body``, honouring
    ``Range: bytes=N-`` (``rng``; None: the whole body, 200). -> the first byte of ``body`` to send."""
    start = int(rng.split("=")[1].split("-")[0]) if rng else 0
    handler.send_response(206 if rng else 200)
    if rng:
        handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    handler.send_header("Content-Length", str(len(body) - start))
    handler.end_headers()
    return start


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


# ----------------------------------------------------------------- local services (one per session)
# Started lazily through perceptual_services/, the code behind `perceptual services up`: a test that
# asks for none of them starts nothing. All are stopped at the end by the PIDs that were started.

@pytest.fixture(scope="session")
def services_stack(tmp_path_factory):
    """The session's `perceptual_services.Stack` (free ports, state in a tmp folder); start services
    with ``services_stack.up(["ray"])`` etc. or, better, request the fixtures below."""
    import perceptual_services as services

    cfg = services.StackConfig(
        state_dir=tmp_path_factory.mktemp("services"),
        ray_tmpdir=ROOT / "tmp" / "ray",  # project-local and short: Ray's socket paths must stay < 108 bytes
        ports={k: 0 for k in services.DEFAULT_PORTS}, ray_num_cpus=2, ray_object_store_memory=400_000_000,
        stop_grace=5.0)  # SIGTERM to each leader, SIGKILL after 5 s (Ray's drain can take 30)
    stack = services.Stack(cfg)
    try:
        yield stack
    finally:
        stack.down()


@contextlib.contextmanager
def _session_env(**values):
    """Set (None: unset) environment variables; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def ray_address(services_stack):
    """One real Ray head (with dashboard / Jobs API) for the whole session, with token auth on as
    `perceptual services up` starts it; RAY_ADDRESS, RAY_TMPDIR, RAY_AUTH_MODE=token and
    RAY_AUTH_TOKEN_PATH (the stack's token file) are set for the session (stages started by `dvc repro`
    join it through them) and restored afterwards. -> "127.0.0.1:PORT"."""
    from perceptual_services import FAKE_AWS

    # Ray workers inherit the head's environment, not the test's: fake keys for the moto S3 server
    # must be there from the start (they are only ever sent to 127.0.0.1).
    with _session_env(**{k: v for k, v in FAKE_AWS.items() if not os.environ.get(k)}):
        env = services_stack.up(["ray"])
    with _session_env(RAY_ADDRESS=env["RAY_ADDRESS"], RAY_TMPDIR=env["RAY_TMPDIR"], RAY_AUTH_MODE=env["RAY_AUTH_MODE"],
                      RAY_AUTH_TOKEN_PATH=env["RAY_AUTH_TOKEN_PATH"], RAY_AUTH_TOKEN=None):
        import logging

        import ray
        from ray._raylet import AuthenticationTokenLoader, Config

        # A local `ray.init()` earlier in this process (a stage without RAY_ADDRESS) left Ray's auth mode
        # and the token of ~/.ray/auth_token cached in-process: read both again from the variables above
        # (what ray._private.authentication_test_utils.reset_auth_token_state does).
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

        # One driver connection for the whole session: `ray_session` (pipelines/ray_env.py) then joins
        # it instead of connecting and disconnecting the test process once per CLI call, dozens of
        # times, which is not how any real process uses Ray.
        ray.init(address=env["RAY_ADDRESS"], logging_level=logging.WARNING)
        try:
            yield env["RAY_ADDRESS"]
        finally:
            if ray.is_initialized():
                ray.shutdown()
            services_stack.down(["ray"])


@pytest.fixture(scope="session")
def ray_dashboard_url(ray_address, services_stack) -> str:
    """"http://127.0.0.1:PORT" of the session head's dashboard, for `JobSubmissionClient`. (Ray lets
    $RAY_ADDRESS, set by `ray_address`, override the client's address argument: both name this head.)"""
    return services_stack.urls()["ray_dashboard"]


@pytest.fixture(scope="session")
def s3_endpoint(services_stack):
    """"http://127.0.0.1:PORT" of a moto S3 server (one per session; buckets live in memory). Fake AWS
    credentials and region are set for the session where none are set; AWS_ENDPOINT_URL is not."""
    from perceptual_services import FAKE_AWS

    services_stack.up(["s3"])
    with _session_env(**{k: v for k, v in FAKE_AWS.items() if not os.environ.get(k)}):
        yield services_stack.urls()["s3"]


@pytest.fixture(scope="session")
def mlflow_server_uri(services_stack) -> str:
    """"http://127.0.0.1:PORT" of a real `mlflow server` (sqlite + local artifacts, --workers 1) for the
    session. MLFLOW_TRACKING_URI is left alone: set it per test (monkeypatch)."""
    services_stack.up(["mlflow"])
    return services_stack.urls()["mlflow"]


# ----------------------------------------------------------------- shipped-model fixtures (models/ format)

def write_tiny_release(folder: Path, name: str, config: dict):
    """A small real network written as a release file and listed in folder/MANIFEST.json."""
    import json

    import torch

    from perceptual_core import zoo
    from perceptual_core.networks import build_model

    torch.manual_seed(0)
    model = build_model(config).eval()
    sha = zoo.save_release(folder / f"{name}.safetensors", model)
    mf = folder / "MANIFEST.json"
    doc = json.loads(mf.read_text()) if mf.is_file() else {"models": {}}
    doc["models"][name] = {"file": f"{name}.safetensors", "sha256": sha, "task": zoo.task_of(config),
                           "iterations": 0}
    mf.write_text(json.dumps(doc))
    return zoo.get(name, folder)


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A models folder with a small style network and a small x4 SR network ($PERCEPTUAL_MODELS_DIR)."""
    d = tmp_path / "models"
    d.mkdir()
    write_tiny_release(d, "style-tiny", {"arch": "transform", "width": 0.25, "norm": "instance",
                                         "padding": "reflect", "upsample": "nearest"})
    write_tiny_release(d, "sr-x4-tiny", {"arch": "sr", "scale": 4, "width": 0.25})
    monkeypatch.setenv("PERCEPTUAL_MODELS_DIR", str(d))
    return d
