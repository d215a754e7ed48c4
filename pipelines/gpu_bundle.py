"""Train a style at paper scale on a GPU machine that has only torch: a bundle carried in, a run without Ray.

    python -m pipelines.gpu_bundle pack style-starry_night            # here -> tmp/gpu_bundle/ (<= 64 MiB with the code)
    bash scripts/gpu_train.sh starry_night [SECONDS]                  # there: prepare + train, then $OUT/
    python -m pipelines.gpu_bundle run style-starry_night --out DIR   # what the script runs

A lent GPU machine (see docs/models.md, "On a single GPU with only torch") has torch, pyarrow, PIL
and PyYAML but no Ray, MLflow or DVC, no network and no data folder; what it gets is the working tree plus at most
64 MiB carried in. So `pack` writes ``tmp/gpu_bundle/`` (carry it):

- ``params.yaml``: the release params (`pipelines.release.release_params`) with the GPU settings of
  ``release.gpu`` laid over ``train`` (256² crops, batch 4, bf16 autocast, channels_last, 40,000
  iterations or ``max_seconds``), every path relative to the bundle;
- ``data/acquired/images``: the release's training photos (builtin + COCO 128, never a benchmark
  image), exactly what `acquire` gave the CPU run, and ``data/<style image path>``;
- ``vgg16_loss_fp16.safetensors``: the loss network's part of the verified ImageNet VGG-16 (conv1_1
  to conv4_3) in fp16, 15 MB instead of 59 (`perceptual_core.vgg.save_loss_weights`; checked
  against its pinned hash on load);
- ``BUNDLE.json``: the SHA-256 of every file, checked before the run.

`run` resolves the params against the bundle's own folder, runs `prepare style --no-ray` (the
same bytes as the Ray stage) and the same `train_loop` as Ray Train (``use_ray=False``: plain
PyTorch on one CUDA device), then writes to ``--out``: ``style-NAME.safetensors`` (fp32, the zoo's
format: `perceptual stylize --model FILE` reads it), ``gpu_train.json`` (device, torch version,
iterations, wall time, iterations/s, last losses) and the run's ``events.jsonl``. Nothing in it
imports ray, mlflow or dvc.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from perceptual_core.zoo import sha256_file  # the project's one streaming SHA-256 of a file

from . import config, jobname, owned

BUNDLE = "BUNDLE.json"
VGG_FILE = "vgg16_loss_fp16.safetensors"
MiB = 1 << 20
# params keys that hold paths; the bundle stores them relative to itself and `run` makes them absolute
PATH_KEYS = (("data_dir",), ("prepare_style", "input"), ("prepare_style", "out_dir"), ("prepare_style", "metrics"),
             ("train", "out_dir"), ("train", "style", "data"), ("loss_network", "weights"))


def _tracked_bytes() -> int:
    """Bytes of the project's tracked files: what travels to the device beside the bundle."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=config.ROOT, capture_output=True, check=True
                               ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((config.ROOT / n).stat().st_size for n in names if n and (config.ROOT / n).is_file())


def _set(d: dict, keys: tuple, value) -> None:
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


def _get(d: dict, keys: tuple):
    for k in keys:
        d = d[k]
    return d


# ------------------------------------------------------------------------------------------ pack

