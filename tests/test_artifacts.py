"""The artifact measures (perceptual_core/artifacts.py) on a real photo: each finds the artifact it is
for, at the size it was made, and reads near zero on the clean photo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perceptual_core import artifacts as art
from perceptual_core.io import load_image
from perceptual_core.networks import TransformNet
from perceptual_core.tiling import core_edges, tiled_forward


@pytest.fixture(scope="module")
def photo(data_dir) -> torch.Tensor:
    """(3, 256, 256) of a real photo."""
    return load_image(data_dir / "Set14/HR/flowers.png").to_tensor()[:, :256, :256].contiguous()


def net(width=0.25) -> TransformNet:
    torch.manual_seed(0)
    n = TransformNet("instance", "reflect", "nearest", width).eval()
    with torch.no_grad():
        n.decoder[-1].weight.mul_(4.0)  # outputs spanning most of [0, 1], as a trained network's
    return n


def test_lattice_reads_a_stride_locked_pattern_at_its_rms_and_not_the_photo(photo):
    clean = art.lattice_amplitude(photo)
    assert clean[2] < 0.2 and clean[4] < 0.2  # levels: a photo has no pattern locked to a 2 or 4 px grid
    dots = torch.zeros(256, 256)
    dots[::2, ::2] = 4.0 / 255  # +4 levels on one pixel of every 2x2: RMS about its mean sqrt(3) levels
    got = art.lattice_amplitude((photo + dots).clamp(0, 1))
    assert got[2] == pytest.approx(3 ** 0.5, rel=0.15) and got[4] == pytest.approx(3 ** 0.5, rel=0.15)
    stripes = torch.tensor([2.0, 2.0, -2.0, -2.0]).repeat(64) / 255  # columns +-2 levels, period 4, no period 2
    got = art.lattice_amplitude((photo + stripes).clamp(0, 1))
    assert got[4] == pytest.approx(2.0, rel=0.1) and got[2] < 0.2


def test_lattice_refuses_an_image_too_small_to_measure(photo):
    with pytest.raises(ValueError, match="too small"):
        art.lattice_amplitude(photo[:, :12, :40])


def test_border_frame_is_found_on_its_side_only(photo):
    framed = photo.clone()
    framed[:, :, :8] = (framed[:, :, :8] + 10.0 / 255).clamp(max=1)  # a light band 8 px wide on the left
    got = art.border_excess(framed, photo, band=16)
    assert got["left"]["frame"] == pytest.approx(5.0, abs=0.6)  # half the 16-px band, +10 levels (a few clip)
    assert got["right"]["frame"] == 0 and got["interior"] == 0
    assert got["top"]["frame"] < 0.5 and got["bottom"]["frame"] < 0.5  # only their 8 px corner


def test_white_blobs_reads_a_disc_and_not_strokes_nor_the_photos_own_white(photo):
    assert art.white_blobs(photo, photo)["block_fill"] == 0  # the photo against itself: nothing new
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    disc = ((yy - 40) ** 2 + (xx - 60) ** 2) <= 12 ** 2  # a 25 px white disc
    dark = photo.amax(0) * art.LEVELS < 230
    assert dark[disc].float().mean() > 0.9  # drawn where the photo is not white
    blob = photo.clone()
    blob[:, disc] = 1.0
    got = art.white_blobs(blob, photo)
    assert got["block_fill"] > 0.9 and got["blocks"] >= 4 and got["area_pct"] > 0.6
    strokes = photo.clone()
    strokes[:, ::12, :] = 1.0  # white lines 1 px wide every 12 px: more white area than the disc, no blob
    strokes[:, 1::12, :] = 1.0
    got = art.white_blobs(strokes, photo)
    assert got["area_pct"] > 10 and got["block_fill"] < 0.3 and got["blocks"] == 0
    white = photo.clone()  # a white square that is white in the photo too is the photo's, not a blob
    white[:, 20:60, 20:60] = 1.0
    assert art.white_blobs(white, white)["block_fill"] == 0
    with pytest.raises(ValueError, match="must both be"):
        art.white_blobs(photo, photo[:, :128])


def test_norm_stats_of_makes_the_padded_run_agree_away_from_the_border(photo):
    """The border check compares an output with the output on the reflect-padded photo; without the first
    run's instance-norm statistics the two differ everywhere, with them only near the border."""
    n, x, p = net(), photo[None], 64
    with torch.inference_mode():
        y = n(x)[0].clamp(0, 1)
        loose = n(F.pad(x, (p,) * 4, mode="reflect"))[0, :, p:-p, p:-p].clamp(0, 1)
        with art.norm_stats_of(n, x):
            tight = n(F.pad(x, (p,) * 4, mode="reflect"))[0, :, p:-p, p:-p].clamp(0, 1)
        assert torch.equal(n(x)[0].clamp(0, 1), y)  # the layers are restored
    near, far = art.border_excess(y, tight, 16)["interior"], art.border_excess(y, loose, 16)["interior"]
    assert near < 0.2 and far > 20 * near, (near, far)  # near: the receptive field (+-56 px) reaches past the band


