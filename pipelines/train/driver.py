"""The driver: train JOB on Ray Train (a crashed worker group restarts from the last checkpoint, elastic
down to min_workers) or in this process; log params, losses, a validation grid and the model to MLflow,
register it as a new version with alias challenger, and write summary.json and metrics.json."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from .. import config, owned
from ..log import get
from ..settings import LossNetworkSettings, TrainSettings, plain
from ..settings.train import RaySettings
from .loop import train_loop
from .outdir import EVENTS, INIT, RUN_ID, STATE, SUMMARY, headline, read_events
from .spec import _init_bytes, init_record, job_spec
from .step import _validation_grid
from .tracked import _resumed_run, _tracking_step

log = get(__name__)


def run_job(job: str, *, use_ray: bool = True, resume: bool = False, overrides: dict | None = None,
            ray_overrides: dict | None = None) -> dict:
    """Train JOB, track it in MLflow, register the model; returns the summary written to summary.json
    (its headline numbers, outdir.headline, to metrics.json).
    ``overrides``: job spec values; ``ray_overrides``: `train.ray` values (e.g. num_workers)."""
    from perceptual_core.checkpoint import save_checkpoint
    from perceptual_core.networks import build_model
    from perceptual_core.vgg import load_vgg16_weights

    from .. import tracking

    t = config.load(TrainSettings)
    spec = {**job_spec(job, t), **(overrides or {})}
    out_dir = Path(spec["out_dir"])
    if not resume:  # a fresh run; --resume keeps last/ and the events
        # a fresh clone may hold the folder with only what git carries: DVC's .gitignore, committed metrics
        owned.remove(out_dir, f"train {job}", "train.out_dir/JOB", signature=EVENTS,
                     tracked=(".gitignore", "metrics.json", SUMMARY))
    owned.claim(out_dir, f"train {job}")
    needs_vgg = spec["kind"] == "style" or spec.get("loss") == "feat"
    vgg = load_vgg16_weights(config.vgg_weights_arg(), allow_download=config.load(LossNetworkSettings).allow_download) \
        if needs_vgg else None
    with _tracking_step("before training; nothing was trained"):
        run_id = _resumed_run(out_dir) if resume else None
        if run_id is None:
            run_id = tracking.start_run(job, {"job": spec, "train": plain(t)}, data_stage=spec["data_stage"])
            (out_dir / RUN_ID).write_text(run_id + "\n")
    cfg = dict(spec=spec, use_ray=use_ray, resume=resume, run_id=run_id, tracking_uri=tracking.tracking_uri(),
               vgg_weights=vgg.path if vgg else None, init_bytes=_init_weights(spec, out_dir, resume))
    t0 = time.perf_counter()
    try:
        if use_ray:
            _fit_with_ray(cfg, dataclasses.replace(t.ray, **(ray_overrides or {})), out_dir, resume)
        else:
            train_loop(cfg)
    except BaseException:
        from mlflow import MlflowClient

        with contextlib.suppress(Exception), tracking.short_retries():  # the server may be what failed
            MlflowClient(tracking.tracking_uri()).set_terminated(run_id, "FAILED")
        raise
    wall = time.perf_counter() - t0
    state = torch.load(out_dir / "last" / STATE, map_location="cpu", weights_only=True)
    model = build_model(spec["model"])
    model.load_state_dict(state["model"])
    model.eval()
    ckpt = save_checkpoint(out_dir / "model.pt", model, meta={"job": job, "iterations": state["iteration"],
                                                              "run_id": run_id})
    events = read_events(out_dir)
    reports = [e for e in events if e["event"] == "report"]
    after = (f"after training; the weights are kept in {out_dir / 'last'} (iteration {state['iteration']}): "
             f"`python -m pipelines.train {job} --resume` registers them once MLflow is back")
    with _tracking_step(after):
        with tracking.short_retries(retries=3):  # a server still down fails in seconds, not MLflow's ~4 min
            sent = tracking.backfill_metrics(run_id, [({k: v for k, v in r.items() if k not in ("time", "event")},
                                                       r["iteration"], r["time"]) for r in reports])
        if sent:
            log.info(f"train: sent MLflow the {sent} reports it missed")
        tracking.log_image(run_id, _validation_grid(model, spec), "validation_grid.png")
    starts = [e for e in events if e["event"] == "start"]
    summary = {"job": job, "iterations": state["iteration"], "run_id": run_id, "wall_seconds": round(wall, 1),
               "restarts": sum(1 for e in starts if e["rank"] == 0) - 1,
               "resumed_from": sorted({e["iteration"] for e in starts if e["iteration"] > 0}),
               "loss_start": {k: v for k, v in reports[0].items() if k.startswith("loss_")} if reports else {},
               "loss_end": {k: v for k, v in reports[-1].items() if k.startswith("loss_")} if reports else {},
               "iterations_per_s": round(sum(r["iterations_per_s"] for r in reports) / max(1, len(reports)), 3)}
    hw = (64, 64) if spec["kind"] == "style" else (24, 24)
    with _tracking_step(after):
        version = tracking.finish_run(run_id, model, ckpt, model_name=spec["registered"], example_hw=hw,
                                      tags={"job": job})
    summary.update(model=spec["registered"], version=str(version.version))
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(headline(summary), indent=2) + "\n")
    log.info(f"{job}: {summary['iterations']} iterations in {wall:.0f} s; loss_total "
             f"{summary['loss_start'].get('loss_total', float('nan')):.4g} -> "
             f"{summary['loss_end'].get('loss_total', float('nan')):.4g}; registered {spec['registered']} "
             f"v{version.version} @challenger (run {run_id})")
    return summary


def _init_weights(spec: dict, out_dir: Path, resume: bool) -> bytes | None:
    """The checked weights a job with `init` starts from; a fresh run records what they were (INIT)."""
    if not spec.get("init"):
        return None
    data = _init_bytes(spec)
    if not (resume and (out_dir / INIT).is_file()):
        (out_dir / INIT).write_text(json.dumps(init_record(spec["init"], data), indent=2) + "\n")
    return data


def _fit_with_ray(cfg: dict, rcfg: RaySettings, out_dir: Path, resume: bool) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..ray_env import ray_session

    storage = out_dir / "ray"
    if not resume:
        shutil.rmtree(storage, ignore_errors=True)
    n = int(rcfg.num_workers)
    low = rcfg.min_workers
    if low is not None and not 1 <= int(low) <= n:
        raise ValueError(f"train.ray.min_workers must be between 1 and num_workers ({n}), got {low!r}")
    # elastic (Ray Train): after a lost node the group restarts from the last checkpoint on what is left
    workers = (int(low), n) if low is not None and int(low) < n else n
    with ray_session(num_cpus=n):
        trainer = TorchTrainer(
            train_loop, train_loop_config=cfg,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(rcfg.use_gpu),
                                         resources_per_worker={"GPU": rcfg.gpus_per_worker} if rcfg.use_gpu
                                         else {"CPU": 1}),
            run_config=RunConfig(name=cfg["spec"]["job"], storage_path=str(storage),
                                 failure_config=FailureConfig(max_failures=int(rcfg.max_failures))))
        trainer.fit()
