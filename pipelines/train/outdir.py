"""What a job keeps in its out_dir: rank 0's checkpoint (`last/state.pt`: model, optimiser, iteration;
tensors only) that Ray restarts and `--resume` continue from, every rank's events, the MLflow run id
and the summary; the files, not MLflow, are the record a resumed or interrupted run relies on."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

STATE = "state.pt"
EVENTS = "events.jsonl"
RUN_ID = "mlflow_run_id"  # the job's MLflow run, continued by --resume
SUMMARY = "summary.json"  # the whole summary of a finished run (job, MLflow run, registered version, ...)
# metrics.json (DVC metrics, written last: the run finished) holds these numbers only, so `dvc metrics show`
# stays readable; `release train` reads its iterations, rate and losses.
HEADLINE = ("iterations", "iterations_per_s", "wall_seconds", "restarts", "loss_start", "loss_end")


def _event(out_dir: Path, **fields) -> None:
    with open(out_dir / EVENTS, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")


def read_events(out_dir: Path) -> list[dict]:
    p = Path(out_dir) / EVENTS
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def _save_state(folder: Path, model, opt, iteration: int) -> None:
    from perceptual_core.io import atomic_write

    state = {"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(), "iteration": iteration}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STATE, lambda f: torch.save(state, f))
