"""Tiled inference (perceptual_core/tiling.py) against the untiled forward, on a real photo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from perceptual_core.io import load_image
from perceptual_core.networks import SRNet, TransformNet
from perceptual_core.tiling import _split, tiled_forward

CONTRAST = 4.0  # random-init final conv scaled up so the output spans most of [0, 1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def photo(data_dir) -> torch.Tensor:
    """A real photo, cropped to an odd size (201 x 299: not a multiple of 4 either way)."""
    x = load_image(data_dir / "Set14/HR/flowers.png").to_tensor()[None]
    return x[..., 40:241, 50:349].contiguous()


def style_net(padding="reflect", upsample="nearest", norm="instance", width=0.5) -> TransformNet:
    torch.manual_seed(0)
    net = TransformNet(norm, padding, upsample, width).eval()
    with torch.no_grad():
        net.decoder[-1].weight.mul_(CONTRAST)
    return net


def sr_net(scale=4, width=0.5) -> SRNet:
    torch.manual_seed(0)
    net = SRNet(scale, "batch", "zero", width).eval()
    with torch.no_grad():
        net.tail[-1].weight.mul_(10 * CONTRAST)  # its random output is flatter than the style net's
    return net


@pytest.fixture(scope="module")
def in_run(photo):
    """The project-default style net (instance norm, reflect, nearest) tiled with whole-image
    statistics, recording what reaches the device."""
    net = style_net()
    norms_before = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    with torch.no_grad():
        ref = net(photo)
    sizes = {"input": [], "conv": []}
    hooks = [net.register_forward_pre_hook(lambda m, a: sizes["input"].append(a[0].shape[-2:].numel())),
             net.encoder[0][1].register_forward_pre_hook(
                 lambda m, a: sizes["conv"].append(a[0].shape[-2:].numel()))]
    try:
        out = tiled_forward(net, photo, tile=96, overlap=48)
    finally:
        for h in hooks:
            h.remove()
    return dict(net=net, ref=ref, out=out, sizes=sizes, norms_before=norms_before)


def test_instance_norm_tiled_matches_untiled(in_run, photo):
    ref, out = in_run["ref"], in_run["out"]
    assert out.shape == ref.shape == photo.shape and out.dtype == torch.float32
    assert ref.std() > 0.1  # the output has real structure, so the PSNR means something
    p = psnr(out, ref)
    # measured (tile 96): overlap 16 -> 26.5 dB, 32 -> 48.9 dB (max 0.069), 48 -> 78.6 dB (max 0.0023)
    assert p >= 65, p
    assert (out - ref).abs().max() < 0.02


def test_global_norm_stats_matter(in_run, photo):
    net, ref = in_run["net"], in_run["ref"]
    local = tiled_forward(net, photo, tile=96, overlap=48, global_norm_stats=False)
    p_local, p_global = psnr(local, ref), psnr(in_run["out"], ref)
    assert p_local < p_global - 10, (p_local, p_global)  # measured: 11.8 vs 78.6 dB


def test_device_never_gets_the_whole_image(in_run, photo):
    tile, overlap, align = 96, 48, 4
    h, w = photo.shape[-2:]
    full_padded_conv = ((h + 3) // 4 * 4 + 8) * ((w + 3) // 4 * 4 + 8)  # what the untiled conv sees
    sizes = in_run["sizes"]
    assert max(sizes["input"]) <= (tile + 2 * overlap + align) ** 2 < h * w
    # the first conv sees each tile plus its 4 px reflection pad per side
    assert max(sizes["conv"]) <= (tile + 2 * overlap + align + 8) ** 2
    assert max(sizes["conv"]) < (204 + 8) * (300 + 8) == full_padded_conv


def test_model_restored(in_run, photo):
    net = in_run["net"]
    assert [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)] == in_run["norms_before"]
    assert {type(m).__module__ for m in net.modules()} <= {"torch.nn.modules." + k for k in (
        "conv", "padding", "instancenorm", "activation", "container", "upsampling", "linear")} | {
        "perceptual_core.networks"}
    with torch.no_grad():
        assert torch.equal(net(photo), in_run["ref"])


def test_model_restored_after_error(photo):
    net = style_net(width=0.25)
    before = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    x = photo[..., :60, :90]
    with torch.no_grad():
        ref = net(x)

    calls, swapped = [], []

    def boom(m, a):  # the 2 probe forwards reach res[2], then the statistics pass of IN layer 8
        calls.append(1)
        if len(calls) == 3:
            swapped.extend(type(mm).__name__ for mm in net.modules() if mm not in before)
            raise KeyError("boom")

    h = net.res[2].register_forward_pre_hook(boom)
    with pytest.raises(KeyError, match="boom"):
        tiled_forward(net, x, tile=32, overlap=8)
    h.remove()
    assert swapped.count("_FrozenInstanceNorm") == 7 and swapped.count("_Accumulator") == 1
    assert [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)] == before
    with torch.no_grad():
        assert torch.equal(net(x), ref)


@pytest.mark.parametrize("padding,upsample", [("reflect", "nearest"), ("paper", "deconv")])
def test_whole_image_context_is_exact(photo, padding, upsample):
    """With the context covering the whole image every tile computes the untiled forward, so the
    result must match to float precision: this checks that the instance-norm statistics are
    gathered over exactly the untiled feature maps (incl. the bottom/right pad to a multiple of 4
    and, for "paper", the 40 px mirror padding and the shrinking residual blocks)."""
    net = style_net(padding, upsample, width=0.25)
    x = photo[..., 3:64, 5:98]  # 61 x 93
    with torch.no_grad():
        ref = net(x)
    out = tiled_forward(net, x, tile=32, overlap=100)
    assert (out - ref).abs().max() < 1e-4


def test_paper_padding_runs(photo):
    net = style_net("paper", "deconv", width=0.25)
    with torch.no_grad():
        ref = net(photo)
    out = tiled_forward(net, photo, tile=128, overlap=32)
    assert out.shape == photo.shape
    assert psnr(out, ref) > 45  # measured: 53.2 dB (overlap 32; 83.4 dB at 48)


def test_sr_tiled_matches_untiled(data_dir):
    lr = load_image(data_dir / "Set14/HR/baboon.png").to_tensor()[None][..., 100:170, 200:301]  # 70x101
    net = sr_net()
    with torch.no_grad():
        ref = net(lr)
    out = tiled_forward(net, lr, tile=32, overlap=16)
    assert out.shape == (1, 3, 280, 404) == ref.shape
    assert ref.std() > 0.05
    p = psnr(out, ref)
    assert p >= 45, p  # measured: 107 dB (batch norm in eval mode: no statistics to share)


def test_sr_one_tile_row(data_dir):
    """Smaller than a tile in one dimension: a single row of tiles."""
    lr = load_image(data_dir / "Set14/HR/baboon.png").to_tensor()[None][..., 10:50, 20:150]  # 40x130
    net = sr_net()
    with torch.no_grad():
        ref = net(lr)
    out = tiled_forward(net, lr, tile=48, overlap=16)
    assert out.shape == ref.shape == (1, 3, 160, 520)
    assert psnr(out, ref) >= 45


def test_fits_in_one_tile_is_exact(photo):
    net = style_net(width=0.25)
    x = photo[..., :50, :70]
    with torch.no_grad():
        ref = net(x)
    out = tiled_forward(net, x, tile=70)
    assert torch.equal(out, ref)
    out[0, 0, 0, 0] = 0.0  # a normal tensor: callers may modify it in place


def test_split_geometry():
    for n, tile, ov, a in [(201, 96, 32, 4), (299, 64, 0, 4), (1000, 512, 32, 4), (259, 128, 36, 4),
                           (101, 32, 16, 1), (130, 128, 8, 4), (513, 512, 32, 4), (1023, 16, 4, 4)]:
        parts = _split(n, tile, ov, a)
        assert len(parts) == -(-n // tile)
        assert parts[0][0] == 0 and parts[-1][1] == n
        for (c0, c1, e0, e1), nxt in zip(parts, parts[1:] + [None]):
            assert 0 < c1 - c0 <= tile and c0 % a == 0 and e0 % a == 0
            assert e0 == max(0, c0 - ov) and e1 == min(n, c1 + ov)
            if nxt:
                assert nxt[0] == c1


def test_argument_errors(photo):
    net = style_net(width=0.25)
    x = photo[..., :40, :40]
    for kwargs, name in [({"tile": 8}, "tile"), ({"tile": 32.0}, "tile"), ({"overlap": -1}, "overlap"),
                         ({"dtype": torch.int32}, "dtype"), ({"device": "nonsense"}, "device"),
                         ({"global_norm_stats": "yes"}, "global_norm_stats")]:
        with pytest.raises(ValueError, match=name):
            tiled_forward(net, x, **kwargs)
    for bad in (x[0], torch.cat([x, x]), x[:, :1], (x * 255).to(torch.uint8)):
        with pytest.raises(ValueError, match="x must"):
            tiled_forward(net, bad)
    bn = TransformNet("batch", "reflect", "nearest", width=0.25).train()
    with pytest.raises(ValueError, match="eval"):
        tiled_forward(bn, photo[..., :60, :60], tile=32)


@pytest.mark.slow
def test_stylize_image_tiles_large_images(data_dir):
    """The inference path used by `perceptual stylize` and the batch job tiles images over `tile`."""
    from perceptual_core.inference import stylize_image

    img = load_image(data_dir / "Set14/HR/flowers.png")
    net = style_net(width=0.25)  # the whole 500 x 362 photo: the narrow net keeps the test fast
    whole, _ = stylize_image(net, img, tile=None)
    tiled, _ = stylize_image(net, img, tile=128, overlap=48)
    assert tiled.shape == whole.shape == (3, *img.pixels.shape[:2])
    assert psnr(tiled, whole) >= 45  # clamped to [0, 1] after the network, as saved
