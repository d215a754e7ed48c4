"""One batch job per output location at a time.

A batch job cleans its output of a killed run's temp files at start and writes ``_failures.csv``
and ``_summary.json`` at the end; two jobs on one output would delete each other's temp files
(their renames then fail) and overwrite each other's summaries. So the driver holds a lock on
the output for the whole job, and a second job stops at once with a one-line error that names
the holder (pid, host, start time, command) and the lock file.

- Local folders (and NFS): ``fcntl.flock`` on ``<output>/.perceptual-batch.lock``, removed when
  the job ends. The kernel drops the lock when the holder dies, so a killed job leaves only the
  (hidden) file, never a stale lock: the rerun takes it.
- Object stores (S3) have no lock primitive that pyarrow exposes: the lock is a lease object the
  driver renews every ``RENEW_S`` seconds and marks released at the end (it stays, hidden, and
  names the last job); one not renewed for ``STALE_S`` seconds belongs to a job that is gone and
  is taken over. Best effort: two jobs starting within the same second on the same bucket prefix
  can both win.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

from .log import get

log = get(__name__)
LOCK = ".perceptual-batch.lock"
RENEW_S = 30.0
STALE_S = 120.0


class OutputInUse(ValueError):
    """Another live job holds the output."""


def _me(what: str) -> dict:
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now, "renewed": now, "job": what}


def _describe(holder: dict, where: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"output {where} is in use by another batch job (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {when}: {holder.get('job', '?')}); wait for it to finish or choose another --output "
            f"(lock: {where.rstrip('/')}/{LOCK})")


@contextlib.contextmanager
def hold(fs, root: str, what: str, where: str | None = None):
    """Hold the lock on output ``root`` (a pyarrow filesystem path) while the block runs;
    OutputInUse if a live job holds it. ``where``: the output as the user wrote it (for errors)."""
    import pyarrow.fs as pafs

    where = where or root
    if isinstance(fs, pafs.LocalFileSystem):
        with _local(root, what, where):
            yield
    else:
        with _lease(fs, root, what, where):
            yield


def _locked_file(path: str, where: str):
    """The lock file, open and flock'ed; OutputInUse if a live process holds it."""
    import fcntl

    for _ in range(5):
        f = open(path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            f.close()
            raise OutputInUse(_describe(holder, where)) from None
        try:  # the holder before us may have removed the file between our open and our flock
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return f
        f.close()
    raise OutputInUse(f"output {where}: could not take its lock {path} (it keeps being replaced)")


@contextlib.contextmanager
def _local(root: str, what: str, where: str):
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCK)
    f = _locked_file(path, where)
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_me(what)) + "\n")
        f.flush()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a job that opened it before now fails its inode check
        f.close()


@contextlib.contextmanager
def _lease(fs, root: str, what: str, where: str):
    from .batch import put_atomic

    path = f"{root.rstrip('/')}/{LOCK}"
    try:
        with fs.open_input_stream(path) as s:
            holder = json.loads(s.read() or b"{}")
    except (FileNotFoundError, OSError, ValueError):
        holder = None
    if holder and not holder.get("released") and time.time() - float(holder.get("renewed", 0)) < STALE_S:
        raise OutputInUse(_describe(holder, where))
    me = _me(what)
    put_atomic(fs, path, json.dumps(me).encode())
    stop = threading.Event()

    def renew():
        while not stop.wait(RENEW_S):
            try:
                put_atomic(fs, path, json.dumps({**me, "renewed": time.time()}).encode())
            except OSError as e:  # a missed renewal only shortens the lease
                log.warning(f"batch: could not renew the output lock {path}: {e}")

    t = threading.Thread(target=renew, name="output-lock", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)
        # Released, not deleted: deleting the last object under a prefix makes pyarrow write an empty
        # "directory" marker object in its place; a released lease says who held the output last.
        with contextlib.suppress(OSError):
            put_atomic(fs, path, json.dumps({**me, "renewed": time.time(), "released": time.time()}).encode())