def test_seams_read_clean_tiles_as_clean_and_per_tile_statistics_as_seams(photo):
    n, x = net(), photo[None]
    rows, cols = core_edges(n, 256, 128), core_edges(n, 256, 128)
    assert rows == cols == [128]
    with torch.inference_mode():
        y = n(x)[0]
    good = art.seam_difference(tiled_forward(n, x, tile=128, overlap=48)[0], y, rows, cols)
    bad = art.seam_difference(tiled_forward(n, x, tile=128, overlap=48, global_norm_stats=False)[0], y, rows, cols)
    assert good["psnr_db"] > 40 and bad["psnr_db"] < 30 and bad["seam_max_levels"] > 10 * max(good["max_levels"], 0.1)


def test_a_reflected_border_takes_the_edge_line_off_what_stylize_writes(data_dir):
    """stylize_image(border=32): the output keeps the input's size and its edges agree with the output of
    the photo padded further (same instance-norm statistics); without it a network's edges differ."""
    from perceptual_core.inference import pad_reflect, stylize_image

    img = load_image(data_dir / "Set14/HR/flowers.png")
    n, x = net(), img.to_tensor()[None]

    def reference(b):  # the photo padded by 64 px, run with the statistics of the input stylize_image ran
        with torch.inference_mode(), art.norm_stats_of(n, pad_reflect(x, b)):
            return n(pad_reflect(x, 64))[0, :, 64:-64, 64:-64].clamp(0, 1)

    plain, _ = stylize_image(n, img, border=0)
    padded, _ = stylize_image(n, img, border=32)
    assert padded.shape == plain.shape == x.shape[1:]
    before = max(v["frame"] for k, v in art.border_excess(plain, reference(0), 16).items() if k in art.SIDES)
    after = max(v["frame"] for k, v in art.border_excess(padded, reference(32), 16).items() if k in art.SIDES)
    assert after < 0.5 < before, (after, before)


def test_the_border_does_not_make_an_image_that_fits_a_tile_run_in_tiles(data_dir, tmp_path):
    """An image of side <= tile runs whole (on the engine) even though its padded input is larger."""
    from perceptual_core.inference import stylize_image
    from perceptual_core.io import save_image

    save_image(tmp_path / "fits.png", load_image(data_dir / "Set14/HR/flowers.png").pixels[:96, :128])
    img, n = load_image(tmp_path / "fits.png"), net()
    assert torch.equal(stylize_image(n, img, tile=128, border=32)[0], stylize_image(n, img, tile=None, border=32)[0])
    tiled, _ = stylize_image(n, img, tile=64, overlap=48, border=32)  # larger than the tile: tiled, same size
    assert tiled.shape == (3, 96, 128)


def test_a_border_wider_than_the_image_is_clipped_to_it(data_dir, tmp_path):
    from perceptual_core.inference import stylize_image
    from perceptual_core.io import save_image

    save_image(tmp_path / "small.png", load_image(data_dir / "Set14/HR/flowers.png").pixels[:30, :44])
    y, _ = stylize_image(net(), load_image(tmp_path / "small.png"), border=10_000)  # reflect needs b < the side
    assert y.shape == (3, 30, 44)
