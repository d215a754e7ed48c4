"""What the report reads: the benchmark stages' full results (JSON under `benchmark.out_dir`), the
model versions they judged, and the machine and code it is rendered with, so a figure on the page
can be traced to what made it.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path


def load(path: Path) -> dict | None:
    """A JSON file the report reads (results, decisions), or None when it has not been written."""
    return json.loads(path.read_text()) if path.is_file() else None


def judged_versions(sr: dict | None, st: dict | None) -> dict:
    """{registry name: {version, run_id}} of every model either benchmark judged."""
    return {**((sr or {}).get("versions") or {}), **((st or {}).get("versions") or {})}


def environment() -> dict:
    """Where and with what the page is rendered: CPU, GPU, library versions, git commit, dvc.lock."""
    import torch

    from .. import tracking

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "torchvision", "ray", "mlflow", "dvc", "numpy"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # not installed where the report is rendered
            versions[mod] = "n/a"
    prov = tracking.provenance()
    return {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpu": f"{cpu} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version(), **versions,
            "git_commit": prov["git_commit"] + (" (dirty)" if prov["git_dirty"] == "true" else ""),
            "dvc_lock_sha256": prov["dvc_lock_sha256"][:16]}
