"""MLflow tracking and the model registry against real stores: a sqlite file and a live
`mlflow server` on 127.0.0.1 (no mocks). Networks are small and untrained."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from perceptual_core.checkpoint import load_model, save_checkpoint
from perceptual_core.io import load_image
from perceptual_core.networks import SRNet, TransformNet
from perceptual_core.srcnn import SRCNN
from pipelines import tracking

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STYLE = dict(norm="instance", padding="reflect", upsample="nearest", width=0.25)
PARAMS = {"job": {"kind": "style", "model": dict(arch="transform", **STYLE), "layers": ["relu1_2", "relu2_2"],
                  "tv_weights": {}, "note": "x" * 900}, "train": {"lr": 1e-3, "ray": {"num_workers": 2}}}


def _net(seed: int, make=lambda: TransformNet(**STYLE)):
    torch.manual_seed(seed)
    return make().eval()


def _register(tmp: Path, name: str, model, hw=(64, 64), job="style-test", data_stage="prepare_style"):
    """What a training job does: a run with params, metrics at 3 steps and an image, then the model."""
    run_id = tracking.start_run(job, PARAMS, data_stage=data_stage)
    for step in (1, 2, 3):
        tracking.log_metrics(run_id, {"loss_total": 1.0 / step, "images_per_s": 10.0 * step}, step=step)
    tracking.log_image(run_id, np.full((16, 24, 3), 200, np.uint8), "validation_grid.png")
    ckpt = save_checkpoint(tmp / f"{name}-{run_id}.pt", model, meta={"run_id": run_id})
    t0 = time.perf_counter()
    mv = tracking.finish_run(run_id, model, ckpt, model_name=name, example_hw=hw, tags={"job": job})
    print(f"finish_run {name} v{mv.version}: {time.perf_counter() - t0:.1f} s")
    return run_id, mv


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _matches_eager(uri: str, model, channels: int, sizes) -> None:
    """The registered pt2 program runs at sizes and batches other than its example's."""
    import mlflow.pytorch

    exported = mlflow.pytorch.load_model(uri)
    for batch in (1, 3):
        for h, w in sizes:
            x = torch.rand(batch, channels, h, w)
            with torch.no_grad():
                want, got = model(x), exported(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- sqlite store

@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow_sqlite")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        mp.setenv("PERCEPTUAL_CACHE_DIR", str(d / "cache"))
        yield d


@pytest.fixture(scope="module")
def style_registry(sqlite_store):
    """Two training runs of registered model style-test: versions 1 and 2."""
    models = [_net(1), _net(2)]
    runs = [_register(sqlite_store, "style-test", m) for m in models]
    return {"models": models, "runs": runs}


@pytest.mark.smoke
def test_run_records_params_provenance_metrics_and_image(style_registry):
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    run_id, mv = style_registry["runs"][0]
    run = client.get_run(run_id)
    assert run.info.run_name == "style-test" and run.info.status == "FINISHED"
    p = run.data.params
    assert p["job.model.norm"] == "instance" and p["job.layers"] == "['relu1_2', 'relu2_2']"
    assert p["train.ray.num_workers"] == "2" and p["job.tv_weights"] == "{}"
    assert p["job.note"] == "x" * 500  # MLflow's portable value limit

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lock = ROOT / "dvc.lock"
    t = run.data.tags
    assert t["git_commit"] == head and len(head) == 40
    assert t["git_dirty"] in ("true", "false")
    assert t["data_version"] == yaml.safe_load(lock.read_text())["stages"]["prepare_style"]["outs"][0]["md5"]
    assert t["dvc_lock_sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()

    hist = client.get_metric_history(run_id, "loss_total")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert "validation_grid.png" in [f.path for f in client.list_artifacts(run_id)]
    assert mv.tags == {"git_commit": head, "data_version": t["data_version"], "run_id": run_id, "job": "style-test"}


def test_versions_alias_and_resolve(style_registry, sqlite_store):
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    (run1, v1), (run2, v2) = style_registry["runs"]
    m1, m2 = style_registry["models"]
    assert (str(v1.version), str(v2.version)) == ("1", "2")
    assert v1.aliases == ["challenger"]  # when it was registered
    assert client.get_model_version("style-test", "1").aliases == []  # the alias moved on
    assert str(tracking.get_version("style-test", "challenger").version) == "2"

    path = tracking.resolve_model("models:/style-test@challenger")
    assert path.is_file() and str(path).startswith(str(sqlite_store / "cache" / "models"))
    assert _same_weights(load_model(path), m2) and not _same_weights(load_model(path), m1)
    assert tracking.resolve_model("models:/style-test@challenger") == path  # cached
    assert _same_weights(load_model(tracking.resolve_model("models:/style-test/1")), m1)

    tracking.set_alias("style-test", "champion", 1)
    assert tracking.get_version("style-test", "champion").run_id == run1
    assert _same_weights(load_model(tracking.resolve_model("models:/style-test@champion")), m1)
    assert tracking.resolve_model("runs/model.pt") == Path("runs/model.pt")  # plain paths pass through


def test_registered_style_model_runs_at_other_sizes(style_registry):
    _matches_eager("models:/style-test@challenger", style_registry["models"][1], 3, [(51, 77), (96, 128)])


@pytest.mark.parametrize("name,make,hw,channels,sizes", [
    ("style-paper", lambda: TransformNet(width=0.25), (64, 64), 3, [(51, 77), (96, 128)]),
    ("sr-x4", lambda: SRNet(scale=4, width=0.25), (24, 24), 3, [(13, 17)]),
    ("sr-x8", lambda: SRNet(scale=8, width=0.25), (24, 24), 3, [(13, 17)]),
    ("srcnn", SRCNN, (24, 24), 1, [(13, 17), (40, 52)]),
])
def test_every_architecture_exports_size_generic(sqlite_store, name, make, hw, channels, sizes):
    import mlflow.models

    model = _net(3, make)
    _, mv = _register(sqlite_store, name, model, hw=hw, job=name, data_stage="prepare_sr")
    uri = f"models:/{name}/{mv.version}"
    sig = mlflow.models.get_model_info(uri).signature
    assert sig.inputs.inputs[0].shape == sig.outputs.inputs[0].shape == (-1, channels, -1, -1)
    _matches_eager(uri, model, channels, sizes)


def test_unknown_models_aliases_and_versions_are_clear(style_registry):
    for uri, msg in [("models:/no-such-model@challenger", "no registered model 'no-such-model'"),
                     ("models:/style-test@nope", "has no alias 'nope'"),
                     ("models:/style-test/99", "has no version 99"),
                     ("models:/style-test", "expected models:/NAME@ALIAS")]:
        with pytest.raises(ValueError, match=msg) as e:
            tracking.resolve_model(uri)
        assert uri in str(e.value)
    with pytest.raises(ValueError, match="has no alias"):
        tracking.get_version("style-test", "nope")


def test_a_version_logged_without_checkpoint_is_named(sqlite_store):
    import mlflow
    import mlflow.pytorch

    run_id = tracking.start_run("bare", {})  # our experiment: its artifacts stay in the tmp store
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(SRCNN().eval(), name="model", serialization_format="pt2",
                                        signature=tracking._signature(1), input_example=torch.rand(2, 1, 16, 16),
                                        pip_requirements=["torch"])
    mv = mlflow.register_model(info.model_uri, "bare")
    with pytest.raises(ValueError, match="has no checkpoint") as e:
        tracking.resolve_model(f"models:/bare/{mv.version}")
    assert f"models:/bare/{mv.version}" in str(e.value)


def test_tracking_uri_defaults_to_the_project_database(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{ROOT / 'mlflow.db'}"
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"mlflow": {"tracking_uri": "sqlite:///runs/t.db"}}))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(params))
    assert tracking.tracking_uri() == f"sqlite:///{ROOT / 'runs' / 't.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri() == "http://127.0.0.1:1"


