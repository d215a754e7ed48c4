"""The embedded default (pipelines/embedded.py): what `dvc repro` runs on without a data folder. Its
benchmark photos are held out from every training stage, the committed paintings are the data
folder's files with their provenance, and a style job finds its painting in the data folder first,
then in the committed copy. The whole pipeline without a data folder runs in tests/test_dvc.py."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAINTINGS = ROOT / "assets" / "styles" / "style_images"


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _thumb(path: Path) -> np.ndarray:
    """16x16 grey thumbnail, zero mean, unit norm: a dot product near 1 means the same scene."""
    a = np.asarray(Image.open(path).convert("L").resize((16, 16), Image.BOX), dtype=np.float64)
    a -= a.mean()
    return a / np.linalg.norm(a)


def test_benchmark_photos_are_held_out_from_training():
    """No builtin photo the benchmarks score is one acquire trains on (the `builtin` source of `dvc repro`
    and of the releases), by package file, by content hash, or as a near copy of the same scene."""
    from pipelines import embedded
    from pipelines.acquire import builtin_path

    p = _params()
    train = [builtin_path(s) for s in p["acquire"]["builtin"]]
    assert "builtin" in p["release"]["data"]  # the releases train on the same builtin list
    specs = embedded.benchmark_specs()
    bench = [builtin_path(s) for s in specs]
    assert len(bench) >= 5 and "sklearn:china.jpg" in specs
    assert p["benchmark"]["sr"]["sets"]["Embedded"] and p["benchmark"]["style"]["content_embedded"]
    assert not set(train) & set(bench)
    digest = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in train + bench}
    assert not {digest[f] for f in train} & {digest[f] for f in bench}
    thumbs = {f: _thumb(f) for f in train}
    for f in bench:
        same = max(float((_thumb(f) * t).sum()) for t in thumbs.values())
        assert same < 0.7, f"{f.name} looks like a training photo ({same:.2f})"
    # the check sees a near copy: skimage's motorcycle_right is the stereo twin of motorcycle_left (trained on)
    twin = float((_thumb(builtin_path("skimage:motorcycle_right.png")) *
                  thumbs[builtin_path("skimage:motorcycle_left.png")]).sum())
    assert twin > 0.7


def test_committed_paintings_are_the_data_folder_files_with_provenance():
    from pipelines.data_fetch import load_manifest

    files = sorted(p.name for p in PAINTINGS.iterdir())
    assert files == ["composition_vii.jpg", "starry_night.jpg", "the_scream.jpg", "wave.jpg"]  # no La Muse
    manifest = {e.path: e for e in load_manifest()}
    sources = (ROOT / "assets" / "styles" / "SOURCES.md").read_text()
    assert "813c83441953ead2adb3f65f4cc2d5599d735fa7" in sources and "La Muse" in sources
    for name in files:
        data = (PAINTINGS / name).read_bytes()
        e = manifest[f"styles/style_images/{name}"]  # the same relative path as in the data folder
        assert hashlib.sha256(data).hexdigest() == e.sha256 and len(data) == e.bytes
        assert e.sha256 in sources and f"style_images/{name}" in sources
    tracked = (ROOT / ".gitignore").read_text() + (ROOT / "data" / ".gitignore").read_text()
    assert "assets" not in tracked  # committed, not a DVC output


def test_a_style_job_reads_the_data_folder_first_then_the_committed_painting(tmp_path, monkeypatch, capsys,
                                                                              data_dir):
    from pipelines import config, embedded, train
    from pipelines.settings import TrainSettings

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PERCEPTUAL_DATA_DIR", str(empty))
    config._ANNOUNCED.clear()
    spec = train.job_spec("style-starry_night")
    assert spec["style_image"] == str(PAINTINGS / "starry_night.jpg")
    with pytest.raises(FileNotFoundError, match=str(empty / "styles/style_images/la_muse.jpg")):
        train.job_spec("style-la_muse")  # not public domain: never committed
    assert embedded.describe().startswith("embedded default: ") and str(empty) in embedded.describe()

    monkeypatch.setenv("PERCEPTUAL_DATA_DIR", str(data_dir))
    assert train.job_spec("style-starry_night")["style_image"] == str(data_dir / "styles/style_images/starry_night.jpg")
    assert train.job_spec("style-la_muse")["style_image"] == str(data_dir / "styles/style_images/la_muse.jpg")
    assert embedded.describe() == f"data folder {data_dir}"

    # each process says once which painting the styles `dvc repro` trains use, and from where
    params = _params()
    params["train"]["style"]["jobs"] = ["starry_night", "la_muse"]
    pf = tmp_path / "params.yaml"
    pf.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(pf))
    monkeypatch.setenv("PERCEPTUAL_DATA_DIR", str(empty))
    config._ANNOUNCED.clear()
    capsys.readouterr()
    config.load(TrainSettings)
    config.load(TrainSettings)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"style image of style-starry_night: {PAINTINGS / 'starry_night.jpg'} (the committed painting: "
                   f"the data folder {empty} has none)",
                   f"style image of style-la_muse: {empty / 'styles/style_images/la_muse.jpg'} (missing: not in the "
                   f"data folder and not committed under {ROOT / 'assets'}; run `perceptual data fetch styles`)"]
    config._ANNOUNCED.clear()


def test_fetch_command_names_the_groups_of_data_folder_paths():
    from pipelines.data_fetch import fetch_command

    assert fetch_command(["Set5/HR"]) == "perceptual data fetch set5"
    assert fetch_command(["BSD100/HR", "Set14/HR/"]) == "perceptual data fetch set14 bsd100"
    assert fetch_command(["srcnn_weights/srcnn_9-5-5_imagenet_x4.mat"]) == "perceptual data fetch srcnn"
    assert fetch_command(["no/such/HR"]) is None
    with open(ROOT / "pipelines" / "data_manifest.csv", newline="") as f:
        assert all(not r["path"].startswith("Set5/") or r["group"] == "set5" for r in csv.DictReader(f))
