"""Inference engines (perceptual_core/engines/): every engine reproduces the plain network on real photos,
a stale or wrong engine is refused, and the CLI takes --engine. Small networks and sizes keep this fast;
the speed itself is measured by benchmarks/speed.py, never asserted here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from perceptual_core import engines
from perceptual_core.checkpoint import save_checkpoint
from perceptual_core.engines import EngineMismatchError, build_engine, resolve
from perceptual_core.inference import resize_longer, stylize_image, upscale_image
from perceptual_core.io import load_image
from perceptual_core.metrics import psnr as psnr255
from perceptual_core.metrics import y_channel
from perceptual_core.networks import SRNet, TransformNet

ROOT = Path(__file__).resolve().parents[1]
# engine vs plain network on [0, 1] outputs: 4x under the engines' 2e-3 tolerance, several times the
# measured differences (1e-6 .. 1e-4, largest for these high-contrast random networks)
CLOSE = 5e-4
EXE = Path(sys.executable).with_name("perceptual")


def _contrasty(model: nn.Module, seed: int = 0) -> nn.Module:
    """A random-init network whose norms have spread-out affine parameters and running statistics, so
    outputs use the whole [0, 1] range (a fresh one is nearly flat grey) and folding is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    with torch.no_grad():  # spread the output across the tanh
        last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
        last.weight.mul_(4)
    return model.eval()


@pytest.fixture(scope="module")
def photos(data_dir) -> list[torch.Tensor]:
    """Real photos at three sizes, none a multiple of 4 on both sides."""
    names = ["styles/content_images/chicago.jpg", "Set14/HR/baboon.png", "BSD100/HR/101085.png"]
    out = []
    for name, size in zip(names, (75, 130, 182)):
        out.append(resize_longer(load_image(data_dir / name).to_tensor(), size)[None])
    return out


@pytest.fixture(scope="module")
def style_net() -> nn.Module:
    torch.manual_seed(0)  # the same weights every run: the CLI test's cached ONNX graph is then reused
    return _contrasty(TransformNet(norm="instance", padding="reflect", upsample="nearest", width=0.5))


@pytest.fixture(scope="module")
def onnx_style(style_net, photos) -> engines.Engine:
    return build_engine(style_net, "onnx", images=photos)  # one export for the module


def test_auto_choice_and_bad_arguments_name_the_parameter():
    assert resolve("auto", "auto", "cpu") == ("eager", "fp32")
    assert resolve("auto", "auto", "cuda") == ("eager", "fp16")
    assert resolve("onnx", "auto", "cpu") == ("onnx", "fp32")
    with pytest.raises(ValueError, match="--engine"):
        resolve("tensorrt")
    with pytest.raises(ValueError, match="--precision"):
        resolve("eager", "int4")
    with pytest.raises(ValueError, match="--precision bf16 needs a CUDA"):
        resolve("eager", "bf16", "cpu")
    with pytest.raises(TypeError, match="model"):
        build_engine(object())


@pytest.mark.parametrize("cfg", [
    dict(norm="instance", padding="reflect", upsample="nearest", width=0.5),  # as trained (params)
    dict(norm="batch", padding="paper", upsample="deconv", width=0.25),       # the paper's supplementary
    dict(norm="instance", padding="paper", upsample="nearest", width=0.25),   # sub-pixel with zero padding
    dict(norm="instance", padding="reflect", upsample="nearest", width=0.3),  # the shipped fast model
])
def test_eager_rewrite_matches_the_plain_network_on_photos(cfg, photos):
    """The CPU rewrite (folded norms, sub-pixel upsampling, NNPACK Winograd/FFT convs, fused padding)
    computes the same function: well inside half an 8-bit level on real photos of three sizes."""
    model = _contrasty(TransformNet(**cfg))
    eng = build_engine(model, "eager", images=photos)
    assert (eng.name, eng.precision) == ("eager", "fp32")
    rep = eng.verified
    assert rep["sizes"] == [tuple(p.shape[-2:]) for p in photos]
    assert rep["max_abs"] < CLOSE and rep["min_psnr"] > 70, rep
    x = photos[1]
    with torch.inference_mode():
        ref = model(x)
    y = eng(x)
    assert y.shape == ref.shape == x.shape and not y.is_inference()
    assert ref.std() > 0.05  # a real image out, not a flat one, so the comparison means something
    assert (y - ref).abs().max() < CLOSE


