"""`perceptual sr-eval`: score one SR method on a folder of HR images."""
from __future__ import annotations

import json
from pathlib import Path

from perceptual_core import sr_eval as ev


def make_method(method: str, scale: int, weights: str | None = None):
    """bicubic | srcnn-official (needs --weights, a .mat) | path to an SR network checkpoint."""
    if method == "bicubic":
        return ev.bicubic_method(scale), {"method": "bicubic"}
    if method == "srcnn-official":
        if not weights:
            raise ValueError("--method srcnn-official needs --weights FILE.mat (official SRCNN weights)")
        from perceptual_core.srcnn import load_srcnn_mat

        return ev.srcnn_method(load_srcnn_mat(weights), scale), {"method": "srcnn-official", "weights": str(weights)}
    p = Path(method)
    if not p.is_file():
        raise ValueError(f"--method {method!r}: not 'bicubic', 'srcnn-official' or an existing checkpoint file")
    from perceptual_core.checkpoint import load_model
    from perceptual_core.inference import auto_device

    model = load_model(p, auto_device())
    arch = model.config["arch"]
    if arch == "srcnn":
        return ev.srcnn_method(model, scale), {"method": "srcnn", "checkpoint": str(p)}
    if arch != "sr":
        raise ValueError(f"--method {p}: holds a {arch!r} network, not an SR network")
    if model.config["scale"] != scale:
        raise ValueError(f"--method {p}: the network upscales x{model.config['scale']}, but --scale is {scale}")
    return ev.network_method(model, scale, str(next(model.parameters()).device)), {"method": "network", "checkpoint": str(p)}


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
