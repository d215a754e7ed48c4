"""scripts/gpu_train.sh + pipelines/gpu_bundle.py: what is carried to a GPU machine that has only
torch, and a run of it here (CPU, 1 iteration) with ray, mlflow and dvc made unimportable, for a style
job and for sr-x4-feat (288² patches, from the shipped sr-x4-pixel)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from perceptual_core import vgg as vggmod
from perceptual_core import zoo
from perceptual_core.io import load_image
from pipelines import gpu_bundle, gpu_run, modelref, release

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_dir):
    """6 real COCO photos (the release trains on the 128 and the builtin ones)."""
    d = tmp_path_factory.mktemp("photos")
    for p in sorted((data_dir / "coco128_train2017" / "images").glob("*.jpg"))[:6]:
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, photos, weights_cache):
    root = tmp_path_factory.mktemp("gpu")
    doc = gpu_bundle.pack("style-starry_night", root / "bundle", photos=photos)
    return root / "bundle", doc


@pytest.fixture(scope="module")
def sr_bundle(tmp_path_factory, photos, weights_cache):
    root = tmp_path_factory.mktemp("gpu_sr")
    doc = gpu_bundle.pack("sr-x4-feat", root / "bundle", photos=photos)
    return root / "bundle", doc


def _run_script(job_arg: str, b: Path, tmp_path: Path) -> Path:
    """`scripts/gpu_train.sh run JOB_ARG` for 1 iteration on this CPU, as on the device: no Ray, MLflow
    or DVC (importing any of them fails), no data folder, no params but the bundle's."""
    blocked = tmp_path / "blocked"
    for mod in ("ray", "mlflow", "dvc"):
        (blocked / mod).mkdir(parents=True)
        (blocked / mod / "__init__.py").write_text(f"raise ImportError('{mod} is not on the GPU machine')\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PERCEPTUAL_DATA_DIR", "PERCEPTUAL_PARAMS")}
    env.update(PYTHONPATH=str(blocked), PY=sys.executable, BUNDLE=str(b), OUT=str(out), ITERATIONS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), "run", job_arg], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "no Ray" in (out / "gpu_train.log").read_text()
    several = "," in job_arg
    for d in [out / f"style-{n}" for n in job_arg.split(",")] if several else [out]:
        events = [json.loads(x) for x in (d / "events.jsonl").read_text().splitlines()]
        assert [e["iteration"] for e in events if e["event"] == "checkpoint"] == [1], d
    return out


def test_pack_carries_params_photos_style_image_and_the_loss_network(bundle):
    b, doc = bundle
    assert doc["job"] == "style-starry_night" and doc["photos"] == 6
    assert {"params.yaml", gpu_bundle.VGG_FILE, "data/styles/style_images/starry_night.jpg"} <= set(doc["files"])
    assert doc["bytes"] < 64 * gpu_bundle.MiB
    p = yaml.safe_load((b / "params.yaml").read_text())
    assert p["train"]["style"]["crop"] == 256 and p["train"]["style"]["batch_size"] == 4
    # release.gpu.style_init: shipped -> on from the shipped model (its file travels in the code's models/),
    # whatever release.style.init says, at the paper's rate (not release.style.lr, a CPU fine-tuning rate)
    shipped = {e.name: e for e in zoo.entries()}["style-starry_night"]
    assert p["train"]["style"]["init"] == {"starry_night": "style-starry_night"}
    init = doc["inits"]["style-starry_night"]
    assert init["sha256"] == shipped.sha256 and not any(f.startswith("init/") for f in doc["files"])
    assert init["record"]["iterations"] == shipped.info["iterations"] > 0  # its card counts the shipped run too
    assert p["train"]["style"]["lr"] is None and p["train"]["lr"] == 1.0e-3
    assert p["train"]["style"]["tv_weights"]["starry_night"] == 100.0  # the style's chosen objective travels
    assert p["train"]["precision"] == "bf16" and p["train"]["max_seconds"] == 480
    assert "mlflow" not in p and "acquire" not in p  # nothing of this machine's services travels
    keys = gpu_bundle.path_keys(p, "style")
    assert ("loss_network", "weights") in keys
    for key in keys:  # every path relative to the bundle, so it works wherever it lands
        assert not Path(gpu_bundle._get(p, key)).is_absolute(), key
    info = vggmod.load_loss_weights(b / gpu_bundle.VGG_FILE)
    assert info.sha256 == vggmod.LOSS_FP16_SHA256 and len(info.state_dict) == 20


def test_loss_weights_file_gives_the_verified_network(bundle, vgg, data_dir):
    b, _ = bundle
    part = vggmod.VGG16Loss.pretrained(str(b / gpu_bundle.VGG_FILE))
    assert part.info.source == "file-fp16-relu4_3"
    x = load_image(data_dir / "styles/content_images/chicago.jpg").to_tensor()[None, :, :96, :128]
    a, ref = part(x, ["relu4_3"])["relu4_3"], vgg(x, ["relu4_3"])["relu4_3"]
    assert float((a - ref).abs().max() / ref.abs().max()) < 2e-3  # fp16 storage of the weights only


