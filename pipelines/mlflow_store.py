"""Which MLflow store a process talks to and how: the tracking URI (environment, params, or the project's
sqlite file, absolute so Ray workers and DVC stages in any cwd share it), an explicit client, and the
guards around it (passwords kept out of logs, short retries where a stalled server must not block)."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from . import config


def tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        if redact(env) != env:  # MLflow prints "View run at: <URI>/..." on ending a run, password and all
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        return env
    uri = (config.params().get("mlflow") or {}).get("tracking_uri")
    if uri:
        return _absolute_uri(str(uri))
    # Absolute, so Ray workers and DVC stages started in any cwd share one store.
    return f"sqlite:///{config.ROOT / 'mlflow.db'}"


def _absolute_uri(uri: str) -> str:
    """Relative sqlite files and plain folders in params are relative to the project root."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{config.resolve(uri[len('sqlite:///'):])}"
    if "://" not in uri and not uri.startswith("databricks"):
        return str(config.resolve(uri))
    return uri


def _client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri())


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store live next to its file: MLflow's default, ./mlruns, depends
    on the cwd of whichever process created the experiment. Servers choose their own."""
    if uri.startswith("sqlite:///"):
        folder = re.sub(r"[^\w\-.]", "_", experiment)
        return (Path(uri[len("sqlite:///"):]).parent / "mlruns" / folder).as_uri()
    return None


@contextmanager
def _fluent_uri(uri: str):
    """Point the fluent API (log_model, register_model) at `uri` for one call, then restore
    both MLflow's global URI and $MLFLOW_TRACKING_URI (set_tracking_uri rewrites the variable)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_global = getattr(tracking_utils, "_tracking_uri", None)
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def redact(text: str) -> str:
    """``text`` (a URI, or a message quoting URIs) without any ``user:password@`` after a scheme, for logs
    and committed files: a tracking URI can carry a password, and MLflow's errors quote the request URL."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s]+@", r"\1", text)


@contextmanager
def short_retries(retries: int = 1, timeout: int = 10):
    """MLflow HTTP calls that must not stall training: MLflow's default (7 retries, backoff factor 2)
    blocks the caller for minutes while a server is down. MLflow reads these variables per request."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
