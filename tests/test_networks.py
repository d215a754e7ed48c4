"""Architecture checks for the transform and super-resolution networks."""

import itertools
import json

import pytest
import torch
from torch import nn

from perceptual_core.networks import MirrorPad, SRNet, TransformNet, build_model, count_parameters

torch.manual_seed(0)


def _spatial(out):
    return tuple(out.shape[-2:])


def test_paper_mode_shape_trace():
    net = TransformNet().eval()
    seen = {}
    mods = {"pad_in": net.pad_in, "conv1": net.encoder[0], "conv2": net.encoder[1],
            "conv3": net.encoder[2], "res": net.res, "up1": net.decoder[0],
            "up2": net.decoder[1], "out": net.decoder}
    mods.update({f"res{i}": blk for i, blk in enumerate(net.res)})
    for name, m in mods.items():
        m.register_forward_hook(lambda _m, _i, o, name=name: seen.__setitem__(name, _spatial(o)))
    res_out = []
    net.res[0].register_forward_hook(lambda _m, _i, o: res_out.append(o.min().item()))
    with torch.no_grad():
        y = net(torch.rand(1, 3, 256, 256))
    assert res_out[0] < 0  # no ReLU after the residual addition
    assert seen["pad_in"] == seen["conv1"] == (336, 336)
    assert seen["conv2"] == (168, 168) and seen["conv3"] == (84, 84)
    # Each unpadded block eats 4 px; the 80 px of input padding are consumed exactly.
    assert [seen[f"res{i}"][0] for i in range(5)] == [80, 76, 72, 68, 64]
    assert seen["res"] == (64, 64)
    assert seen["up1"] == (128, 128) and seen["up2"] == (256, 256) and seen["out"] == (256, 256)
    assert y.shape == (1, 3, 256, 256)


@pytest.mark.parametrize("norm,padding,upsample",
                         list(itertools.product(("batch", "instance"), ("paper", "reflect"),
                                                ("deconv", "nearest"))))
def test_transform_any_size(norm, padding, upsample):
    net = TransformNet(norm, padding, upsample, width=0.5)
    for h, w in [(257, 131), (100, 64), (33, 47), (5, 9), (1, 2)]:
        x = torch.rand(2, 3, h, w)
        y = net.train()(x)  # train mode: norm statistics need > 1 value per channel
        assert y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 3, 33, 47)).shape == (1, 3, 33, 47)


def test_mirror_pad_matches_reflection_and_handles_small_images():
    x = torch.rand(1, 3, 50, 60)
    assert torch.equal(MirrorPad(40)(x), nn.ReflectionPad2d(40)(x))
    small = torch.rand(1, 3, 8, 12)
    y = MirrorPad(40)(small)  # needs repeated reflection: 40 >= 8
    assert y.shape == (1, 3, 88, 92)
    assert torch.equal(y[..., 40:48, 40:52], small)
    assert torch.equal(y[..., 39, 40:52], small[..., 1, :])  # mirrored about the edge pixel
    assert set(y.unique().tolist()) <= set(small.unique().tolist())  # no invented values


def test_transform_rejects_bad_input():
    net = TransformNet(width=0.25)
    with pytest.raises(ValueError, match="0x5"):
        net(torch.rand(1, 3, 0, 5))
    with pytest.raises(ValueError, match="shape"):
        net(torch.rand(3, 16, 16))
    for kw in ({"norm": "layer"}, {"padding": "zero"}, {"upsample": "bilinear"}, {"width": 0}):
        with pytest.raises(ValueError):
            TransformNet(**kw)


def test_reflect_mode_pads_by_reflection_everywhere():
    # With reflection padding and resize-convolution every layer is translation-equivariant
    # up to the border, so a constant image must map to a constant image; any zero padding
    # (or a transposed conv) would make the border differ.
    net = TransformNet(padding="reflect", upsample="nearest", width=0.25).eval()
    with torch.no_grad():
        y = net(torch.full((1, 3, 42, 42), 0.7))  # 42 -> 44: also checks the multiple-of-4 pad
    assert torch.allclose(y, y[..., :1, :1].expand_as(y), atol=1e-5)
    net = TransformNet(padding="reflect", upsample="deconv", width=0.25).eval()
    with torch.no_grad():
        y = net(torch.full((1, 3, 42, 42), 0.7))
    assert not torch.allclose(y, y[..., :1, :1].expand_as(y), atol=1e-5)


@pytest.mark.parametrize("scale,lr,hr", [(4, (72, 72), (288, 288)), (8, (36, 36), (288, 288)),
                                         (4, (17, 23), (68, 92)), (8, (17, 23), (136, 184))])
def test_sr_shapes(scale, lr, hr):
    for norm, padding in itertools.product(("batch", "instance"), ("zero", "reflect")):
        net = SRNet(scale, norm, padding, width=0.25)
        y = net(torch.rand(2, 3, *lr))
        assert y.shape == (2, 3, *hr) and y.min() >= 0 and y.max() <= 1


