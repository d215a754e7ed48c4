"""`perceptual` command line: thin wrappers over perceptual_core and the pipeline jobs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from perceptual_core.options import ENGINES, PRECISIONS

from . import config, log


def _progress(it, desc: str, total: int | None = None, unit: str = "img"):
    from tqdm import tqdm

    return tqdm(it, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)


def _outputs(inputs: list[str], out: str, suffix: str) -> list[Path]:
    """One input and an output with an image extension -> that file; else a folder of mirrored names."""
    from perceptual_core.io import is_image_file

    o = Path(out)
    if len(inputs) == 1 and is_image_file(o):
        return [o]
    if o.exists() and not o.is_dir():
        raise SystemExit(f"error: -o {o}: several inputs need an output folder, not a file")
    outs = [o / f"{Path(i).stem}{suffix}" for i in inputs]
    if len(set(outs)) != len(outs):  # a/x.jpg and b/x.png would overwrite each other
        dup = sorted({str(p) for p in outs if outs.count(p) > 1})
        raise SystemExit(f"error: several inputs map to the same output name: {dup}")
    return outs


def cmd_weights(a) -> int:
    from perceptual_core.vgg import CONV1_1_BIAS_HEAD, N_PARAMS, load_vgg16_weights

    info = load_vgg16_weights(a.weights or config.vgg_weights_arg(), allow_download=not a.offline)
    head = [round(v, 4) for v in info.state_dict["features.0.bias"][:4].tolist()]
    n = sum(t.numel() for t in info.state_dict.values())
    print(f"source:  {info.source}\npath:    {info.path}\nsha256:  {info.sha256} (verified)")
    print(f"params:  {n:,} in 13 conv layers (expected {N_PARAMS:,})\nconv1_1 bias[:4]: {head} (expected {list(CONV1_1_BIAS_HEAD)})")
    return 0


def _model_ref(a, kind: str) -> str:
    style = getattr(a, "style", None)
    if style and a.model:
        raise ValueError("give --model or --style, not both")
    if style:
        from perceptual_core import zoo

        styles = [e.name[len("style-"):] for e in zoo.entries() if e.name.startswith("style-")]
        if style not in styles:
            raise ValueError(f"--style {style}: unknown style 'style-{style}' (shipped styles: "
                             f"{', '.join(styles) or 'none'}; `perceptual models` lists them)")
        return f"style-{style}"
    if not a.model:
        raise ValueError(f"{kind} needs --model (a checkpoint, a shipped name or models:/NAME@ALIAS)"
                         + (" or --style NAME" if kind == "stylize" else ""))
    return a.model


def cmd_models(a) -> int:
    """The shipped models (models/MANIFEST.json), hash-checked with --verify."""
    from perceptual_core import zoo

    es = zoo.entries()
    if not es:
        print(f"no shipped models in {zoo.models_dir()}")
        return 0
    bad = 0
    print(f"{'name':<26}{'task':<9}{'iterations':>11}{'MB':>7}  sha256            card")
    for e in es:
        state = ""
        if a.verify:
            try:
                zoo.verify(e)
                state = "  ok"
            except (OSError, ValueError) as err:
                state, bad = f"  FAILED: {err}", bad + 1
        size = e.file.stat().st_size / 1e6 if e.file.is_file() else float("nan")
        card = e.card.relative_to(zoo.models_dir()) if e.card else "-"
        print(f"{e.name:<26}{e.task:<9}{e.info.get('iterations', 0):>11,}{size:>7.1f}  {e.sha256[:16]}  {card}{state}")
    return 2 if bad else 0


def _run_model(a, kind: str) -> int:
    from perceptual_core.engines import build_engine
    from perceptual_core.inference import auto_device, stylize_image, upscale_image
    from perceptual_core.io import ImageReadError, load_image, save_image

    from perceptual_core.tiling import check_tile

    from . import modelref
    from .settings import BatchSettings, InferenceSettings, plain

    inf = config.load(InferenceSettings)  # the engine is checked against the plain network before use
    if a.tile is None:
        a.tile = config.load(BatchSettings).tile_for(kind)
    check_tile(a.tile)  # before the model loads: a bad value is a usage error, not N failed images
    if kind == "stylize":
        a.border = config.load(BatchSettings).border if a.border is None else a.border
        if a.border < 0:
            raise ValueError(f"--border must be >= 0, got {a.border}")
    ref = _model_ref(a, kind)
    scale = getattr(a, "scale", None) or (modelref.scale_from_name(ref) if kind == "upscale" else None)
    model, _ = modelref.load_model(ref, kind, auto_device(a.device), scale=scale)
    if kind == "upscale":  # upscaling tiles by output pixels (sr_blocks.py): its floor depends on the scale
        from perceptual_core.sr_blocks import check_tile as check_sr_tile

        check_sr_tile(a.tile, getattr(model, "scale", None) or scale)
    model = build_engine(model, a.engine, a.precision, verify=inf.verify, tolerance=plain(inf.tolerance) or None,
                         cache_dir=config.resolve(inf.onnx_cache) if inf.onnx_cache else None)
    outs = _outputs(a.inputs, a.output, f".{a.format}")
    failed = 0
    for src, dst in _progress(list(zip(a.inputs, outs)), kind):
        try:
            img = load_image(src, keep_gray=kind == "upscale")
        except ImageReadError as e:
            print(f"skipped: {e}", file=sys.stderr)
            failed += 1
            continue
        if kind == "stylize":
            y, alpha = stylize_image(model, img, preserve_color=a.preserve_color, tile=a.tile or None, border=a.border)
        else:
            y, alpha = upscale_image(model, img, scale=scale, tile=a.tile or None)
        if alpha is not None and dst.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
            alpha = None  # these formats have no alpha; the user asked for them
        save_image(dst, y, alpha=alpha, bit_depth=img.bit_depth, icc_profile=img.icc_profile, exif=img.exif)
    print(f"{len(outs) - failed} written, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_gatys(a) -> int:
    from perceptual_core.gatys import gatys
    from perceptual_core.inference import auto_device, resize_longer
    from perceptual_core.io import load_image, save_image

    net = config.loss_network().to(auto_device(a.device))
    content = load_image(a.content).to_tensor()
    if a.size:
        content = resize_longer(content, a.size)
    style = load_image(a.style).to_tensor()
    kw = config.gatys_kwargs()
    kw.update({k: v for k, v in (("optimizer", a.optimizer), ("init", a.init), ("style_weight", a.style_weight)) if v})
    bar = _progress(range(a.iters), "gatys", unit="it")
    bar_iter = iter(bar)

    def tick(i, losses):
        next(bar_iter, None)
        bar.set_postfix(loss=f"{losses['total']:.4g}")

    res = gatys(content, style, net, iters=a.iters, callback=tick, **kw)
    bar.close()
    save_image(a.output, res.image.cpu())
    if a.history:
        Path(a.history).write_text(json.dumps(res.history, indent=1))
    print(f"wrote {a.output}; final loss {res.history[-1]['total']:.5g}" if res.history else f"wrote {a.output}")
    return 0


def cmd_sr_eval(a) -> int:
    from pipelines.sr_eval import run_sr_eval

    res = run_sr_eval(a.method, a.hr, a.scale, lr_dir=a.lr, weights=a.weights, json_out=a.json, progress=_progress)
    return 0 if res else 1


def cmd_acquire(a) -> int:
    from . import acquire

    return acquire.main([])


def cmd_prepare(a) -> int:
    from . import prepare

    return prepare.main([a.kind])


def cmd_train(a) -> int:
    from . import run_stage, train

    return run_stage(train.run_job, a.job, use_ray=not a.no_ray, resume=a.resume)


def cmd_batch(a, kind: str) -> int:
    from . import batch

    if a.address:
        import os

        os.environ["RAY_ADDRESS"] = a.address
    opts = dict(kind=kind, model=a.model, input=a.input, output=a.output, fmt=a.format, overwrite=a.overwrite or None,
                output_archive=a.output_archive or None, shard_size=a.shard_size, tile=a.tile, overlap=a.overlap,
                actors=a.actors, cpus_per_actor=a.cpus_per_actor, gpus_per_actor=a.gpus, endpoint=a.endpoint,
                device=a.device, max_pixels=a.max_pixels, engine="local" if a.no_ray else "ray",
                model_engine=a.engine, precision=a.precision, pipeline=a.pipeline,
                require_promoted=False if a.allow_unpromoted else None)
    if kind == "stylize":
        opts["preserve_color"] = a.preserve_color or None
        opts["border"] = a.border
    else:
        opts["scale"] = a.scale
    engine = opts.pop("engine")
    spec = batch.BatchSpec.from_params(**opts)
    summary = batch.run_batch(spec, engine=engine)
    print(summary.text(), file=sys.stderr)  # the job's account: the command's own output (-q keeps it)
    if summary.failed:
        print(f"failures listed in {spec.output.rstrip('/')}/{batch.FAILURES}", file=sys.stderr)
    return 1 if summary.failed else 0


def _batch_parser(sub) -> None:
    from . import jobs

    b = sub.add_parser("batch", help="Ray Data batch jobs over folders, buckets and archives; submit to a cluster")
    bsub = b.add_subparsers(dest="batch_cmd", required=True)
    for kind in ("stylize", "upscale"):
        s = bsub.add_parser(kind, help=f"{kind} every image under --input (folder, s3:// prefix, .tar/.tar.gz/.zip)")
        s.add_argument("--model", required=True,
                       help="a checkpoint file, a shipped model (`perceptual models`) or models:/NAME@ALIAS")
        s.add_argument("--input", required=True, help="folder, file, archive, or URI (s3://bucket/prefix/)")
        s.add_argument("--output", required=True, help="folder or URI; names mirror the input's")
        if kind == "upscale":
            s.add_argument("--scale", type=int, help="4 or 8 (checked against the model; needed for SRCNN)")
        else:
            s.add_argument("--preserve-color", action="store_true", help="keep the input's colours (luminance-only)")
            s.add_argument("--border", type=int, help="reflect-padded context around each image, cropped off, so "
                           "the network draws no edge line (params: batch.border; 0: none)")
        s.add_argument("--format", help="output extension, or 'same' (params: batch.format)")
        s.add_argument("--overwrite", action="store_true", help="redo images whose output exists")
        s.add_argument("--output-archive", action="store_true", help="write tar shards instead of loose files")
        s.add_argument("--shard-size", type=int, help="images per tar shard")
        s.add_argument("--tile", type=int, help="stylize: tile images with a side over this; upscale: the largest "
                       "output block side (0: never)")
        s.add_argument("--overlap", type=int, help="context pixels around each tile")
        s.add_argument("--actors", type=int, help="inference actors (one model each)")
        s.add_argument("--cpus-per-actor", type=float, help="CPUs per actor (fractional on small machines)")
        s.add_argument("--gpus", type=float, help="GPUs per actor")
        s.add_argument("--endpoint", help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL)")
        s.add_argument("--address", help="Ray cluster address (else RAY_ADDRESS, else a local instance)")
        s.add_argument("--device", help="auto | cpu | cuda")
        s.add_argument("--engine", choices=ENGINES,
                       help="inference engine in each actor (params: inference.engine)")
        s.add_argument("--precision", choices=PRECISIONS,
                       help="bf16/fp16 need CUDA (params: inference.precision)")
        s.add_argument("--max-pixels", type=int, help="refuse larger images")
        s.add_argument("--pipeline", choices=["auto", "fused", "staged"],
                       help="fused: each actor reads/infers/writes its files; staged: separate read/write tasks "
                            "(params: batch.pipeline)")
        s.add_argument("--allow-unpromoted", action="store_true",
                       help="serve a models:/ version that `perceptual promote` never moved to champion "
                            "(params: batch.require_promoted)")
        s.add_argument("--no-ray", action="store_true", help="a plain loop in this process (no Ray)")
        s.set_defaults(fn=lambda a, k=kind: cmd_batch(a, k))
    jobs.add_cli(bsub)


def _model_parsers(sub) -> None:
    """`perceptual stylize` and `perceptual upscale`: run a trained network on images here."""
    from .settings import InferenceSettings

    inf = config.load(InferenceSettings)
    for kind in ("stylize", "upscale"):
        s = sub.add_parser(kind, help=f"{kind} images with a trained network checkpoint")
        s.add_argument("inputs", nargs="+", metavar="IN")
        s.add_argument("--model", help="a checkpoint file, a shipped model (`perceptual models`) or models:/NAME@ALIAS")
        if kind == "stylize":
            s.add_argument("--style", help="a shipped style by name, e.g. starry_night (= --model style-NAME)")
            s.add_argument("--border", type=int, help="reflect-padded context around the image, cropped off, so the "
                           "network draws no edge line (params: batch.border; 0: none)")
        else:
            s.add_argument("--scale", type=int, help="refuse a model of another scale")
        s.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
        s.add_argument("--format", default="png", help="output extension when writing to a folder")
        s.add_argument("--device", default="auto")
        s.add_argument("--tile", type=int, help="stylize: tile images with a side over this (params: batch.tile); "
                       "upscale: the largest output block side (bounds memory; params: batch.upscale_tile); 0: never")
        s.add_argument("--preserve-color", action="store_true", default=False,
                       help="stylize: keep the input's colours (luminance-only transfer)")
        s.add_argument("--engine", choices=ENGINES, default=inf.engine,
                       help="inference engine, verified against the plain network first (params: inference.engine)")
        s.add_argument("--precision", choices=PRECISIONS, default=inf.precision,
                       help="bf16/fp16 need CUDA (params: inference.precision)")
        s.set_defaults(fn=lambda a, k=kind: _run_model(a, k))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perceptual", description=__doc__)
    v = p.add_mutually_exclusive_group()  # how much the stages and the library narrate on stderr
    v.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                   default=logging.INFO, help="also the debug messages")
    v.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                   help="only warnings and errors (a command's own output and progress bars stay)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("weights", help="prepare and verify the VGG-16 loss-network weights")
    s.add_argument("--weights", help="local file (.pth state dict or Keras VGG-16 .onnx)")
    s.add_argument("--offline", action="store_true", help="do not try the torchvision download")
    s.set_defaults(fn=cmd_weights)

    _model_parsers(sub)

    s = sub.add_parser("models", help="list the shipped models (models/), with --verify their SHA-256")
    s.add_argument("--verify", action="store_true", help="hash every file against the manifest")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("gatys", help="Gatys et al. optimisation-based style transfer (the baseline)")
    s.add_argument("content")
    s.add_argument("style")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--iters", type=int, default=100)
    s.add_argument("--size", type=int, default=512, help="longer side of the content image (0: keep)")
    s.add_argument("--optimizer", choices=["lbfgs", "adam"])
    s.add_argument("--init", choices=["content", "noise"])
    s.add_argument("--style-weight", type=float)
    s.add_argument("--history", help="write the per-iteration losses as JSON")
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_gatys)

    s = sub.add_parser("sr-eval", help="PSNR/SSIM (Y and RGB) of an SR method on an HR folder")
    s.add_argument("--method", required=True, help="bicubic | srcnn-official | PATH to an SR checkpoint")
    s.add_argument("--hr", required=True, help="folder of HR images")
    s.add_argument("--lr", help="folder of LR images with the same names (default: MATLAB bicubic from HR)")
    s.add_argument("--scale", type=int, required=True)
    s.add_argument("--weights", help="SRCNN .mat file for srcnn-official")
    s.add_argument("--json", help="write the results here")
    s.set_defaults(fn=cmd_sr_eval)

    s = sub.add_parser("acquire", help="DVC stage: make the local image set named in params (acquire)")
    s.set_defaults(fn=cmd_acquire)
    s = sub.add_parser("prepare", help="DVC stage: style or SR patch dataset on Ray Data (prepare_style/prepare_sr)")
    s.add_argument("kind", choices=["style", "sr"])
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("train", help="DVC stage: train one job on Ray Train, track and register it in MLflow")
    s.add_argument("job", help="style-NAME, sr-x4-feat, sr-x4-pixel, sr-x8-feat, sr-x8-pixel, srcnn-x4")
    s.add_argument("--resume", action="store_true", help="continue from the job's last checkpoint")
    s.add_argument("--no-ray", action="store_true", help="plain PyTorch in this process (or under torchrun)")
    s.set_defaults(fn=cmd_train)

    _batch_parser(sub)
    import perceptual_services as services

    from . import data_fetch, promote

    data_fetch.add_cli(sub)

    services.add_cli(sub)
    promote.add_cli(sub)

    s = sub.add_parser("benchmark", help="DVC stage: the SR table or the style quality + speed table (benchmark_*)")
    s.add_argument("kind", choices=["sr", "style"])
    s.add_argument("--alias", help="registry alias of the models judged (params: benchmark.alias)")
    s.set_defaults(fn=lambda a: __import__("pipelines.benchmark", fromlist=["main"]).main(
        [a.kind] + (["--alias", a.alias] if a.alias else [])))

    from . import report

    s = sub.add_parser("report", help="render the benchmark report; --schedule-run: benchmark champions + history")
    report.add_args(s)
    s.set_defaults(fn=report.run_cli)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log_level)
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # these carry their own advice
        # WeightsError is looked up only if vgg was loaded: `data fetch` and others need no torch import.
        vgg = sys.modules.get("perceptual_core.vgg")
        if isinstance(e, RuntimeError) and not (vgg and isinstance(e, vgg.WeightsError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
