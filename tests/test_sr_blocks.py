"""Block-wise upscaling (perceptual_core/sr_blocks.py): the shipped SR models give the untiled result
block by block, with alpha, grayscale and 16-bit input, and a tile too small for the scale is refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perceptual_core import zoo
from perceptual_core.inference import upscale_image
from perceptual_core.io import LoadedImage, load_image
from perceptual_core.sr_blocks import min_tile, upscale_blockwise

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {e.name for e in zoo.entries(ROOT / "models")}


def _shipped(name: str):
    if name not in SHIPPED:
        pytest.skip(f"{name} is not shipped")
    return zoo.load(name, task="upscale", folder=ROOT / "models")


def _photo(data_dir: Path, h: int, w: int) -> LoadedImage:
    img = load_image(data_dir / "Set14/HR/baboon.png")  # fur: every block boundary has detail
    img.pixels = np.ascontiguousarray(img.pixels[100:100 + h, 150:150 + w])
    return img


def _same(a: np.ndarray, b: np.ndarray) -> None:
    """At most one quantisation level apart, on fewer than 0.1% of values (float rounding differs with
    the convolution's input size; the receptive field is inside the halo)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    d = np.abs(a.astype(np.int64) - b)
    assert d.max() <= (1 if a.dtype == np.uint8 else 257), d.max()
    assert (d > 0).mean() < 1e-3, (d > 0).mean()


@pytest.mark.parametrize("name,tile", [("sr-x4-pixel", 200), pytest.param("sr-x8-feat", 400, marks=pytest.mark.slow),
                                       ("srcnn-x4", 200)])
def test_blocks_equal_the_whole_image(name, tile, data_dir):
    model = _shipped(name)
    img = _photo(data_dir, 61, 97)  # several blocks each way at these tiles (cores of 18 LR px)
    whole, _ = upscale_image(model, img, scale=4 if name.startswith("srcnn") else None)
    blocks, _ = upscale_image(model, img, scale=4 if name.startswith("srcnn") else None, tile=tile)
    s = 8 if "x8" in name else 4
    assert whole.shape == (61 * s, 97 * s, 3) and whole.std() > 20
    _same(blocks, whole)


@pytest.mark.slow
def test_blocks_carry_alpha_gray_and_16_bit(data_dir):
    model = _shipped("sr-x4-pixel")
    img = _photo(data_dir, 50, 70)
    yy, xx = np.mgrid[:50, :70]
    img.alpha = ((xx * 255) // 69).astype(np.uint8)  # a horizontal ramp: block seams would show in it
    out, alpha = upscale_image(model, img, tile=160)
    ref_out, ref_alpha = upscale_image(model, img)
    _same(out, ref_out)
    assert alpha.shape == (200, 280) and np.array_equal(alpha, ref_alpha)

    gray = LoadedImage(pixels=np.ascontiguousarray((img.pixels.astype(np.uint16) * 257)[..., :1]), alpha=None,
                       bit_depth=16, path="gray16", source_mode="I;16", icc_profile=None, exif=None)
    out, _ = upscale_image(model, gray, tile=160)
    ref, _ = upscale_image(model, gray)
    assert out.shape == (200, 280, 1) and out.dtype == np.uint16
    _same(out, ref)


def test_upscale_blockwise_geometry_and_errors():
    """Each block's core lands where it belongs: an 'upscale' that repeats pixels is rebuilt exactly."""
    lr = np.arange(37 * 53, dtype=np.int32).reshape(37, 53)
    fn = lambda r0, r1, c0, c1: np.kron(lr[r0:r1, c0:c1], np.ones((4, 4), np.int32))  # noqa: E731
    assert np.array_equal(upscale_blockwise(fn, lr.shape, 4, tile=min_tile(4)), np.kron(lr, np.ones((4, 4))))
    with pytest.raises(ValueError, match=r"tile must be 0 \(never\) or >= 160 output pixels for x4"):
        upscale_blockwise(fn, lr.shape, 4, tile=100)
    with pytest.raises(RuntimeError, match="not x4"):
        upscale_blockwise(lambda *box: np.zeros((3, 3)), lr.shape, 4, tile=160)


@pytest.mark.slow
def test_cli_refuses_a_tile_too_small_for_the_scale(data_dir, tmp_path):
    if "sr-x8-pixel" not in SHIPPED:
        pytest.skip("sr-x8-pixel is not shipped")
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "upscale", str(data_dir / "Set5/LR_bicubic_x4/bird.png"),
                        "--model", "sr-x8-pixel", "--tile", "200", "-o", str(tmp_path / "o.png")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --tile must be 0 (never) or >= 320 output pixels for x8 (a 16 px halo on each side of an LR "
        "block), got 200"], r.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_shipped_model_upscales_16_bit_gray_jpeg_and_rgba(data_dir, tmp_path):
    """`perceptual upscale --model sr-x4-pixel` on the three awkward kinds of photo, in blocks (--tile 160):
    each output keeps its kind and, downscaled again, matches its input (it is an upscale of it)."""
    from PIL import Image

    from perceptual_core.io import save_image
    from perceptual_core.metrics import psnr
    from perceptual_core.resize import imresize

    _shipped("sr-x4-pixel")
    hr = load_image(data_dir / "Set5/HR/baby.png").pixels[100:292, 100:292]
    lr = imresize(hr, 0.25)  # 48 x 48, uint8
    src = tmp_path / "in"
    save_image(src / "deep.png", lr.astype(np.uint16) * 257, bit_depth=16)
    Image.fromarray(lr).convert("L").save(src / "gray.jpg", quality=95)
    yy, xx = np.mgrid[:48, :48]
    save_image(src / "rgba.png", lr, alpha=((xx + yy) * 255 // 94).astype(np.uint8))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "upscale", *map(str, sorted(src.iterdir())),
                        "--model", "sr-x4-pixel", "--tile", "160", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    deep, gray, rgba = (load_image(out / f"{n}.png", keep_gray=True) for n in ("deep", "gray", "rgba"))
    assert deep.bit_depth == 16 and deep.pixels.shape == (192, 192, 3)
    assert gray.is_gray and gray.pixels.shape == (192, 192, 1)
    assert rgba.alpha is not None and rgba.alpha.shape == (192, 192) and rgba.alpha[-1, -1] > 240 > 10 > rgba.alpha[0, 0]
    assert psnr(imresize((deep.pixels // 257).astype(np.uint8), 0.25), lr) > 30
    assert psnr(imresize(rgba.pixels, 0.25), lr) > 30
    assert psnr(imresize(gray.pixels, 0.25)[..., 0], np.asarray(Image.open(src / "gray.jpg"))) > 30
