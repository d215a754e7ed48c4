"""Train a style or an SR network at paper scale on a GPU machine that has only torch: a bundle
carried in, a run without Ray.

    python -m pipelines.gpu_bundle pack style-starry_night            # here -> tmp/gpu_bundle/ (<= 64 MiB with the code)
    bash scripts/gpu_train.sh run starry_night [SECONDS]              # there: prepare + train, then $OUT/
    python -m pipelines.gpu_bundle pack style-la_muse style-wave ...  # several styles in one bundle (photos and
    bash scripts/gpu_train.sh run la_muse,wave,... [SECONDS]          #   VGG part once), trained at once: $OUT/JOB/
    python -m pipelines.gpu_bundle pack sr-x4-feat                    # the same for SR (sr-xS-pixel | sr-xS-feat)
    bash scripts/gpu_train.sh run sr-x4-feat [SECONDS]
    python -m pipelines.gpu_bundle run JOB --out DIR                  # what the script runs

A lent GPU machine (see docs/models.md, "On a single GPU with only torch") has torch, pyarrow, PIL
and PyYAML but no Ray, MLflow or DVC, no network and no data folder; what it gets is the working tree plus at most
64 MiB carried in. So `pack` writes ``tmp/gpu_bundle/`` (carry it):

- ``params.yaml``: the release params (`pipelines.release.release_params`) with the GPU settings of
  ``release.gpu`` laid over ``train``: bf16 autocast, channels_last, the iterations or ``max_seconds``
  (480 s) of wall time, whichever comes first; style jobs: 256² crops, batch 4, 40,000 iterations;
  SR jobs (``release.gpu.sr`` laid over those): whole 288² patches (``prepare_sr.size``, the
  paper's), batch 4, the paper's 200,000 iterations. Every path (`path_keys`) is relative to the bundle;
- ``data/acquired/images``: the release's training photos (builtin + COCO 128, never a benchmark
  image), exactly what `acquire` gave the CPU run; style jobs also ``data/<style image path>``;
- style jobs go on from their shipped models (``release.gpu.style_init: shipped``): those travel with the
  code (``models/``); BUNDLE.json's ``inits`` holds each one's SHA-256 and training so far;
- SR jobs that start from another model (``train.sr.init``, e.g. ``x4-feat: sr-x4-pixel``):
  ``init/<model>.safetensors``, the shipped file itself (the manifest's SHA-256; a checkpoint file or
  a ``models:/`` URI travels as ``init/JOB-init.pt``), checked here to hold the job's network;
- ``vgg16_loss_fp16.safetensors`` (style and ℓ_feat jobs; ℓ_pixel needs no loss network): the loss
  network's part of the verified ImageNet VGG-16 (conv1_1 to conv4_3) in fp16, 15 MB instead of 59
  (`perceptual_core.vgg.save_loss_weights`; checked against its pinned hash on load);
- ``BUNDLE.json``: the SHA-256 of every file, checked before the run.

`run` (`pipelines/gpu_run.py`) resolves the params against the bundle's own folder, runs
`prepare style|sr --no-ray` (the same bytes as the Ray stage) and the same `train_loop` as Ray Train
(``use_ray=False``: plain PyTorch on one CUDA device; an SR job starts from the weights in ``init/``),
then writes to ``--out``:
``JOB.safetensors`` (fp32, the zoo's format: `perceptual stylize|upscale --model FILE` reads it),
``gpu_train.json`` (device, torch version, iterations, wall time, iterations/s, last losses, the
spec) and the run's ``events.jsonl``. Nothing in it imports ray, mlflow or dvc.

Several style jobs share one bundle (the photos and the loss network once; each adds its style image, under
1 MB) and one `prepare` (the patches do not depend on the style). `run` then trains them at once, one process
each on the same GPU (``--out``/JOB/ each): one batch-4 job leaves an H200 mostly idle, so five trained at
17.2 iterations/s each (2026-12-04), 86 together.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from perceptual_core.zoo import sha256_file  # the project's one streaming SHA-256 of a file

from . import config, jobname, owned
from .log import get

log = get(__name__)
BUNDLE = "BUNDLE.json"
VGG_FILE = "vgg16_loss_fp16.safetensors"
INIT_DIR = "init"
MiB = 1 << 20
KINDS = ("style", "sr")  # the job kinds a bundle trains (srcnn: not on this path)
# params keys that hold paths, per kind; the bundle stores them relative to itself and `run` makes them
# absolute (`path_keys` adds the loss network's weights and train.sr.init's files where the bundle has them)
PATH_KEYS = {kind: (("data_dir",), (f"prepare_{kind}", "input"), (f"prepare_{kind}", "out_dir"),
                    (f"prepare_{kind}", "metrics"), ("train", "out_dir"), ("train", kind, "data")) for kind in KINDS}
# the values of release.gpu laid over `train` (every kind) and over `train.<kind>`
TRAIN_KEYS = ("precision", "channels_last", "compile", "report_every", "checkpoint_every")
KIND_KEYS = ("crop", "batch_size", "iterations")


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


def path_keys(p: dict, kind: str) -> list[tuple]:
    """The keys of params ``p`` that hold paths in a ``kind`` bundle."""
    keys = list(PATH_KEYS[kind])
    if (p.get("loss_network") or {}).get("weights"):
        keys.append(("loss_network", "weights"))
    if kind == "sr":  # a style job's init is a shipped model's name (its file travels in the code's models/)
        keys += [("train", "sr", "init", k) for k in (p["train"]["sr"].get("init") or {})]
    return keys


def gpu_settings(kind: str) -> dict:
    """``release.gpu`` for ``kind``: its plain values with ``release.gpu.<kind>`` (e.g. ``sr``) laid over them."""
    from . import release
    from .settings import plain

    g = plain(release.settings().gpu)
    return {**{k: v for k, v in g.items() if not isinstance(v, dict)}, **(g.get(kind) or {})}


def _job(job: str) -> jobname.Job:
    j = jobname.parse(job)
    if j.kind not in KINDS:
        raise ValueError(f"gpu bundle: {job!r}: only style-NAME and sr-xS-pixel|feat jobs train on the GPU path")
    return j


def _carry_init(ref: str, j: jobname.Job, model_cfg: dict, tmp: Path) -> dict:
    """Write the model an SR job starts from (``train.sr.init``) to ``tmp/init/``, after the check
    `train` makes (it holds the job's network); -> its record (ref, bundle-relative file, SHA-256)."""
    from perceptual_core import zoo

    from .train import _init_bytes

    data = _init_bytes({"init": ref, "model": model_cfg, "kind": j.kind, "job": j.job})
    (tmp / INIT_DIR).mkdir()
    shipped = {e.name: e for e in zoo.entries()}
    if not ref.startswith("models:/") and not Path(ref).is_file() and ref in shipped:
        e = shipped[ref]  # a shipped model (models/): its release file unchanged, the manifest's SHA-256
        rel = f"{INIT_DIR}/{e.file.name}"
        (tmp / rel).write_bytes(zoo.verify(e))
    else:  # a checkpoint or release file, or a registry version: its checkpoint bytes
        rel = f"{INIT_DIR}/{j.job}-init.pt"
        (tmp / rel).write_bytes(data)
    return {"ref": ref, "file": rel, "sha256": sha256_file(tmp / rel)}


def _carry_shipped(js: list[jobname.Job], p: dict) -> dict:
    """``release.gpu.style_init: shipped``: each style job goes on from its shipped model (models/style-NAME,
    which travels with the code; its SHA-256 is checked there before the run) -> {job: init record}, after the
    check `train` makes (it holds the job's network). A style with no shipped model is named (one line)."""
    from perceptual_core import zoo

    from .settings import TrainSettings, build, plain
    from .train import _init_bytes, init_record

    shipped = {e.name: e for e in zoo.entries()}
    missing = [x.job for x in js if x.job not in shipped]
    if missing:
        raise ValueError(f"gpu bundle: release.gpu.style_init is 'shipped' but {', '.join(missing)} is not shipped "
                         f"(models/); set it to null to train from scratch")
    s, out = build(TrainSettings, p["train"], "release params: train").style, {}
    for x in js:
        model = dict(arch="transform", **plain(s.network_of(x.style)))
        data = _init_bytes({"init": x.job, "model": model, "kind": "style", "job": x.job})
        out[x.job] = {"ref": x.job, "sha256": shipped[x.job].sha256, "record": init_record(x.job, data)}
    return out


# ------------------------------------------------------------------------------------------ pack

def _jobs(job: str | list[str]) -> list[jobname.Job]:
    """The bundle's jobs: one job of any kind, or several style jobs (each once)."""
    names = [job] if isinstance(job, str) else list(job)
    js = [_job(n) for n in names]
    if not js:
        raise ValueError("gpu bundle: no job given")
    if len(js) > 1 and any(j.kind != "style" for j in js):
        raise ValueError(f"gpu bundle: {' '.join(names)}: several jobs in one bundle must all be style-NAME jobs")
    if len({j.job for j in js}) < len(js):
        raise ValueError(f"gpu bundle: {' '.join(names)}: a job is named twice")
    return js


def pack(job: str | list[str], out: Path, photos: Path | None = None) -> dict:
    """Write the bundle for JOB (style-NAME, sr-xS-pixel or sr-xS-feat), or for several style-NAME jobs, to
    ``out``; ``photos``: the training photos (default: the release's acquired folder, acquired first if
    missing). Returns BUNDLE.json's content."""
    from perceptual_core.vgg import save_loss_weights

    from . import release

    js = _jobs(job)
    j = js[0]
    kind = j.kind
    p = release.release_params()
    t = p["train"]
    if kind == "style":
        styles = t["style"]["styles"]
        for x in js:
            if x.style not in styles:
                raise ValueError(f"gpu bundle: unknown style {x.style!r}: params train.style.styles has "
                                 f"{sorted(styles)}")
    elif j.scale not in p["prepare_sr"]["scales"]:
        raise ValueError(f"gpu bundle: {job}: params prepare_sr.scales is {p['prepare_sr']['scales']}, "
                         f"without {j.scale}")
    g = gpu_settings(kind)
    needs_vgg = kind == "style" or j.loss == "feat"
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
        init = _carry_job(p, js, tmp)
        if needs_vgg:
            save_loss_weights(tmp / VGG_FILE)
        p["loss_network"].update(weights=VGG_FILE if needs_vgg else None, allow_download=False)
        _lay_gpu_settings(p, kind, g)
        (tmp / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

        files = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        size = sum((tmp / f).stat().st_size for f in files)
        limit = int(g["carry_limit_mib"]) * MiB
        code = _tracked_bytes()
        if size + code > limit:
            raise ValueError(f"gpu bundle: {size / MiB:.1f} MiB + {code / MiB:.1f} MiB of tracked files is over "
                             f"release.gpu.carry_limit_mib={g['carry_limit_mib']}")
        doc = {"jobs": [x.job for x in js], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "photos": sum(1 for f in files if f.startswith("data/acquired/images/")),
               "bytes": size, "files": files, "train": g}
        if len(js) == 1:
            doc["job"] = j.job
        if kind == "sr":
            doc.update(patch=int(p["prepare_sr"]["size"]), init=init)
        elif init:
            doc["inits"] = init  # {job: record}: each style job's starting model
        (tmp / BUNDLE).write_text(json.dumps(doc, indent=1) + "\n")
        owned.remove(out, "gpu_bundle pack", "--out", signature=BUNDLE)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    refs = [r["ref"] for r in (init.values() if kind == "style" else [init])] if init else []
    log.info(f"gpu bundle: {out} ({size / MiB:.1f} MiB, {doc['photos']} photos, {' '.join(doc['jobs'])}"
             f"{', from ' + ', '.join(refs) if refs else ''}); with the code "
             f"{(size + code) / MiB:.1f} of {g['carry_limit_mib']} MiB")
    return doc


def _carry_job(p: dict, js: list[jobname.Job], tmp: Path) -> dict | None:
    """Copy what the jobs alone need into ``tmp`` (their style images, or an SR job's init model) and make
    ``p`` train only them; -> the init model's record (style: {job: record} of the shipped models they go on
    from, `_carry_shipped`), or None."""
    t, init = p["train"], None
    j = js[0]
    if j.kind == "style":
        # the paper's schedule, from scratch or (release.gpu.style_init: shipped) on from each shipped model; never
        # release.style.init/lr, a CPU continuation's (its fine-tuning rate), but the paper's Adam 1e-3 (train.lr)
        init = _carry_shipped(js, p) if gpu_settings("style").get("style_init") == "shipped" else {}
        carried = {}
        for x in js:
            style_rel = Path(t["style"]["styles"][x.style])
            style_src = config.data_file(style_rel)  # the data folder's, else the committed painting
            if not style_src.is_file():
                raise FileNotFoundError(f"gpu bundle: style image not found: {style_src} (params train.style.styles)")
            style_dst = Path("data") / (style_rel.name if style_rel.is_absolute() else style_rel)
            (tmp / style_dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(style_src, tmp / style_dst)
            carried[x.style] = str(style_dst.relative_to("data"))
        t["style"]["styles"] = carried
        t["style"]["jobs"] = [x.style for x in js]
        t["style"]["init"] = {jobname.parse(job).style: job for job in init}
        t["style"]["lr"] = None
    else:
        s = t["sr"]
        ref = (s.get("init") or {}).get(j.key)
        if ref:  # e.g. l_feat from the shipped l_pixel network (release.sr.init)
            init = _carry_init(str(ref), j, dict(arch="sr", scale=j.scale, **s["network"]), tmp)
        s["init"] = {j.key: init["file"]} if init else {}
        s["jobs"] = [j.key]
    for k in ("style", "sr", "srcnn"):  # the bundle trains this one job (no notice about another's data)
        if k != j.kind and k in t:
            t[k]["jobs"] = []
    return init


def _lay_gpu_settings(p: dict, kind: str, g: dict) -> None:
    """Paths relative to the bundle, one prepare worker, and ``release.gpu`` (``g``) over ``train``."""
    t = p["train"]
    rel = {("data_dir",): "data", (f"prepare_{kind}", "input"): "data/acquired/images",
           (f"prepare_{kind}", "out_dir"): f"work/data/{kind}",
           (f"prepare_{kind}", "metrics"): f"work/metrics/prepare_{kind}.json",
           ("train", "out_dir"): "work/train", ("train", kind, "data"): f"work/data/{kind}"}
    for key in PATH_KEYS[kind]:
        _set(p, key, rel[key])
    p[f"prepare_{kind}"]["workers"] = 1
    t.update({k: g[k] for k in TRAIN_KEYS})
    for k in TRAIN_KEYS:
        t[kind].pop(k, None)  # a per-kind release value would win over the GPU's in job_spec
    t[kind].update({k: g[k] for k in KIND_KEYS})
    t[kind].pop("crops", None)  # a style's own CPU crop (release.style.crops) would win over the GPU's
    t["max_seconds"] = g["max_seconds"]
    for k in ("acquire", "mlflow"):
        p.pop(k, None)  # not used there; keeps URIs of this machine out of the bundle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.gpu_bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    a = sub.add_parser("pack", help="write the bundle (here)")
    a.add_argument("job", nargs="+", help="style-NAME (one or several), sr-xS-pixel or sr-xS-feat")
    a.add_argument("--out", default=str(config.ROOT / "tmp/gpu_bundle"))
    a.add_argument("--photos", default=None, help="training photos (default: the release's acquired folder)")
    r = sub.add_parser("run", help="prepare + train from a bundle (there)")
    r.add_argument("job", nargs="+", help="one job, or several of the bundle's style jobs (trained at once)")
    r.add_argument("--bundle", default=str(config.ROOT / "tmp/gpu_bundle"))
    r.add_argument("--out", required=True)
    r.add_argument("--seconds", type=float, default=None, help="wall-clock budget (default release.gpu.max_seconds)")
    r.add_argument("--iterations", type=int, default=None,
                   help="instead of release.gpu.iterations (SR jobs: release.gpu.sr.iterations)")
    r.add_argument("--prepared", action="store_true", help=argparse.SUPPRESS)  # a job of a run of several
    args = ap.parse_args(argv)
    from . import run_stage

    if args.action == "pack":
        return run_stage(pack, args.job, Path(args.out), Path(args.photos) if args.photos else None)
    from .gpu_run import run

    return run_stage(run, args.job, Path(args.bundle), Path(args.out), args.seconds, args.iterations, args.prepared)


if __name__ == "__main__":
    sys.exit(main())
