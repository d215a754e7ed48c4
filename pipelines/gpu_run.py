"""The device side of a GPU bundle (`pipelines/gpu_bundle.py` packs it; `python -m pipelines.gpu_bundle run`
and `scripts/gpu_train.sh run` call this): check the carried files, `prepare --no-ray` once, then train the
job, or several style jobs at once, one process each on the same GPU, and write the release-format model,
``gpu_train.json`` and the events. Nothing here imports ray, mlflow or dvc."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from perceptual_core import zoo
from perceptual_core.zoo import sha256_file

from . import config
from .gpu_bundle import BUNDLE, _get, _job, _jobs, _set, path_keys
from .log import get

log = get(__name__)


def verify(bundle: Path) -> dict:
    """BUNDLE.json, after checking every file's SHA-256 (a one-line error names the first bad one)."""
    mf = bundle / BUNDLE
    if not mf.is_file():
        raise FileNotFoundError(f"{mf}: no bundle here (run `python -m pipelines.gpu_bundle pack JOB` and carry it)")
    doc = json.loads(mf.read_text())
    for rel, sha in doc["files"].items():
        f = bundle / rel
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing from the bundle")
        if sha256_file(f) != sha:
            raise ValueError(f"{f}: SHA-256 differs from {mf}'s record (damaged in transit?)")
    shipped = {x.name: x for x in zoo.entries()} if doc.get("inits") else {}
    for job, init in (doc.get("inits") or {}).items():  # shipped style models to go on from: the code's models/
        e = shipped.get(job)
        if e is None or e.sha256 != init["sha256"]:
            raise ValueError(f"{zoo.models_dir()}: {job} is {'missing' if e is None else e.sha256[:12] + '...'}, "
                             f"not the {init['sha256'][:12]}... packed in {mf} (carry the same commit)")
        zoo.verify(e)
    return doc


def _resolved_params(bundle: Path, kind: str) -> Path:
    p = config.read_params(bundle / "params.yaml")
    for key in path_keys(p, kind):
        _set(p, key, str((bundle / _get(p, key)).resolve()))
    (bundle / "work").mkdir(exist_ok=True)
    out = bundle / "work" / "params.resolved.yaml"
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return out


def run(job: str | list[str], bundle: Path, out: Path, seconds: float | None = None, iterations: int | None = None,
        prepared: bool = False) -> dict:
    """Prepare (once; ``prepared``: already done by the parent run) and train the job(s) into ``out``: one job
    writes there, several train at once, one process each, into ``out``/JOB/. -> the job's result, or
    {"jobs": {JOB: result or None (failed)}}."""
    js = _jobs(job)
    kind = js[0].kind
    if prepared:  # a job of a run of several: the parent checked the files and resolved the params
        doc, params = json.loads((bundle / BUNDLE).read_text()), bundle / "work" / "params.resolved.yaml"
    else:
        doc, params = verify(bundle), _resolved_params(bundle, kind)
    packed = doc.get("jobs") or [doc["job"]]
    for x in js:
        if x.job not in packed:
            raise ValueError(f"{bundle / BUNDLE}: packed for {' '.join(packed)}, not {x.job}")
    os.environ["PERCEPTUAL_PARAMS"] = str(params)
    os.environ.pop("PERCEPTUAL_DATA_DIR", None)  # the bundle's data_dir, not this machine's
    config._load.cache_clear()
    out.mkdir(parents=True, exist_ok=True)
    stamp = bundle / "work" / "prepared.json"  # the patch counts, for the jobs of a run of several
    if prepared:
        patches, t_prep = json.loads(stamp.read_text())["patches"], 0.0
    else:
        from . import prepare

        t0 = time.perf_counter()
        patches = prepare.run_stage(kind, use_ray=False)["patches"]
        t_prep = time.perf_counter() - t0
        stamp.write_text(json.dumps({"patches": patches}) + "\n")
    if len(js) == 1:
        return _train_one(js[0].job, doc, out, seconds, iterations, patches, t_prep)
    return _train_at_once([x.job for x in js], bundle, out, seconds, iterations)


