"""What the network computes from a batch, per job kind: the training step (random crop, the LR
degradation, the loss) and the validation grid the driver logs, so both treat a kind the same way."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _random_crop(tensors: list[torch.Tensor], crop: int, scales: list[int], gen: torch.Generator):
    """Same random crop of aligned HR/LR tensors (crop in HR pixels; LR gets crop/scale)."""
    h = tensors[0].shape[-1]
    if not crop or crop >= h:
        return tensors
    big = max(scales)
    y, x = (int(torch.randint(0, (h - crop) // big + 1, (1,), generator=gen)) * big for _ in range(2))
    return [t[..., y // s:(y + crop) // s, x // s:(x + crop) // s] for t, s in zip(tensors, scales)]


def style_criterion(spec: dict, loss_net):
    """A style job's loss: the `losses` params, as benchmark scores them, with TV as it weighs at
    ``tv_size`` px on the job's crops (losses.tv_scale; None: as it weighs on the crop)."""
    from perceptual_core.io import load_image
    from perceptual_core.losses import PerceptualLoss, tv_scale

    wts = spec["weights"]
    crit = PerceptualLoss(loss_net, spec["content_layers"], spec["style_layers"], content_weight=wts["content"],
                          style_weight=wts["style"], tv_weight=wts["tv"] * tv_scale(spec["crop"], spec.get("tv_size")))
    crit.set_style(load_image(spec["style_image"]).to_tensor(), spec["style_size"])
    return crit


def make_step(spec: dict, loss_net):
    """-> fn(model, batch) returning (output, losses dict) for the job's kind."""
    from perceptual_core.losses import PerceptualLoss
    from perceptual_core.metrics import y_bt601
    from perceptual_core.resize import imresize

    wts = spec["weights"]
    if spec["kind"] == "style":
        crit = style_criterion(spec, loss_net)
    elif spec["loss"] == "feat":
        crit = PerceptualLoss(loss_net, content_layers=spec["feat_layers"], content_weight=1.0, tv_weight=wts["tv"])
    else:
        crit = None

    def step(model, batch, gen):
        if spec["kind"] == "style":
            (x,) = _random_crop([batch["image"]], spec["crop"], [1], gen)
            out = model(x)
            return out, crit(out, x)
        hr, lr = _random_crop([batch["hr"], batch[f"lr_x{spec['scale']}"]], spec["crop"], [1, spec["scale"]], gen)
        lr = training_lr(hr, lr, spec)
        if spec["kind"] == "srcnn":  # SRCNN restores the bicubic-upscaled Y channel
            y_hr, y_in = y_bt601(hr, axis=1), y_bt601(imresize(lr, float(spec["scale"])), axis=1)
            out = model(y_in)
            loss = F.mse_loss(out, y_hr)
            return out, {"total": loss, "pixel": loss}
        out = model(lr)
        if crit is None:
            loss = F.mse_loss(out, hr)
            return out, {"total": loss, "pixel": loss}
        return out, crit(out, hr)

    return step


def training_lr(hr: torch.Tensor, lr_file: torch.Tensor, spec: dict) -> torch.Tensor:
    """The LR input for an HR batch: the prepared file's (blur) or MATLAB bicubic of HR, 8-bit (bicubic)."""
    if spec.get("degradation", "blur") == "blur":
        return lr_file
    from perceptual_core.resize import imresize

    return imresize(hr, 1.0 / spec["scale"]).clamp_(0, 1).mul_(255).round_().div_(255)


def _validation_grid(model, spec: dict, n: int = 4):
    """Rows of (input, output[, target]) for n val patches, as one uint8 image."""
    import numpy as np

    from perceptual_core.metrics import y_bt601
    from perceptual_core.resize import imresize
    from perceptual_core.shards import PatchShards, shard_files

    try:
        files = shard_files(spec["data"], "val")
    except FileNotFoundError:
        files = shard_files(spec["data"], "train")
    rows = []
    model.eval()
    with torch.inference_mode():
        for i, r in enumerate(PatchShards(files, spec["columns"])):
            if i == n:
                break
            if spec["kind"] == "style":
                x = r["image"][None]
                tiles = [x, model(x).clamp(0, 1)]
            else:
                hr = r["hr"][None]
                lr = training_lr(hr, r[f"lr_x{spec['scale']}"][None], spec)
                up = imresize(lr, float(spec["scale"])).clamp(0, 1)
                if spec["kind"] == "srcnn":
                    y = model(y_bt601(up, axis=1)).clamp(0, 1)
                    out = (up + (y - y_bt601(up, axis=1))).clamp(0, 1)  # SRCNN's luma change on the bicubic RGB
                else:
                    out = model(lr).clamp(0, 1)
                tiles = [up, out, hr]
            rows.append(torch.cat(tiles, dim=-1)[0])
    grid = torch.cat(rows, dim=-2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
