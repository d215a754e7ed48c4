"""Training stages: style networks, SR x4/x8 (l_feat, l_pixel), SRCNN; Ray Train or plain PyTorch.

    python -m pipelines.train JOB [--resume] [--no-ray]      # JOB: style-la_muse, sr-x4-feat, srcnn-x4, ...

`train_loop` is the one per-worker function. Ray Train's TorchTrainer runs it on N workers
(gloo on CPU, NCCL on GPUs, DDP through `prepare_model`); `--no-ray` runs it in this process,
or under `torchrun` (RANK/WORLD_SIZE set) with torch.distributed, for a GPU box without Ray.
Data come from the prepare stages' Parquet shards through `PatchShards`, split by rank.

Every `checkpoint_every` iterations rank 0 writes `<out>/last/state.pt` (model, optimiser,
iteration; tensors only) and hands it to Ray as the run's checkpoint, so a worker crash
restarts from it (FailureConfig) and `--resume` continues after a driver crash. The driver
logs params, per-interval losses and throughput, a validation grid and the model to MLflow, and
registers it as a new version of `style-NAME`, `sr-xS-LOSS` or `srcnn-xS` with alias challenger.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import config, jobname, owned

STATE = "state.pt"
EVENTS = "events.jsonl"
RUN_ID = "mlflow_run_id"  # the job's MLflow run, continued by --resume
SUMMARY = "summary.json"  # the whole summary of a finished run (job, MLflow run, registered version, ...)
# metrics.json (DVC metrics, written last: the run finished) holds these numbers only, so `dvc metrics show`
# stays readable; `release train` reads its iterations, rate and losses.
HEADLINE = ("iterations", "iterations_per_s", "wall_seconds", "restarts", "loss_start", "loss_end")
LOSS_KEYS = ("total", "content", "style", "tv", "pixel")
# LR used for SR/SRCNN training: "blur" = the prepared lr_x* files (sigma 1 blur + bicubic, the paper's
# protocol); "bicubic" = MATLAB bicubic of the HR crop (the standard protocol, the official SRCNN's data).
DEGRADATIONS = ("blur", "bicubic")


# ----------------------------------------------------------------------------------- job specs

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


# ------------------------------------------------------------------------------- worker context

class _Worker:
    """What differs between Ray Train, torchrun and a single process: rank, device, report."""

    def __init__(self, use_ray: bool):
        self.ray = use_ray
        if use_ray:
            import ray.train
            import ray.train.torch

            ctx = ray.train.get_context()
            self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
            self.device = ray.train.torch.get_device()
        else:
            self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available()
                                       else "cpu")
            if self.world > 1 and not torch.distributed.is_initialized():
                torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.ray:
            import ray.train.torch

            return ray.train.torch.prepare_model(model)
        model = model.to(self.device)
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def restored_state(self, out_dir: Path, resume: bool) -> dict | None:
        """The state to continue from: Ray's last committed checkpoint (a restarted worker group, or a
        new driver on the same storage: `--resume` after the driver died), else with ``resume`` the
        rank-0 copy in out_dir/last (plain PyTorch). Ray's wins even when out_dir/last is newer: on a
        cluster only Ray's reaches every worker, and all ranks must start from the same state."""
        path = None
        if self.ray:
            import ray.train

            ckpt = ray.train.get_checkpoint()
            if ckpt is not None:
                with ckpt.as_directory() as d:
                    return torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
        if resume and (out_dir / "last" / STATE).is_file():
            path = out_dir / "last" / STATE
        return torch.load(path, map_location="cpu", weights_only=True) if path else None

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        if self.ray:
            import ray.train

            ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
            ray.train.report(metrics, checkpoint=ckpt)


