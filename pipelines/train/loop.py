"""One worker's training, `train_loop`: what Ray Train's TorchTrainer runs on each worker and `--no-ray`
runs in this process (or under torchrun). Data stream from the prepare stages' Parquet shards, split
by rank; every `checkpoint_every` iterations rank 0 saves the state that a restart continues from."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .outdir import _event, _save_state
from .step import make_step
from .tracked import _send_metrics
from .worker import _Worker, _any_rank


def _batches(spec: dict, w: _Worker, split: str = "train"):
    """Endless shuffled batches for this rank (a new permutation each pass)."""
    from torch.utils.data import DataLoader

    from perceptual_core.shards import PatchShards, shard_files

    ds = PatchShards(shard_files(spec["data"], split), spec["columns"], shuffle=True, seed=spec["seed"],
                     rank=w.rank, world_size=w.world, buffer=64)
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        n = 0
        for batch in DataLoader(ds, batch_size=spec["batch_size"], drop_last=True, num_workers=0):
            n += 1
            yield batch
        if n == 0:
            raise ValueError(f"{spec['data']}: fewer {split} patches per worker than batch_size={spec['batch_size']}")
        epoch += 1


def train_loop(cfg: dict) -> None:
    """One worker's training (Ray Train's `train_loop_per_worker`, or called directly)."""
    from perceptual_core.vgg import VGG16Loss

    from ..log import setup_worker

    setup_worker()  # in a Ray worker: its `perceptual` messages on stderr, which Ray forwards to the driver

    spec, use_ray = cfg["spec"], cfg["use_ray"]
    w = _Worker(use_ray)
    out_dir = Path(spec["out_dir"])
    torch.manual_seed(spec["seed"] + w.rank)
    gen = torch.Generator().manual_seed(spec["seed"] + 1000 * w.rank)
    cuda = w.device.type == "cuda"
    model, opt, start = _model_and_optimizer(cfg, w)
    needs_vgg = spec["kind"] == "style" or spec.get("loss") == "feat"
    loss_net = VGG16Loss.pretrained(cfg["vgg_weights"], allow_download=False).to(w.device) if needs_vgg else None
    step = make_step(spec, loss_net)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec["precision"]) if cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    if spec["compile"]:
        model = torch.compile(model)
    if w.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    _event(out_dir, event="start", rank=w.rank, pid=os.getpid(), iteration=start, world_size=w.world,
           device=str(w.device))
    if cfg.get("tracking_uri"):
        os.environ["MLFLOW_TRACKING_URI"] = cfg["tracking_uri"]

    data = _batches(spec, w)
    sums: dict[str, torch.Tensor] = {}
    n_sum, t0 = 0, time.perf_counter()
    t_start, budget = t0, spec.get("max_seconds")
    mlflow_down = False
    model.train()
    for it in range(start, spec["iterations"]):
        batch = {k: v.to(w.device, non_blocking=True) for k, v in next(data).items()}
        if cuda and spec["channels_last"]:
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        with torch.autocast(w.device.type, dtype=amp, enabled=amp is not None):
            _, losses = step(model, batch, gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(opt)
        scaler.update()
        for k, v in losses.items():  # summed on the device: no host sync per iteration on a GPU
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        n_sum += 1
        done = it + 1
        if done % spec["report_every"] and done != spec["iterations"]:
            continue
        # a wall-clock budget (`max_seconds`, e.g. a GPU lease): stop at a report, every rank at the same one
        out_of_time = bool(budget) and _any_rank(time.perf_counter() - t_start > budget, w)
        final = done == spec["iterations"] or out_of_time
        metrics = {f"loss_{k}": float(v) / n_sum for k, v in sums.items()}  # waits for the device
        dt = time.perf_counter() - t0
        metrics.update(iteration=done, iterations_per_s=n_sum / dt,
                       images_per_s=n_sum * spec["batch_size"] * w.world / dt)
        ckpt_dir = None
        if done % spec["checkpoint_every"] == 0 or final:
            ckpt_dir = out_dir / "last"
            if w.rank == 0:
                _save_state(ckpt_dir, model, opt, done)
                _event(out_dir, event="checkpoint", iteration=done)
            if w.world > 1 and not use_ray:
                torch.distributed.barrier()
        if w.rank == 0:
            _event(out_dir, event="report", **metrics)
            if cfg.get("run_id"):
                mlflow_down = _send_metrics(cfg["run_id"], metrics, done, mlflow_down)
        w.report(metrics, ckpt_dir if w.rank == 0 else None)
        sums, n_sum, t0 = {}, 0, time.perf_counter()
        if out_of_time:
            if w.rank == 0:
                _event(out_dir, event="time_budget", iteration=done, seconds=round(time.perf_counter() - t_start, 1))
            break


def _model_and_optimizer(cfg: dict, w: _Worker) -> tuple:
    """(model on the worker's device, its Adam, first iteration): from the restored state, else from the
    `init` weights, else fresh."""
    from perceptual_core.networks import build_model

    spec = cfg["spec"]
    model = build_model(spec["model"])
    state = w.restored_state(Path(spec["out_dir"]), cfg.get("resume", False))
    if state is not None:
        model.load_state_dict(state["model"])
    elif cfg.get("init_bytes"):  # a fresh run from another model's weights (checked by run_job)
        from perceptual_core.checkpoint import load_model

        model.load_state_dict(load_model(spec["init"], data=cfg["init_bytes"]).state_dict())
    if w.device.type == "cuda" and spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model = w.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    return model, opt, start
