"""The release's params: the `release` section, its workdir, and params.yaml with the section laid
over it, which every release step (and the GPU bundle) runs with instead of the quick `dvc repro` scale."""
from __future__ import annotations

import copy
from pathlib import Path

from .. import config
from ..settings import ReleaseSettings, plain


def settings() -> ReleaseSettings:
    """params' `release` section, checked (pipelines/settings/release.py)."""
    return config.load(ReleaseSettings)


def workdir() -> Path:
    return config.resolve(settings().workdir)


def release_params() -> dict:
    """params.yaml with the `release` section applied (paths absolute, so it can live anywhere)."""
    r, p = settings(), copy.deepcopy(config.params())
    wd = workdir()
    sources = []
    for s in r.data:
        sources.append(s if s in ("builtin", "coco") or "://" in s else str(config.data_dir() / s))
    p["data_dir"] = str(config.data_dir())
    p["acquire"].update(source=sources, out_dir=str(wd / "data/acquired"), n_images=None)
    for stage, sub in (("prepare_style", "style"), ("prepare_sr", "sr")):
        p[stage].update(input=str(wd / "data/acquired/images"), out_dir=str(wd / "data" / sub),
                        metrics=str(wd / f"metrics/{stage}.json"), patches_per_image=r.patches_per_image,
                        val_fraction=r.val_fraction)
    p["mlflow"]["tracking_uri"] = f"sqlite:///{wd / 'mlflow.db'}"
    t = p["train"]
    t.update(out_dir=str(wd / "train"), report_every=r.report_every, checkpoint_every=r.checkpoint_every)
    t["style"]["data"], t["sr"]["data"] = str(wd / "data/style"), str(wd / "data/sr")
    for kind in ("style", "sr", "srcnn"):
        t[kind].update(plain(getattr(r, kind)))  # the release's per-kind values, key by key
    return p
