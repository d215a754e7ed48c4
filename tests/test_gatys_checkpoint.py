"""Gatys baseline on the real loss network, and safe checkpoints."""
from __future__ import annotations

import pytest
import torch

from perceptual_core.checkpoint import load_model, read_checkpoint, save_checkpoint
from perceptual_core.gatys import gatys
from perceptual_core.io import load_image
from perceptual_core.networks import SRNet, TransformNet
from perceptual_core.srcnn import SRCNN


@pytest.fixture(scope="module")
def pair(data_dir):
    c = load_image(data_dir / "styles/content_images/chicago.jpg").to_tensor()
    c = torch.nn.functional.interpolate(c[None], size=(64, 96), mode="bilinear", antialias=True)[0]
    s = load_image(data_dir / "styles/style_images/la_muse.jpg").to_tensor()
    return c, s


@pytest.mark.parametrize("optimizer,init", [("lbfgs", "content"), ("adam", "noise")])
def test_gatys_reduces_the_loss(vgg, pair, optimizer, init):
    c, s = pair
    seen = []
    res = gatys(c, s, vgg, iters=12, optimizer=optimizer, init=init, lr=0.05 if optimizer == "adam" else None,
                style_size=64, callback=lambda i, l: seen.append(i))
    assert seen == list(range(12)) and len(res.history) == 12
    assert res.history[-1]["total"] < 0.7 * res.history[0]["total"]
    assert res.image.shape == c.shape and 0 <= res.image.min() and res.image.max() <= 1
    if init == "content":
        assert res.history[0]["content"] == pytest.approx(0, abs=1e-6)
        assert not torch.equal(res.image, c)


def test_gatys_rejects_bad_options(vgg, pair):
    with pytest.raises(ValueError, match="optimizer"):
        gatys(*pair, vgg, iters=1, optimizer="sgd")
    with pytest.raises(ValueError, match="init"):
        gatys(*pair, vgg, iters=1, init="zeros")


@pytest.mark.parametrize("model", [TransformNet(norm="instance"), SRNet(scale=8), SRCNN(f2=5)], ids=lambda m: m.config["arch"])
def test_checkpoint_round_trip(tmp_path, model):
    model.eval()
    f = save_checkpoint(tmp_path / "m.pt", model, meta={"step": 3})
    assert read_checkpoint(f)["meta"] == {"step": 3}
    back = load_model(f)
    x = torch.rand(1, 1 if model.config["arch"] == "srcnn" else 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


def test_checkpoint_refuses_foreign_files(tmp_path):
    f = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, f)
    with pytest.raises(ValueError, match="not a perceptual checkpoint"):
        load_model(f)
    g = tmp_path / "broken.pt"
    g.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="broken.pt"):
        load_model(g)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none.pt")
