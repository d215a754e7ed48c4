"""The training record a shipped model carries (command, data, iterations, wall time, losses, settings),
from the release training run's files or from a `scripts/gpu_train.sh run` output folder."""
from __future__ import annotations

import json
from pathlib import Path

from .. import config, jobname
from ..settings import TrainSettings, build
from .params import release_params, settings, workdir


def _cpu_trained(job: str) -> tuple:
    """(fp32 model, training record) of the release training run (`train`)."""
    from perceptual_core.checkpoint import load_model, read_checkpoint

    from ..train import INIT, SUMMARY

    jdir = workdir() / "train" / job
    ckpt = jdir / "model.pt"
    model = load_model(ckpt)
    meta = read_checkpoint(ckpt)["meta"]
    summary = json.loads((jdir / SUMMARY).read_text())  # the run's whole summary (metrics.json: its headline)
    p = config.read_params(workdir() / "params.yaml")  # what the model was trained with
    rec = {"command": f"python -m pipelines.release train {job}", "data": list(settings().data),
           "iterations": summary["iterations"], "wall_seconds": training_seconds(jdir),
           "iterations_per_s": summary.get("iterations_per_s"), "loss_start": summary.get("loss_start"),
           "loss_end": summary.get("loss_end"), "mlflow_run_id": meta.get("run_id"), "params": _job_params(p, job)}
    return model, _continued(rec, jdir / INIT)


def _continued(rec: dict, init_file: Path) -> dict:
    """A run continued from a shipped model (`init`) counts that model's training too: iterations and wall
    time are the sum, loss_start the first run's; `continued_from` keeps what it started from."""
    if not init_file.is_file():
        return rec
    return continued(rec, json.loads(init_file.read_text()))


def continued(rec: dict, init: dict | None) -> dict:
    """`rec` continued from ``init`` (`train.init_record`: a shipped model's counts its training so far)."""
    if not init:
        return rec
    if init.get("iterations") is None:  # not a shipped model: this run's own numbers, and what it started from
        return {**rec, "continued_from": init}
    return {**rec, "continued_from": {**init, "run_iterations": rec["iterations"], "run_seconds": rec["wall_seconds"],
                                      "run_loss_start": rec["loss_start"]},
            "iterations": rec["iterations"] + int(init["iterations"]),
            "wall_seconds": round(rec["wall_seconds"] + float(init.get("wall_seconds") or 0), 1),
            "loss_start": init.get("loss_start") or rec["loss_start"]}


def _gpu_trained(job: str, folder: Path) -> tuple:
    """(fp32 model, training record) from a `scripts/gpu_train.sh run` output folder."""
    from perceptual_core import zoo

    from ..train import read_events

    f, rec = folder / f"{job}.safetensors", folder / "gpu_train.json"
    for x in (f, rec):
        if not x.is_file():
            raise FileNotFoundError(f"--from-gpu {folder}: no {x.name} (the output folder of scripts/gpu_train.sh run)")
    g = json.loads(rec.read_text())
    if g.get("job") != job:
        raise ValueError(f"{rec}: trained {g.get('job')!r}, not {job!r}")
    if g["model"]["sha256"] != zoo.sha256_file(f):
        raise ValueError(f"{f}: SHA-256 differs from {rec}'s record")
    model = zoo.model_from_bytes(f.read_bytes(), str(f))
    reports = [e for e in read_events(folder) if e.get("event") == "report"] if (folder / "events.jsonl").is_file() \
        else []
    params = _job_params(release_params(), job)
    params.update({k: g["spec"][k] for k in ("crop", "batch_size", "precision", "channels_last", "lr")}, workers=1)
    w = g["spec"].get("weights") or {}  # the loss weights it trained with, as the run recorded them
    params.update({f"{k}_weight": w[k] for k in ("content", "style", "tv") if k in w})
    params["tv_size"] = g["spec"].get("tv_size")  # a run before tv_size weighed TV as on its crops
    if g["spec"].get("init"):
        params["init"] = g["spec"]["init"]
    else:  # trained from scratch (the bundle drops release.style.init, a CPU model's continuation)
        params.pop("init", None)
    j = jobname.parse(job)
    name = j.style if j.kind == "style" else job  # the script takes a style's name or an SR job's
    rec = {"command": g.get("command") or f"scripts/gpu_train.sh pack {name}; scripts/gpu_train.sh run {name}",
           "device": g["device"], "torch": g["torch"], "data": list(settings().data),
           "iterations": g["iterations"], "wall_seconds": g["train_seconds"], "iterations_per_s": g["iterations_per_s"],
           "loss_start": {k: v for k, v in (reports[0] if reports else {}).items() if k.startswith("loss_")},
           "loss_end": g["last"], "mlflow_run_id": None, "params": params}
    return model, continued(rec, g["spec"].get("init_record"))  # a shipped model's run goes on (style_init)


def training_seconds(jdir: Path) -> float:
    """Wall time spent training over every leg of the job (each rank-0 start to its last report)."""
    from ..train import read_events

    legs, total = [], 0.0
    for e in read_events(jdir):
        if e["event"] == "start" and e.get("rank") == 0:
            legs.append([e["time"], e["time"]])
        elif e["event"] == "report" and legs:
            legs[-1][1] = e["time"]
    for start, end in legs:
        total += end - start
    return round(total, 1)


def _job_params(p: dict, job: str) -> dict:
    t = p["train"]
    j = jobname.parse(job)
    kind, name = j.kind, j.style
    s = t[kind]
    keep = {k: v for k, v in s.items() if not isinstance(v, (dict, list)) and k != "data"}  # data: a local path
    if kind == "style":
        keep["style_weight"] = (s.get("style_weights") or {}).get(name, s["style_weight"])
        keep["tv_weight"] = (s.get("tv_weights") or {}).get(name, s["tv_weight"])
        keep["crop"] = (s.get("crops") or {}).get(name, s["crop"])
        keep["network"] = {**s["network"], **((s.get("networks") or {}).get(name) or {})}
        keep["style_image"] = s["styles"][name]
    else:
        keep["network"] = dict(s["network"])
        if j.loss == "pixel":  # the l_feat settings play no part
            keep.pop("feat_layer", None), keep.pop("tv_weight", None)
    if (s.get("init") or {}).get(j.key):
        keep["init"] = s["init"][j.key]
    from ..train import job_lr

    ts = build(TrainSettings, t, "release params: train")  # the params the model was trained with
    keep.update(lr=job_lr(ts.kind(kind), ts, j.key), workers=ts.ray.num_workers, seed=ts.seed)
    return keep