def _event(out_dir: Path, **fields) -> None:
    with open(out_dir / EVENTS, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")


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


def _random_crop(tensors: list[torch.Tensor], crop: int, scales: list[int], gen: torch.Generator):
    """Same random crop of aligned HR/LR tensors (crop in HR pixels; LR gets crop/scale)."""
    h = tensors[0].shape[-1]
    if not crop or crop >= h:
        return tensors
    big = max(scales)
    y, x = (int(torch.randint(0, (h - crop) // big + 1, (1,), generator=gen)) * big for _ in range(2))
    return [t[..., y // s:(y + crop) // s, x // s:(x + crop) // s] for t, s in zip(tensors, scales)]


def make_step(spec: dict, loss_net):
    """-> fn(model, batch) returning (output, losses dict) for the job's kind."""
    from perceptual_core.io import load_image
    from perceptual_core.losses import PerceptualLoss
    from perceptual_core.metrics import y_bt601
    from perceptual_core.resize import imresize

    wts = spec["weights"]
    if spec["kind"] == "style":
        crit = PerceptualLoss(loss_net, spec["content_layers"], spec["style_layers"], content_weight=wts["content"],
                              style_weight=wts["style"], tv_weight=wts["tv"])  # the `losses` params, as benchmark
        crit.set_style(load_image(spec["style_image"]).to_tensor(), spec["style_size"])
    elif spec["loss"] == "feat":
        crit = PerceptualLoss(loss_net, content_layers=spec["feat_layers"], content_weight=1.0, tv_weight=wts["tv"])
    else:
        crit = None

    def step(model, batch, gen):
        if spec["kind"] == "style":
            (x,) = _random_crop([batch["image"]], spec["crop"], [1], gen)
            out = model(x)
            return out, crit(out, x)
        hr, lr = _random_crop([batch["hr"], batch[f"lr_x{spec['scale']}"]], spec["crop"], [1, spec["scale"]], gen)
        lr = training_lr(hr, lr, spec)
        if spec["kind"] == "srcnn":  # SRCNN restores the bicubic-upscaled Y channel
            y_hr, y_in = y_bt601(hr, axis=1), y_bt601(imresize(lr, float(spec["scale"])), axis=1)
            out = model(y_in)
            loss = F.mse_loss(out, y_hr)
            return out, {"total": loss, "pixel": loss}
        out = model(lr)
        if crit is None:
            loss = F.mse_loss(out, hr)
            return out, {"total": loss, "pixel": loss}
        return out, crit(out, hr)

    return step


def training_lr(hr: torch.Tensor, lr_file: torch.Tensor, spec: dict) -> torch.Tensor:
    """The LR input for an HR batch: the prepared file's (blur) or MATLAB bicubic of HR, 8-bit (bicubic)."""
    if spec.get("degradation", "blur") == "blur":
        return lr_file
    from perceptual_core.resize import imresize

    return imresize(hr, 1.0 / spec["scale"]).clamp_(0, 1).mul_(255).round_().div_(255)


def train_loop(cfg: dict) -> None:
    """One worker's training (Ray Train's `train_loop_per_worker`, or called directly)."""
    from perceptual_core.networks import build_model
    from perceptual_core.vgg import VGG16Loss

    spec, use_ray = cfg["spec"], cfg["use_ray"]
    w = _Worker(use_ray)
    out_dir = Path(spec["out_dir"])
    torch.manual_seed(spec["seed"] + w.rank)
    gen = torch.Generator().manual_seed(spec["seed"] + 1000 * w.rank)
    cuda = w.device.type == "cuda"
    model = build_model(spec["model"])
    state = w.restored_state(out_dir, cfg.get("resume", False))
    if state is not None:
        model.load_state_dict(state["model"])
    elif cfg.get("init_bytes"):  # a fresh run from another model's weights (checked by run_job)
        from perceptual_core.checkpoint import load_model

        model.load_state_dict(load_model(spec["init"], data=cfg["init_bytes"]).state_dict())
    if cuda and spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model = w.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
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


def _send_metrics(run_id: str, metrics: dict, step: int, down: bool) -> bool:
    """Log one report to MLflow without stalling training; returns True while the server is unreachable.
    Nothing is lost: every report is in events.jsonl, and run_job sends what MLflow lacks at the end."""
    from . import tracking

    try:
        with tracking.short_retries():
            tracking.log_metrics(run_id, metrics, step=step)
    except Exception as e:  # noqa: BLE001 - any tracking failure (HTTP, database) is an outage here
        if not down:
            print(f"train: MLflow {tracking.redact(tracking.tracking_uri())} unreachable at iteration {step} "
                  f"({type(e).__name__}); training goes on, its metrics are kept in {EVENTS} and sent at the end",
                  file=sys.stderr, flush=True)
        return True
    if down:
        print(f"train: MLflow reachable again at iteration {step}", file=sys.stderr, flush=True)
    return False


def _any_rank(flag: bool, w: _Worker) -> bool:
    """True on every rank if it is true on any (so all ranks leave the loop at the same iteration)."""
    if w.world == 1 or not torch.distributed.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=w.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def _save_state(folder: Path, model, opt, iteration: int) -> None:
    from perceptual_core.io import atomic_write

    state = {"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(), "iteration": iteration}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STATE, lambda f: torch.save(state, f))


# ---------------------------------------------------------------------------------- the driver

def read_events(out_dir: Path) -> list[dict]:
    p = Path(out_dir) / EVENTS
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


def _validation_grid(model, spec: dict, n: int = 4):
    """Rows of (input, output[, target]) for n val patches, as one uint8 image."""
    import numpy as np

    from perceptual_core.metrics import y_bt601
    from perceptual_core.resize import imresize
    from perceptual_core.shards import PatchShards, shard_files

    try:
        files = shard_files(spec["data"], "val")
    except FileNotFoundError:
        files = shard_files(spec["data"], "train")
    rows = []
    model.eval()
    with torch.inference_mode():
        for i, r in enumerate(PatchShards(files, spec["columns"])):
            if i == n:
                break
            if spec["kind"] == "style":
                x = r["image"][None]
                tiles = [x, model(x).clamp(0, 1)]
            else:
                hr = r["hr"][None]
                lr = training_lr(hr, r[f"lr_x{spec['scale']}"][None], spec)
                up = imresize(lr, float(spec["scale"])).clamp(0, 1)
                if spec["kind"] == "srcnn":
                    y = model(y_bt601(up, axis=1)).clamp(0, 1)
                    out = (up + (y - y_bt601(up, axis=1))).clamp(0, 1)  # SRCNN's luma change on the bicubic RGB
                else:
                    out = model(lr).clamp(0, 1)
                tiles = [up, out, hr]
            rows.append(torch.cat(tiles, dim=-1)[0])
    grid = torch.cat(rows, dim=-2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def run_job(job: str, *, use_ray: bool = True, resume: bool = False, overrides: dict | None = None,
            ray_overrides: dict | None = None) -> dict:
    """Train JOB, track it in MLflow, register the model; returns the summary written to summary.json
    (its numbers, HEADLINE, to metrics.json).
    ``overrides``: job spec values; ``ray_overrides``: `train.ray` values (e.g. num_workers)."""
    from perceptual_core.checkpoint import save_checkpoint
    from perceptual_core.networks import build_model
    from perceptual_core.vgg import load_vgg16_weights

    from . import tracking

    spec = {**job_spec(job), **(overrides or {})}
    out_dir = Path(spec["out_dir"])
    if not resume:  # a fresh run; --resume keeps last/ and the events
        # a fresh clone may hold the folder with only what git carries: DVC's .gitignore, committed metrics
        owned.remove(out_dir, f"train {job}", "train.out_dir/JOB", signature=EVENTS,
                     tracked=(".gitignore", "metrics.json", SUMMARY))
    owned.claim(out_dir, f"train {job}")
    t = config.section("train")
    needs_vgg = spec["kind"] == "style" or spec.get("loss") == "feat"
    vgg = load_vgg16_weights(config.vgg_weights_arg(), allow_download=config.section("loss_network")["allow_download"]) \
        if needs_vgg else None
    with _tracking_step("before training; nothing was trained"):
        run_id = _resumed_run(out_dir) if resume else None
        if run_id is None:
            run_id = tracking.start_run(job, {"job": spec, "train": t}, data_stage=spec["data_stage"])
            (out_dir / RUN_ID).write_text(run_id + "\n")
    cfg = dict(spec=spec, use_ray=use_ray, resume=resume, run_id=run_id, tracking_uri=tracking.tracking_uri(),
               vgg_weights=vgg.path if vgg else None, init_bytes=_init_bytes(spec) if spec.get("init") else None)
    t0 = time.perf_counter()
    try:
        if use_ray:
            _fit_with_ray(cfg, {**t["ray"], **(ray_overrides or {})}, out_dir, resume)
        else:
            train_loop(cfg)
    except BaseException:
        from mlflow import MlflowClient

        with contextlib.suppress(Exception), tracking.short_retries():  # the server may be what failed
            MlflowClient(tracking.tracking_uri()).set_terminated(run_id, "FAILED")
        raise
    wall = time.perf_counter() - t0
    state = torch.load(out_dir / "last" / STATE, map_location="cpu", weights_only=True)
    model = build_model(spec["model"])
    model.load_state_dict(state["model"])
    model.eval()
    ckpt = save_checkpoint(out_dir / "model.pt", model, meta={"job": job, "iterations": state["iteration"],
                                                              "run_id": run_id})
    events = read_events(out_dir)
    reports = [e for e in events if e["event"] == "report"]
    after = (f"after training; the weights are kept in {out_dir / 'last'} (iteration {state['iteration']}): "
             f"`python -m pipelines.train {job} --resume` registers them once MLflow is back")
    with _tracking_step(after):
        with tracking.short_retries(retries=3):  # a server still down fails in seconds, not MLflow's ~4 min
            sent = tracking.backfill_metrics(run_id, [({k: v for k, v in r.items() if k not in ("time", "event")},
                                                       r["iteration"], r["time"]) for r in reports])
        if sent:
            print(f"train: sent MLflow the {sent} reports it missed", file=sys.stderr)
        tracking.log_image(run_id, _validation_grid(model, spec), "validation_grid.png")
    starts = [e for e in events if e["event"] == "start"]
    summary = {"job": job, "iterations": state["iteration"], "run_id": run_id, "wall_seconds": round(wall, 1),
               "restarts": sum(1 for e in starts if e["rank"] == 0) - 1,
               "resumed_from": sorted({e["iteration"] for e in starts if e["iteration"] > 0}),
               "loss_start": {k: v for k, v in reports[0].items() if k.startswith("loss_")} if reports else {},
               "loss_end": {k: v for k, v in reports[-1].items() if k.startswith("loss_")} if reports else {},
               "iterations_per_s": round(sum(r["iterations_per_s"] for r in reports) / max(1, len(reports)), 3)}
    hw = (64, 64) if spec["kind"] == "style" else (24, 24)
    with _tracking_step(after):
        version = tracking.finish_run(run_id, model, ckpt, model_name=spec["registered"], example_hw=hw,
                                      tags={"job": job})
    summary.update(model=spec["registered"], version=str(version.version))
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps({k: summary[k] for k in HEADLINE}, indent=2) + "\n")
    print(f"{job}: {summary['iterations']} iterations in {wall:.0f} s; loss_total "
          f"{summary['loss_start'].get('loss_total', float('nan')):.4g} -> "
          f"{summary['loss_end'].get('loss_total', float('nan')):.4g}; registered {spec['registered']} "
          f"v{version.version} @challenger (run {run_id})", file=sys.stderr)
    return summary


@contextlib.contextmanager
def _tracking_step(when: str):
    """A driver's MLflow call that failed (the server down, refused, or erroring) as one line saying
    what happened to the work (run_stage prints ValueError as `error: ...`, exit 2)."""
    from mlflow.exceptions import MlflowException

    from . import tracking

    try:
        yield
    except (MlflowException, ConnectionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(tracking.redact(f"MLflow {tracking.tracking_uri()} failed {when} ({first})")) from None


def _init_bytes(spec: dict) -> bytes:
    """The checkpoint `init` names (a file, a shipped model or models:/), checked to be the job's network."""
    from perceptual_core.checkpoint import read_checkpoint
    from perceptual_core.networks import build_model

    from .modelref import checkpoint_bytes

    ref = spec["init"]
    data = checkpoint_bytes(ref)
    got, want = read_checkpoint(ref, data)["config"], build_model(spec["model"]).config
    if got != want:
        raise ValueError(f"train.{spec['kind']}.init of {spec['job']}: {ref} holds {got}, not the job's network {want}")
    return data


def _resumed_run(out_dir: Path) -> str | None:
    """The MLflow run an interrupted job started (so --resume continues its curves), if it still exists."""
    from . import tracking

    p = out_dir / RUN_ID
    if not p.is_file():
        return None
    run_id = p.read_text().strip()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking.tracking_uri())
    try:
        client.get_run(run_id)
    except MlflowException:
        return None
    client.update_run(run_id, status="RUNNING")
    return run_id


def _fit_with_ray(cfg: dict, rcfg: dict, out_dir: Path, resume: bool) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .ray_env import ray_session

    storage = out_dir / "ray"
    if not resume:
        shutil.rmtree(storage, ignore_errors=True)
    n = int(rcfg["num_workers"])
    low = rcfg.get("min_workers")
    if low is not None and not 1 <= int(low) <= n:
        raise ValueError(f"train.ray.min_workers must be between 1 and num_workers ({n}), got {low!r}")
    # elastic (Ray Train): after a lost node the group restarts from the last checkpoint on what is left
    workers = (int(low), n) if low is not None and int(low) < n else n
    with ray_session(num_cpus=n):
        trainer = TorchTrainer(
            train_loop, train_loop_config=cfg,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(rcfg["use_gpu"]),
                                         resources_per_worker={"GPU": rcfg["gpus_per_worker"]} if rcfg["use_gpu"]
                                         else {"CPU": 1}),
            run_config=RunConfig(name=cfg["spec"]["job"], storage_path=str(storage),
                                 failure_config=FailureConfig(max_failures=int(rcfg["max_failures"]))))
        trainer.fit()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("job", help="style-NAME, sr-x4-feat, sr-x4-pixel, sr-x8-feat, sr-x8-pixel, srcnn-x4")
    ap.add_argument("--resume", action="store_true", help="continue from the job's last checkpoint")
    ap.add_argument("--no-ray", action="store_true", help="plain PyTorch in this process (or under torchrun)")
    a = ap.parse_args(argv)
    from . import run_stage

    return run_stage(run_job, a.job, use_ray=not a.no_ray, resume=a.resume)


if __name__ == "__main__":
    sys.exit(main())