def test_narrow_networks_run_their_3x3_convs_channels_last_and_wide_ones_do_not():
    """The conv plan of the CPU rewrite: below 64 channels the stride-2 and 3x3 convs run channels-last
    (the fast model's speed), the 9x9 and sub-pixel ones stay in NCHW; wider networks keep NCHW throughout.
    The narrow plan's output is checked against the plain network above (width 0.3 and 0.25)."""
    from perceptual_core.engines.fast_cpu import _backends
    from perceptual_core.engines.layers import _describe

    def plan(width):
        return _backends(_describe(TransformNet("instance", "reflect", "nearest", width)), use_nnpack=True)

    narrow, wide = plan(0.3), plan(0.5)
    assert narrow[1:13] == ["onednn_cl"] * 12  # 2 stride-2 + 10 residual 3x3 convs
    assert narrow[0] == narrow[-1] == "nnpack" and narrow[13:15] == ["nnpack"] * 2  # 9x9 and sub-pixel
    assert "onednn_cl" not in wide and wide[0] == "nnpack" and wide[1] == "onednn"


def test_sr_engines_keep_set5_y_psnr(data_dir):
    """SR quality bound: each engine's Set5 Y-PSNR (x4, shave 4) within 0.05 dB of the plain network."""
    model = _contrasty(SRNet(scale=4, norm="batch", padding="zero", width=0.5))
    hr_paths = [data_dir / "Set5/HR" / n for n in ("bird.png", "butterfly.png")]  # the smallest two
    lr_dir = data_dir / "Set5/LR_bicubic_x4"
    lrs = [load_image(lr_dir / p.name).to_tensor()[None] for p in hr_paths]
    hrs = [load_image(p).pixels for p in hr_paths]

    def score(run) -> float:
        vals = []
        for lr, hr in zip(lrs, hrs):
            with torch.inference_mode():
                y = run(lr)[0].permute(1, 2, 0).numpy()
            sr = np.clip(np.round(y * 255), 0, 255).astype(np.uint8)
            h, w = sr.shape[:2]
            vals.append(psnr255(y_channel(sr), y_channel(hr[:h, :w]), shave=4))
        return float(np.mean(vals))

    plain = score(model)
    for name in ("eager", "onnx"):
        eng = build_engine(model, name, images=lrs[:1])
        assert eng.verified["max_abs"] < CLOSE
        assert abs(score(eng) - plain) <= 0.05, name