def test_damaged_bundle_names_the_file(bundle, tmp_path):
    b, _ = bundle
    bad = tmp_path / "bundle"
    shutil.copytree(b, bad, ignore=shutil.ignore_patterns("work"))
    (bad / gpu_bundle.VGG_FILE).write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match=f"{gpu_bundle.VGG_FILE}: SHA-256 differs"):
        gpu_run.verify(bad)
    with pytest.raises(FileNotFoundError, match="no bundle here"):
        gpu_run.verify(tmp_path)
    (bad / gpu_bundle.VGG_FILE).write_bytes((b / gpu_bundle.VGG_FILE).read_bytes())
    doc = json.loads((bad / gpu_bundle.BUNDLE).read_text())
    doc["inits"]["style-starry_night"]["sha256"] = "0" * 64  # packed from another commit's shipped model
    (bad / gpu_bundle.BUNDLE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"style-starry_night is [0-9a-f]{12}\.\.\., not the 000000000000\.\.\. packed"):
        gpu_run.verify(bad)
    with pytest.raises(ValueError, match="unknown style 'nope'"):
        gpu_bundle.pack("style-nope", tmp_path / "x", photos=b / "data" / "acquired" / "images")


def test_gpu_train_script_runs_with_only_torch(bundle, tmp_path):
    """The device has no Ray, MLflow or DVC: importing any of them fails in this run."""
    b, _ = bundle
    out = _run_script("starry_night", b, tmp_path)  # a style's name: the job style-starry_night
    g = json.loads((out / "gpu_train.json").read_text())
    assert g["job"] == "style-starry_night" and g["iterations"] == 1 and g["device"] == "cpu"
    assert g["patches"]["train"] > 0 and g["spec"]["crop"] == 256 and g["spec"]["precision"] == "bf16"
    assert set(g["last"]) >= {"loss_total", "loss_style", "loss_content"}
    # the output is a release-format file that `--model FILE` takes as it is
    model, _ = modelref.load_model(str(out / "style-starry_night.safetensors"), "stylize")
    with torch.inference_mode():
        y = model(torch.rand(1, 3, 40, 48))
    assert y.shape == (1, 3, 40, 48) and torch.isfinite(y).all()
    # one Adam step (lr 1e-3) on from the shipped model, not from a random network; the record counts both runs
    shipped = zoo.load("style-starry_night")
    moved = max(float((a.float() - c.float()).abs().max()) for a, c in
                zip(model.state_dict().values(), shipped.state_dict().values()))
    assert moved < 3e-3
    _, rec = release._gpu_trained("style-starry_night", out)  # what `release export --from-gpu` records
    before = {e.name: e for e in zoo.entries()}["style-starry_night"].info
    assert rec["iterations"] == 1 + before["iterations"] and rec["continued_from"]["run_iterations"] == 1
    assert rec["continued_from"]["ref"] == "style-starry_night" and rec["params"]["init"] == "style-starry_night"


def test_several_styles_share_one_bundle_and_train_at_once(photos, weights_cache, tmp_path):
    """pack la_muse,starry_night_fast: the photos and the loss network once, each style image; run: one
    prepare, then each job in its own process into $OUT/JOB/, with its own objective (style 6e-5 and TV 20 for
    wave, TV 100 for starry_night_fast), and the command on record for the model card."""
    doc = gpu_bundle.pack(["style-wave", "style-starry_night_fast"], tmp_path / "bundle", photos=photos)
    assert doc["jobs"] == ["style-wave", "style-starry_night_fast"] and "job" not in doc
    assert doc["photos"] == 6 and {"data/styles/style_images/wave.jpg",
                                   "data/styles/style_images/starry_night.jpg"} <= set(doc["files"])
    p = yaml.safe_load((tmp_path / "bundle" / "params.yaml").read_text())
    assert p["train"]["style"]["jobs"] == ["wave", "starry_night_fast"]
    out = _run_script("wave,starry_night_fast", tmp_path / "bundle", tmp_path)
    for job, sw, tv in (("style-wave", 6.0e-5, 20.0), ("style-starry_night_fast", 3.0e-5, 100.0)):
        g = json.loads((out / job / "gpu_train.json").read_text())
        assert g["job"] == job and g["iterations"] == 1 and g["spec"]["weights"]["tv"] == tv
        assert g["spec"]["weights"]["style"] == sw
        assert g["command"] == "scripts/gpu_train.sh pack wave,starry_night_fast; " \
                               "scripts/gpu_train.sh run wave,starry_night_fast"
        model, _ = modelref.load_model(str(out / job / f"{job}.safetensors"), "stylize")
        assert model.config.get("width", 1.0) == (1.0 if job == "style-wave" else 0.3)
    with pytest.raises(ValueError, match="must all be style-NAME jobs"):
        gpu_bundle.pack(["style-wave", "sr-x4-pixel"], tmp_path / "x", photos=photos)
    with pytest.raises(ValueError, match=r"packed for style-wave style-starry_night_fast, not style-la_muse"):
        gpu_run.run(["style-la_muse"], tmp_path / "bundle", tmp_path / "o")


