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
    kwargs = ({"address": address} if address
              else {"address": "local", "num_cpus": num_cpus, "include_dashboard": False})  # never a stray cluster
    ray.init(logging_level=logging.WARNING, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()
