"""The release in the registry (pipelines/release register, the DVC stage register_release) on a real
MLflow sqlite store, and the promotion floor: a version must beat its family's baseline to become champion."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import promote, release, tracking

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path, tiny_zoo, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["release"].update(models_dir=str(tiny_zoo), registered=str(tmp_path / "release.json"))
    params["train"]["style"]["jobs"] = ["tiny"]
    params["train"]["sr"]["jobs"], params["train"]["srcnn"]["jobs"] = [], []
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PERCEPTUAL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _client():
    from mlflow import MlflowClient

    return MlflowClient(tracking.tracking_uri())


def test_register_release_once_as_champion_and_loadable(store, tmp_path):
    from perceptual_core import zoo
    from perceptual_core.checkpoint import load_model, save_checkpoint

    first = release.register()
    again = release.register()  # idempotent: found by its release.sha256 tag
    assert [d["version"] for d in first] == [d["version"] for d in again] == ["1", "1"]
    c = _client()
    for name in ("sr-x4-tiny", "style-tiny"):
        assert len(c.search_model_versions(f"name='{name}'")) == 1
        mv = c.get_model_version_by_alias(name, "champion")
        assert mv.tags[release.RELEASE_TAG] == zoo.get(name).sha256
    assert json.loads((tmp_path / "release.json").read_text())[1]["champion"] == "1"
    assert promote.unservable("models:/style-tiny@champion") is None  # a release serves batch jobs
    # the registered checkpoint is the shipped network (same weights through models:/ as by name)
    import torch

    a = load_model(tracking.resolve_model("models:/style-tiny@champion"))
    b = zoo.load("style-tiny")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # a quick retrain registers a challenger; the release stays champion until promote says otherwise
    run_id = tracking.start_run("style-tiny", {"job": "quick"})
    ckpt = save_checkpoint(tmp_path / "quick.pt", b)
    tracking.finish_run(run_id, b, ckpt, model_name="style-tiny", example_hw=(32, 32))
    assert str(c.get_registered_model("style-tiny").aliases["champion"]) == "1"
    release.register()
    assert str(c.get_registered_model("style-tiny").aliases["champion"]) == "1"
    assert len(c.search_model_versions("name='style-tiny'")) == 2


def _benchmarked(tmp_path, name: str, metrics: dict, cfg: str = "cfg") -> str:
    from perceptual_core import zoo

    model = zoo.load("style-tiny")
    from perceptual_core.checkpoint import save_checkpoint

    run_id = tracking.start_run(name, {"job": name})
    ckpt = save_checkpoint(tmp_path / f"{run_id}.pt", model)
    mv = tracking.finish_run(run_id, model, ckpt, model_name=name, example_hw=(32, 32))
    tracking.log_metrics(run_id, metrics, step=0)
    tracking.set_version_tags(name, mv.version, {"bench.config": cfg})
    return str(mv.version)


def test_promotion_floor_refuses_a_bad_first_challenger(store, tmp_path):
    """A deliberately bad model (worse than the unchanged photo) never becomes champion, even first."""
    bad = _benchmarked(tmp_path, "style-tiny", {"bench.total_loss": 9.0e5, "bench.photo.total_loss": 6.6e5})
    dec = promote.promote("style-tiny")
    assert dec["decision"] == "rejected" and dec["reason_code"] == promote.BELOW_BASELINE, dec
    assert "champion" not in _client().get_registered_model("style-tiny").aliases
    assert _client().get_model_version("style-tiny", bad).tags["promotion.baseline_value"] == "660000.0"
    good = _benchmarked(tmp_path, "style-tiny", {"bench.total_loss": 4.0e5, "bench.photo.total_loss": 6.6e5})
    dec = promote.promote("style-tiny")
    assert dec["decision"] == "first_champion" and dec["new_champion"] == good
    # a challenger without the baseline figure is refused, not waved through
    _benchmarked(tmp_path, "style-tiny", {"bench.total_loss": 1.0e5})
    dec = promote.promote("style-tiny")
    assert dec["decision"] == "refused" and dec["reason_code"] == promote.MISSING and "baseline" in dec["reason"]


def test_release_params_train_on_the_release_photos_only(store, data_dir):
    p = release.release_params()
    src = p["acquire"]["source"]  # the data folder may be reached through a symlink: compare real paths
    assert src[0] == "builtin" and Path(src[1]).resolve() == (data_dir / "coco128_train2017/images").resolve()
    for stage in ("prepare_style", "prepare_sr"):
        assert p[stage]["input"].startswith(str(release.workdir()))
    bench = {(data_dir / v).resolve() for v in yaml.safe_load((ROOT / "params.yaml").read_text())["benchmark"]["sr"]["sets"].values()
             if isinstance(v, str)}  # the builtin-photo sets: held out from `builtin` (tests/test_embedded.py)
    assert not any(Path(s).resolve() in bench for s in src[1:])
    assert p["train"]["style"]["iterations"] == yaml.safe_load((ROOT / "params.yaml").read_text())["release"]["style"]["iterations"]


def test_release_training_announces_the_painting_it_trains(store, tmp_path, capfd, data_dir):
    """`release train style-wave` runs its stages with train.style.jobs narrowed to wave: the log names
    wave's painting, not the styles `dvc repro`'s quick run trains (it said starry_night)."""
    from pipelines import config, jobname
    from pipelines.release import training

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["release"]["workdir"] = str(tmp_path / "work")
    params["train"]["style"]["jobs"] = ["starry_night"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    config._load.cache_clear()
    load = ("from pipelines import config, log; from pipelines.settings import TrainSettings; "
            "log.setup(); config.load(TrainSettings)")
    assert training._run_steps([["-c", load]], jobname.parse("style-wave")) == 0
    err = capfd.readouterr().err
    assert "style image of style-wave: " in err and "style-starry_night" not in err
    written = yaml.safe_load((tmp_path / "work/params.yaml").read_text())
    assert written["train"]["style"]["jobs"] == ["wave"]


def test_registered_versions_serve_through_mlflow_pyfunc(store, tmp_path):
    """MLflow's own tools on a registered version: pyfunc load and `mlflow models serve` on 127.0.0.1."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow.pyfunc
    import numpy as np
    import torch

    from perceptual_core import zoo

    release.register()
    x = np.random.default_rng(0).random((1, 3, 37, 50), dtype=np.float32)  # any size, odd included
    with torch.inference_mode():
        want = zoo.load("style-tiny")(torch.from_numpy(x)).clamp(0, 1).numpy()
    got = mlflow.pyfunc.load_model("models:/style-tiny@champion").predict(x)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", "models:/style-tiny@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env={**os.environ, "PATH": f"{mlflow_bin.parent}:{os.environ['PATH']}"},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        body = json.dumps({"inputs": x.tolist()}).encode()
        deadline, answer = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = json.loads(r.read())
                break
            except OSError:
                time.sleep(1)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-2000:]
        out = np.asarray(answer["predictions"], dtype=np.float32)
        assert out.shape == want.shape and np.abs(out - want).max() < 1e-4
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _small_export_params(tmp_path: Path) -> Path:
    """The store's params with a small quality check (48 px, one photo, Gatys 2) and a `tiny` style."""
    from pipelines import config

    wd = tmp_path / "work"
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["release"].update(workdir=str(wd), models_dir=str(tmp_path / "shipped"))
    params["release"]["quality"].update(size=48, gatys_iters=[2], content=params["release"]["quality"]["content"][:1])
    params["release"]["reference"]["size"] = 64
    params["release"]["artifacts"].update(size=160, pad=64, band=16, photos=params["release"]["quality"]["content"][:1])
    params["batch"]["tile"] = 64  # so the artifact check's tiled run has seams to look at
    params["train"]["style"]["styles"]["tiny"] = "styles/style_images/la_muse.jpg"
    params["release"]["style"]["tv_weights"] = {**params["release"]["style"].get("tv_weights", {}), "tiny": 0.5}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    config._load.cache_clear()
    return wd


