"""Shipped models (models/, perceptual_core.zoo): loading by name with the SHA-256 checked, their output
on a real photo against the statistic stored at release time, and the one-line refusals of bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perceptual_core import zoo
from pipelines import modelref

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = zoo.entries(ROOT / "models")


def test_manifest_lists_shipped_files_with_cards():
    assert SHIPPED, "models/MANIFEST.json lists no model"
    for e in SHIPPED:
        assert e.file.is_file() and e.card is not None and e.card.is_file(), e.name
        assert e.sha256 in e.card.read_text(), f"{e.card} does not state the file's SHA-256"
    total = sum(e.file.stat().st_size for e in SHIPPED)
    assert total <= 40e6, f"shipped weights take {total / 1e6:.1f} MB (budget 40 MB)"


@pytest.mark.parametrize("entry", [pytest.param(e, marks=pytest.mark.slow) if "x8" in e.name else e for e in SHIPPED],
                         ids=[e.name for e in SHIPPED])
def test_shipped_model_loads_by_name_and_matches_its_reference(entry, data_dir):
    """A broken loader, a wrong file or a mangled cast cannot pass: the output on a real photo is
    compared with the statistics recorded when the model was released."""
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image

    assert zoo.sha256_file(entry.file) == entry.sha256
    model = zoo.load(entry.name, task=entry.task, folder=ROOT / "models")
    ref = entry.info["reference"]
    x = resize_longer(load_image(data_dir / ref["photo"]).to_tensor(), ref["size"])
    with torch.inference_mode():
        y = model(zoo.photo_input(model, x[None]))[0].clamp(0, 1)
    mean = y.mean(dim=(1, 2)).tolist()
    std = y.std(dim=(1, 2)).tolist()
    assert mean == pytest.approx(ref["mean"], abs=2e-3), (mean, ref["mean"])
    assert std == pytest.approx(ref["std"], abs=2e-3), (std, ref["std"])


SHIPPED_SR = [e for e in SHIPPED if e.task == "upscale"]


@pytest.mark.parametrize("entry", SHIPPED_SR, ids=[e.name for e in SHIPPED_SR])
def test_shipped_sr_model_scores_its_stored_set5_psnr(entry, data_dir):
    """Every shipped SR model, loaded by name as `perceptual upscale --model NAME` loads it (SHA-256
    checked), scores the Y-PSNR stored at release on two Set5 images within 0.05 dB."""
    from pipelines import jobname, modelref, release

    assert zoo.sha256_file(entry.file) == entry.sha256
    stored = entry.info["load_check"]
    model, _ = modelref.load_model(entry.name, "upscale", "cpu", scale=modelref.scale_from_name(entry.name))
    got = release.load_check(model, jobname.parse(entry.name).scale, data_dir)
    assert got["lr"] == stored["lr"] and got["psnr_y"].keys() == stored["psnr_y"].keys()
    for name, db in stored["psnr_y"].items():
        assert got["psnr_y"][name] == pytest.approx(db, abs=0.05), (name, got["psnr_y"][name], db)


def _cli(*args, env_dir: Path, cwd: Path):
    import os

    env = {**os.environ, "PERCEPTUAL_MODELS_DIR": str(env_dir)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_fp16_storage_round_trips_and_loads_by_style_name(tiny_zoo, data_dir, tmp_path):
    m = zoo.load("style-tiny", task="stylize")
    assert all(p.dtype == torch.float32 for p in m.parameters())
    photo = data_dir / "styles/content_images/amber.jpg"
    r = _cli("stylize", str(photo), "--style", "tiny", "--tile", "0", "-o", str(tmp_path / "o.png"),
             env_dir=tiny_zoo, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o.png").stat().st_size > 1000
    r = _cli("models", "--verify", env_dir=tiny_zoo, cwd=ROOT)
    assert r.returncode == 0 and "style-tiny" in r.stdout and r.stdout.count(" ok") == 2, r.stdout


@pytest.mark.parametrize("case", ["unknown_style", "missing_file", "corrupted", "wrong_task", "wrong_scale",
                                  "not_safetensors"])
@pytest.mark.slow
def test_bad_model_inputs_fail_in_one_line(case, tiny_zoo, data_dir, tmp_path):
    photo = str(data_dir / "styles/content_images/amber.jpg")
    out = str(tmp_path / "o.png")
    args = ["stylize", photo, "--style", "tiny", "-o", out]
    if case == "unknown_style":
        args, expect = ["stylize", photo, "--style", "no_such_style", "-o", out], "unknown style 'style-no_such_style'"
    elif case == "missing_file":
        (tiny_zoo / "style-tiny.safetensors").unlink()
        expect = "style-tiny.safetensors"
    elif case == "corrupted":
        f = tiny_zoo / "style-tiny.safetensors"
        data = bytearray(f.read_bytes())
        data[-5] ^= 0xFF  # one flipped byte in the weights
        f.write_bytes(bytes(data))
        expect = "does not match the manifest"
    elif case == "wrong_task":
        args, expect = ["stylize", photo, "--model", "sr-x4-tiny", "-o", out], "cannot stylize"
    elif case == "wrong_scale":
        args, expect = ["upscale", photo, "--model", "sr-x4-tiny", "--scale", "8", "-o", out], "upscales x4"
    else:  # a pickle where a release file should be, with its hash in the manifest: refused, never unpickled
        f = tiny_zoo / "style-tiny.safetensors"
        torch.save({"x": torch.zeros(1)}, f)
        doc = json.loads((tiny_zoo / "MANIFEST.json").read_text())
        doc["models"]["style-tiny"]["sha256"] = zoo.sha256_file(f)
        (tiny_zoo / "MANIFEST.json").write_text(json.dumps(doc))
        expect = "not a readable safetensors file"
    r = _cli(*args, env_dir=tiny_zoo, cwd=ROOT)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], r.stderr
    assert not Path(out).exists()


def test_modelref_names_files_uris_and_shipped(tiny_zoo, tmp_path):
    from perceptual_core.checkpoint import read_checkpoint, save_checkpoint
    from pipelines import modelref

    data = modelref.checkpoint_bytes("style-tiny")
    assert read_checkpoint("style-tiny", data)["config"]["arch"] == "transform"
    p = save_checkpoint(tmp_path / "m.pt", zoo.load("sr-x4-tiny"))
    assert modelref.checkpoint_bytes(str(p)) == p.read_bytes()
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        modelref.checkpoint_bytes(str(tmp_path / "nowhere.pt"))
    with pytest.raises(ValueError, match="shipped: sr-x4-tiny, style-tiny"):
        modelref.checkpoint_bytes("no-such-model")
    shutil.rmtree(tiny_zoo)
    with pytest.raises(ValueError, match="shipped: none"):
        modelref.checkpoint_bytes("style-tiny")


@pytest.mark.slow
def test_shipped_srcnn_upscales_at_the_scale_its_name_states(data_dir, tmp_path):
    """An SRCNN network stores no scale: `--model srcnn-x4` takes it from the name (x4), any other name
    gives none."""
    from PIL import Image

    from pipelines import modelref

    assert modelref.scale_from_name("srcnn-x4") == 4 and modelref.scale_from_name("models:/srcnn-x8@champion") == 8
    assert modelref.scale_from_name("sr-x4-pixel") is None and modelref.scale_from_name("models/x.pt") is None
    if not (ROOT / "models" / "srcnn-x4.safetensors").is_file():
        pytest.skip("srcnn-x4 is not shipped")
    lr = data_dir / "Set5" / "LR_bicubic_x4" / "butterfly.png"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "upscale", str(lr), "--model", "srcnn-x4", "-o",
                        str(tmp_path / "o.png")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o.png").size == tuple(4 * s for s in Image.open(lr).size)


def test_one_loader_checks_the_task_for_every_kind_of_reference(tmp_path):
    """modelref.load_model is how the CLI, batch jobs, sr-eval and the benchmarks load a model: a shipped
    name and a file of it load the same weights, and a model of the wrong task is refused either way."""
    import torch

    model, data = modelref.load_model("sr-x4-pixel", "upscale", "cpu", scale=4)
    (tmp_path / "m.pt").write_bytes(data)
    again, _ = modelref.load_model(str(tmp_path / "m.pt"), "upscale", "cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match=r"--model sr-x4-pixel holds a 'sr' network, which cannot stylize"):
        modelref.load_model("sr-x4-pixel", "stylize")
    with pytest.raises(ValueError, match=r"--scale 8: the model .*m.pt upscales x4"):
        modelref.checked_bytes(str(tmp_path / "m.pt"), "upscale", 8)
    with pytest.raises(ValueError, match=r"--model srcnn-x4 is an SRCNN, which needs --scale"):
        modelref.checked_bytes("srcnn-x4", "upscale")
    assert modelref.checked_bytes("srcnn-x4", "upscale", modelref.scale_from_name("srcnn-x4"))[1]["arch"] == "srcnn"
