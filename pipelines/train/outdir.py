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
INIT = "init.json"  # a run started from other weights (`init`): what they were (spec.init_record)


def headline(summary: dict) -> dict:
    """metrics.json's numbers (DVC metrics, written last: the run finished) from summary.json's: the same
    four keys for every job (iterations, the mean rate, the objective's total at the last report, the wall
    time), so each job is a row of `dvc metrics show` in shared columns; the per-term losses at start and
    end, restarts and the run stay in summary.json."""
    return {"iterations": summary["iterations"], "it_per_s": summary["iterations_per_s"],
            "loss": summary["loss_end"].get("loss_total"), "wall_seconds": summary["wall_seconds"]}


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
