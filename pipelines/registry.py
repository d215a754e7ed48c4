"""The MLflow model registry: a trained model logged as ``pt2`` (torch.export, no pickle) with our
tensor-only checkpoint as an extra file and registered with an alias (``finish_run``, the one user of
the fluent API, which ``mlflow.pytorch.log_model`` needs); aliases and version tags; ``resolve_model``
hands a version's checkpoint back for ``checkpoint.load_model``."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING

from . import config
from .mlflow_store import _client, _fluent_uri, tracking_uri

if TYPE_CHECKING:  # mlflow is imported lazily: plain checkpoint use never loads it
    from mlflow.entities.model_registry import ModelVersion

CHALLENGER = "challenger"


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


# A "flavor module" for mlflow.models.Model.log: anything with save_model (and a name, which MLflow
# records as each logged model's flavor, so it stays the one models were first logged under).
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
