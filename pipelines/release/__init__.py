"""The released models in `models/`: how they are trained, exported, scored and registered.

    python -m pipelines.release train style-la_muse [--resume]   # the project's own stages, release scale
    python -m pipelines.release export style-la_muse             # -> models/style-la_muse.safetensors + card
    python -m pipelines.release export style-la_muse --from-gpu DIR   # the same from scripts/gpu_train.sh's output
    python -m pipelines.release register                         # registry: shipped versions @champion
    python -m pipelines.release scores                           # models/scores.json, models/gatys/: the benchmarks' reusable work
    python -m pipelines.release artifacts [JOB ...]              # the shipped style models' artifact checks, onto their cards

params.py: the release params; training.py: `train`; publish.py: `export` (records.py: the training
record, checks.py: the file computes the network, quality.py: the measured quality, cards.py: the
model card, artifacts.py: the artifact checks); registry.py: `register` (the DVC stage register_release); scores.py: `scores`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..log import get, setup
from .checks import load_check
from .params import release_params, settings, workdir
from .publish import export
from .records import _gpu_trained  # tests check the record of a GPU run
from .registry import RELEASE_TAG, register
from .training import acquired_photos, train

__all__ = ["RELEASE_TAG", "acquired_photos", "export", "load_check", "main", "register", "release_params",
           "settings", "train", "workdir"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.release", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train JOB at release scale with the project's stages")
    t.add_argument("job")
    t.add_argument("--resume", action="store_true")
    e = sub.add_parser("export", help="write models/JOB.safetensors, its card and manifest entry")
    e.add_argument("job")
    e.add_argument("--from-gpu", default=None, metavar="DIR",
                   help="the output folder of `scripts/gpu_train.sh run` (replaces the CPU-trained model)")
    sub.add_parser("register", help="register the shipped models as champion (idempotent)")
    art = sub.add_parser("artifacts", help="measure the shipped style models' artifacts (all, or JOB ...) onto "
                                          "their manifest entries and cards")
    art.add_argument("jobs", nargs="*")
    sub.add_parser("scores", help="write models/scores.json (baselines' and shipped SR models' image scores) and models/gatys/")
    a = ap.parse_args(argv)
    setup()
    t0 = time.perf_counter()
    if a.cmd == "train":
        return train(a.job, a.resume)
    from .. import run_stage

    if a.cmd == "export":
        return run_stage(export, a.job, Path(a.from_gpu) if a.from_gpu else None)
    if a.cmd == "artifacts":
        from .artifacts import measure_shipped

        return run_stage(measure_shipped, a.jobs)
    if a.cmd == "scores":
        from .scores import write_all

        return run_stage(write_all)
    rc = run_stage(register)
    get(__name__).info(f"release: done in {time.perf_counter() - t0:.1f} s")
    return rc
