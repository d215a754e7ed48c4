"""The local services stack (pipelines/services.py, `perceptual services up|down|status`) for real:
a Ray head with the Jobs API, an `mlflow server` and moto's S3 server on 127.0.0.1, started in a
tmp state folder on free ports (apart from the session fixtures), used, one of them killed and
recovered, then stopped with nothing left running. No mocks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines import services

ROOT = Path(__file__).resolve().parents[1]


def _cfg(state_dir: Path, **kw) -> services.StackConfig:
    kw.setdefault("ports", {k: 0 for k in services.DEFAULT_PORTS})
    return services.StackConfig(state_dir=state_dir, ray_tmpdir=ROOT / "tmp" / "ray-svc", ray_num_cpus=1,
                                ray_object_store_memory=100_000_000, timeout=150, stop_grace=5, **kw)


def _cli(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "pipelines.services", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _tagged(stack: services.Stack) -> list[psutil.Process]:
    return [p for name in services.SERVICES for p in stack._owned(name)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stack")
    yield d
    services.Stack(_cfg(d)).down()  # whatever a failed test left running


@pytest.fixture(scope="module")
def stack(stack_dir):
    st = services.Stack(_cfg(stack_dir))
    st.up()
    return st


def test_a_taken_port_is_named_in_the_error(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        st = services.Stack(_cfg(tmp_path, ports={"mlflow": port}))
        with pytest.raises(services.PortInUseError) as e:
            st.up(["mlflow"])
    msg = str(e.value)
    assert f"port {port}" in msg and "MLflow tracking server" in msg and "--mlflow-port" in msg
    assert st.state["services"] == {} and not (tmp_path / "services.env").exists()  # nothing started


def test_up_writes_one_env_file_and_state(stack, stack_dir):
    rows = {r["service"]: r for r in stack.status()}
    assert all(r["healthy"] for r in rows.values()), rows
    env = services.load_env_file(stack_dir / "services.env")
    assert env == stack.env()
    u = stack.urls()
    assert env["RAY_ADDRESS"] == u["ray"] and env["RAY_ADDRESS"].startswith("127.0.0.1:")
    assert env["RAY_API_SERVER_ADDRESS"] == u["ray_dashboard"] and env["RAY_AUTH_MODE"] == "disabled"
    assert env["MLFLOW_TRACKING_URI"] == u["mlflow"] and env["AWS_ENDPOINT_URL"] == u["s3"]
    assert env["AWS_SECRET_ACCESS_KEY"] == services.FAKE_AWS["AWS_SECRET_ACCESS_KEY"]  # fake, never real keys
    for name, rec in stack.state["services"].items():
        p = psutil.Process(rec["pid"])
        assert p.cmdline() == rec["cmdline"] and os.getpgid(rec["pid"]) == rec["pgid"] == rec["pid"]
        assert p.environ()[services.TAG_VAR] == f"{stack.state['stack_id']}:{name}"
    ports = [p for rec in stack.state["services"].values() for p in rec["ports"].values()]
    assert len(ports) == len(set(ports)) == 6


def test_a_ray_job_through_the_jobs_api(stack, monkeypatch):
    from ray.job_submission import JobStatus, JobSubmissionClient

    # Ray lets these override the client's address; the session fixtures may have set them.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    client = JobSubmissionClient(stack.urls()["ray_dashboard"])
    code = "import ray; ray.init(); print('answer', ray.get(ray.remote(lambda: 6 * 7).remote()))"
    job = client.submit_job(entrypoint=f"{sys.executable} -c \"{code}\"")
    deadline = time.monotonic() + 180
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, client.get_job_logs(job)
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs
    assert "answer 42" in logs


def test_an_mlflow_run_round_trip(stack, stack_dir, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(stack.urls()["mlflow"])
    exp = client.create_experiment("services-test")
    run = client.create_run(exp, run_name="round-trip")
    rid = run.info.run_id
    client.log_param(rid, "lr", "0.001")
    for step, v in enumerate((1.0, 0.5, 0.25)):
        client.log_metric(rid, "loss", v, step=step)
    (tmp_path / "note.txt").write_text("perceptual")
    client.log_artifact(rid, str(tmp_path / "note.txt"))
    client.set_terminated(rid)

    got = client.get_run(rid)
    assert got.data.params == {"lr": "0.001"} and got.info.status == "FINISHED"
    assert [m.value for m in sorted(client.get_metric_history(rid, "loss"), key=lambda m: m.step)] == [1.0, 0.5, 0.25]
    out = client.download_artifacts(rid, "note.txt", str(tmp_path / "dl"))
    assert Path(out).read_text() == "perceptual"
    assert list((stack_dir / "mlflow" / "artifacts").rglob("note.txt"))  # stored by the server's proxy


def test_a_bucket_round_trip(stack, monkeypatch):
    import pyarrow.fs as pafs

    from pipelines import storage

    for k, v in services.FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    url = stack.urls()["s3"]
    fs = pafs.S3FileSystem(endpoint_override=url, access_key=services.FAKE_AWS["AWS_ACCESS_KEY_ID"],
                           secret_key=services.FAKE_AWS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                           allow_bucket_creation=True)
    fs.create_dir("roundtrip")  # a bucket
    payload = os.urandom(100_000)
    with fs.open_output_stream("roundtrip/a/b.bin") as f:
        f.write(payload)
    # the project's own path: s3:// URI + endpoint, credentials from the environment
    fs2, path = storage.open_uri("s3://roundtrip/a", endpoint=url)
    assert storage.list_files(fs2, path) == ["b.bin"]
    assert storage.read_bytes(fs2, f"{path}/b.bin") == payload


def test_status_cli(stack, stack_dir):
    r = _cli("status", "--state-dir", stack_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in services.SERVICES:
        assert any(line.split()[:2] == [name, "healthy"] for line in r.stdout.splitlines()), r.stdout
    assert stack.urls()["ray_dashboard"] in r.stdout and "services.env" in r.stdout


def test_up_after_a_crash_restarts_only_the_dead_service(stack, stack_dir):
    before = {n: rec["pid"] for n, rec in stack.state["services"].items()}
    env_before = services.load_env_file(stack_dir / "services.env")
    rec = stack.state["services"]["mlflow"]
    leader = psutil.Process(rec["pid"])
    assert leader.cmdline() == rec["cmdline"]  # ours: checked before signalling
    os.kill(rec["pid"], signal.SIGKILL)  # a crash: no chance to stop its children
    deadline = time.monotonic() + 10
    while _alive(rec["pid"]) and time.monotonic() < deadline:
        stack._procs["mlflow"].poll()
        time.sleep(0.1)
    assert not _alive(rec["pid"])
    r = _cli("status", "--state-dir", stack_dir)
    assert r.returncode == 1 and any(line.split()[:2] == ["mlflow", "stopped"] for line in r.stdout.splitlines())

    r = _cli("up", "--state-dir", stack_dir, "--ray-tmpdir", ROOT / "tmp" / "ray-svc", "--timeout", 150)
    assert r.returncode == 0, r.stdout + r.stderr
    after_stack = services.Stack(_cfg(stack_dir))
    after = {n: rec["pid"] for n, rec in after_stack.state["services"].items()}
    assert after["ray"] == before["ray"] and after["s3"] == before["s3"]  # untouched
    assert after["mlflow"] != before["mlflow"] and _alive(after["mlflow"])
    assert services.load_env_file(stack_dir / "services.env") == env_before  # same ports, same file
    assert all(r["healthy"] for r in after_stack.status())
    from mlflow import MlflowClient

    assert MlflowClient(env_before["MLFLOW_TRACKING_URI"]).get_experiment_by_name("services-test")  # data kept


def test_down_leaves_no_process_of_the_stack(stack, stack_dir):
    st = services.Stack(_cfg(stack_dir))
    pids = set()
    for rec in st.state["services"].values():
        pids.add(rec["pid"])
        pids.update(c.pid for c in psutil.Process(rec["pid"]).children(recursive=True))
    pids.update(p.pid for p in _tagged(st))  # also those outside the process groups (Ray job drivers)
    assert len(pids) > 6  # leaders plus Ray's gcs_server, raylet, dashboard, ... and uvicorn

    r = _cli("down", "--state-dir", stack_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [pid for pid in pids if _alive(pid)] == []
    assert _tagged(services.Stack(_cfg(stack_dir))) == []
    assert not (stack_dir / "services.env").exists()
    r = _cli("status", "--state-dir", stack_dir)
    assert r.returncode == 1 and all(line.split()[1] == "stopped" for line in r.stdout.splitlines()[1:4])
