"""The paper's losses, checked against their formulas on small real tensors."""
from __future__ import annotations

import pytest
import torch

from perceptual_core.io import load_image
from perceptual_core.losses import PerceptualLoss, feature_loss, gram_matrix, pixel_loss, style_loss, tv_loss, tv_scale


def test_gram_normalised_by_chw():
    f = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5)
    g = gram_matrix(f)
    flat = f[1].reshape(3, 20)
    torch.testing.assert_close(g[1], flat @ flat.T / (3 * 4 * 5))
    assert g.shape == (2, 3, 3)


def test_feature_and_pixel_loss_formula():
    a, b = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    per_image = [((a[i] - b[i]) ** 2).sum() / (4 * 5 * 6) for i in range(2)]
    torch.testing.assert_close(feature_loss(a, b), torch.stack(per_image).mean())
    torch.testing.assert_close(pixel_loss(a, b), torch.stack(per_image).mean())


def test_style_loss_is_squared_frobenius_summed_over_layers():
    g1, g2 = torch.randn(2, 3, 3), torch.randn(2, 5, 5)
    t1, t2 = torch.randn(1, 3, 3), torch.randn(1, 5, 5)
    expect = sum(((g - t) ** 2).sum(dim=(1, 2)).mean() for g, t in ((g1, t1), (g2, t2)))
    torch.testing.assert_close(style_loss([g1, g2], [t1, t2]), expect)
    assert style_loss([t1], [t1]) == 0


def test_tv_loss_value():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0  # a single bright pixel: 4 neighbour differences of 1
    assert tv_loss(x).item() == pytest.approx(4.0)
    assert tv_loss(torch.ones(2, 3, 8, 8)).item() == 0


def test_tv_scale_weighs_tv_on_a_crop_as_on_the_whole_image(data_dir):
    """TV sums over pixels, the other losses are means: a 512 px photo's TV is about 4 times its 256 px
    quadrants' (their mean), its pixel loss the same as theirs; tv_scale(256, 512) is that factor."""
    img = load_image(data_dir / "styles/content_images/chicago.jpg").to_tensor()
    x = torch.nn.functional.interpolate(img[None], size=(512, 512), mode="bilinear", antialias=True)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    quads = [(slice(None), slice(None), slice(i, i + 256), slice(j, j + 256)) for i in (0, 256) for j in (0, 256)]
    tv_crop = torch.stack([tv_loss(y[q]) for q in quads]).mean()
    pix_crop = torch.stack([pixel_loss(y[q], x[q]) for q in quads]).mean()
    assert tv_scale(256, 512) == 4.0 and tv_scale(128, 512) == 16.0 and tv_scale(256, None) == 1.0
    assert float(tv_loss(y) / tv_crop) == pytest.approx(tv_scale(256, 512), rel=0.01)
    assert float(pixel_loss(y, x) / pix_crop) == pytest.approx(1.0, rel=1e-4)


def test_perceptual_loss_on_real_images(vgg, data_dir):
    img = load_image(data_dir / "styles/content_images/chicago.jpg").to_tensor()[:, :128, :128]
    style = load_image(data_dir / "styles/style_images/la_muse.jpg").to_tensor()
    crit = PerceptualLoss(vgg, content_weight=1.0, style_weight=1e-5, tv_weight=1e-5)
    with pytest.raises(ValueError, match="set_style"):
        crit(img[None], img[None])
    crit.set_style(style, style_size=128)
    same = crit(img[None], img[None])
    assert same["content"].item() == 0
    assert same["style"].item() > 0  # a photo does not share La Muse's Grams
    noisy = (img + 0.1 * torch.randn_like(img)).clamp(0, 1)
    batch = torch.stack([img, noisy]).requires_grad_(True)
    out = crit(batch, torch.stack([img, img]))
    single = crit(noisy[None], img[None])
    # batched loss is the mean of the per-image losses
    torch.testing.assert_close(out["content"], single["content"] / 2, rtol=1e-4, atol=1e-3)
    out["total"].backward()
    assert batch.grad is not None and torch.isfinite(batch.grad).all() and batch.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_unknown_layer_is_rejected(vgg):
    with pytest.raises(ValueError, match="relu9_9"):
        PerceptualLoss(vgg, content_layers=("relu9_9",))
