"""The local services stack (perceptual_services/, `perceptual services up|down|status`) for real:
a Ray head with the Jobs API, an `mlflow server` and moto's S3 server on 127.0.0.1, started in a
tmp state folder on free ports (apart from the session fixtures), used, checked for anything that
listens beyond 127.0.0.1 without Ray's token, one of them killed and recovered, then stopped with
nothing left running. No mocks."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

import perceptual_services as services

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]


def _cfg(state_dir: Path, **kw) -> services.StackConfig:
    kw.setdefault("ports", {k: 0 for k in services.DEFAULT_PORTS})
    return services.StackConfig(state_dir=state_dir, ray_tmpdir=ROOT / "tmp" / "ray-svc", ray_num_cpus=1,
                                ray_object_store_memory=100_000_000, timeout=150, stop_grace=5, **kw)


def _cli(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "perceptual_services", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _tagged(stack: services.Stack) -> list[psutil.Process]:
    return [p for name in services.SERVICES for p in stack._owned(name)]


def _bearer(stack: services.Stack, token: str | None = None) -> dict[str, str]:
    return {"Authorization": "Bearer " + (token or stack.token_path.read_text().strip())}


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
    assert env["RAY_API_SERVER_ADDRESS"] == u["ray_dashboard"] and env["RAY_AUTH_MODE"] == "token"
    token_file = Path(env["RAY_AUTH_TOKEN_PATH"])  # the env file names the token's file, never the token
    assert token_file == stack_dir / services.TOKEN_FILE and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) == 64 and "RAY_AUTH_TOKEN" not in env
    for f in (stack_dir / "services.env", stack_dir / "state.json", *(stack_dir / "logs").iterdir()):
        assert token not in f.read_text(errors="replace"), f  # never printed, never written elsewhere
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
    # The token as a header: this process may hold the session head's token (conftest's ray_address).
    client = JobSubmissionClient(stack.urls()["ray_dashboard"], headers=_bearer(stack))
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


# ------------------------------------------------------------- nothing open to the network without auth

_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
# One real RPC of each Ray gRPC server the head runs (GCS, raylet, object manager, dashboard agent,
# Ray Client server, the core worker of every worker and driver): called without a token, the one a
# port serves must answer UNAUTHENTICATED (the others: UNIMPLEMENTED).
_RAY_RPCS = ("/ray.rpc.NodeInfoGcsService/GetClusterId", "/ray.rpc.NodeManagerService/GetNodeStats",
             "/ray.rpc.ObjectManagerService/Pull", "/ray.rpc.ReporterService/GetTraceback",
             "/ray.rpc.RayletDriver/ClusterInfo", "/ray.rpc.CoreWorkerService/NumPendingTasks")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _stack_processes(stack_dir: Path) -> dict[int, tuple[psutil.Process, str]]:
    """{pid: (process, service)} of every process of the stack in ``stack_dir``: those carrying its
    PERCEPTUAL_SERVICE_TAG, the PIDs in state.json, and all their descendants (found here, not with
    the code under test)."""
    st = json.loads((stack_dir / services.STATE_FILE).read_text())
    prefix, roots = st["stack_id"] + ":", {}
    for p in psutil.process_iter(["pid"]):
        try:
            tag = p.environ().get(services.TAG_VAR, "")
        except psutil.Error:
            continue
        if tag.startswith(prefix):
            roots[p.pid] = (p, tag[len(prefix):])
    for name, rec in st["services"].items():
        try:
            roots.setdefault(rec["pid"], (psutil.Process(rec["pid"]), name))
        except psutil.NoSuchProcess:
            pass
    found = dict(roots)
    for p, name in roots.values():
        try:
            found.update((c.pid, (c, name)) for c in p.children(recursive=True))
        except psutil.Error:
            pass
    return found


def _http_get(host: str, port: int, headers: dict | None = None) -> tuple[int | None, str]:
    """(status, start of the body) of GET /; (None, why) when what answers does not speak HTTP/1."""
    try:
        with _NO_PROXY.open(urllib.request.Request(f"http://{host}:{port}/", headers=headers or {}), timeout=5) as r:
            return r.status, r.read(200).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(200).decode(errors="replace")
    except (http.client.HTTPException, urllib.error.URLError, ConnectionError) as e:  # gRPC: HTTP/2 frames
        return None, type(e).__name__


def _grpc_codes(host: str, port: int, metadata=()) -> dict[str, str]:
    import grpc

    with grpc.insecure_channel(f"{host}:{port}") as ch:
        out = {}
        for m in _RAY_RPCS:
            try:
                ch.unary_unary(m, request_serializer=bytes, response_deserializer=bytes)(b"", timeout=5,
                                                                                       metadata=metadata)
                out[m] = "OK"
            except grpc.RpcError as e:
                out[m] = e.code().name
        return out


def _driver(env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    code = ("import os, ray; ray.init(address=os.environ['RAY_ADDRESS'], logging_level='ERROR'); "
            "print('answer', ray.get(ray.remote(lambda: 6 * 7).remote()))")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True,
                          timeout=timeout)


def test_nothing_listens_beyond_127_0_0_1_without_authentication(stack, stack_dir, tmp_path):
    """Every listening TCP socket of the stack's processes binds 127.0.0.1, or belongs to Ray with
    token auth on: Ray 2.60 binds its GCS, raylet, agents and Ray Client server to all interfaces or the
    machine's address whatever --node-ip-address says, so there the token is the only door. Each such
    port refuses a client without the token (HTTP 401, gRPC UNAUTHENTICATED) unless it only serves
    Prometheus metrics (read-only, no code runs); a driver without the token cannot join, one with the
    env file can."""
    procs = _stack_processes(stack_dir)
    assert {name for _, name in procs.values()} == set(services.SERVICES)
    listening = []  # (ip, port, service, process name, pid)
    for p, name in procs.values():
        try:
            listening += [(c.laddr.ip, c.laddr.port, name, p.name(), p.pid) for c in p.net_connections(kind="tcp")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    assert {(name, port) for _, port, name, _, _ in listening} >= {
        (svc, port) for svc, rec in stack.state["services"].items() for key, port in rec["ports"].items()
        if key != "ray_agent"}  # every recorded port is found (the agent's opens late)
    exposed = sorted({e for e in listening if e[0] not in _LOOPBACK})
    assert [e for e in exposed if e[2] != "ray"] == []  # MLflow and S3: 127.0.0.1 only
    if not exposed:
        return

    # Ray listens beyond 127.0.0.1: token auth must be on, from `up`'s own files to every Ray port.
    env = services.load_env_file(stack_dir / services.ENV_FILE)
    assert env.get("RAY_AUTH_MODE") == "token", f"Ray listens on {exposed}, token auth {env.get('RAY_AUTH_MODE')}"
    head = psutil.Process(stack.state["services"]["ray"]["pid"]).environ()
    assert head["RAY_AUTH_MODE"] == "token" and head["RAY_AUTH_TOKEN_PATH"] == env["RAY_AUTH_TOKEN_PATH"]
    token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()

    jobs_url = stack.urls()["ray_dashboard"] + "/api/jobs/"  # the Jobs API: submits any command
    for headers, want in (({}, 401), (_bearer(stack, "0" * 64), 403), (_bearer(stack), 200)):
        try:
            with _NO_PROXY.open(urllib.request.Request(jobs_url, headers=headers), timeout=10) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == want, (jobs_url, list(headers), got)

    def gone(pid, port):  # an idle Ray worker may exit while it is probed
        try:
            return all(c.laddr.port != port for c in psutil.Process(pid).net_connections(kind="tcp")
                       if c.status == psutil.CONN_LISTEN)
        except psutil.NoSuchProcess:
            return True

    kinds = {}
    for ip, port, _, pname, pid in exposed:
        host = "127.0.0.1" if ip in ("0.0.0.0", "::", "::ffff:0.0.0.0") else ip.removeprefix("::ffff:")
        status, body = _http_get(host, port)
        if status in (401, 403):
            kinds[port] = "http, refused"
        elif status == 200 and body.startswith("# HELP"):
            kinds[port] = "prometheus metrics"
        elif status is None:
            codes = _grpc_codes(host, port)
            if "UNAUTHENTICATED" not in codes.values() and gone(pid, port):
                continue
            assert "OK" not in codes.values() and "UNAUTHENTICATED" in codes.values(), (ip, port, pname, codes)
            kinds[port] = "grpc, refused"
        else:
            raise AssertionError(f"{pname} on {ip}:{port} answers {status} without a token: {body[:100]!r}")
    assert "grpc, refused" in kinds.values(), kinds  # at least the GCS
    gcs = ("127.0.0.1", stack.port("ray"))
    assert _grpc_codes(*gcs)["/ray.rpc.NodeInfoGcsService/GetClusterId"] == "UNAUTHENTICATED"
    assert _grpc_codes(*gcs, metadata=(("authorization", f"Bearer {token}"),))[
        "/ray.rpc.NodeInfoGcsService/GetClusterId"] == "OK"  # refused for the token, nothing else

    # Real drivers: with the env file as written it joins; without the token (auth "disabled") it cannot.
    home = tmp_path / "home"  # no ~/.ray/auth_token to fall back on
    home.mkdir()
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "RAY_gcs_server_port_wait_time_s": "3"}
    r = _driver({**base, **env})
    assert r.returncode == 0 and "answer 42" in r.stdout, r.stdout + r.stderr[-3000:]
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    r = _driver({**base, **no_token, "RAY_AUTH_MODE": "disabled"})
    assert r.returncode != 0 and "answer" not in r.stdout
    assert "InvalidAuthToken" in r.stderr, r.stderr[-3000:]


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