def _training_run(wd: Path, job: str, model, run_id: str, *, iterations: int, rate: float, losses: tuple,
                  seconds: float) -> None:
    """What `release train JOB` leaves in the workdir: its params, the checkpoint, summary.json, events."""
    from perceptual_core.checkpoint import save_checkpoint

    jdir = wd / "train" / job
    jdir.mkdir(parents=True)
    (wd / "params.yaml").write_text(yaml.safe_dump(release.release_params()))
    save_checkpoint(jdir / "model.pt", model, meta={"run_id": run_id})
    (jdir / "summary.json").write_text(json.dumps({"iterations": iterations, "iterations_per_s": rate,
                                                   "loss_start": {"loss_total": losses[0]},
                                                   "loss_end": {"loss_total": losses[1]}}))
    (jdir / "events.jsonl").write_text(json.dumps({"time": 100.0, "event": "start", "rank": 0}) + "\n" +
                                       json.dumps({"time": 100.0 + seconds, "event": "report", "rank": 0}) + "\n")


def _tiny_style_net():
    import torch

    from perceptual_core.networks import build_model

    torch.manual_seed(0)
    return build_model({"arch": "transform", "width": 0.25, "norm": "instance", "padding": "reflect",
                        "upsample": "nearest"}).eval()


def test_export_from_a_gpu_run_replaces_the_model_and_says_so(store, tmp_path, weights_cache, data_dir):
    """`release export JOB --from-gpu DIR` ships the output folder of `scripts/gpu_train.sh run`."""
    from perceptual_core import zoo
    from pipelines import config

    _small_export_params(tmp_path)
    gdir = tmp_path / "gpu_out"
    gdir.mkdir()
    model = _tiny_style_net()
    sha = zoo.save_release(gdir / "style-tiny.safetensors", model, half=False)
    rec = {"job": "style-tiny", "device": "NVIDIA H200", "torch": "2.11.0", "iterations": 9000, "train_seconds": 470.0,
           "iterations_per_s": 19.5, "last": {"loss_total": 1.0, "loss_style": 0.5},
           "spec": {"crop": 256, "batch_size": 4, "precision": "bf16", "channels_last": True, "lr": 1e-3,
                    "weights": {"content": 1.0, "style": 2e-5, "tv": 7.0}},  # what it trained on, as recorded
           "model": {"file": "style-tiny.safetensors", "sha256": sha},
           "command": "scripts/gpu_train.sh pack tiny,other; scripts/gpu_train.sh run tiny,other 330"}
    (gdir / "gpu_train.json").write_text(json.dumps(rec))
    (gdir / "events.jsonl").write_text(json.dumps({"time": 1.0, "event": "report", "loss_total": 3.0}) + "\n")
    entry = release.export("style-tiny", from_gpu=gdir)
    card = (tmp_path / "shipped" / "style-tiny.md").read_text()
    assert entry["iterations"] == 9000 and entry["training"]["device"] == "NVIDIA H200"
    assert "NVIDIA H200" in card and "replaces the CPU-trained one" in card and "total 3 -> 1" in card
    assert entry["training"]["params"]["crop"] == 256 and entry["training"]["params"]["precision"] == "bf16"
    assert "init" not in entry["training"]["params"]  # from scratch: no CPU model's continuation on the card
    assert entry["objective_weights"] == {"content": 1.0, "style": 2e-5, "tv": 7.0}  # scored on what it trained on
    # a run that recorded no tv_size weighed TV as on its crops, whatever the release params say now
    assert entry["training"]["params"]["tv_size"] is None and "as it weighs at" not in card
    assert "`scripts/gpu_train.sh pack tiny,other; scripts/gpu_train.sh run tiny,other 330`" in card
    assert zoo.get("style-tiny", tmp_path / "shipped").sha256 == entry["sha256"]
    rec["job"] = "style-other"
    (gdir / "gpu_train.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="trained 'style-other', not 'style-tiny'"):
        release.export("style-tiny", from_gpu=gdir)
    with pytest.raises(FileNotFoundError, match="output folder of scripts/gpu_train.sh run"):
        release.export("style-tiny", from_gpu=tmp_path)
    # a later lease goes on from the shipped model (release.gpu.style_init: shipped; the bundle records it): the
    # card counts both runs and says where each ran
    shipped = zoo.get("style-tiny", tmp_path / "shipped")
    sha = zoo.save_release(gdir / "style-tiny.safetensors", _tiny_style_net(), half=False)
    rec.update(job="style-tiny", iterations=500, train_seconds=30.0, model={"file": "style-tiny.safetensors", "sha256": sha})
    rec["spec"].update(init="style-tiny", init_sha256=shipped.sha256, init_record={
        "ref": "style-tiny", "sha256": shipped.sha256, "iterations": 9000, "wall_seconds": 470.0,
        "device": "NVIDIA H200, then 2 CPU cores", "loss_start": {"loss_total": 3.0}, "mlflow_run_id": None})
    (gdir / "gpu_train.json").write_text(json.dumps(rec))
    entry = release.export("style-tiny", from_gpu=gdir)
    card = (tmp_path / "shipped" / "style-tiny.md").read_text()
    assert entry["iterations"] == 9500 and entry["training"]["continued_from"]["run_iterations"] == 500
    assert entry["training"]["params"]["init"] == "style-tiny" and "it continues the shipped model" in card
    assert "on NVIDIA H200, then 2 CPU cores, then NVIDIA H200," in card and "for 500 more" in card
    config._load.cache_clear()


def test_export_writes_file_card_and_manifest_from_a_training_run(store, tmp_path, weights_cache, data_dir):
    """`release export` on a real (tiny) training run's outputs: the tensor-only file, its SHA-256 in
    the manifest and the card, the fp16 check, the quality table, the artifact checks and the reference
    statistics; then `release artifacts` measures the shipped file again."""
    from perceptual_core import zoo
    from pipelines import config

    wd = _small_export_params(tmp_path)
    torch = __import__("torch")
    _training_run(wd, "style-tiny", _tiny_style_net(), "r1", iterations=7, rate=0.5, losses=(2.0, 1.0), seconds=60.0)
    entry = release.export("style-tiny")
    shipped = tmp_path / "shipped"
    e = zoo.get("style-tiny", shipped)
    assert e.sha256 == entry["sha256"] == zoo.sha256_file(e.file) and entry["fp16_psnr_db"] >= 40
    card = (shipped / "style-tiny.md").read_text()
    assert e.sha256 in card and "the photo itself" in card and "Gatys 2 iterations" in card and "0.02 h" in card
    # scored on the objective it trained on: the release's TV weight for the style, not `dvc repro`'s
    assert entry["objective_weights"]["tv"] == 0.5 and "TV 0.5)" in card
    # and trained with it as it weighs at the scoring size: 16x on the release's 128² crops (losses.tv_scale)
    assert "- TV weight 0.5 as it weighs at 362 px" in card and "128² crops trained with 0.5 x 8 = 4" in card
    q = entry["quality"]["mean"]
    assert set(q) == {"photo", "ours", "gatys2"} and q["gatys2"]["total_loss"] <= q["photo"]["total_loss"]
    assert (shipped / entry["sample"]).is_file() and len(entry["reference"]["mean"]) == 3
    assert zoo.load("style-tiny", folder=shipped)(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    a = entry["artifacts"]
    assert a["size"] == 160 and a["tile"] == 64 and len(a["photos"]) == 1 and a["photos"][0]["shape"][1] == 160
    assert a["worst"]["seam_psnr_db"] > 40 and a["photos"][0]["border"]["interior"] < 1.0  # levels
    assert a["worst"]["lattice_photo_levels"] < 0.5 and "## Artifacts (measured)" in card and "no tile seams" in card
    assert a["worst"]["blob_fill"] == a["photos"][0]["blobs"]["block_fill"] and "no white blobs" in card
    # `release artifacts [JOB]`: the shipped file measured again onto its manifest entry and card; a name
    # that is not a shipped style model is a one-line error naming the manifest, exit 2
    from pipelines.release import main

    doc = json.loads((shipped / "MANIFEST.json").read_text())
    del doc["models"]["style-tiny"]["artifacts"]
    (shipped / "MANIFEST.json").write_text(json.dumps(doc))
    (shipped / "style-tiny.md").write_text("stale")
    assert main(["artifacts"]) == 0  # every shipped style model
    again = json.loads((shipped / "MANIFEST.json").read_text())["models"]["style-tiny"]["artifacts"]
    assert again["worst"] == a["worst"] and "## Artifacts (measured)" in (shipped / "style-tiny.md").read_text()
    assert main(["artifacts", "style-nope"]) == 2
    config._load.cache_clear()


def test_a_model_continued_from_its_release_counts_both_runs(store, tmp_path, weights_cache, data_dir, monkeypatch):
    """A release run started from the shipped model (`release.style.init`, e.g. {wave: style-wave}): the
    training's init record names the shipped file, and the new export's iterations, wall time and first
    loss count the earlier run's too; the card says what it continued from."""
    from perceptual_core import zoo
    from pipelines import config
    from pipelines.modelref import checkpoint_bytes
    from pipelines.train import INIT
    from pipelines.train.spec import init_record

    wd = _small_export_params(tmp_path)
    monkeypatch.setenv("PERCEPTUAL_MODELS_DIR", str(tmp_path / "shipped"))
    _training_run(wd, "style-tiny", _tiny_style_net(), "r1", iterations=7, rate=0.5, losses=(9.0, 3.0), seconds=3600.0)
    first = release.export("style-tiny")
    rec = init_record("style-tiny", checkpoint_bytes("style-tiny"))  # what the driver writes at the start
    assert rec["sha256"] == first["sha256"] and rec["iterations"] == 7 and rec["mlflow_run_id"] == "r1"
    shutil.rmtree(wd / "train" / "style-tiny")
    _training_run(wd, "style-tiny", _tiny_style_net(), "r2", iterations=5, rate=0.5, losses=(4.0, 2.0), seconds=1800.0)
    (wd / "train" / "style-tiny" / INIT).write_text(json.dumps(rec))
    second = release.export("style-tiny")
    tr = second["training"]
    assert second["iterations"] == 12 and tr["wall_seconds"] == 5400.0 and tr["loss_start"] == {"loss_total": 9.0}
    assert tr["continued_from"]["run_iterations"] == 5 and tr["continued_from"]["sha256"] == first["sha256"]
    card = (tmp_path / "shipped" / "style-tiny.md").read_text()
    assert "iterations: 12;" in card and "1.50 h" in card
    assert f"continued from the shipped `style-tiny` (SHA-256 `{first['sha256'][:12]}...`: 7 iterations" in card
    assert zoo.get("style-tiny", tmp_path / "shipped").info["training"]["continued_from"]["ref"] == "style-tiny"
    config._load.cache_clear()


def test_export_of_an_sr_model_scores_it_beside_bicubic_on_both_protocols(store, tmp_path, weights_cache, data_dir):
    """`release export sr-x4-pixel`: benchmark_sr's protocol on Set5 (standard LR files and blur), bicubic
    beside the network (its published Set5 figure reproduced), the bar on the card, a bicubic | net | HR strip."""
    import torch

    from perceptual_core import zoo
    from perceptual_core.networks import build_model
    from pipelines import config

    wd = _small_export_params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["release"]["sr_quality"]["sets"] = ["Set5"]
    params["benchmark"]["sr"]["vgg_layers"] = ["relu2_2"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    config._load.cache_clear()
    torch.manual_seed(0)
    model = build_model({"arch": "sr", "scale": 4, "width": 0.25, "norm": "none", "skip": "bicubic"}).eval()
    _training_run(wd, "sr-x4-pixel", model, "r2", iterations=5, rate=2.0, losses=(0.2, 0.1), seconds=36.0)
    entry = release.export("sr-x4-pixel")
    rows = {(r["set"], r["protocol"], r["method"]): r for r in entry["quality"]["rows"]}
    assert set(rows) == {("Set5", p, m) for p in ("standard", "blur") for m in ("bicubic", "ours")}
    assert abs(rows[("Set5", "standard", "bicubic")]["psnr_y"] - 28.42) < 0.05  # the published bicubic row
    # the blur protocol loses detail before the bicubic: bicubic scores lower there
    assert rows[("Set5", "blur", "bicubic")]["psnr_y"] < rows[("Set5", "standard", "bicubic")]["psnr_y"]
    assert all(r["vgg_relu2_2"] > 0 and r["images"] == 5 for r in rows.values())
    card = (tmp_path / "shipped" / "sr-x4-pixel.md").read_text()
    assert "(published 28.42)" in card and "1.0 dB Y-PSNR above bicubic on the blur protocol" in card
    assert "NOT met" in card  # an untrained network does not beat bicubic by 1 dB
    assert "not the paper's network: a global bicubic skip" in card and "no normalisation" in card
    assert "perceptual upscale photo.jpg --model sr-x4-pixel" in card
    from perceptual_core.io import load_image

    strip = load_image(tmp_path / "shipped" / entry["sample"]).pixels
    assert strip.shape[:2] == (128, 3 * 128)
    assert zoo.get("sr-x4-pixel", tmp_path / "shipped").sha256 == entry["sha256"]
    config._load.cache_clear()
