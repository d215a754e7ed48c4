"""The `perceptual` console script, run as a user runs it (a real subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perceptual_core.checkpoint import save_checkpoint
from perceptual_core.io import load_image, save_image
from perceptual_core.networks import SRNet, TransformNet

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("perceptual")


def cli(*args, env_extra=None, check=True):
    env = {**os.environ, **(env_extra or {})}
    r = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"perceptual {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.mark.slow
def test_weights_command(weights_cache):
    r = cli("weights", "--offline")
    assert "sha256:  21413c2e2f6bc968" in r.stdout and "(verified)" in r.stdout
    assert "14,714,688" in r.stdout
    bad = cli("weights", "--weights", "/nonexistent/vgg.pth", check=False)
    assert bad.returncode == 2 and "/nonexistent/vgg.pth" in bad.stderr and "PERCEPTUAL_VGG16_WEIGHTS" in bad.stderr


@pytest.mark.slow
def test_sr_eval_bicubic_json(tmp_path, data_dir):
    out = tmp_path / "set5.json"
    r = cli("sr-eval", "--method", "bicubic", "--hr", data_dir / "Set5/HR", "--lr", data_dir / "Set5/LR_bicubic_x4",
            "--scale", 4, "--json", out)
    assert "butterfly" in r.stdout and "mean" in r.stdout
    res = json.loads(out.read_text())
    assert set(res["mean"]) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    assert len(res["images"]) == 5 and round(res["mean"]["psnr_y"], 2) == 28.42


@pytest.mark.slow
def test_sr_eval_errors_name_the_parameter(data_dir, tmp_path):
    r = cli("sr-eval", "--method", "srcnn-official", "--hr", data_dir / "Set5/HR", "--scale", 4, check=False)
    assert r.returncode == 2 and "--weights" in r.stderr
    r = cli("sr-eval", "--method", "bicubic", "--hr", tmp_path / "nothing", "--scale", 4, check=False)
    assert r.returncode == 2 and "nothing" in r.stderr
    r = cli("sr-eval", "--method", "bicubic", "--hr", data_dir / "Set5/HR", "--lr", data_dir / "Set14/LR_bicubic_x4",
            "--scale", 4, check=False)
    assert r.returncode == 2 and "no LR image" in r.stderr


@pytest.mark.slow
def test_sr_eval_network_checkpoint(tmp_path, data_dir):
    ckpt = save_checkpoint(tmp_path / "sr.pt", SRNet(scale=4).eval())
    out = tmp_path / "net.json"
    cli("sr-eval", "--method", ckpt, "--hr", data_dir / "Set5/HR", "--scale", 4, "--json", out)
    res = json.loads(out.read_text())
    assert res["method"] == "network" and np.isfinite(res["mean"]["psnr_y"])
    r = cli("sr-eval", "--method", ckpt, "--hr", data_dir / "Set5/HR", "--scale", 8, check=False)
    assert r.returncode == 2 and "x4" in r.stderr


@pytest.mark.slow
def test_stylize_keeps_size_alpha_and_reports_bad_files(tmp_path, data_dir):
    ckpt = save_checkpoint(tmp_path / "style.pt", TransformNet(norm="instance").eval())
    rgba = load_image(data_dir / "Set5/HR/bird.png").pixels[:101, :77]
    alpha = np.tile(np.linspace(0, 255, 77).astype(np.uint8), (101, 1))
    save_image(tmp_path / "in/rgba.png", rgba, alpha=alpha)
    (tmp_path / "in/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    photo = data_dir / "styles/content_images/chicago.jpg"
    r = cli("stylize", photo, tmp_path / "in/rgba.png", tmp_path / "in/broken.jpg", "--model", ckpt,
            "-o", tmp_path / "out", check=False)
    assert r.returncode == 1 and "broken.jpg" in r.stderr and "2 written, 1 failed" in r.stderr
    a = load_image(tmp_path / "out/chicago.png")
    assert a.pixels.shape == load_image(photo).pixels.shape
    b = load_image(tmp_path / "out/rgba.png")
    assert b.pixels.shape == (101, 77, 3) and np.array_equal(b.alpha, alpha)
    # an SR checkpoint cannot stylize
    sr = save_checkpoint(tmp_path / "sr.pt", SRNet(scale=4))
    r = cli("stylize", photo, "--model", sr, "-o", tmp_path / "x.png", check=False)
    assert r.returncode != 0 and "cannot stylize" in r.stderr


@pytest.mark.slow
def test_upscale_grayscale_stays_grayscale(tmp_path, data_dir):
    ckpt = save_checkpoint(tmp_path / "sr.pt", SRNet(scale=4).eval())
    src = data_dir / "Set14/LR_bicubic_x4/bridge.png"  # one channel
    cli("upscale", src, "--model", ckpt, "-o", tmp_path / "bridge_x4.png")
    out = load_image(tmp_path / "bridge_x4.png", keep_gray=True)
    lr = load_image(src, keep_gray=True)
    assert out.is_gray and out.pixels.shape[:2] == (lr.pixels.shape[0] * 4, lr.pixels.shape[1] * 4)


@pytest.mark.slow
def test_gatys_command(tmp_path, data_dir, weights_cache):
    out = tmp_path / "g.png"
    hist = tmp_path / "h.json"
    cli("gatys", data_dir / "styles/content_images/hoovertowernight.jpg", data_dir / "styles/style_images/wave.jpg",
        "-o", out, "--iters", 4, "--size", 96, "--history", hist)
    img = load_image(out)
    assert max(img.pixels.shape[:2]) == 96
    h = json.loads(hist.read_text())
    assert len(h) == 4 and h[-1]["total"] < h[0]["total"]


@pytest.mark.slow
def test_a_tile_too_small_is_a_usage_error_everywhere(tmp_path, data_dir):
    """`--tile` means the same in the CLI and batch jobs: 0 (never) or >= 16 (tiling's smallest core);
    `--tile 8` used to pass the batch check and then fail every image as "inference failed"."""
    from pipelines import cli as pcli

    photo = tmp_path / "p.png"
    save_image(photo, load_image(data_dir / "Set5" / "HR" / "bird.png").pixels[:64, :64])
    model = save_checkpoint(tmp_path / "m.pt", TransformNet(width=0.25))
    r = cli("stylize", str(photo), "--model", str(model), "--tile", "8", "-o", str(tmp_path / "o.png"), check=False)
    assert r.returncode == 2 and "--tile must be 0 (never tile) or >= 16, got 8" in r.stderr
    assert not (tmp_path / "o.png").exists()
    rc = pcli.main(["batch", "stylize", "--model", str(model), "--input", str(tmp_path), "--output",
                    str(tmp_path / "out"), "--tile", "8", "--no-ray"])
    assert rc == 2 and not (tmp_path / "out").exists()
    assert cli("stylize", str(photo), "--model", str(model), "--tile", "16", "-o", str(tmp_path / "o.png")
               ).returncode == 0
    r = cli("stylize", str(photo), "--model", str(model), "--border", "-1", "-o", str(tmp_path / "b.png"), check=False)
    assert r.returncode == 2 and "--border must be >= 0, got -1" in r.stderr and not (tmp_path / "b.png").exists()


@pytest.mark.slow
def test_sr_eval_takes_a_shipped_name_and_refuses_a_style_network(tmp_path, data_dir, tiny_zoo):
    out = tmp_path / "shipped.json"
    cli("sr-eval", "--method", "sr-x4-tiny", "--hr", data_dir / "Set5/HR", "--scale", 4, "--json", out)
    assert json.loads(out.read_text())["checkpoint"] == "sr-x4-tiny"
    r = cli("sr-eval", "--method", "style-tiny", "--hr", data_dir / "Set5/HR", "--scale", 4, check=False)
    assert r.returncode == 2 and "--method style-tiny" in r.stderr and "cannot upscale" in r.stderr
    r = cli("sr-eval", "--method", "nope", "--hr", data_dir / "Set5/HR", "--scale", 4, check=False)
    assert r.returncode == 2 and "--method nope" in r.stderr and "bicubic" in r.stderr
