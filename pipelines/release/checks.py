"""What proves a shipped file still computes the trained network: fp16 storage within the engines'
bound, the output statistics on one photo, and (SR) Y-PSNR on two Set5 images, stored at export."""
from __future__ import annotations

from pathlib import Path

from .. import config
from ..settings.release import ReferenceSettings


def fp16_psnr(model, half_model, photos) -> float:
    """Worst PSNR (dB) of the fp16-stored model's fp32 output against the original's, over ``photos``."""
    import torch

    from perceptual_core.engines import psnr

    from perceptual_core.zoo import photo_input

    worst = float("inf")
    with torch.inference_mode():
        for _, x in photos:
            x = photo_input(model, x[None])
            worst = min(worst, float(psnr(half_model(x).clamp(0, 1), model(x).clamp(0, 1))))
    return worst


def reference_stats(model, ref: ReferenceSettings) -> dict:
    """Per-channel mean and std of the model's output on one real photo: the test that a later load
    of the shipped file (any loader, any machine) still computes the same network."""
    import torch

    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image

    from perceptual_core.zoo import photo_input

    x = resize_longer(load_image(config.data_dir() / ref.photo).to_tensor(), int(ref.size))
    with torch.inference_mode():
        y = model(photo_input(model, x[None]))[0].clamp(0, 1)
    return {"photo": ref.photo, "size": int(ref.size), "mean": [round(v, 5) for v in y.mean(dim=(1, 2)).tolist()],
            "std": [round(v, 5) for v in y.std(dim=(1, 2)).tolist()]}


#: tests/test_zoo.py's Y-PSNR check of every shipped SR model (within 0.05 dB of the stored value)
LOAD_CHECK = {"set": "Set5", "images": ("bird", "butterfly")}


def load_check(model, scale: int, data_dir: Path) -> dict:
    """Y-PSNR (dB, shave = scale) of an SR model on two Set5 images, stored in the manifest at export:
    a broken loader or a wrong weights file moves it by far more than the test's 0.05 dB. LR: the
    set's standard bicubic files where the data folder has them at this scale, else MATLAB bicubic
    from the HR (x8)."""
    from perceptual_core import sr_eval as ev

    root = data_dir / LOAD_CHECK["set"]
    lr = root / f"LR_bicubic_x{scale}"
    files = [root / "HR" / f"{n}.png" for n in LOAD_CHECK["images"]]
    srcnn = model.config["arch"] == "srcnn"
    method = ev.srcnn_method(model, scale) if srcnn else ev.network_method(model, scale)
    res = ev.evaluate(method, ev.load_pairs(files, scale, lr if lr.is_dir() else None), scale)
    return {"set": LOAD_CHECK["set"], "lr": "standard" if lr.is_dir() else "matlab-bicubic-from-hr",
            "psnr_y": {r["name"]: round(float(r["psnr_y"]), 4) for r in res["images"]}}
