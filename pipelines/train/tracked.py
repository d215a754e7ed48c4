"""Training's MLflow calls, made so an outage costs no work: a worker's reports never stall training
(events.jsonl keeps them), and a driver's failed call says in one line what became of the work."""
from __future__ import annotations

import contextlib
from pathlib import Path

from ..log import get
from .outdir import EVENTS, RUN_ID

log = get(__name__)


def _send_metrics(run_id: str, metrics: dict, step: int, down: bool) -> bool:
    """Log one report to MLflow without stalling training; returns True while the server is unreachable.
    Nothing is lost: every report is in events.jsonl, and run_job sends what MLflow lacks at the end."""
    from .. import tracking

    try:
        with tracking.short_retries():
            tracking.log_metrics(run_id, metrics, step=step)
    except Exception as e:  # noqa: BLE001 - any tracking failure (HTTP, database) is an outage here
        if not down:
            log.warning(f"train: MLflow {tracking.redact(tracking.tracking_uri())} unreachable at iteration {step} "
                        f"({type(e).__name__}); training goes on, its metrics are kept in {EVENTS} and sent at the end")
        return True
    if down:
        log.info(f"train: MLflow reachable again at iteration {step}")
    return False


@contextlib.contextmanager
def _tracking_step(when: str):
    """A driver's MLflow call that failed (the server down, refused, or erroring) as one line saying
    what happened to the work (run_stage prints ValueError as `error: ...`, exit 2)."""
    from mlflow.exceptions import MlflowException

    from .. import tracking

    try:
        yield
    except (MlflowException, ConnectionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(tracking.redact(f"MLflow {tracking.tracking_uri()} failed {when} ({first})")) from None


def _resumed_run(out_dir: Path) -> str | None:
    """The MLflow run an interrupted job started (so --resume continues its curves), if it still exists."""
    from .. import tracking

    p = out_dir / RUN_ID
    if not p.is_file():
        return None
    run_id = p.read_text().strip()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking.tracking_uri())
    try:
        client.get_run(run_id)
    except MlflowException:
        return None
    client.update_run(run_id, status="RUNNING")
    return run_id
