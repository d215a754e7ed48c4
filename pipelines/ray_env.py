"""Connect to Ray the same way in every stage: a cluster when RAY_ADDRESS is set, else a local instance."""
from __future__ import annotations

import contextlib
import logging
import os


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None):
    """Yield with Ray initialised; shut it down afterwards only if this call started it.

    RAY_ADDRESS (e.g. ``ray://head:10001`` or ``127.0.0.1:6379``) joins an existing cluster, which
    is how the same stage prepares 80k images on a cluster and 9 here.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS")
    kwargs = ({"address": address} if address  # never a stray cluster:
              else {"address": "local", "num_cpus": num_cpus, "include_dashboard": False,
                    "runtime_env": {"worker_process_setup_hook": f"{__name__}.quiet_local_worker"}})
    why = _unreachable(address) if address else None
    try:
        if why:  # Ray itself would retry for minutes, silently
            raise ConnectionError(why)
        ray.init(logging_level=logging.WARNING, **kwargs)
    except ConnectionError as e:  # a cluster that is not there (or not reachable): one line, not a traceback
        raise ValueError(f"RAY_ADDRESS={address}: cannot connect to a Ray cluster there ({e}); start one "
                         f"(`perceptual services up`, `ray start --head`) or unset RAY_ADDRESS for a local "
                         f"instance") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing accepts a TCP connection at ``address`` (host:port or ray://host:port), or None
    (also for "auto" and other forms Ray resolves itself)."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as e:
        return f"{hostport}: {e.strerror or e}"


# Loggers that only make noise on a local instance, which runs without the dashboard (and so without
# Ray's state API): Ray Train's PlacementGroupCleaner asks the state API whether the train controller
# is alive every few seconds and warns each time it cannot (6,000 lines in a 1.7 h training log). The
# local instance ends with the stage, placement groups included, so the cleaner has nothing to do here.
LOCAL_QUIET = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_worker() -> None:
    """Ray's worker_process_setup_hook on a local instance: silence LOCAL_QUIET below ERROR."""
    for name in LOCAL_QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
