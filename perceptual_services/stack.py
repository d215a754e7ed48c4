"""One stack: the services of one state folder, started and stopped together. ``up`` starts what is not
running (after a crash only the dead service, on the ports it had, so the env file stays valid) and
``down`` stops exactly what ``up`` started; both hold the folder's lock, so two shells start one stack."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from . import files, mlflow_server, processes, ray_head, s3_endpoint
from .config import (DEFAULT_PORTS, ENV_FILE, HOST, PORT_OPTION, PORTS_OF, SERVICES, STATE_FILE, TAG_VAR,
                     TOKEN_FILE, WHAT, PortInUseError, ServiceError, StackConfig)
from .net import free_port, port_free

KINDS = {"ray": ray_head, "mlflow": mlflow_server, "s3": s3_endpoint}  # each: urls, client_env, healthy, command
# Variables of the caller that would point a child at another cluster / store, or give Ray another
# token (RAY_AUTH_TOKEN takes precedence over RAY_AUTH_TOKEN_PATH).
_SCRUB = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", TAG_VAR,
          "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class Stack:
    """The three local services of one state folder. ``up``/``down`` of one folder are serialised by a
    lock file (two shells running `services up` at once start one stack, not two)."""

    def __init__(self, cfg: StackConfig | None = None):
        self.cfg = cfg or StackConfig()
        self.state_path = self.cfg.state_dir / STATE_FILE
        self.env_path = self.cfg.state_dir / ENV_FILE
        self.log_dir = self.cfg.state_dir / "logs"
        self.token_path = self.cfg.state_dir / TOKEN_FILE
        self.state = files.load_state(self.state_path)
        self._procs: dict[str, subprocess.Popen] = {}  # children started by this object (reaped by it)

    def _save(self) -> None:
        files.save_state(self.state_path, self.state)

    def _tag(self, name: str) -> str:
        return f"{self.state['stack_id']}:{name}"

    # -------------------------------------------------------------- addresses
    def port(self, key: str) -> int:
        svc = next(s for s, keys in PORTS_OF.items() if key in keys)
        rec = self.state["services"].get(svc) or {}
        return int((rec.get("ports") or self.state["ports"].get(svc) or {}).get(key) or 0)

    def urls(self) -> dict[str, str]:
        """Addresses of the services recorded as started."""
        out = {}
        for name in SERVICES:
            if name in self.state["services"]:
                out.update(KINDS[name].urls(self))
        return out

    def env(self) -> dict[str, str]:
        """What a client needs to use the running services (the env file's content)."""
        env = {}
        for name in SERVICES:
            if name in self.state["services"]:
                env.update(KINDS[name].client_env(self))
        return env

    def _write_env(self) -> None:
        files.write_env_file(self.env_path, self.env())

    # -------------------------------------------------------------- processes
    def _owned(self, name: str) -> list:
        """Live processes of service ``name`` that this stack started (processes.owned)."""
        return processes.owned(self._tag(name), self.state["services"].get(name))

    def _kill(self, procs: list, grace: float, leader=None) -> list:
        return processes.kill(procs, grace, self._procs.values(), leader)

    def _healthy(self, name: str, timeout: float = 2.0) -> bool:
        return KINDS[name].healthy(self, timeout)

    def _command(self, name: str) -> tuple[list[str], dict, Path]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        return KINDS[name].command(self, env)

    def _assign_ports(self, names: list[str]) -> None:
        """Ports for services about to start: explicit config > the ports they last ran on > a free one."""
        taken = {self.port(k) for s in self.state["services"] for k in PORTS_OF[s]}
        problems = []
        for name in names:
            last = self.state["ports"].get(name) or {}
            ports = {}
            for key in PORTS_OF[name]:
                asked = self.cfg.ports.get(key)
                want = asked or int(last.get(key) or 0) or (DEFAULT_PORTS[key] if asked is None else 0)
                if want and (want in taken or not port_free(want)):
                    problems.append(f"port {want} on {HOST} is already in use; the {WHAT[key]} ({name}) needs it: "
                                    f"stop what holds it (e.g. `lsof -i :{want}`), or pick another port with "
                                    f"{PORT_OPTION[key]} N (0: any free port)")
                    continue
                ports[key] = want or free_port(taken)
                taken.add(ports[key])
            self.state["ports"][name] = ports
        if problems:
            raise PortInUseError("\n".join(problems))

    def _launch(self, name: str) -> None:
        cmd, env, cwd = self._command(name)
        env[TAG_VAR] = self._tag(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        proc, create_time, cmdline = processes.spawn(cmd, env, cwd, log_path)
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
                elif proc is None and processes.leader(self.state["services"][name]) is None:
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
                msgs.append(f"--- {name}: log {rec.get('log')} (last lines):\n"
                            f"{files.tail(Path(rec.get('log', '/nonexistent')))}")
                self._stop(name)
            self._write_env()
            raise ServiceError("; ".join(failed) + "\n" + "\n".join(msgs))

    def _stop(self, name: str) -> list:
        rec = self.state["services"].get(name)
        procs = self._owned(name)
        leader = processes.leader(rec) if rec else None
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
                self.state = files.load_state(self.state_path)  # what another process did meanwhile
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
            if rec and processes.leader(rec) is not None:
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
                ray_head.ensure_token(self.token_path)
            for n in start:
                self._launch(n)
            self._wait_healthy(start)
        self._save()
        self._write_env()
        return self.env()

    def _command_check(self, name: str) -> None:
        saved = dict(self.state["ports"])
        try:
            self.state["ports"].setdefault(name, {k: 0 for k in PORTS_OF[name]})
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
            alive = bool(rec) and processes.leader(rec) is not None
            rows.append({"service": n, "pid": rec["pid"] if rec else None, "running": alive,
                         "healthy": alive and self._healthy(n), "ports": (rec or {}).get("ports") or {},
                         "url": self.urls().get(n) if rec else None, "log": (rec or {}).get("log")})
        return rows