def test_sr_rejects_bad_scale_and_size():
    for s in (2, 3, 16):
        with pytest.raises(ValueError, match="scale"):
            SRNet(scale=s)
    with pytest.raises(ValueError, match="4x9"):
        SRNet(padding="reflect", width=0.25)(torch.rand(1, 3, 4, 9))
    assert SRNet(padding="zero", width=0.25)(torch.rand(2, 3, 4, 9)).shape == (2, 3, 16, 36)


@pytest.mark.parametrize("net", [TransformNet("instance", "reflect", "nearest", 0.5),
                                 TransformNet("batch", "paper", "deconv", 0.5),
                                 SRNet(8, "batch", "reflect", 0.5)], ids=["transform-reflect", "transform-paper", "sr8"])
def test_build_model_roundtrip(net):
    x = torch.rand(2, 3, 20, 24)
    net.train()(x)  # make BN running statistics non-trivial
    config = json.loads(json.dumps(net.config))  # a checkpoint stores it as plain data
    assert config == net.config
    clone = build_model(config)
    assert type(clone) is type(net)
    clone.load_state_dict(net.state_dict(), strict=True)
    net.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(net(x), clone(x))


def test_build_model_unknown_arch():
    with pytest.raises(ValueError, match="vgg"):
        build_model({"arch": "vgg"})


def test_parameter_counts_paper_configuration():
    def conv(cin, cout, k, bias=True):
        return cin * cout * k * k + (cout if bias else 0)

    def bn(c):  # affine weight + bias
        return 2 * c

    transform = (
        conv(3, 32, 9) + bn(32)                      # 9x9 conv, 32
        + conv(32, 64, 3) + bn(64)                   # 3x3 conv, 64, stride 2
        + conv(64, 128, 3) + bn(128)                 # 3x3 conv, 128, stride 2
        + 5 * 2 * (conv(128, 128, 3) + bn(128))      # 5 residual blocks, 2 convs each
        + conv(128, 64, 3) + bn(64)                  # 3x3 deconv, 64, stride 1/2
        + conv(64, 32, 3) + bn(32)                   # 3x3 deconv, 32, stride 1/2
        + conv(32, 3, 9)                             # 9x9 conv, 3
    )
    assert count_parameters(TransformNet()) == transform == 1_679_235
    # Resize-convolution has the same weights as the transposed conv it replaces.
    assert count_parameters(TransformNet(upsample="nearest")) == transform
    assert count_parameters(TransformNet(norm="instance", padding="reflect")) == transform

    def sr(scale_log2):
        return (conv(3, 64, 9) + bn(64)                       # 9x9 conv, 64
                + 4 * 2 * (conv(64, 64, 3) + bn(64))          # 4 residual blocks
                + scale_log2 * (conv(64, 64, 3) + bn(64))     # 3x3 deconvs, 64
                + conv(64, 3, 9))                             # 9x9 conv, 3
    assert count_parameters(SRNet(4)) == sr(2) == 401_859
    assert count_parameters(SRNet(8)) == sr(3) == 438_915


@pytest.mark.parametrize("net,first", [
    (TransformNet(width=0.5), lambda n: n.encoder[0][0]),
    (TransformNet("instance", "reflect", "nearest", 0.5), lambda n: n.encoder[0][1]),
    (SRNet(4, width=0.5), lambda n: n.head[0]),
])
def test_gradients_reach_first_conv(net, first):
    x = torch.rand(2, 3, 24, 24)
    net.train()(x).square().mean().backward()
    g = first(net).weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_transposed_conv_counts():
    def n_deconv(m):
        return sum(isinstance(x, nn.ConvTranspose2d) for x in m.modules())

    for padding in ("paper", "reflect"):
        assert n_deconv(TransformNet(padding=padding, upsample="deconv", width=0.25)) == 2
        nearest = TransformNet(padding=padding, upsample="nearest", width=0.25)
        assert n_deconv(nearest) == 0
        assert sum(isinstance(x, nn.Upsample) for x in nearest.modules()) == 2
    assert n_deconv(SRNet(4, width=0.25)) == 2
    assert n_deconv(SRNet(8, width=0.25)) == 3


def test_norm_none_drops_the_norm_layers_and_keeps_the_others_keys():
    """norm="none" (the released SR models) has no norm layers; batch/instance networks keep the
    state-dict keys their checkpoints were saved with."""
    import torch.nn as nn

    from perceptual_core.networks import SRNet, TransformNet

    none = SRNet(scale=4, norm="none", width=0.25)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in none.modules())
    assert "head.1.weight" in SRNet(scale=4, width=0.25).state_dict()  # conv 0, batch norm 1
    assert "res.0.body.4.weight" in SRNet(scale=4, width=0.25).state_dict()
    assert "encoder.0.2.weight" in TransformNet(norm="instance", padding="reflect", upsample="nearest").state_dict()
    x = torch.rand(1, 3, 11, 13)
    assert none(x).shape == (1, 3, 44, 52)
