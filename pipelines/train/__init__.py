"""Training stages: style networks, SR x4/x8 (l_feat, l_pixel), SRCNN; Ray Train or plain PyTorch.

    python -m pipelines.train JOB [--resume] [--no-ray]      # JOB: style-la_muse, sr-x4-feat, srcnn-x4, ...

spec.py: the job from params; loop.py: one worker's training (worker.py: Ray Train, torchrun or one
process; step.py: the loss per kind); outdir.py: checkpoints and events; driver.py: Ray Train, MLflow
tracking and registration (tracked.py: its MLflow calls, safe against an outage).
"""
from __future__ import annotations

import argparse

from .driver import run_job
from .loop import train_loop
from .outdir import EVENTS, INIT, RUN_ID, STATE, SUMMARY, read_events
from .spec import _init_bytes, init_record, job_lr, job_spec  # _init_bytes, init_record: gpu_bundle (init weights)
from .step import training_lr
from .worker import _Worker  # tests drive one worker directly

__all__ = ["EVENTS", "INIT", "RUN_ID", "STATE", "SUMMARY", "job_lr", "job_spec", "main",
           "read_events", "run_job", "train_loop", "training_lr"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("job", help="style-NAME, sr-x4-feat, sr-x4-pixel, sr-x8-feat, sr-x8-pixel, srcnn-x4")
    ap.add_argument("--resume", action="store_true", help="continue from the job's last checkpoint")
    ap.add_argument("--no-ray", action="store_true", help="plain PyTorch in this process (or under torchrun)")
    a = ap.parse_args(argv)
    from .. import run_stage

    return run_stage(run_job, a.job, use_ray=not a.no_ray, resume=a.resume)
