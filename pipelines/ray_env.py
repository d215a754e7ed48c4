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
    ray.init(logging_level=logging.WARNING, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


# Loggers that only make noise on a local instance, which runs without the dashboard (and so without
# Ray's state API): Ray Train's PlacementGroupCleaner asks the state API whether the train controller
# is alive every few seconds and warns each time it cannot (6,000 lines in a 1.7 h training log). The
# local instance ends with the stage, placement groups included, so the cleaner has nothing to do here.
LOCAL_QUIET = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_worker() -> None:
    """Ray's worker_process_setup_hook on a local instance: silence LOCAL_QUIET below ERROR."""
    for name in LOCAL_QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