def test_cli_stylizes_with_a_registered_model(style_registry, sqlite_store, tmp_path, data_dir):
    photo = data_dir / "styles" / "content_images" / "chicago.jpg"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(), "PERCEPTUAL_CACHE_DIR": str(tmp_path / "c")}

    def cli(*args):
        return subprocess.run([str(BIN / "perceptual"), *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)

    r = cli("stylize", photo, "--model", "models:/style-test@challenger", "-o", tmp_path / "out.png")
    assert r.returncode == 0, r.stderr
    assert load_image(tmp_path / "out.png").pixels.shape == load_image(photo).pixels.shape
    assert list((tmp_path / "c" / "models" / "style-test").glob("2-*/*.pt"))  # fetched version 2
    r = cli("stylize", photo, "--model", "models:/style-test@nope", "-o", tmp_path / "bad.png")
    assert r.returncode == 2 and "models:/style-test@nope" in r.stderr and "no alias" in r.stderr


# ------------------------------------------------------------------------------- mlflow server

@pytest.fixture(scope="module")
def mlflow_server(mlflow_server_uri, services_stack):
    """The session's real `mlflow server` (perceptual_services/) and the folder of its artifacts."""
    return mlflow_server_uri, services_stack.cfg.state_dir / "mlflow"


def test_round_trip_through_a_tracking_server(mlflow_server, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    url, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("PERCEPTUAL_CACHE_DIR", str(tmp_path / "cache"))
    model = _net(4)
    run_id, mv = _register(tmp_path, "style-http", model, data_stage="no_such_stage")
    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data_version"] == "missing"
    assert run.data.params["job.model.norm"] == "instance"
    assert str(mv.version) == "1" and mv.aliases == ["challenger"] and mv.tags["run_id"] == run_id

    # A Ray worker logs from another process with nothing but the run id.
    code = f"from pipelines import tracking; tracking.log_metrics({run_id!r}, {{'loss_total': 0.25}}, step=4)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, "MLFLOW_TRACKING_URI": url})
    assert [m.step for m in client.get_metric_history(run_id, "loss_total")] == [1, 2, 3, 4]
    (tmp_path / "summary.json").write_text("{}")
    tracking.log_file(run_id, tmp_path / "summary.json", "reports")
    assert [f.path for f in client.list_artifacts(run_id, "reports")] == ["reports/summary.json"]
    assert "validation_grid.png" in [f.path for f in client.list_artifacts(run_id)]
    assert list((server_dir / "artifacts").rglob("summary.json"))  # stored by the server's proxy

    path = tracking.resolve_model("models:/style-http@challenger")
    assert _same_weights(load_model(path), model)
    _matches_eager("models:/style-http/1", model, 3, [(51, 77)])


def test_an_authenticated_server_refuses_anonymous_and_read_only_clients(tmp_path, monkeypatch):
    """The server infra/ deploys (`mlflow server --app-name basic-auth`), for real on 127.0.0.1: without
    credentials nothing is readable; a READ-only account cannot move `champion`; the pipeline's account
    (here the admin) can, through the same client code the stages use."""
    import json
    import socket
    import urllib.error
    import urllib.request
    from base64 import b64encode

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
                   "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   "auth_cache_ttl_seconds = 60\n")  # PBKDF2 once per account, not once per request
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw-123456",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key"}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(k, None)
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - the server writes to it until the end
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--default-artifact-root", str(tmp_path / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def call(path, user=None, body=None):
        req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        if user:
            req.add_header("Authorization", "Basic " + b64encode(f"{user[0]}:{user[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if call("/health") == 200:
                    break
            except OSError:  # not listening yet, or still starting (URLError, resets, timeouts)
                pass
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.5)
        admin = ("admin", "admin-pw-123456")
        assert call("/api/2.0/mlflow/registered-models/search") == 401
        assert call("/api/2.0/mlflow/registered-models/search", ("admin", "wrong")) == 401
        assert call("/api/2.0/mlflow/registered-models/search", admin) == 200
        assert call("/api/2.0/mlflow/users/create", admin, {"username": "reader", "password": "reader-pw-123456"}) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-pw-123456")
        client = MlflowClient(url)
        client.create_registered_model("style-guarded")
        run = client.create_run(client.create_experiment("guarded")).info.run_id
        v = client.create_model_version("style-guarded", f"runs:/{run}/model", run_id=run)
        client.set_registered_model_alias("style-guarded", "champion", v.version)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-pw-123456")
        reader = MlflowClient(url)
        assert reader.get_model_version_by_alias("style-guarded", "champion").version == v.version  # READ
        with pytest.raises(MlflowException, match="(?i)permission"):
            reader.set_registered_model_alias("style-guarded", "champion", v.version)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
