"""`release train`: `acquire`, `prepare style|sr` (once) and `train JOB` with PERCEPTUAL_PARAMS at
`<release.workdir>/params.yaml` (the release params): the same Ray Train loop, checkpoints, `--resume` and
MLflow tracking (`<workdir>/mlflow.db`) as `dvc repro`, at release scale, never on a benchmark image."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from .. import config, jobname
from ..log import get
from .params import release_params, workdir


def _run_steps(steps: list[list[str]], job: jobname.Job | None = None) -> int:
    """Run project stages with the release params (written to `<workdir>/params.yaml` first). For a
    style ``job``, train.style.jobs is that style alone: the stages announce the painting they train
    on, not the styles `dvc repro`'s quick run trains."""
    wd = workdir()
    wd.mkdir(parents=True, exist_ok=True)
    pfile = wd / "params.yaml"
    p = release_params()
    if job is not None and job.kind == "style":
        p["train"]["style"]["jobs"] = [job.style]
    pfile.write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PERCEPTUAL_PARAMS": str(pfile), "MLFLOW_TRACKING_URI": f"sqlite:///{wd / 'mlflow.db'}"}
    for cmd in steps:
        get(__name__).info(f"release: {' '.join(cmd[1:])} (PERCEPTUAL_PARAMS={pfile})")
        rc = subprocess.call([sys.executable, *cmd], env=env, cwd=config.ROOT)
        if rc:
            return rc
    return 0


def train(job: str, resume: bool = False) -> int:
    parsed = jobname.parse(job)
    kind = parsed.data
    steps = []
    if not (workdir() / f"metrics/prepare_{kind}.json").is_file():
        steps += [["-m", "pipelines.acquire"], ["-m", "pipelines.prepare", kind]]
    steps.append(["-m", "pipelines.train", job] + (["--resume"] if resume else []))
    return _run_steps(steps, parsed)


def acquired_photos() -> Path:
    """The release's training photos (`acquire` with the release params, run once)."""
    folder = workdir() / "data/acquired/images"
    if not (folder.is_dir() and any(folder.iterdir())):
        if _run_steps([["-m", "pipelines.acquire"]]):
            raise ValueError(f"release: acquiring the training photos into {folder} failed (see above)")
    return folder