def test_onnx_graph_is_size_generic(onnx_style, style_net, photos, tmp_path):
    """One exported graph (example 96 x 128) serves other sizes and aspect ratios: the host does the
    size-dependent padding/cropping that tracing would otherwise freeze into the graph."""
    import onnxruntime as ort

    assert onnx_style.verified["max_abs"] < CLOSE
    path = tmp_path / "net.onnx"
    engines.export_onnx(style_net, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in photos:
        xp, crop = onnx_style.prepare(x)
        y = torch.from_numpy(sess.run(None, {"x": xp.numpy()})[0])[..., :crop[0], :crop[1]]
        with torch.inference_mode():
            ref = style_net(x)
        assert y.shape == ref.shape and (y - ref).abs().max() < CLOSE


def test_a_mismatch_is_an_error(style_net, photos, tmp_path):
    """A stale export (the weights changed after it) and a too-tight bound both raise, naming the numbers."""
    model = _contrasty(TransformNet(norm="instance", padding="reflect", upsample="nearest", width=0.25), seed=1)
    cache = tmp_path / "cache"
    eng = build_engine(model, "onnx", images=photos[:1], cache_dir=cache)
    assert len(list(cache.glob("*.onnx"))) == 1
    with torch.no_grad():
        model.encoder[0][2].bias.add_(0.5)  # the network changes; the exported graph does not
    with pytest.raises(EngineMismatchError, match="max \\|diff\\|"):
        eng.verify(photos[:1])
    # a rebuild exports again (the cache is keyed by the weights) and matches
    assert build_engine(model, "onnx", images=photos[:1], cache_dir=cache).verified["max_abs"] < CLOSE
    assert len(list(cache.glob("*.onnx"))) == 2
    # a cached graph that no longer matches (say, from older code) is exported afresh, not trusted
    path = cache / f"{engines._model_digest(model)}.onnx"
    engines.export_onnx(style_net, path)
    stale = path.read_bytes()
    assert build_engine(model, "onnx", images=photos[:1], cache_dir=cache).verified["max_abs"] < CLOSE
    assert path.read_bytes() != stale
    with pytest.raises(EngineMismatchError, match="tolerance"):
        build_engine(style_net, "eager", images=photos[:1], tolerance={"max_abs": 0.0})
    with pytest.raises(ValueError, match="tolerance keys"):
        build_engine(style_net, "eager", images=photos[:1], tolerance={"rmse": 1.0})


def test_inference_api_takes_an_engine(onnx_style, style_net, data_dir):
    """stylize_image/upscale_image accept an Engine in place of the model; images over ``tile`` run on
    its plain network (tiling swaps that network's norm modules), so they equal the plain tiled result."""
    img = load_image(data_dir / "styles/content_images/amber.jpg")
    img.pixels = np.ascontiguousarray(img.pixels[:90, :130])
    y_eng, _ = stylize_image(onnx_style, img)
    y_ref, _ = stylize_image(style_net, img)
    assert y_eng.shape == (3, 90, 130) and (y_eng - y_ref).abs().max() < CLOSE

    sr = _contrasty(SRNet(scale=4, width=0.25))
    eng = build_engine(sr, "eager", images=[resize_longer(img.to_tensor(), 30)[None]])
    lr = load_image(data_dir / "Set5/LR_bicubic_x4/bird.png")
    a, _ = upscale_image(eng, lr, scale=4)
    b, _ = upscale_image(sr, lr, scale=4)
    assert a.shape == b.shape == (4 * lr.pixels.shape[0], 4 * lr.pixels.shape[1], 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).max() <= 1 and b.std() > 0.05 * 255
    a, _ = upscale_image(eng, lr, scale=4, tile=200)  # blocks: the engine runs each one
    b, _ = upscale_image(sr, lr, scale=4, tile=200)
    assert np.abs(a.astype(int) - b).max() <= 1
    with pytest.raises(ValueError, match="scale=8"):
        upscale_image(eng, lr, scale=8)


def test_verification_photos_are_real_and_sized():
    imgs = engines.verification_images("transform")
    assert [max(x.shape[-2:]) for x in imgs] == [64, 120, 200]
    assert any(s % 4 for x in imgs for s in x.shape[-2:])
    assert all(x.shape[:2] == (1, 3) and 0.1 < x.std() and 0 <= x.min() and x.max() <= 1 for x in imgs)


@pytest.mark.slow
def test_cli_engine_option(tmp_path, data_dir, style_net):
    ckpt = save_checkpoint(tmp_path / "style.pt", style_net)
    src = data_dir / "styles/content_images/chicago.jpg"
    small = tmp_path / "in.png"
    from perceptual_core.io import save_image

    save_image(small, resize_longer(load_image(src).to_tensor(), 96))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    outs = {}
    for eng in ("onnx", "eager"):
        out = tmp_path / f"{eng}.png"
        r = subprocess.run([str(EXE), "stylize", str(small), "--model", str(ckpt), "-o", str(out), "--engine", eng],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        outs[eng] = load_image(out).pixels.astype(int)
    assert outs["onnx"].shape[:2] == load_image(small).pixels.shape[:2]
    assert np.abs(outs["onnx"] - outs["eager"]).max() <= 1  # 8-bit rounding of a < CLOSE difference
    r = subprocess.run([str(EXE), "stylize", str(small), "--model", str(ckpt), "-o", str(tmp_path / "x.png"),
                        "--engine", "tensorrt"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 2 and "--engine" in r.stderr
    r = subprocess.run([str(EXE), "stylize", str(small), "--model", str(ckpt), "-o", str(tmp_path / "x.png"),
                        "--precision", "bf16", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=120)
    assert r.returncode == 2 and "--precision bf16 needs a CUDA" in r.stderr


@pytest.mark.parametrize("cfg", [
    dict(norm="instance", padding="reflect", upsample="nearest"),  # the shipped style networks
    dict(norm="batch", padding="paper", upsample="nearest"),       # folded batch norm
])
def test_the_gpu_rewrite_builds_on_the_models_device(cfg):
    """portable_net (the CUDA eager and compile engines) makes every tensor on the model's device. On an H200
    the sub-pixel conv and its phase taps were made on the CPU, so every CUDA engine failed ("weight type
    torch.FloatTensor"); the meta device stands in for CUDA here (a CPU tensor mixed in fails or shows)."""
    from perceptual_core.engines.portable import portable_net

    net = portable_net(TransformNet(**cfg).eval().to("meta"))
    assert {t.device.type for t in [*net.parameters(), *net.buffers()]} == {"meta"}


def test_gpu_speed_script_runs_without_ray_or_data(tmp_path, data_dir):
    """benchmarks/speed_cuda.py (scripts/gpu_check.sh runs it on a bare GPU machine) on the CPU at tiny
    sizes: the photo tensor as gpu_check.sh prepares it, a shipped release file as the weights (it travels
    with the code), a verified engine row, Gatys, the JSON."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import speed_cuda

    x = load_image(data_dir / "styles/content_images/chicago.jpg").to_tensor()
    torch.save((x * 255).round().to(torch.uint8), tmp_path / "photo.pt")
    out = speed_cuda.main(["--device", "cpu", "--sizes", "48", "--repeats", "1", "--warmup", "1", "--rows",
                           "eager:fp32", "--gatys-sizes", "48", "--photo", str(tmp_path / "photo.pt"),
                           "--weights", str(ROOT / "models/style-starry_night_fast.safetensors"),  # a release file
                           "--json", str(tmp_path / "s.json")])
    assert out["meta"]["weights"].endswith("style-starry_night_fast.safetensors")
    rows = {(r["engine"], r["precision"]): r for r in out["style"]}
    assert set(rows) == {("plain", "fp32"), ("eager", "fp32")}
    assert rows["eager", "fp32"]["verified"]["max_abs"] <= 2e-3
    assert rows["eager", "fp32"]["sizes"]["48"]["psnr_vs_plain_db"] > 60
    assert out["gatys_speedup"]["48"]["speedup_500"] > 1
    assert "partial" not in json.loads((tmp_path / "s.json").read_text())


@pytest.mark.parametrize("name,norm", [("eager", "batch"), ("onnx", "batch"), ("eager", "none"), ("onnx", "none")])
def test_sr_bicubic_skip_runs_in_every_engine_and_in_tiles(name, norm, photos):
    """SRNet(skip="bicubic"), with batch norm or none (the released SR models): the engines run the body
    and add the bicubic skip in fp32; tiles give the same network."""
    from perceptual_core.tiling import tiled_forward

    model = _contrasty(SRNet(scale=4, norm=norm, padding="zero", width=0.25, skip="bicubic"))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == (norm == "batch")
    assert model.config["skip"] == "bicubic" and "skip" not in SRNet(scale=4).config  # paper configs unchanged
    lr = torch.nn.functional.interpolate(photos[0], scale_factor=0.5, mode="area")
    eng = build_engine(model, name, images=[lr])
    assert eng.verified["max_abs"] < CLOSE
    with torch.inference_mode():
        ref = model(lr)
        tiled = tiled_forward(model, lr, tile=32, overlap=24)
    assert ref.shape[-2:] == (lr.shape[-2] * 4, lr.shape[-1] * 4)
    assert (eng(lr) - ref).abs().max() < CLOSE and (tiled - ref).abs().max() < 1e-4
    with pytest.raises(ValueError, match="skip"):
        SRNet(scale=4, skip="nearest")


def test_sr_skip_survives_the_checkpoint(tmp_path):
    from perceptual_core.checkpoint import load_model, save_checkpoint

    model = _contrasty(SRNet(scale=8, width=0.25, skip="bicubic"))
    back = load_model(save_checkpoint(tmp_path / "m.pt", model))
    x = torch.rand(1, 3, 9, 7)
    with torch.inference_mode():
        assert torch.equal(back(x), model(x)) and back.skip == "bicubic"


def test_fp32_checks_on_cuda_run_without_tf32_and_put_the_setting_back():
    """exact_fp32: TF32 off for an fp32 engine's check on CUDA (two TF32 paths drift past the fp32 bound
    without either being wrong), the device's setting back afterwards, even on an error; nothing on CPU."""
    from perceptual_core.engines.verify import exact_fp32

    flags = lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)  # noqa: E731
    before = flags()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with exact_fp32(torch.device("cuda", 0)):
            assert flags() == (False, False)
        assert flags() == (True, True)
        with pytest.raises(RuntimeError, match="boom"), exact_fp32("cuda"):
            raise RuntimeError("boom")
        assert flags() == (True, True)
        for dev in (torch.device("cpu"), None):
            with exact_fp32(dev):
                assert flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