def _train_at_once(jobs: list[str], bundle: Path, out: Path, seconds: float | None, iterations: int | None) -> dict:
    """One `run JOB --prepared` process per job on the same device, CPU threads shared out; each logs to
    ``out``/JOB/train.log. A job that fails leaves the others running and is named at the end."""
    threads = max(1, (os.cpu_count() or 2) // len(jobs))
    procs = {}
    for job in jobs:
        (out / job).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pipelines.gpu_bundle", "run", job, "--bundle", str(bundle), "--out",
               str(out / job), "--prepared"]
        cmd += ["--seconds", str(seconds)] if seconds is not None else []
        cmd += ["--iterations", str(iterations)] if iterations is not None else []
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        with open(out / job / "train.log", "w") as logf:
            procs[job] = subprocess.Popen(cmd, cwd=config.ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
    log.info(f"gpu train: {len(jobs)} jobs at once ({', '.join(jobs)}), {threads} CPU threads each -> {out}/JOB/")
    results = {}
    for job, proc in procs.items():
        rc = proc.wait()
        f = out / job / "gpu_train.json"
        results[job] = json.loads(f.read_text()) if rc == 0 and f.is_file() else None
        log.info(f"gpu train: {job}: " + (f"{results[job]['iterations']} iterations, "
                                          f"{results[job]['iterations_per_s']} it/s" if results[job]
                                          else f"failed (exit {rc}; see {out / job / 'train.log'})"))
    failed = [j for j, r in results.items() if r is None]
    if failed:
        raise ValueError(f"gpu train: {', '.join(failed)} failed (see {out}/JOB/train.log); "
                         f"{len(jobs) - len(failed)} of {len(jobs)} finished")
    return {"jobs": results}


def _train_one(job: str, doc: dict, out: Path, seconds: float | None, iterations: int | None, patches: dict,
               t_prep: float) -> dict:
    import torch

    from perceptual_core.networks import build_model
    from perceptual_core.zoo import save_release

    from . import train

    kind = _job(job).kind
    spec = train.job_spec(job)
    if seconds is not None:
        spec["max_seconds"] = seconds
    if iterations is not None:
        spec["iterations"] = iterations
    shutil.rmtree(spec["out_dir"], ignore_errors=True)
    # the job's starting weights (an SR job's init/ file, a style job's shipped model), checked to hold its
    # network as `train` does
    init_bytes = train._init_bytes(spec) if spec.get("init") else None
    t1 = time.perf_counter()
    train.train_loop({"spec": spec, "use_ray": False, "vgg_weights": config.vgg_weights_arg(),
                      "init_bytes": init_bytes})
    wall = time.perf_counter() - t1

    state = torch.load(Path(spec["out_dir"]) / "last" / train.STATE, map_location="cpu", weights_only=True)
    model = build_model(spec["model"])
    model.load_state_dict(state["model"])
    reports = [e for e in train.read_events(Path(spec["out_dir"])) if e.get("event") == "report"]
    steady = reports[1:] or reports  # the first interval holds cuDNN autotuning and warm-up
    name = job
    init = doc.get("init") or (doc.get("inits") or {}).get(job)  # the model it started from, as packed
    sha = save_release(out / f"{name}.safetensors", model, half=False,
                       meta={"iterations": state["iteration"], "trained_on": _device_name(),
                             **({"init": init["ref"]} if init else {})})
    extra = ("scale", "loss", "degradation") if kind == "sr" else ("tv_size",)  # TV weighed as at tv_size px
    result = {
        "job": job, "device": _device_name(), "torch": torch.__version__, "iterations": int(state["iteration"]),
        "train_seconds": round(wall, 1), "prepare_seconds": round(t_prep, 1),
        "patches": patches, "iterations_per_s": round(
            sum(r["iterations_per_s"] for r in steady) / max(1, len(steady)), 3),
        "last": {k: v for k, v in (reports[-1] if reports else {}).items() if k.startswith("loss_")},
        "spec": {**{k: spec[k] for k in ("crop", "batch_size", "iterations", "precision", "channels_last", "compile",
                                         "weights", "lr", "max_seconds") + extra},
                 **({"init": init["ref"], "init_sha256": init["sha256"], "init_record": init.get("record")}
                    if init else {})},
        "model": {"file": f"{name}.safetensors", "sha256": sha, "config": dict(spec["model"])},
        "command": os.environ.get("GPU_TRAIN_COMMAND") or " ".join(["python -m pipelines.gpu_bundle", *sys.argv[1:]]),
        "bundle_created": doc["created"],
    }
    (out / "gpu_train.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.copy2(Path(spec["out_dir"]) / train.EVENTS, out / "events.jsonl")
    log.info(f"gpu train: {job} {result['iterations']} iterations in {wall:.0f} s "
             f"({result['iterations_per_s']} it/s on {result['device']}) -> {out}")
    return result


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
