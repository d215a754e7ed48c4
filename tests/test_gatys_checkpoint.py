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


@pytest.mark.slow
def test_gatys_lbfgs_never_raises_the_loss_of_the_image_it_returns(vgg, pair):
    """The yardstick: the scored image is the optimised one, so its total on the same objective falls
    with iterations (the old unclamped optimisation scored a clipped image whose loss rose 100 -> 500)."""
    from perceptual_core.losses import PerceptualLoss

    c, s = pair
    kw = dict(content_weight=1.0, style_weight=3e-5, tv_weight=1e-5, style_size=64)
    res = gatys(c, s, vgg, iters=30, snapshot_at=[5, 15, 30], **kw)
    totals = [h["total"] for h in res.history]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(totals, totals[1:])), totals
    assert all(h["evals"] >= 1 for h in res.history)
    crit = PerceptualLoss(vgg, content_weight=1.0, style_weight=3e-5, tv_weight=1e-5)
    crit.set_style(s, 64)
    with torch.no_grad():
        scored = [float(crit(res.snapshots[i][None], c[None])["total"]) for i in (5, 15, 30)]
    assert scored[0] >= scored[1] >= scored[2], scored
    assert torch.equal(res.snapshots[30], res.image)


def test_gatys_takes_a_channels_last_photo(vgg, pair):
    """An (H,W,3) array permuted to (3,H,W), as numpy/PIL code hands it over, is not contiguous: the
    image under optimisation must be (L-BFGS views its gradient flat)."""
    c, s = pair
    hwc = c.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    assert not hwc.is_contiguous()
    res = gatys(hwc, s, vgg, iters=2, style_size=64)
    assert res.image.shape == c.shape and res.history[-1]["total"] < res.history[0]["total"]


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


class _Payload:
    """Unpickling this runs code: it writes a marker file (what an attacker's checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_malicious_pickle_checkpoint_never_runs(tmp_path, capsys):
    """A checkpoint that would run a command on load: refused by every loader, the command never runs
    (fails if checkpoint.py or the training resume ever load with weights_only=False)."""
    from perceptual_core.networks import build_model
    from pipelines import cli, train

    marker = tmp_path / "ran.txt"
    model = build_model({"arch": "transform", "width": 0.25})
    evil = tmp_path / "evil.pt"
    torch.save({"format": "perceptual-checkpoint-v1", "config": dict(model.config),
                "state_dict": model.state_dict(), "meta": {"x": _Payload(marker)}}, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        load_model(evil)
    photo = tmp_path / "p.png"
    from perceptual_core.io import save_image

    save_image(photo, torch.rand(3, 16, 16))
    assert cli.main(["stylize", str(photo), "--model", str(evil), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("evil.pt" in line for line in err) and not (tmp_path / "o.png").exists()
    # a training checkpoint (`--resume`) of the same kind
    (tmp_path / "job" / "last").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": {}, "iteration": _Payload(marker)},
               tmp_path / "job" / "last" / train.STATE)
    w = train._Worker(use_ray=False)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        w.restored_state(tmp_path / "job", resume=True)
    assert not marker.exists()
