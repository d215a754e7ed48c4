"""`release export`: the job's model as a tensor-only release file in models/ (`perceptual_core.zoo`), kept
only if fp16 storage stays within the engines' bound on real photos, scored, and written with its
manifest entry and model card; from the release training run or a GPU run's output folder."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .. import config, jobname
from ..log import get
from ..settings import InferenceSettings
from .artifacts import artifact_info
from .cards import card
from .checks import fp16_psnr, load_check, reference_stats
from .params import settings
from .quality import _photos, _sr_release_info, _style_release_info
from .records import _cpu_trained, _gpu_trained


def export(job: str, from_gpu: Path | None = None) -> dict:
    """Write models/JOB.safetensors, its card and manifest entry from the release training run, or
    from a `scripts/gpu_train.sh run` output folder (``from_gpu``; the GPU model replaces the CPU one)."""
    from perceptual_core import zoo

    r = settings()
    out = config.resolve(r.models_dir)
    model, training = _gpu_trained(job, from_gpu) if from_gpu else _cpu_trained(job)
    iterations = training.pop("iterations")
    q = r.quality
    photos = _photos(q.content, int(q.size))
    out.mkdir(parents=True, exist_ok=True)
    f = out / f"{job}.safetensors"
    sha = zoo.save_release(f, model, half=bool(r.half), meta={"job": job, "iterations": iterations})
    half_model = zoo.model_from_bytes(f.read_bytes(), str(f))  # as users will load it
    bound = float(config.load(InferenceSettings).tolerance["fp16"]["min_psnr"])
    db = fp16_psnr(model, half_model, photos)
    if db < bound:
        f.unlink()
        raise ValueError(f"{job}: fp16 storage gives {db:.1f} dB < {bound} dB on the quality photos; set "
                         f"release.half: false")
    entry = {"file": f.name, "sha256": sha, "task": zoo.task_of(model.config), "card": f"{job}.md",
             "bytes": f.stat().st_size, "storage": "fp16" if r.half else "fp32", "fp16_psnr_db": round(db, 2),
             "config": dict(model.config), "iterations": iterations, "training": training,
             "released": datetime.now(timezone.utc).date().isoformat()}
    entry["reference"] = reference_stats(half_model, r.reference)
    if entry["task"] == "stylize":
        entry.update(_style_release_info(job, half_model, photos, q, out, training["params"]))
        if r.artifacts is not None:
            entry["artifacts"] = artifact_info(half_model, r.artifacts)
    else:
        entry.update(_sr_release_info(job, half_model, out))
        entry["load_check"] = load_check(half_model, entry["config"].get("scale") or jobname.parse(job).scale,
                                         config.data_dir())
    _write_manifest(out, job, entry)
    (out / entry["card"]).write_text(card(job, entry, json.loads((out / "MANIFEST.json").read_text())["models"]))
    get(__name__).info(f"release: wrote {f} ({entry['bytes']:,} bytes, sha256 {sha}); fp16 storage {db:.1f} dB")
    return entry


def _write_manifest(out: Path, name: str, entry: dict) -> None:
    from perceptual_core.io import atomic_write

    p = out / "MANIFEST.json"
    doc = json.loads(p.read_text()) if p.is_file() else {"models": {}}
    doc["models"][name] = entry
    atomic_write(p, lambda f: f.write((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()))
