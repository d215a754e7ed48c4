"""Processes the stack starts and stops, by PID and never by name: each carries the stack's tag in its
environment, and a recorded PID is only signalled while its start time and command line still match
(a reused PID is left alone). Also the lookup of the venv's own tools (ray, mlflow, dvc)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import TAG_VAR, ServiceError


def venv_tool(name: str) -> str:
    """The path of tool ``name``: the venv's own first, else PATH; ServiceError if neither has it."""
    p = Path(sys.executable).with_name(name)  # the venv's own tool first
    found = str(p) if p.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH; install the project "
                           "(pip install -e '.[test]')")
    return found


def alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # a zombie is dead, only unreaped
    except psutil.Error:
        return False


def leader(rec: dict):
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


def owned(tag: str, rec: dict | None) -> list:
    """Live processes of the service tagged ``tag`` (recorded as ``rec``, if at all): those carrying the
    tag in their environment (children inherit it, also those that leave the process group, such as
    Ray job drivers), their descendants (processes that rename themselves with setproctitle, like Ray's
    dashboard modules and agents, clobber the environment /proc shows) and the members of the process
    group we created, when that group provably is ours (a tagged member or the verified leader in it)."""
    import psutil

    tagged, by_group = {}, {}
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
    if rec and rec.get("pgid"):
        members = by_group.get(rec["pgid"], [])
        if any(m.pid in tagged for m in members) or leader(rec) is not None:
            out.update((m.pid, m) for m in members)
    return [p for p in out.values() if alive(p)]


def wait_gone(procs: list, timeout: float, children) -> list:
    """Wait until ``procs`` are gone or ``timeout`` s passed; -> those still alive. ``children``: the
    Popen objects of our own children, polled meanwhile so they do not linger as zombies."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in children:
            proc.poll()
        still = [p for p in procs if alive(p)]
        if not still or time.monotonic() > deadline:
            return still
        time.sleep(0.2)


def kill(procs: list, grace: float, children, lead=None) -> list:
    """SIGTERM the leader ``lead`` (it stops its own children in order: `ray start --block` drains Ray in
    a few seconds, faster than when every Ray process gets the signal at once) or, without one, every
    process; SIGKILL whatever is left after ``grace`` s. Returns those still alive (none, normally)."""
    import psutil

    for p in ([lead] if lead is not None else procs):
        try:
            p.terminate()
        except psutil.Error:
            pass
    still = wait_gone(procs, grace, children)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    return wait_gone(still, 10.0, children)


def spawn(cmd: list[str], env: dict, cwd: Path, log_path: Path) -> tuple[subprocess.Popen, float, list[str]]:
    """Start ``cmd`` in its own process group, output appended to ``log_path``; -> (the child, its start
    time, its command line), read back once the child has exec'd (until then /proc shows an empty
    command line or ours): `down` compares both before it signals anything."""
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # own process group
    import psutil

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
    return proc, create_time, cmdline
