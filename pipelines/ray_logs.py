"""What went wrong in the newest Ray session: its error lines, file by file.

When a Ray process dies, the driver that was connected to it exits at once (the core worker quits
with status 1 when it loses its raylet or GCS), so a test run or a batch job ends with no Python
traceback at all. The reason is in the session's log folder,
``$RAY_TMPDIR/session_latest/logs``: raylet, GCS, driver and worker logs. This prints the lines
that matter (glog levels E and F, failed checks, tracebacks, fatal signals, OOM kills) and the
tail of every non-empty ``*.err`` file, newest session only.

    python -m pipelines.ray_logs [RAY_TMPDIR] [--lines N]      (make test runs it when pytest fails)
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .log import get, setup

__all__ = ["digest", "main"]

# "[2026-12-02 01:00:00,123 E 1234 5678] file.cc:12: ..." is glog's format (levels I W E F).
_BAD = re.compile(r"^\[\S+ \S+ [EF] \d+|Check failed|Traceback|FATAL|SIGSEGV|SIGABRT|SIGBUS|"
                  r"out of memory|OutOfMemory|Failed to connect to GCS|QuickExit|disk.*full|No space left")
_NOISE = re.compile(r"has constructor arguments in the object store")  # Ray Data's every actor pool
# Least telling first: a CI log shows the end of the output, so the daemons and the drivers come last.
_FILES = ("worker-*.err", "python-core-worker-*.log", "dashboard.log", "monitor.log", "python-core-driver-*.log",
          "gcs_server.err", "gcs_server.out", "raylet.err", "raylet.out")
_MARKER = re.compile(r"^:(job_id|actor_name|task_name):")
_TAILS = {"raylet.out": 8, "gcs_server.out": 4}  # how each daemon's log ends says whether it was alive
_DRIVERS = 3  # the newest driver logs, last lines of each: the driver that exited is among them
_WORKERS = 4  # worker logs: only the newest (a long session has hundreds)


def _session(tmpdir: Path) -> Path | None:
    for base in (tmpdir / "session_latest", tmpdir / "ray" / "session_latest"):
        if base.exists():
            return base.resolve()
    return None


def digest(tmpdir: Path, lines: int = 30) -> list[str]:
    """Lines to print: a header per log file with trouble in it, then its last ``lines`` such lines."""
    session = _session(Path(tmpdir))
    if session is None:
        return [f"ray logs: no Ray session under {tmpdir}"]
    out = [f"ray logs: {session}"]
    seen: set[Path] = set()
    logs = session / "logs"
    drivers = sorted(logs.glob("python-core-driver-*.log"), key=lambda p: p.stat().st_mtime)[-_DRIVERS:]
    for pattern in _FILES:
        files = sorted(logs.glob(pattern), key=lambda p: p.stat().st_mtime)
        if pattern.startswith(("python-core-worker", "worker-")):
            files = files[-_WORKERS:]  # the newest few
        for f in files:
            if f in seen or not f.is_file():
                continue
            seen.add(f)
            text = f.read_text(errors="replace").splitlines()
            if f.suffix == ".err":  # minus Ray's own ":job_id:" / ":actor_name:" markers
                hits = [ln for ln in text if ln.strip() and not _MARKER.match(ln)][-lines:]
            else:
                hits = [ln for ln in text if _BAD.search(ln) and not _NOISE.search(ln)][-lines:]
                tail = _TAILS.get(f.name, 5 if f in drivers else 0)
                hits += [ln for ln in text[-tail:] if ln not in hits and not _NOISE.search(ln)] if tail else []
            if hits:
                out.append(f"--- {f.name} ({len(text)} lines)")
                out.extend(ln[:400] for ln in hits)
    if len(out) == 1:
        out.append("ray logs: no errors recorded")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.ray_logs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tmpdir", nargs="?", default=os.environ.get("RAY_TMPDIR") or "/tmp/ray",
                   help="Ray's temp folder (default $RAY_TMPDIR, else /tmp/ray)")
    p.add_argument("--lines", type=int, default=30, help="at most this many lines per log file")
    a = p.parse_args(argv)
    setup()
    get(__name__).info("\n".join(digest(Path(a.tmpdir), a.lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
