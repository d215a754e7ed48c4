"""Local services on 127.0.0.1 for development and tests: a Ray head (with the dashboard, so the
Ray Jobs API works), an ``mlflow server`` (sqlite + local artifact folder) and an S3-compatible
endpoint (moto's server), started and stopped by PID.

    perceptual services up|down|status|env      (also: python -m pipelines.services ...;
    make services-up / make services-down)

``up`` writes one env file, ``tmp/services/services.env`` by default, with every address a
client needs (RAY_ADDRESS, RAY_API_SERVER_ADDRESS for the Jobs API, MLFLOW_TRACKING_URI,
AWS_ENDPOINT_URL, ...), and ``state.json`` beside it with each service's PID, process group,
start time, command line and ports. ``down`` stops exactly what ``up`` started: every process
it launched carries ``PERCEPTUAL_SERVICE_TAG=<stack id>:<service>`` in its environment (children
inherit it, also those that leave the process group, such as Ray job drivers), and a recorded
PID is only signalled after its start time and command line are checked again. Nothing is
ever killed by name. ``up`` again after a crash restarts only the services that are not running,
on the ports they had, so the env file stays valid.

Ray keeps token authentication on (``RAY_AUTH_MODE=token``): not every Ray process can be bound
to 127.0.0.1 (Ray 2.60's GCS, raylet, dashboard agent and workers listen on all interfaces,
whatever ``--node-ip-address`` says), so without a token anyone on the network could run code on
the head. ``up`` creates a random token (256 bits) in ``ray_auth_token`` in the state folder, mode
0600, and keeps it while Ray runs (a restart after a crash reuses it); ``down`` deletes it. The
token is never printed nor written anywhere else: the head and every Ray process, job driver and
worker read it through ``RAY_AUTH_TOKEN_PATH``, and the env file carries that path and
``RAY_AUTH_MODE=token``, which is what ``ray.init(address=...)``, ``ray job submit`` /
``JobSubmissionClient`` and ``perceptual batch`` need (a ``RAY_AUTH_TOKEN`` set in the shell would
take precedence: ``services env`` unsets it). The dashboard / Jobs API answers 401 without the
token. Left open by Ray: read-only Prometheus metrics of the autoscaler monitor and the dashboard;
the dashboard agent's metrics port is switched off (``RAY_enable_metrics_collection=0``). The
dashboard, MLflow and the S3 endpoint bind 127.0.0.1 only; tests/test_services.py checks all this.

The S3 endpoint accepts any credentials; the env file carries obviously fake ones. moto is a
development dependency (``pip install -e '.[test]'``): ``--no-s3`` leaves it out, e.g. to point
AWS_ENDPOINT_URL at your own MinIO. moto keeps buckets in memory, so they are gone after ``down``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_PORTS", "SERVICES", "PortInUseError", "ServiceError", "Stack", "StackConfig",
           "add_cli", "load_env_file", "main"]

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SERVICES = ("ray", "mlflow", "s3")
DEFAULT_STATE_DIR = ROOT / "tmp" / "services"
DEFAULT_RAY_TMPDIR = ROOT / "tmp" / "ray"  # short: Ray's socket paths below it must stay < 108 bytes
MAX_RAY_TMPDIR_LEN = 40                    # + "/ray/session_<date>_<time>_<us>_<pid>/sockets/..." ~ 67
ENV_FILE, STATE_FILE = "services.env", "state.json"
TOKEN_FILE = "ray_auth_token"  # Ray's auth token, mode 0600, in the state folder while Ray runs
TAG_VAR = "PERCEPTUAL_SERVICE_TAG"

# Away from the usual defaults (Ray 6379/8265/10001/52365, MLflow and moto 5000, which macOS
# AirPlay also takes). 0 means "any free port" (chosen at the first start, then kept).
DEFAULT_PORTS = {
    "ray": 26379,            # GCS: RAY_ADDRESS
    "ray_dashboard": 28265,  # dashboard + Jobs API: RAY_API_SERVER_ADDRESS
    "ray_client": 20001,     # ray://127.0.0.1:PORT (Ray Client)
    "ray_agent": 0,          # the dashboard agent's HTTP port (Ray's default 52365 clashes between heads)
    "mlflow": 25000,
    "s3": 29000,
}
_PORTS_OF = {"ray": ("ray", "ray_dashboard", "ray_client", "ray_agent"), "mlflow": ("mlflow",), "s3": ("s3",)}
_WHAT = {"ray": "Ray head", "ray_dashboard": "Ray dashboard / Jobs API", "ray_client": "Ray Client server",
         "ray_agent": "Ray dashboard agent", "mlflow": "MLflow tracking server", "s3": "S3 endpoint (moto)"}
_PORT_OPTION = {"ray": "--ray-port", "ray_dashboard": "--dashboard-port", "ray_client": "--ray-client-port",
                "ray_agent": "--ray-agent-port", "mlflow": "--mlflow-port", "s3": "--s3-port"}
# Obviously fake: moto accepts any key. Never real credentials in a file.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "local-moto-fake-key", "AWS_SECRET_ACCESS_KEY": "local-moto-fake-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}
# Variables of the caller that would point a child at another cluster / store, or give Ray another
# token (RAY_AUTH_TOKEN takes precedence over RAY_AUTH_TOKEN_PATH).
_SCRUB = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", TAG_VAR,
          "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class ServiceError(RuntimeError):
    """A service did not start, is unhealthy, or cannot be stopped; the message says what to do."""


class PortInUseError(ServiceError):
    pass


@dataclass
class StackConfig:
    """``ports``: per key of DEFAULT_PORTS, None = the port it last ran on, else the default; 0 = the port
    it last ran on, else any free one; N = exactly N."""
    state_dir: Path = DEFAULT_STATE_DIR
    ray_tmpdir: Path = DEFAULT_RAY_TMPDIR
    ports: dict = field(default_factory=dict)
    ray_num_cpus: int | None = None                 # None: Ray counts the cores
    ray_object_store_memory: int | None = 400_000_000
    timeout: float = 120.0                          # seconds to wait for health
    stop_grace: float = 10.0                        # SIGTERM, then SIGKILL after this many seconds

    def __post_init__(self):
        self.state_dir = Path(self.state_dir).resolve()
        self.ray_tmpdir = Path(self.ray_tmpdir).resolve()
        unknown = set(self.ports or {}) - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"unknown port keys {sorted(unknown)}; known: {', '.join(DEFAULT_PORTS)}")
        self.ports = {k: (self.ports or {}).get(k) for k in DEFAULT_PORTS}


# ----------------------------------------------------------------------------------- helpers

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never via $http_proxy


def _http_ok(url: str, timeout: float = 2.0, any_status: bool = False, headers: dict | None = None) -> bool:
    try:
        with _NO_PROXY.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return 200 <= r.status < 300
    except urllib.error.HTTPError as e:  # the server answered
        return any_status and e.code < 500
    except (OSError, ValueError):
        return False


def _tcp_ok(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        if sys.platform != "win32":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return not _tcp_ok(port, 0.3)  # something listening on another address of the port


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def _bin(name: str) -> str:
    p = Path(sys.executable).with_name(name)  # the venv's own tool first
    found = str(p) if p.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH; install the project "
                           "(pip install -e '.[test]')")
    return found


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _atomic_write(path: Path, text: str) -> None:
    from perceptual_core.io import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def load_env_file(path: str | os.PathLike | None = None) -> dict[str, str]:
    """KEY=VALUE lines of a services env file (``tmp/services/services.env`` by default)."""
    p = Path(path) if path else DEFAULT_STATE_DIR / ENV_FILE
    out = {}
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip().removeprefix("export ").strip()] = v.strip()
    return out


# ------------------------------------------------------------------------------------- stack

class Stack:
    """The three local services of one state folder. ``up``/``down`` of one folder are serialised by a
    lock file (two shells running `services up` at once start one stack, not two)."""

    def __init__(self, cfg: StackConfig | None = None):
        self.cfg = cfg or StackConfig()
        self.state_path = self.cfg.state_dir / STATE_FILE
        self.env_path = self.cfg.state_dir / ENV_FILE
        self.log_dir = self.cfg.state_dir / "logs"
        self.token_path = self.cfg.state_dir / TOKEN_FILE
        self.state = self._load()
        self._procs: dict[str, subprocess.Popen] = {}  # children started by this object (reaped by it)

    # -------------------------------------------------------------- state
    def _load(self) -> dict:
        try:
            st = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            st = {}
        st.setdefault("stack_id", uuid.uuid4().hex[:12])
        st.setdefault("services", {})
        st.setdefault("ports", {})  # ports each service last ran on (reused when the config says 0)
        return st

    def _save(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.state_path, json.dumps(self.state, indent=1, sort_keys=True) + "\n")

    def _tag(self, name: str) -> str:
        return f"{self.state['stack_id']}:{name}"

    # -------------------------------------------------------------- Ray's auth token
    def _ensure_token(self) -> None:
        """Ray's auth token: created once (mode 0600, never printed), kept while Ray runs so a restart
        after a crash keeps the env file valid."""
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.token_path, flags, 0o600)
        except FileExistsError:
            st = os.lstat(self.token_path)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size < 32:
                raise ServiceError(f"{self.token_path} is not a token file `up` made (a link, another owner's "
                                   "or too short): remove it and run `up` again") from None
            if st.st_mode & 0o077:
                os.chmod(self.token_path, 0o600)
            return
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate`

    def _auth_header(self) -> dict[str, str]:
        try:
            return {"Authorization": "Bearer " + self.token_path.read_text().strip()}
        except OSError:
            return {}

    # -------------------------------------------------------------- addresses
    def port(self, key: str) -> int:
        svc = next(s for s, keys in _PORTS_OF.items() if key in keys)
        rec = self.state["services"].get(svc) or {}
        return int((rec.get("ports") or self.state["ports"].get(svc) or {}).get(key) or 0)

    def urls(self) -> dict[str, str]:
        """Addresses of the services recorded as started."""
        s, out = self.state["services"], {}
        if "ray" in s:
            out["ray"] = f"{HOST}:{self.port('ray')}"
            out["ray_dashboard"] = f"http://{HOST}:{self.port('ray_dashboard')}"
            out["ray_client"] = f"ray://{HOST}:{self.port('ray_client')}"
        if "mlflow" in s:
            out["mlflow"] = f"http://{HOST}:{self.port('mlflow')}"
        if "s3" in s:
            out["s3"] = f"http://{HOST}:{self.port('s3')}"
        return out

    def env(self) -> dict[str, str]:
        """What a client needs to use the running services (the env file's content)."""
        u, env = self.urls(), {}
        if "ray" in u:
            env.update(RAY_ADDRESS=u["ray"], RAY_API_SERVER_ADDRESS=u["ray_dashboard"],
                       RAY_DASHBOARD_URL=u["ray_dashboard"], RAY_CLIENT_ADDRESS=u["ray_client"],
                       RAY_TMPDIR=str(self.cfg.ray_tmpdir), RAY_AUTH_MODE="token",
                       RAY_AUTH_TOKEN_PATH=str(self.token_path))  # the file's path; the token stays in it
        if "mlflow" in u:
            env["MLFLOW_TRACKING_URI"] = u["mlflow"]
        if "s3" in u:
            env["AWS_ENDPOINT_URL"] = u["s3"]
            env.update(FAKE_AWS)
        return env

    def _write_env(self) -> None:
        env = self.env()
        if not env:
            self.env_path.unlink(missing_ok=True)
            return
        lines = [f"# Written by `perceptual services up` ({time.strftime('%Y-%m-%d %H:%M:%S')}); removed by `down`.",
                 "# Use: set -a; . " + str(self.env_path) + "; set +a   (or: eval \"$(perceptual services env)\")",
                 "# Local development only. Ray token auth is on: the token is in RAY_AUTH_TOKEN_PATH (mode 0600),",
                 "# never in this file; unset RAY_AUTH_TOKEN, which would override it. The AWS keys are fake (moto)."]
        lines += [f"{k}={v}" for k, v in env.items()]
        _atomic_write(self.env_path, "\n".join(lines) + "\n")

    # -------------------------------------------------------------- processes
    def _owned(self, name: str) -> list:
        """Live processes of service ``name`` that this stack started: those carrying its tag in their
        environment (children inherit it, also those that leave the process group, such as Ray job
        drivers), their descendants (processes that rename themselves with setproctitle, like Ray's
        dashboard modules and agents, clobber the environment /proc shows) and the members of the
        process group we created, when that group provably is ours (a tagged member or the verified
        leader in it)."""
        import psutil

        tag, tagged, by_group = self._tag(name), {}, {}
        for p in psutil.process_iter(["pid"]):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                by_group.setdefault(os.getpgid(p.pid), []).append(p)
                if p.environ().get(TAG_VAR) == tag:
                    tagged[p.pid] = p
            except (psutil.Error, OSError):  # gone, or not ours to read
                continue
        out = dict(tagged)
        for p in list(tagged.values()):
            try:
                out.update((c.pid, c) for c in p.children(recursive=True))
            except psutil.Error:
                continue
        rec = self.state["services"].get(name)
        if rec and rec.get("pgid"):
            members = by_group.get(rec["pgid"], [])
            if any(m.pid in tagged for m in members) or self._leader(rec) is not None:
                out.update((m.pid, m) for m in members)
        return [p for p in out.values() if self._alive(p)]

    def _leader(self, rec: dict):
        """The recorded leader process if it is still the very process we started (same start time and
        command line), else None: a reused PID is never signalled."""
        import psutil

        try:
            p = psutil.Process(rec["pid"])
            if (abs(p.create_time() - rec["create_time"]) < 1.0 and p.cmdline() == rec["cmdline"]
                    and p.status() != psutil.STATUS_ZOMBIE):
                return p
        except (psutil.Error, KeyError, OSError):
            pass
        return None

    def _healthy(self, name: str, timeout: float = 2.0) -> bool:
        if name == "ray":
            base = f"http://{HOST}:{self.port('ray_dashboard')}"
            return (_tcp_ok(self.port("ray"), timeout)
                    and _http_ok(f"{base}/api/version", timeout, headers=self._auth_header())
                    and _http_ok(f"{base}/api/gcs_healthz", timeout))
        if name == "mlflow":
            return _http_ok(f"http://{HOST}:{self.port('mlflow')}/health", timeout)
        if name == "s3":
            return _http_ok(f"http://{HOST}:{self.port('s3')}/", timeout, any_status=True)
        raise ValueError(name)

    def _command(self, name: str) -> tuple[list[str], dict, Path]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        p = {k: self.port(k) for k in _PORTS_OF[name]}
        if name == "ray":
            tmp = self.cfg.ray_tmpdir
            if len(str(tmp)) > MAX_RAY_TMPDIR_LEN:
                raise ServiceError(f"Ray temp folder {tmp} is {len(str(tmp))} characters; Ray's socket paths "
                                   f"below it must stay under 108 bytes: use one of at most {MAX_RAY_TMPDIR_LEN}")
            tmp.mkdir(parents=True, exist_ok=True)
            # Token auth on for every Ray process (they inherit this environment, job drivers too).
            env.update(RAY_TMPDIR=str(tmp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path),
                       RAY_enable_metrics_collection="0")  # else a Prometheus port on 0.0.0.0, without auth
            cmd = [_bin("ray"), "start", "--head", "--block", f"--port={p['ray']}", f"--node-ip-address={HOST}",
                   "--include-dashboard=true", f"--dashboard-host={HOST}", f"--dashboard-port={p['ray_dashboard']}",
                   f"--ray-client-server-port={p['ray_client']}", f"--dashboard-agent-listen-port={p['ray_agent']}",
                   "--disable-usage-stats"]
            if self.cfg.ray_num_cpus is not None:
                cmd.append(f"--num-cpus={self.cfg.ray_num_cpus}")
            if self.cfg.ray_object_store_memory:
                cmd.append(f"--object-store-memory={self.cfg.ray_object_store_memory}")
            return cmd, env, self.cfg.state_dir
        if name == "mlflow":
            d = self.cfg.state_dir / "mlflow"
            (d / "artifacts").mkdir(parents=True, exist_ok=True)
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # else a job-runner child outlives SIGTERM
            cmd = [_bin("mlflow"), "server", "--host", HOST, "--port", str(p["mlflow"]),
                   "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
                   "--artifacts-destination", str(d / "artifacts"), "--workers", "1"]
            return cmd, env, d
        if name == "s3":
            import importlib.util

            if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
                raise ServiceError("the local S3 endpoint is moto's server, a development dependency: "
                                   "pip install -e '.[test]' (or `services up --no-s3` and set "
                                   "AWS_ENDPOINT_URL to your own S3-compatible endpoint, e.g. MinIO)")
            return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(p["s3"])], env, self.cfg.state_dir
        raise ValueError(name)

    def _assign_ports(self, names: list[str]) -> None:
        """Ports for services about to start: explicit config > the ports they last ran on > a free one."""
        taken = {self.port(k) for s in self.state["services"] for k in _PORTS_OF[s]}
        problems = []
        for name in names:
            last = self.state["ports"].get(name) or {}
            ports = {}
            for key in _PORTS_OF[name]:
                asked = self.cfg.ports.get(key)
                want = asked or int(last.get(key) or 0) or (DEFAULT_PORTS[key] if asked is None else 0)
                if want and (want in taken or not _port_free(want)):
                    problems.append(f"port {want} on {HOST} is already in use; the {_WHAT[key]} ({name}) needs it: "
                                    f"stop what holds it (e.g. `lsof -i :{want}`), or pick another port with "
                                    f"{_PORT_OPTION[key]} N (0: any free port)")
                    continue
                ports[key] = want or _free_port(taken)
                taken.add(ports[key])
            self.state["ports"][name] = ports
        if problems:
            raise PortInUseError("\n".join(problems))

    @staticmethod
    def _alive(p) -> bool:
        import psutil

        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # a zombie is dead, only unreaped
        except psutil.Error:
            return False

    def _wait_gone(self, procs: list, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while True:
            for proc in self._procs.values():
                proc.poll()  # reap our own children so they do not linger as zombies
            alive = [p for p in procs if self._alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def _kill(self, procs: list, grace: float, leader=None) -> list:
        """SIGTERM the leader (it stops its own children in order: `ray start --block` drains Ray in a
        few seconds, faster than when every Ray process gets the signal at once) or, without one, every
        process; SIGKILL whatever is left after ``grace`` s. Returns those still alive (none, normally)."""
        import psutil

        for p in ([leader] if leader is not None else procs):
            try:
                p.terminate()
            except psutil.Error:
                pass
        alive = self._wait_gone(procs, grace)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        return self._wait_gone(alive, 10.0)

    def _launch(self, name: str) -> None:
        cmd, env, cwd = self._command(name)
        env[TAG_VAR] = self._tag(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # own process group
        import psutil

        # Read back what runs under the PID, once the child has exec'd (until then /proc shows an
        # empty command line or ours): `down` compares both before it signals anything.
        own, deadline, create_time, cmdline = psutil.Process().cmdline(), time.monotonic() + 5, 0.0, []
        while True:
            try:
                info = psutil.Process(proc.pid)
                create_time, cmdline = info.create_time(), info.cmdline()
            except psutil.Error:
                cmdline = []
            if (cmdline and cmdline != own) or proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.state["services"][name] = {"pid": proc.pid, "pgid": proc.pid, "create_time": create_time,
                                        "cmdline": cmdline, "ports": self.state["ports"][name],
                                        "log": str(log_path), "started": time.time()}
        self._save()
        self._procs[name] = proc

    def _wait_healthy(self, names: list[str]) -> None:
        deadline = time.monotonic() + self.cfg.timeout
        pending, failed = list(names), []
        while pending:
            for name in list(pending):
                proc = self._procs.get(name)
                if self._healthy(name):
                    pending.remove(name)
                elif proc is not None and proc.poll() is not None:
                    pending.remove(name)
                    failed.append(f"{name} exited with code {proc.returncode}")
                elif proc is None and self._leader(self.state["services"][name]) is None:
                    pending.remove(name)
                    failed.append(f"{name} (pid {self.state['services'][name]['pid']}) is gone")
            if pending and time.monotonic() > deadline:
                failed += [f"{n} not healthy after {self.cfg.timeout:.0f} s" for n in pending]
                break
            if pending:
                time.sleep(0.5)
        if failed:
            bad = [f.split()[0] for f in failed]
            msgs = []
            for name in bad:
                rec = self.state["services"].get(name) or {}
                msgs.append(f"--- {name}: log {rec.get('log')} (last lines):\n{_tail(Path(rec.get('log', '/nonexistent')))}")
                self._stop(name)
            self._write_env()
            raise ServiceError("; ".join(failed) + "\n" + "\n".join(msgs))

    def _stop(self, name: str) -> list:
        rec = self.state["services"].get(name)
        procs = self._owned(name)
        leader = self._leader(rec) if rec else None
        if leader is not None and leader.pid not in {p.pid for p in procs}:
            procs.insert(0, leader)
        alive = self._kill(procs, self.cfg.stop_grace, leader) if procs else []
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.poll()  # reap our own child
        self.state["services"].pop(name, None)
        self._save()
        if name == "ray" and not alive:
            self.token_path.unlink(missing_ok=True)  # a fresh token with the next Ray
        return alive

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cfg.state_dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self.state = self._load()  # what another process did meanwhile
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -------------------------------------------------------------- public
    def up(self, names=None) -> dict[str, str]:
        """Start the services in ``names`` (default all) that are not running and healthy; -> env dict."""
        with self._locked():
            return self._up(names)

    def down(self, names=None) -> dict[str, list[int]]:
        """Stop the services in ``names`` (default all) by their recorded, re-verified PIDs and tags.
        -> {service: PIDs still alive}; empty lists when everything is gone."""
        with self._locked():
            return self._down(names)

    def _up(self, names=None) -> dict[str, str]:
        names = list(names or SERVICES)
        for n in names:
            if n not in SERVICES:
                raise ValueError(f"unknown service {n!r}; known: {', '.join(SERVICES)}")
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        running, start = [], []
        for n in names:
            rec = self.state["services"].get(n)
            if rec and self._leader(rec) is not None:
                running.append(n)
            else:
                old = self._procs.pop(n, None)
                if old is not None:
                    old.poll()  # reap our dead child
                start.append(n)
        if running:  # alive: give one that is still starting its time, never a second copy
            self._wait_healthy(running)
        if start:
            for n in start:  # fail before starting anything when a command is missing (moto)
                self._command_check(n)
            for n in start:  # what a crashed leader left (uvicorn, raylet, ...) still holds its ports
                leftovers = self._owned(n)
                if leftovers:
                    self._kill(leftovers, 2.0)
                self.state["services"].pop(n, None)  # forget it; its ports stay in state["ports"]
            self._assign_ports(start)
            if "ray" in start:
                self._ensure_token()
            for n in start:
                self._launch(n)
            self._wait_healthy(start)
        self._save()
        self._write_env()
        return self.env()

    def _command_check(self, name: str) -> None:
        saved = dict(self.state["ports"])
        try:
            self.state["ports"].setdefault(name, {k: 0 for k in _PORTS_OF[name]})
            self._command(name)
        finally:
            self.state["ports"] = saved

    def _down(self, names=None) -> dict[str, list[int]]:
        names = list(names or SERVICES)
        result = {}
        for n in reversed([s for s in SERVICES if s in names]):
            if n in self.state["services"] or self._owned(n):
                result[n] = [p.pid for p in self._stop(n)]
        self._write_env()
        left = {n: pids for n, pids in result.items() if pids}
        if left:
            raise ServiceError(f"these processes survived SIGKILL: {left}")
        return result

    def status(self) -> list[dict]:
        rows = []
        for n in SERVICES:
            rec = self.state["services"].get(n)
            alive = bool(rec) and self._leader(rec) is not None
            rows.append({"service": n, "pid": rec["pid"] if rec else None, "running": alive,
                         "healthy": alive and self._healthy(n), "ports": (rec or {}).get("ports") or {},
                         "url": self.urls().get(n) if rec else None, "log": (rec or {}).get("log")})
        return rows


# --------------------------------------------------------------------------------------- CLI

def _add_arguments(ss) -> None:
    def common(p):
        p.add_argument("--state-dir", default=os.environ.get("PERCEPTUAL_SERVICES_DIR") or str(DEFAULT_STATE_DIR),
                       help="state folder: services.env, state.json, logs, MLflow store "
                            "(default $PERCEPTUAL_SERVICES_DIR or tmp/services)")

    p = ss.add_parser("up", help="start what is not running (also after a crash of one service); write the env file")
    common(p)
    for key, opt in _PORT_OPTION.items():
        p.add_argument(opt, type=int, default=None, dest=f"port_{key}",
                       help=f"{_WHAT[key]} port (default {DEFAULT_PORTS[key] or 'any free'}; 0: any free port)")
    p.add_argument("--no-s3", action="store_true", help="leave out the moto S3 endpoint")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs the Ray head offers (default: all)")
    p.add_argument("--object-store-memory", type=int, default=400_000_000, help="Ray object store bytes")
    p.add_argument("--ray-tmpdir", default=str(DEFAULT_RAY_TMPDIR), help="Ray's temp folder (keep it short)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service's health check")
    p = ss.add_parser("down", help="stop exactly the processes `up` started")
    common(p)
    p = ss.add_parser("status", help="each service, its PID, address and health")
    common(p)
    p.add_argument("--json", action="store_true")
    p = ss.add_parser("env", help="print `export` lines for the running services: eval \"$(perceptual services env)\"")
    common(p)


def _config(a) -> StackConfig:
    ports = {key: getattr(a, f"port_{key}", None) for key in DEFAULT_PORTS}  # None: last used, else default
    return StackConfig(state_dir=Path(a.state_dir), ray_tmpdir=Path(getattr(a, "ray_tmpdir", DEFAULT_RAY_TMPDIR)),
                       ports=ports, ray_num_cpus=getattr(a, "num_cpus", None),
                       ray_object_store_memory=getattr(a, "object_store_memory", 400_000_000),
                       timeout=getattr(a, "timeout", 120.0))


def _print_status(stack: Stack) -> int:
    rows = stack.status()
    print(f"{'service':8} {'state':9} {'pid':>8}  address")
    for r in rows:
        state = "healthy" if r["healthy"] else ("unhealthy" if r["running"] else "stopped")
        addr = r["url"] or "-"
        if r["service"] == "ray" and r["url"]:
            addr += f"  (Jobs API / dashboard {stack.urls()['ray_dashboard']})"
        print(f"{r['service']:8} {state:9} {r['pid'] or '-':>8}  {addr}")
    if stack.env_path.exists():
        print(f"env file: {stack.env_path}")
    started = [r for r in rows if r["pid"]]
    return 0 if started and all(r["healthy"] for r in started) else 1


def cmd_services(a) -> int:
    """Handler of `perceptual services up|down|status|env`; returns the exit code."""
    stack = Stack(_config(a))
    try:
        if a.action == "up":
            stack.up([s for s in SERVICES if not (s == "s3" and a.no_s3)])
            return _print_status(stack)
        if a.action == "down":
            stopped = stack.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            return 0
        if a.action == "status":
            if a.json:
                print(json.dumps(stack.status(), indent=1))
                started = [r for r in stack.status() if r["pid"]]
                return 0 if started and all(r["healthy"] for r in started) else 1
            return _print_status(stack)
        if a.action == "env":
            if not stack.env_path.exists():
                print(f"error: no env file at {stack.env_path}: run `perceptual services up` first", file=sys.stderr)
                return 1
            env = load_env_file(stack.env_path)
            if "RAY_AUTH_TOKEN_PATH" in env:
                print("unset RAY_AUTH_TOKEN")  # it would take precedence over the stack's token file
            for k, v in env.items():
                print(f"export {k}={v}")
            return 0
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    raise ValueError(a.action)


def add_cli(subparsers) -> None:
    """Register `services up|down|status|env` on the `perceptual` parser's subparsers (sets fn=)."""
    s = subparsers.add_parser("services", help="local Ray head + MLflow server + S3 endpoint on 127.0.0.1 "
                                               "(development and tests)")
    _add_arguments(s.add_subparsers(dest="action", required=True))
    s.set_defaults(fn=cmd_services)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.services", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p.add_subparsers(dest="action", required=True))
    return cmd_services(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