def pack(job: str, out: Path, photos: Path | None = None) -> dict:
    """Write the bundle for JOB (style-NAME) to ``out``; ``photos``: the training photos (default: the
    release's acquired folder, acquired first if missing). Returns BUNDLE.json's content."""
    from perceptual_core.vgg import save_loss_weights

    from . import release

    j = jobname.parse(job)
    kind, name = j.kind, j.style
    if kind != "style":
        raise ValueError(f"gpu bundle: {job!r}: only style-NAME jobs train on the GPU path")
    p = release.release_params()
    styles = p["train"]["style"]["styles"]
    if name not in styles:
        raise ValueError(f"gpu bundle: unknown style {name!r}: params train.style.styles has {sorted(styles)}")
    g = release.settings()["gpu"]
    if photos is None:
        photos = release.acquired_photos()
    if not photos.is_dir() or not any(photos.iterdir()):
        raise FileNotFoundError(f"gpu bundle: no training photos in {photos}")

    owned.check_deletable(out, "gpu_bundle pack", "--out", signature=BUNDLE)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        owned.claim(tmp, "gpu_bundle pack")
        shutil.copytree(photos, tmp / "data/acquired/images")
        style_rel = Path(styles[name])
        style_src = config.data_file(style_rel)  # the data folder's, else the committed painting
        if not style_src.is_file():
            raise FileNotFoundError(f"gpu bundle: style image not found: {style_src} (params train.style.styles)")
        style_dst = Path("data") / (style_rel.name if style_rel.is_absolute() else style_rel)
        (tmp / style_dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(style_src, tmp / style_dst)
        save_loss_weights(tmp / VGG_FILE)

        p["train"]["style"]["styles"] = {name: str(style_dst.relative_to("data"))}
        p["train"]["style"]["jobs"] = [name]
        for key, value in ((("data_dir",), "data"), (("prepare_style", "input"), "data/acquired/images"),
                           (("prepare_style", "out_dir"), "work/data/style"),
                           (("prepare_style", "metrics"), "work/metrics/prepare_style.json"),
                           (("train", "out_dir"), "work/train"), (("train", "style", "data"), "work/data/style"),
                           (("loss_network", "weights"), VGG_FILE)):
            _set(p, key, value)
        p["loss_network"]["allow_download"] = False
        p["prepare_style"]["workers"] = 1
        p["train"].update({k: g[k] for k in ("precision", "channels_last", "compile", "report_every",
                                             "checkpoint_every")})
        p["train"]["style"].update({k: g[k] for k in ("crop", "batch_size", "iterations")})
        p["train"]["max_seconds"] = g["max_seconds"]
        for k in ("acquire", "mlflow"):
            p.pop(k, None)  # not used there; keeps URIs of this machine out of the bundle
        (tmp / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

        files = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        size = sum((tmp / f).stat().st_size for f in files)
        limit = int(g["carry_limit_mib"]) * MiB
        code = _tracked_bytes()
        if size + code > limit:
            raise ValueError(f"gpu bundle: {size / MiB:.1f} MiB + {code / MiB:.1f} MiB of tracked files is over "
                             f"release.gpu.carry_limit_mib={g['carry_limit_mib']}")
        doc = {"job": job, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "photos": sum(1 for f in files if f.startswith("data/acquired/images/")),
               "bytes": size, "files": files, "train": {**g}}
        (tmp / BUNDLE).write_text(json.dumps(doc, indent=1) + "\n")
        owned.remove(out, "gpu_bundle pack", "--out", signature=BUNDLE)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"gpu bundle: {out} ({size / MiB:.1f} MiB, {doc['photos']} photos, {job}); with the code "
          f"{(size + code) / MiB:.1f} of {g['carry_limit_mib']} MiB", file=sys.stderr)
    return doc


# ------------------------------------------------------------------------------------------- run

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
    return doc


def _resolved_params(bundle: Path) -> Path:
    p = config.read_params(bundle / "params.yaml")
    for key in PATH_KEYS:
        _set(p, key, str((bundle / _get(p, key)).resolve()))
    (bundle / "work").mkdir(exist_ok=True)
    out = bundle / "work" / "params.resolved.yaml"
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return out


def run(job: str, bundle: Path, out: Path, seconds: float | None = None, iterations: int | None = None) -> dict:
    import torch

    from perceptual_core.networks import build_model
    from perceptual_core.zoo import save_release

    from . import prepare, train

    doc = verify(bundle)
    if doc["job"] != job:
        raise ValueError(f"{bundle / BUNDLE}: packed for {doc['job']}, not {job}")
    os.environ["PERCEPTUAL_PARAMS"] = str(_resolved_params(bundle))
    os.environ.pop("PERCEPTUAL_DATA_DIR", None)  # the bundle's data_dir, not this machine's
    config._load.cache_clear()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = prepare.run_stage("style", use_ray=False)
    t_prep = time.perf_counter() - t0

    spec = train.job_spec(job)
    if seconds is not None:
        spec["max_seconds"] = seconds
    if iterations is not None:
        spec["iterations"] = iterations
    shutil.rmtree(spec["out_dir"], ignore_errors=True)
    t1 = time.perf_counter()
    train.train_loop({"spec": spec, "use_ray": False, "vgg_weights": config.vgg_weights_arg()})
    wall = time.perf_counter() - t1

    state = torch.load(Path(spec["out_dir"]) / "last" / train.STATE, map_location="cpu", weights_only=True)
    model = build_model(spec["model"])
    model.load_state_dict(state["model"])
    reports = [e for e in train.read_events(Path(spec["out_dir"])) if e.get("event") == "report"]
    steady = reports[1:] or reports  # the first interval holds cuDNN autotuning and warm-up
    name = job
    sha = save_release(out / f"{name}.safetensors", model, half=False,
                       meta={"iterations": state["iteration"], "trained_on": _device_name()})
    result = {
        "job": job, "device": _device_name(), "torch": torch.__version__, "iterations": int(state["iteration"]),
        "train_seconds": round(wall, 1), "prepare_seconds": round(t_prep, 1),
        "patches": summary["patches"], "iterations_per_s": round(
            sum(r["iterations_per_s"] for r in steady) / max(1, len(steady)), 3),
        "last": {k: v for k, v in (reports[-1] if reports else {}).items() if k.startswith("loss_")},
        "spec": {k: spec[k] for k in ("crop", "batch_size", "iterations", "precision", "channels_last", "compile",
                                      "weights", "lr", "max_seconds")},
        "model": {"file": f"{name}.safetensors", "sha256": sha, "config": dict(spec["model"])},
        "bundle_created": doc["created"],
    }
    (out / "gpu_train.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.copy2(Path(spec["out_dir"]) / train.EVENTS, out / "events.jsonl")
    print(f"gpu train: {job} {result['iterations']} iterations in {wall:.0f} s "
          f"({result['iterations_per_s']} it/s on {result['device']}) -> {out}", file=sys.stderr)
    return result


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.gpu_bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    a = sub.add_parser("pack", help="write the bundle (here)")
    a.add_argument("job")
    a.add_argument("--out", default=str(config.ROOT / "tmp/gpu_bundle"))
    a.add_argument("--photos", default=None, help="training photos (default: the release's acquired folder)")
    r = sub.add_parser("run", help="prepare + train from a bundle (there)")
    r.add_argument("job")
    r.add_argument("--bundle", default=str(config.ROOT / "tmp/gpu_bundle"))
    r.add_argument("--out", required=True)
    r.add_argument("--seconds", type=float, default=None, help="wall-clock budget (default release.gpu.max_seconds)")
    r.add_argument("--iterations", type=int, default=None, help="instead of release.gpu.iterations")
    args = ap.parse_args(argv)
    from . import run_stage

    if args.action == "pack":
        return run_stage(pack, args.job, Path(args.out), Path(args.photos) if args.photos else None)
    return run_stage(run, args.job, Path(args.bundle), Path(args.out), args.seconds, args.iterations)


if __name__ == "__main__":
    sys.exit(main())
