"""MLflow tracking of training runs: a run per job, tagged with the code and data it used, its params
and metrics. Every call goes through an explicit ``MlflowClient(tracking_uri())`` so a Ray worker or a
DVC stage in any working directory can log to a run it did not start (no fluent active-run state).
The store (mlflow_store.py) and the registry (registry.py) are modules of their own."""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import config
# Re-exported (noqa: F401): callers use tracking.X for the store's and the registry's names too.
from .mlflow_store import _artifact_location, _client, redact, short_retries, tracking_uri  # noqa: F401
from .registry import (CHALLENGER, _lookup, _parse_models_uri, _signature, finish_run, get_version,  # noqa: F401
                       resolve_model, set_alias, set_version_tags)

if TYPE_CHECKING:  # mlflow is imported lazily: plain checkpoint use never loads it
    from mlflow.entities.model_registry import ModelVersion

# MLflow 3 accepts 6000 chars, but older servers and DB schemas stop at 500: stay portable.
MAX_PARAM_VALUE = 500
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000  # MLflow's per-request limits of log_batch


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _param_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / only (and at most 250 chars).
    return re.sub(r"[^\w\-. /]", "_", key)[:250]


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=config.ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _dvc_lock() -> Path:
    return config.ROOT / "dvc.lock"


def _data_version(stage: str | None) -> str:
    """md5 that dvc.lock records for the stage's first out (its data folder; later outs are
    its metrics), so a run names the exact dataset `dvc checkout` would restore."""
    import yaml

    lock = _dvc_lock()
    if not stage or not lock.is_file():
        return "missing"
    try:
        outs = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {}).get("outs") or []
    except yaml.YAMLError:
        return "missing"
    md5 = outs[0].get("md5") if outs and isinstance(outs[0], dict) else None
    return str(md5) if md5 else "missing"


def provenance(data_stage: str | None = None) -> dict[str, str]:
    """Tags that pin a run to its code and data: git commit/dirty, DVC data md5, dvc.lock hash."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    lock = _dvc_lock()
    return {
        "git_commit": commit.strip() if commit else "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status.strip())).lower(),
        "data_stage": data_stage or "",
        "data_version": _data_version(data_stage),
        "dvc_lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "missing",
    }


def start_run(job: str, params: dict, *, experiment: str = "perceptual-train",
              data_stage: str | None = None) -> str:
    from mlflow.entities import LifecycleStage, Param
    from mlflow.exceptions import MlflowException

    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(experiment,
                                              artifact_location=_artifact_location(tracking_uri(), experiment))
        except MlflowException:  # another process created it between the two calls
            exp_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == LifecycleStage.DELETED:  # a deleted name still blocks re-creation
            client.restore_experiment(exp_id)
    run = client.create_run(exp_id, run_name=job, tags=provenance(data_stage))
    run_id = run.info.run_id
    flat = [Param(_param_key(k), v[:MAX_PARAM_VALUE]) for k, v in _flatten(params).items()]
    for i in range(0, len(flat), _BATCH_PARAMS):
        client.log_batch(run_id, params=flat[i:i + _BATCH_PARAMS])
    return run_id


def log_metrics(run_id: str, metrics: dict[str, float], step: int, timestamp: float | None = None) -> None:
    from mlflow.entities import Metric

    ts = int((time.time() if timestamp is None else timestamp) * 1000)
    ms = [Metric(_param_key(k), float(v), ts, int(step)) for k, v in metrics.items()]
    client = _client()
    for i in range(0, len(ms), _BATCH_METRICS):
        client.log_batch(run_id, metrics=ms[i:i + _BATCH_METRICS])


def backfill_metrics(run_id: str, points: list[tuple[dict, int, float]], key: str = "loss_total") -> int:
    """Log the (metrics, step, time) points whose step the run lacks for ``key``: reports made while
    the server was down (training keeps them in its events file). Returns how many were sent."""
    have = {m.step for m in _client().get_metric_history(run_id, _param_key(key))}
    missing = {step: (m, t) for m, step, t in points if step not in have}  # the last report of a step wins
    for step, (m, t) in sorted(missing.items()):
        log_metrics(run_id, m, step, timestamp=t)
    return len(missing)


def log_image(run_id: str, image, artifact_file: str) -> None:
    _client().log_image(run_id, image, artifact_file=artifact_file)


def log_file(run_id: str, path, artifact_path: str | None = None) -> None:
    _client().log_artifact(run_id, str(path), artifact_path)


def register_release(model_name: str, model, tags: dict[str, str]) -> ModelVersion:
    """A shipped model (models/) as a new version of ``model_name`` with alias champion, in its own
    run of the experiment `perceptual-release`; the champion it replaces (if any) is recorded as
    `promotion.previous_champion`, so `perceptual promote NAME --rollback` can undo it."""
    from mlflow.exceptions import MlflowException

    from perceptual_core.checkpoint import save_checkpoint

    client = _client()
    try:
        previous = client.get_registered_model(model_name).aliases.get("champion")
    except MlflowException:
        previous = None
    hw = (24, 24) if model.config.get("arch") != "transform" else (64, 64)
    with tempfile.TemporaryDirectory() as d:
        ckpt = save_checkpoint(Path(d) / "model.pt", model, meta={"release": tags})
        run_id = start_run(f"release-{model_name}", {"release": tags}, experiment="perceptual-release")
        mv = finish_run(run_id, model, ckpt, model_name=model_name, example_hw=hw, tags=tags, alias="champion")
    extra = {"promotion.decision": "release", "promotion.reason": "a shipped release (models/) registered"}
    if previous and str(previous) != str(mv.version):
        extra["promotion.previous_champion"] = str(previous)
    set_version_tags(model_name, mv.version, extra)
    return mv
