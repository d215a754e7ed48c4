"""scripts/gpu_train.sh + pipelines/gpu_bundle.py: what is carried to a GPU machine that has only
torch, and a run of it here (CPU, 2 iterations) with ray, mlflow and dvc made unimportable."""
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
from perceptual_core.io import load_image
from pipelines import gpu_bundle, modelref

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data_dir, weights_cache):
    root = tmp_path_factory.mktemp("gpu")
    photos = root / "photos"
    photos.mkdir()
    for p in sorted((data_dir / "coco128_train2017" / "images").glob("*.jpg"))[:6]:
        shutil.copy(p, photos / p.name)
    doc = gpu_bundle.pack("style-starry_night", root / "bundle", photos=photos)
    return root / "bundle", doc


def test_pack_carries_params_photos_style_image_and_the_loss_network(bundle):
    b, doc = bundle
    assert doc["job"] == "style-starry_night" and doc["photos"] == 6
    assert {"params.yaml", gpu_bundle.VGG_FILE, "data/styles/style_images/starry_night.jpg"} <= set(doc["files"])
    assert doc["bytes"] < 64 * gpu_bundle.MiB
    p = yaml.safe_load((b / "params.yaml").read_text())
    assert p["train"]["style"]["crop"] == 256 and p["train"]["style"]["batch_size"] == 4
    assert p["train"]["precision"] == "bf16" and p["train"]["max_seconds"] == 480
    assert "mlflow" not in p and "acquire" not in p  # nothing of this machine's services travels
    for key in gpu_bundle.PATH_KEYS:  # every path relative to the bundle, so it works wherever it lands
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
        gpu_bundle.verify(bad)
    with pytest.raises(FileNotFoundError, match="no bundle here"):
        gpu_bundle.verify(tmp_path)
    with pytest.raises(ValueError, match="unknown style 'nope'"):
        gpu_bundle.pack("style-nope", tmp_path / "x", photos=b / "data" / "acquired" / "images")


def test_gpu_train_script_runs_with_only_torch(bundle, tmp_path):
    """The device has no Ray, MLflow or DVC: importing any of them fails in this run."""
    b, _ = bundle
    blocked = tmp_path / "blocked"
    for mod in ("ray", "mlflow", "dvc"):
        (blocked / mod).mkdir(parents=True)
        (blocked / mod / "__init__.py").write_text(f"raise ImportError('{mod} is not on the GPU machine')\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PERCEPTUAL_DATA_DIR", "PERCEPTUAL_PARAMS")}
    env.update(PYTHONPATH=str(blocked), PY=sys.executable, BUNDLE=str(b), OUT=str(out), ITERATIONS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh"), "run", "starry_night"], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    g = json.loads((out / "gpu_train.json").read_text())
    assert g["job"] == "style-starry_night" and g["iterations"] == 1 and g["device"] == "cpu"
    assert g["patches"]["train"] > 0 and g["spec"]["crop"] == 256 and g["spec"]["precision"] == "bf16"
    assert set(g["last"]) >= {"loss_total", "loss_style", "loss_content"}
    assert "no Ray" in (out / "gpu_train.log").read_text()
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in events if e["event"] == "checkpoint"] == [1]
    # the output is a release-format file that `--model FILE` takes as it is
    model, _ = modelref.load(str(out / "style-starry_night.safetensors"), "stylize")
    with torch.inference_mode():
        y = model(torch.rand(1, 3, 40, 48))
    assert y.shape == (1, 3, 40, 48) and torch.isfinite(y).all()
