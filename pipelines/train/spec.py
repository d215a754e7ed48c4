"""A job's spec: everything a worker needs for JOB, read from params.yaml by the driver as plain values
(so a Ray worker can receive it), and the checked weights a job with `init` starts from."""
from __future__ import annotations

from pathlib import Path

from .. import config, jobname

# LR used for SR/SRCNN training: "blur" = the prepared lr_x* files (sigma 1 blur + bicubic, the paper's
# protocol); "bicubic" = MATLAB bicubic of the HR crop (the standard protocol, the official SRCNN's data).
DEGRADATIONS = ("blur", "bicubic")


def job_spec(job: str) -> dict:
    """Everything a worker needs for JOB, from params.yaml (resolved paths, plain values)."""
    t = config.section("train")
    j = jobname.parse(job)
    common = {k: t[k] for k in ("lr", "report_every", "checkpoint_every", "seed", "precision", "channels_last",
                                "compile")}
    common["max_seconds"] = t.get("max_seconds")  # a wall-clock budget: stop (with a checkpoint) at a report
    if j.kind == "style":
        s, name = t["style"], j.style
        if name not in s["styles"]:
            raise ValueError(f"unknown style job {job!r}: params train.style.styles has {sorted(s['styles'])}")
        style_path = config.data_dir() / s["styles"][name] if not Path(s["styles"][name]).is_absolute() \
            else Path(s["styles"][name])
        if not style_path.is_file():
            raise FileNotFoundError(f"style image for {job} not found: {style_path} (params train.style.styles)")
        spec = dict(kind="style", model=dict(arch="transform", **s["network"]), data=str(config.resolve(s["data"])),
                    columns=["image"], style_image=str(style_path), crop=s["crop"],
                    weights=dict(content=s["content_weight"],
                                 style=(s.get("style_weights") or {}).get(name, s["style_weight"]),
                                 tv=(s.get("tv_weights") or {}).get(name, s["tv_weight"])),
                    data_stage="prepare_style", registered=job,
                    **{k: config.section("losses")[k] for k in ("content_layers", "style_layers", "style_size")})
        if (s.get("networks") or {}).get(name):  # per-style network changes, e.g. {width: 0.5} for a fast model
            spec["model"].update(s["networks"][name])
        sec = s
    else:
        s, scale = t[j.kind], j.scale
        model = dict(arch="srcnn", **s["network"]) if j.kind == "srcnn" else dict(arch="sr", scale=scale, **s["network"])
        weights = (dict(content=1.0, tv=s["tv_weight"]) if j.loss == "feat" else dict(pixel=1.0))
        spec = dict(kind=j.kind, model=model, data=str(config.resolve(t["sr"]["data"])),
                    columns=["hr", f"lr_x{scale}"], scale=scale, loss=j.loss, crop=s["crop"], weights=weights,
                    feat_layers=[s.get("feat_layer", "relu2_2")], data_stage="prepare_sr", registered=job,
                    init=(s.get("init") or {}).get(j.key),  # start from these weights (l_feat from l_pixel)
                    degradation=s.get("degradation", "blur"))
        if spec["degradation"] not in DEGRADATIONS:
            raise ValueError(f"train.{j.kind}.degradation must be one of {DEGRADATIONS}, not {spec['degradation']!r}")
        sec = s
    iterations = sec["iterations"]
    if isinstance(iterations, dict):  # per job, e.g. {x4-pixel: 2400, x4-feat: 1200}
        if j.key not in iterations:
            raise ValueError(f"train.{j.kind}.iterations has no entry for {j.key!r} (it has {sorted(iterations)})")
        iterations = iterations[j.key]
    spec.update(common, job=job, batch_size=sec["batch_size"], iterations=int(iterations),
                lr=job_lr(sec, t, j.key), out_dir=str(config.resolve(t["out_dir"]) / job),
                # per kind where iterations are much cheaper (SRCNN: ~10 it/s, a Ray report costs ~2 s)
                **{k: int(sec[k]) for k in ("report_every", "checkpoint_every") if k in sec})
    return spec


def job_lr(sec: dict, train: dict, key: str) -> float:
    """Adam's learning rate: the kind's `lr` (a number, or per job as {x8-feat: 1.0e-4}, e.g. a lower
    rate to fine-tune l_feat from an l_pixel network), else train.lr."""
    lr = sec.get("lr", train["lr"])
    return float(lr.get(key, train["lr"]) if isinstance(lr, dict) else lr)


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
