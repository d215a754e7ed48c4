"""MLflow tracking and model registry for training runs.

Every call goes through an explicit ``MlflowClient(tracking_uri())`` so a Ray worker or a DVC
stage in any working directory can log to a run it did not start (no fluent active-run state);
only ``finish_run`` uses the fluent API, because ``mlflow.pytorch.log_model`` needs it.
Models are logged as ``pt2`` (torch.export, no pickle) with our tensor-only checkpoint as an
extra file; ``resolve_model`` hands that checkpoint back for ``checkpoint.load_model``.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import config

if TYPE_CHECKING:  # mlflow is imported lazily: plain checkpoint use never loads it
    from mlflow.entities.model_registry import ModelVersion

CHALLENGER = "challenger"
# MLflow 3 accepts 6000 chars, but older servers and DB schemas stop at 500: stay portable.
MAX_PARAM_VALUE = 500
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000  # MLflow's per-request limits of log_batch


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


# ------------------------------------------------------------------------------- runs

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


# ------------------------------------------------------------------------------- registry

def _signature(channels: int):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    spec = Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))])
    return ModelSignature(inputs=spec, outputs=spec)


def finish_run(run_id: str, model, checkpoint_path, *, model_name: str, example_hw: tuple[int, int],
               tags: dict[str, str] | None = None, status: str = "FINISHED", alias: str = CHALLENGER) -> ModelVersion:
    """Log `model` as pt2 with its checkpoint, register it as a new version of `model_name`
    with ``alias`` ("challenger"), end the run with `status`; returns the ModelVersion."""
    import copy

    import torch

    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path}")
    uri = tracking_uri()
    client = _client()
    run_tags = client.get_run(run_id).data.tags
    # A CPU copy in eval mode: export traces what it is given (train-mode batch norm, a CUDA
    # model with a CPU example) and the caller's model should not change device or mode.
    net = copy.deepcopy(model).cpu().eval()
    channels = 1 if getattr(model, "config", {}).get("arch") == "srcnn" else 3
    example = torch.rand(2, channels, *example_hw, generator=torch.Generator().manual_seed(0))
    version_tags = {"git_commit": run_tags.get("git_commit", "unknown"),
                    "data_version": run_tags.get("data_version", "missing"),
                    "run_id": run_id, **(tags or {})}
    with _fluent_uri(uri):
        mv = _log_and_register(run_id, net, channels, example, checkpoint_path, model_name, version_tags, status,
                               alias)
    return client.get_model_version(model_name, mv.version)


def _save_pt2_and_pyfunc(path, mlflow_model=None, **kwargs):
    """mlflow.pytorch.save_model (pt2 export + the checkpoint as an extra file), then the
    python_function flavor: loader_module pipelines.pyfunc_model on that checkpoint, so
    `mlflow.pyfunc.load_model` and `mlflow models serve` work without unpickling anything."""
    import mlflow.pyfunc
    import mlflow.pytorch

    mlflow.pytorch.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
    ckpt = mlflow_model.flavors["pytorch"]["extra_files"][0]["path"]
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module="pipelines.pyfunc_model", data=ckpt)
    mlflow_model.save(os.path.join(path, "MLmodel"))


# A "flavor module" for mlflow.models.Model.log: anything with save_model (and a name).
_PT2_AND_PYFUNC = types.SimpleNamespace(save_model=_save_pt2_and_pyfunc, __name__="pipelines.tracking.pt2_pyfunc")


def _log_and_register(run_id, net, channels, example, checkpoint_path, model_name, version_tags, status, alias):
    import mlflow
    import torch
    from mlflow.models import Model

    mlflow.start_run(run_id=run_id)  # log_model links the logged model to the active run
    try:
        # mlflow.pytorch.log_model's own save, plus a python_function flavor (see _save_pt2_and_pyfunc)
        info = Model.log(
            artifact_path=None, flavor=_PT2_AND_PYFUNC, pytorch_model=net,
            name="model", serialization_format="pt2", signature=_signature(channels),
            input_example=example, extra_files=[str(checkpoint_path)],
            # Explicit requirements: inferring them re-loads the model in a subprocess (~12 s).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
        )
        mv = mlflow.register_model(info.model_uri, model_name, tags=version_tags)
        _client().set_registered_model_alias(model_name, alias, mv.version)
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run(status)
    return mv


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


def set_alias(model_name: str, alias: str, version) -> None:
    _client().set_registered_model_alias(model_name, alias, str(version))


def set_version_tags(model_name: str, version, tags: dict[str, str]) -> None:
    client = _client()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, str(version), k, str(v))


def get_version(model_name: str, alias: str) -> ModelVersion:
    """The ModelVersion behind models:/model_name@alias (ValueError if there is none)."""
    return _lookup(f"models:/{model_name}@{alias}", model_name, alias=alias)


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias and "/" not in name:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit() and "/" not in name:
            return name, None, version
    raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def _lookup(uri: str, name: str, *, alias: str | None = None, version: str | None = None):
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        rm = client.get_registered_model(name)
    except MlflowException:
        raise ValueError(f"{uri}: no registered model {name!r} at {tracking_uri()}") from None
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        if alias:
            known = ", ".join(sorted(rm.aliases)) or "none"
            raise ValueError(f"{uri}: model {name!r} has no alias {alias!r} (aliases: {known})") from None
        latest = max((int(v.version) for v in client.search_model_versions(f"name='{name}'")), default=0)
        raise ValueError(f"{uri}: model {name!r} has no version {version} (latest: {latest})") from None


def _cache_root() -> Path:
    env = os.environ.get("PERCEPTUAL_CACHE_DIR")
    return Path(env) / "models" if env else config.ROOT / ".perceptual_cache" / "models"


def resolve_model(uri: str) -> Path:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> local path of the checkpoint logged with
    that version (downloaded once, then cached); a plain path is returned unchanged.
    Only MLmodel (YAML) and the checkpoint file are fetched; nothing is unpickled."""
    uri = str(uri)
    if not uri.startswith("models:/"):
        return Path(uri)
    import mlflow.artifacts
    from mlflow.models import Model

    name, alias, version = _parse_models_uri(uri)
    mv = _lookup(uri, name, alias=alias, version=version)
    source = _client().get_model_version_download_uri(name, mv.version)
    # Keyed by name and version plus the artifact location: "version 1" of a name recurs
    # across stores (a fresh sqlite file, another server), the location does not.
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    folder = _cache_root() / re.sub(r"[^\w\-.]", "_", name) / f"{mv.version}-{key}"
    marker = folder / ".checkpoint"  # written last: names the file once the download is complete
    if marker.is_file() and (folder / marker.read_text()).is_file():
        return folder / marker.read_text()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".download-"))
    try:
        base = source.rstrip("/")
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=str(tmp),
                                                      tracking_uri=tracking_uri())
        extra = Model.load(mlmodel).flavors.get("pytorch", {}).get("extra_files") or []
        if not extra:
            raise ValueError(f"{uri}: version {mv.version} of {name!r} has no checkpoint "
                             f"(logged without extra_files)")
        ckpt = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{extra[0]['path']}",
                                                        dst_path=str(tmp), tracking_uri=tracking_uri()))
        (tmp / ".checkpoint").write_text(ckpt.relative_to(tmp).as_posix())
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted earlier download
        try:
            tmp.rename(folder)
        except OSError:  # another process completed the same download in the meantime
            if not marker.is_file():
                raise
        return folder / marker.read_text()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
