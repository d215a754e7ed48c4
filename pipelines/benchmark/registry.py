"""The registry versions a benchmark judges, and its figures logged back to them: each version's
MLflow run gets the `bench.*` metrics and the version the tags `bench.config` / `bench.at`, which
`perceptual promote` reads. The champion is judged beside another alias's version on the same images.
"""
from __future__ import annotations

from datetime import datetime, timezone

from .results import log

CHAMPION = "champion"  # also judged when the benchmark's alias is another (the release, a promoted model)


def registry_model(name: str, alias: str):
    """(model, ModelVersion) for models:/name@alias, or (None, reason) when there is none. The model
    is loaded and checked as every command loads one (pipelines.modelref.load_model), pinned to the
    version the alias pointed at when judged."""
    from .. import modelref, tracking

    try:
        mv = tracking.get_version(name, alias)
        ref = f"models:/{name}/{mv.version}"
        kind = "stylize" if name.startswith("style-") else "upscale"
        model, _ = modelref.load_model(ref, kind, "cpu", scale=modelref.scale_from_name(name))
    except ValueError as e:
        return None, str(e)
    return model, mv


def champion_beside(name: str, alias: str, mv) -> tuple | None:
    """(model, ModelVersion) of name@champion when ``alias`` is another and points at another version
    than ``mv`` (promotion compares the two on the same benchmark config; ``mv`` None: ``alias`` has
    no version of ``name``), else None."""
    if alias == CHAMPION:
        return None
    model, cmv = registry_model(name, CHAMPION)
    return (model, cmv) if model is not None and (mv is None or str(cmv.version) != str(mv.version)) else None


def judged_models(names: list[str], alias: str) -> tuple[list, list]:
    """[(label, ModelVersion, model)] at ``alias``, plus the `champion` of each when it is another version
    (label `NAME@champion`); and [{model, reason}] not found."""
    found, missing = [], []
    for name in names:
        model, mv = registry_model(name, alias)
        if model is None:
            missing.append({"model": name, "reason": mv})
            continue
        found.append((name, mv, model))
        champion = champion_beside(name, alias, mv)
        if champion is not None:
            found.append((f"{name}@{CHAMPION}", champion[1], champion[0]))
    return found, missing


def versions(judged: dict) -> dict:
    """The results' record of the judged versions: {label: {version, run_id}}."""
    return {name: {"version": str(mv.version), "run_id": mv.run_id} for name, mv in judged.items()}


def log_to_versions(judged: dict, metrics: dict[str, dict], cfg: str) -> None:
    """bench.* metrics on the run of each judged version, and the config hash as a version tag."""
    from .. import tracking

    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name, mv in judged.items():
        if not metrics.get(name):
            continue
        if mv.run_id:
            tracking.log_metrics(mv.run_id, metrics[name], step=0)
        tracking.set_version_tags(mv.name, mv.version, {"bench.config": cfg, "bench.at": at})
        log(f"logged {len(metrics[name])} bench.* metrics to {mv.name} v{mv.version} (run {mv.run_id})")
