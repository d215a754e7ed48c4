"""`perceptual sr-eval`: score one SR method on a folder of HR images."""
from __future__ import annotations

import json
from pathlib import Path

from perceptual_core import sr_eval as ev


def make_method(method: str, scale: int, weights: str | None = None):
    """bicubic | srcnn-official (needs --weights, a .mat) | an SR network: a checkpoint file, a shipped
    model (`perceptual models`) or models:/NAME@ALIAS, loaded and checked by pipelines.modelref."""
    if method == "bicubic":
        return ev.bicubic_method(scale), {"method": "bicubic"}
    if method == "srcnn-official":
        if not weights:
            raise ValueError("--method srcnn-official needs --weights FILE.mat (official SRCNN weights)")
        from perceptual_core.srcnn import load_srcnn_mat

        return ev.srcnn_method(load_srcnn_mat(weights), scale), {"method": "srcnn-official", "weights": str(weights)}
    from perceptual_core.inference import auto_device

    from . import modelref

    try:
        model, _ = modelref.load_model(method, "upscale", auto_device(), scale=scale)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(str(e).replace("--model", "--method", 1) + " (or 'bicubic', 'srcnn-official')") from None
    if model.config["arch"] == "srcnn":
        return ev.srcnn_method(model, scale), {"method": "srcnn", "checkpoint": str(method)}
    return ev.network_method(model, scale, str(next(model.parameters()).device)), {"method": "network",
                                                                                   "checkpoint": str(method)}


def run_sr_eval(method: str, hr: str, scale: int, lr_dir: str | None = None, weights: str | None = None,
                json_out: str | None = None, progress=None, quiet: bool = False) -> dict:
    if scale < 2:
        raise ValueError(f"--scale must be an integer >= 2, got {scale}")
    fn, desc = make_method(method, scale, weights)
    pairs = ev.load_pairs(hr, scale, lr_dir)
    res = ev.evaluate(fn, pairs, scale, progress=(lambda it: progress(it, desc["method"])) if progress else None)
    res.update({"scale": scale, "hr": str(hr), "lr": str(lr_dir) if lr_dir else "matlab-bicubic-from-hr",
                "shave": scale, "y": "MATLAB rgb2ycbcr (BT.601, 16-235), uint8", **desc})
    if not quiet:
        print(ev.format_table(res, f"{desc['method']} x{scale} on {hr} (LR: {res['lr']})"))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(res, indent=1))
    return res
