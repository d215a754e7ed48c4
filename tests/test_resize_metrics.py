"""MATLAB-compatible resampling and metrics, anchored to published numbers on real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from perceptual_core.io import load_image
from perceptual_core.metrics import psnr, rgb2ycbcr, ssim, y_channel
from perceptual_core.resize import degrade, gaussian_blur, gaussian_kernel1d, imresize, modcrop, resize_matrix
from perceptual_core.sr_eval import bicubic_method, evaluate, load_pairs, srcnn_method
from perceptual_core.srcnn import SRCNN, load_srcnn_mat


def test_resize_matrix_rows_sum_to_one_and_sizes():
    for n_in, s in ((17, 0.25), (100, 4), (57, 1 / 3), (5, 8)):
        m = resize_matrix(n_in, int(np.ceil(n_in * s - 1e-9)), s)
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
    assert imresize(torch.rand(2, 3, 57, 86), 4).shape == (2, 3, 228, 344)
    assert imresize(np.zeros((343, 229, 3)), 0.25).shape == (86, 58, 3)  # ceil, as MATLAB


def test_resize_preserves_constants_and_uint8_semantics():
    x = np.full((40, 30, 3), 117, np.uint8)
    assert (imresize(x, 0.25) == 117).all() and imresize(x, 0.25).dtype == np.uint8
    ramp = np.tile(np.linspace(0, 1, 64), (16, 1))
    up = imresize(ramp, 2)
    assert np.abs(np.diff(up[8])).max() < 0.02  # smooth, no ringing on a linear ramp interior


def test_downscale_reproduces_standard_lr_files(data_dir):
    """The standard LR files were made by MATLAB imresize on uint8; ours reproduces ~98% of pixels exactly."""
    close, exact = [], []
    for hp in sorted((data_dir / "Set5/HR").glob("*.png")):
        hr = modcrop(load_image(hp).pixels, 4)
        lr = load_image(data_dir / "Set5/LR_bicubic_x4" / hp.name).pixels
        d = np.abs(imresize(hr, 0.25).astype(int) - lr.astype(int))
        close.append((d <= 1).mean())
        exact.append((d == 0).mean())
    assert np.mean(exact) > 0.97 and np.mean(close) > 0.99


def test_gaussian_blur_and_degrade():
    k = gaussian_kernel1d(1.0)
    assert k.numel() == 7 and abs(float(k.sum()) - 1) < 1e-12
    flat = torch.full((1, 3, 32, 32), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    hr = torch.rand(2, 3, 288, 288)
    assert degrade(hr, 4).shape == (2, 3, 72, 72) and degrade(hr, 8).shape == (2, 3, 36, 36)
    blurred = degrade(hr, 4, sigma=1.0)
    sharp = degrade(hr, 4, sigma=0.0)
    assert blurred.std() < sharp.std()  # the blur removes the high frequencies
    with pytest.raises(ValueError, match="multiple of scale"):
        degrade(torch.rand(1, 3, 30, 32), 4)


def test_rgb2ycbcr_matlab_values():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    y = rgb2ycbcr(px)
    assert y[0, :, 0].tolist() == [16, 235, 81]  # MATLAB: rgb2ycbcr(uint8([255 0 0])) -> 81 90 240
    assert y[0, 2].tolist() == [81, 90, 240]
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    assert (y_channel(gray) == gray[..., 0]).all()  # one-channel images are used as-is


def test_psnr_ssim_basics():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    assert ssim(a, b, shave=4) < 1
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:10])


# Published x4 bicubic Y-PSNR / SSIM (SelfExSR README), from the standard LR files.
BICUBIC_X4 = {"Set5": (28.42, 0.8101), "Set14": (25.99, 0.7023), "BSD100": (25.96, 0.6672)}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "BSD100" else n for n in BICUBIC_X4])
def test_anchor_bicubic_x4(data_dir, name):
    pairs = load_pairs(data_dir / name / "HR", 4, data_dir / name / "LR_bicubic_x4")
    res = evaluate(bicubic_method(4), pairs, 4)
    p, s = BICUBIC_X4[name]
    print(f"{name} bicubic x4: {res['mean']['psnr_y']:.4f} dB / {res['mean']['ssim_y']:.4f}")
    assert abs(res["mean"]["psnr_y"] - p) <= 0.01
    assert abs(res["mean"]["ssim_y"] - s) <= 0.002


@pytest.mark.parametrize("weights,expected", [("srcnn_9-5-5_imagenet_x4.mat", 30.48), ("srcnn_9-1-5_91images_x4.mat", 30.08)])
def test_anchor_srcnn_official_set5_x4(data_dir, weights, expected):
    net = load_srcnn_mat(data_dir / "srcnn_weights" / weights)
    res = evaluate(srcnn_method(net, 4), load_pairs(data_dir / "Set5/HR", 4), 4)
    print(f"SRCNN {weights} Set5 x4: {res['mean']['psnr_y']:.4f} dB")
    assert abs(res["mean"]["psnr_y"] - expected) <= 0.02
    bic = evaluate(bicubic_method(4), load_pairs(data_dir / "Set5/HR", 4), 4)
    assert res["mean"]["psnr_rgb"] > bic["mean"]["psnr_rgb"]  # colour output (bicubic CbCr) also improves


def test_srcnn_mat_layout(data_dir):
    net = load_srcnn_mat(data_dir / "srcnn_weights/srcnn_9-5-5_imagenet_x4.mat")
    assert [c.kernel_size[0] for c in (net.conv1, net.conv2, net.conv3)] == [9, 5, 5]
    assert sum(p.numel() for p in net.parameters()) == 57_281  # as SOURCES.md lists
    x = torch.rand(1, 1, 23, 31)
    assert net(x).shape == x.shape  # replicate padding keeps the size
    small = SRCNN(f2=1)
    assert sum(p.numel() for p in small.parameters()) == 8_129


def test_srcnn_mat_errors(tmp_path):
    bad = tmp_path / "x.mat"
    bad.write_text("not a mat file")
    with pytest.raises(ValueError, match="x.mat"):
        load_srcnn_mat(bad)
    with pytest.raises(FileNotFoundError):
        load_srcnn_mat(tmp_path / "missing.mat")


def test_one_luma_one_y_and_one_psnr_for_numpy_and_torch():
    """metrics.y_bt601 is rgb2ycbcr's Y; luma keeps grey grey; metrics.psnr serves arrays and tensors
    (engines.psnr is it at range 1); no other module writes these formulae out again."""
    import torch

    from perceptual_core import engines, metrics

    rng = np.random.default_rng(0)
    img = rng.random((17, 19, 3))
    y = metrics.y_bt601(img)
    assert y.shape == (17, 19, 1) and np.allclose(y[..., 0], metrics.rgb2ycbcr(img)[..., 0])
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    assert torch.allclose(metrics.y_bt601(t, axis=1)[0, 0], torch.from_numpy(y[..., 0]))
    grey = np.repeat(rng.random((5, 6, 1)), 3, axis=-1)
    assert np.allclose(metrics.luma(grey), grey[..., :1])
    assert torch.allclose(metrics.luma(t, axis=1)[0, 0], torch.from_numpy(metrics.luma(img)[..., 0]))
    with pytest.raises(ValueError, match="expected 3 colour channels"):
        metrics.luma(img[..., :2])
    other = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    a = metrics.psnr(img, other, data_range=1.0)
    assert a == pytest.approx(metrics.psnr(torch.from_numpy(img), torch.from_numpy(other), data_range=1.0))
    assert a == pytest.approx(engines.psnr(torch.from_numpy(img), torch.from_numpy(other)))
    assert 20 < a < 30 and metrics.psnr(img, img) == float("inf")
    root = Path(__file__).resolve().parents[1]
    for f in [*root.glob("perceptual_core/**/*.py"), *root.glob("pipelines/**/*.py"), *root.glob("benchmarks/*.py")]:
        if f.name == "metrics.py":
            continue
        text = f.read_text()
        for formula in ("65.481", "0.299", "log10("):
            assert formula not in text, f"{f.name} writes {formula} out again: use perceptual_core.metrics"
