"""Where a worker runs: Ray Train's TorchTrainer (gloo on CPU, NCCL on GPUs, DDP through `prepare_model`),
torchrun (RANK/WORLD_SIZE set, torch.distributed) or one plain process; the loop sees one interface."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .outdir import STATE


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


def _any_rank(flag: bool, w: _Worker) -> bool:
    """True on every rank if it is true on any (so all ranks leave the loop at the same iteration)."""
    if w.world == 1 or not torch.distributed.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=w.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())