# ------------------------------------------------------------------------------------ SR: sr-x4-feat

def test_pack_sr_x4_feat_at_paper_settings_with_its_init_model(sr_bundle, tmp_path):
    """288² patches used whole, batch 4, bf16, 200,000 iterations or 480 s; the photos, the VGG-16 loss
    part (l_feat: relu2_2) and the shipped sr-x4-pixel it starts from (release.sr.init); no style image."""
    b, doc = sr_bundle
    assert doc["job"] == "sr-x4-feat" and doc["photos"] == 6 and doc["patch"] == 288
    shipped = zoo.get("sr-x4-pixel")
    assert {k: doc["init"][k] for k in ("ref", "file", "sha256")} == \
        {"ref": "sr-x4-pixel", "file": "init/sr-x4-pixel.safetensors", "sha256": shipped.sha256}
    assert {"params.yaml", gpu_bundle.VGG_FILE, "init/sr-x4-pixel.safetensors"} <= set(doc["files"])
    assert not [f for f in doc["files"] if f.startswith("data/") and not f.startswith("data/acquired/images/")]
    assert doc["bytes"] < 64 * gpu_bundle.MiB
    p = yaml.safe_load((b / "params.yaml").read_text())
    s = p["train"]["sr"]
    assert p["prepare_sr"]["size"] == 288 and s["crop"] == 288 and s["batch_size"] == 4 and s["iterations"] == 200000
    assert p["train"]["precision"] == "bf16" and p["train"]["channels_last"] is True and p["train"]["max_seconds"] == 480
    assert s["init"] == {"x4-feat": "init/sr-x4-pixel.safetensors"} and s["jobs"] == ["x4-feat"]
    assert p["train"]["style"]["jobs"] == [] and "mlflow" not in p and "acquire" not in p
    keys = gpu_bundle.path_keys(p, "sr")
    assert {("prepare_sr", "input"), ("train", "sr", "data"), ("train", "sr", "init", "x4-feat"),
            ("loss_network", "weights")} <= set(keys)
    for key in keys:
        assert not Path(gpu_bundle._get(p, key)).is_absolute(), key
    # l_pixel needs no loss network (nor, here, an init model); SRCNN is not on this path
    px = gpu_bundle.pack("sr-x4-pixel", tmp_path / "px", photos=b / "data" / "acquired" / "images")
    assert px["init"] is None and gpu_bundle.VGG_FILE not in px["files"]
    assert yaml.safe_load((tmp_path / "px" / "params.yaml").read_text())["loss_network"]["weights"] is None
    with pytest.raises(ValueError, match="only style-NAME and sr-xS-pixel"):
        gpu_bundle.pack("srcnn-x4", tmp_path / "x", photos=b / "data" / "acquired" / "images")


def test_sr_gpu_train_script_runs_with_only_torch_from_the_init_model(sr_bundle, tmp_path):
    """`scripts/gpu_train.sh run sr-x4-feat`: prepare sr --no-ray, 1 iteration from sr-x4-pixel's weights,
    an x4 model `upscale --model FILE` takes, and the record `release export --from-gpu` reads."""
    b, doc = sr_bundle
    out = _run_script("sr-x4-feat", b, tmp_path)
    g = json.loads((out / "gpu_train.json").read_text())
    assert g["job"] == "sr-x4-feat" and g["iterations"] == 1 and g["device"] == "cpu" and g["patches"]["train"] > 0
    sp = g["spec"]
    assert (sp["crop"], sp["batch_size"], sp["precision"], sp["scale"], sp["loss"]) == (288, 4, "bf16", 4, "feat")
    assert sp["init"] == "sr-x4-pixel" and sp["init_sha256"] == doc["init"]["sha256"]
    assert set(g["last"]) >= {"loss_total", "loss_content", "loss_tv"}
    model, _ = modelref.load_model(str(out / "sr-x4-feat.safetensors"), "upscale", scale=4)
    assert model.config["arch"] == "sr" and model.config["scale"] == 4
    with torch.inference_mode():
        y = model(torch.rand(1, 3, 12, 16))
    assert y.shape == (1, 3, 48, 64) and torch.isfinite(y).all()
    # it started from sr-x4-pixel: one Adam step (lr 1e-3) from it, not from a random network
    init = zoo.load("sr-x4-pixel")
    moved = max(float((a.float() - c.float()).abs().max()) for a, c in
                zip(model.state_dict().values(), init.state_dict().values()))
    assert moved < 2e-3
    _, rec = release._gpu_trained("sr-x4-feat", out)  # what `release export sr-x4-feat --from-gpu` records
    assert rec["command"] == "scripts/gpu_train.sh pack sr-x4-feat; scripts/gpu_train.sh run sr-x4-feat"
    assert rec["params"]["crop"] == 288 and rec["params"]["init"] == "sr-x4-pixel" and rec["iterations"] == 1
