"""A job's spec: everything a worker needs for JOB, built from the typed settings (TrainSettings,
LossesSettings) as plain values (so a Ray worker can receive it), and the checked weights a job with
`init` starts from."""
from __future__ import annotations

from pathlib import Path

from .. import config, jobname
from ..settings import LossesSettings, TrainSettings, per_job, plain
from ..settings.train import DEGRADATIONS  # noqa: F401 - the LR protocols a job trains on (train.<kind>.degradation)


def job_spec(job: str, t: TrainSettings | None = None, losses: LossesSettings | None = None) -> dict:
    """Everything a worker needs for JOB (resolved paths, plain values), from the train settings ``t``
    (and, for style jobs, the losses settings); params.yaml's where not given."""
    t = t or config.load(TrainSettings)
    j = jobname.parse(job)
    # "max_seconds": a wall-clock budget, stop (with a checkpoint) at a report
    common = {k: getattr(t, k) for k in ("lr", "report_every", "checkpoint_every", "seed", "precision", "channels_last",
                                         "compile", "max_seconds")}
    if j.kind == "style":
        s = t.style
        spec = _style_spec(job, j.style, s, losses or config.load(LossesSettings))
    else:
        s, scale = t.kind(j.kind), j.scale
        network = plain(s.network)
        model = dict(arch="srcnn", **network) if j.kind == "srcnn" else dict(arch="sr", scale=scale, **network)
        weights = (dict(content=1.0, tv=s.tv_weight) if j.loss == "feat" else dict(pixel=1.0))
        spec = dict(kind=j.kind, model=model, data=str(config.resolve(t.sr.data)),
                    columns=["hr", f"lr_x{scale}"], scale=scale, loss=j.loss, crop=s.crop, weights=weights,
                    feat_layers=[getattr(s, "feat_layer", "relu2_2")], data_stage="prepare_sr", registered=job,
                    init=s.init.get(j.key),  # start from these weights (l_feat from l_pixel)
                    degradation=s.degradation)
    # per job, e.g. {x4-pixel: 2400, x4-feat: 1200}
    iterations = per_job(s.iterations, j.key, f"train.{j.kind}.iterations")
    spec.update(common, job=job, batch_size=s.batch_size, iterations=int(iterations),
                lr=job_lr(s, t, j.key), out_dir=str(config.resolve(t.out_dir) / job),
                # per kind where iterations are much cheaper (SRCNN: ~10 it/s, a Ray report costs ~2 s)
                **{k: int(getattr(s, k)) for k in ("report_every", "checkpoint_every") if getattr(s, k) is not None})
    return spec


def _style_spec(job: str, name: str, s, losses: LossesSettings) -> dict:
    """The style-specific part of style JOB's spec (``s``: train.style)."""
    if name not in s.styles:
        raise ValueError(f"unknown style job {job!r}: params train.style.styles has {sorted(s.styles)}")
    style_path = Path(s.styles[name])
    if not style_path.is_absolute():
        style_path = config.data_dir() / style_path
    if not style_path.is_file():
        raise FileNotFoundError(f"style image for {job} not found: {style_path} (params train.style.styles)")
    # network_of: the per-style network changes (train.style.networks), e.g. {width: 0.5} for a fast model
    return dict(kind="style", model=dict(arch="transform", **plain(s.network_of(name))),
                data=str(config.resolve(s.data)), columns=["image"], style_image=str(style_path), crop=s.crop_of(name),
                weights=s.weights(name), data_stage="prepare_style", registered=job,
                content_layers=list(losses.content_layers), style_layers=list(losses.style_layers),
                style_size=losses.style_size, tv_size=s.tv_size,
                init=s.init.get(name))  # continue from these weights (file, shipped name, models:/)


def job_lr(sec, train: TrainSettings, key: str) -> float:
    """Adam's learning rate: the kind's `lr` (``sec``: train.<kind>; a number, or per job as {x8-feat: 1.0e-4},
    e.g. a lower rate to fine-tune l_feat from an l_pixel network), else train.lr."""
    lr = train.lr if sec.lr is None else sec.lr
    return float(per_job(lr, key, "lr", fallback=train.lr))


def _init_bytes(spec: dict) -> bytes:
    """The checkpoint `init` names (a file, a shipped model or models:/), checked to be the job's network."""
    from perceptual_core.checkpoint import read_checkpoint
    from perceptual_core.networks import build_model

    from ..modelref import checkpoint_bytes

    ref = spec["init"]
    data = checkpoint_bytes(ref)
    got, want = read_checkpoint(ref, data)["config"], build_model(spec["model"]).config
    if got != want:
        raise ValueError(f"train.{spec['kind']}.init of {spec['job']}: {ref} holds {got}, not the job's network {want}")
    return data


def init_record(ref: str, data: bytes) -> dict:
    """What a run's `init` weights were (written to the job's INIT file at a fresh start): their SHA-256,
    and for a shipped model its training so far, so a model continued from a release counts all of it."""
    import hashlib

    from perceptual_core import zoo

    rec = {"ref": ref, "checkpoint_sha256": hashlib.sha256(data).hexdigest()}
    shipped = {e.name: e for e in zoo.entries()}.get(ref)
    if shipped is not None:
        tr = shipped.info.get("training") or {}
        rec.update(sha256=shipped.sha256, iterations=shipped.info.get("iterations"), device=trained_on(tr),
                   **{k: tr.get(k) for k in ("wall_seconds", "mlflow_run_id", "loss_start")})
    return rec


def trained_on(tr: dict) -> str:
    """Where a training record's iterations ran: a run continued from another model ran on both (e.g.
    "NVIDIA H200, then 2 CPU cores")."""
    here = tr.get("device") or "2 CPU cores"
    before = (tr.get("continued_from") or {}).get("device")
    return f"{before}, then {here}" if before and before != here else here

