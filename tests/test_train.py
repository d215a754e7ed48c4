"""Training on real COCO patches with 2 Ray Train workers (gloo), tracked in a real MLflow store;
a worker killed mid-run, a driver killed mid-run and a driver restart all continue from the last checkpoint."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipelines import prepare as prep
from pipelines import tracking, train
from pipelines.settings import DegradationSettings, PrepareSettings, build

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def prep_settings(kind: str, **changes):
    """(PrepareSettings, DegradationSettings) of the project params, with ``changes`` to prepare_KIND."""
    return (build(PrepareSettings, {**PARAMS[f"prepare_{kind}"], **changes}, f"params.yaml: prepare_{kind}"),
            build(DegradationSettings, PARAMS["degradation"], "params.yaml: degradation"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, data_dir, ray_address):
    """Style and SR patch datasets from 12 real COCO photos, made by the real prepare stage."""
    root = tmp_path_factory.mktemp("train_data")
    photos = root / "photos"
    photos.mkdir()
    for p in sorted((data_dir / "coco128_train2017" / "images").glob("*.jpg"))[:12]:
        shutil.copy(p, photos / p.name)
    for kind in ("style", "sr"):
        prep.prepare(kind, *prep_settings(kind, patches_per_image=2), input_dir=photos, out_dir=root / kind)
    return root


@pytest.fixture()
def tracking_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def quick(datasets: Path, tmp_path: Path, job: str, **kw) -> dict:
    data = datasets / ("style" if job.startswith("style") else "sr")
    return {"data": str(data), "out_dir": str(tmp_path / job), "iterations": 20, "report_every": 5,
            "checkpoint_every": 10, "crop": 64, "batch_size": 2, **kw}


# sr-x4-feat and srcnn-x4 train on Ray Train in test_dvc's `dvc repro` too (registered, benchmarked, refused):
# here in `pytest -m full` only, which keeps make test inside its budget (about 45 s each)
@pytest.mark.parametrize("job", ["style-la_muse", pytest.param("sr-x4-feat", marks=pytest.mark.full), "sr-x8-pixel",
                                 pytest.param("srcnn-x4", marks=pytest.mark.full)])
def test_job_trains_on_two_ray_workers_and_registers(job, datasets, tmp_path, tracking_store, weights_cache):
    from mlflow import MlflowClient

    from perceptual_core.checkpoint import load_model
    from pipelines import tracking

    s = train.run_job(job, use_ray=True, overrides=quick(datasets, tmp_path, job))
    starts = [e for e in train.read_events(tmp_path / job) if e["event"] == "start"]
    assert sorted(e["rank"] for e in starts) == [0, 1] and {e["world_size"] for e in starts} == {2}
    assert s["iterations"] == 20
    assert s["loss_end"]["loss_total"] < s["loss_start"]["loss_total"], s  # the loss falls
    client = MlflowClient(tracking_store)
    run = client.get_run(s["run_id"])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(s["run_id"], "loss_total")) == 4  # every report_every
    assert "iterations_per_s" in run.data.metrics and run.data.params["job.iterations"] == "20"
    mv = client.get_model_version_by_alias(s["model"], "challenger")
    assert str(mv.version) == s["version"] and mv.run_id == s["run_id"]
    # the registered version loads (tensor-only checkpoint) and runs on an image size it never saw
    model = load_model(tracking.resolve_model(f"models:/{s['model']}@challenger"))
    x = torch.rand(1, 1 if job.startswith("srcnn") else 3, 37, 53)
    with torch.inference_mode():
        y = model(x)
    scale = 1 if job.startswith(("style", "srcnn")) else int(job.split("-")[1][1:])
    assert y.shape[-2:] == (37 * scale, 53 * scale) and torch.isfinite(y).all()


def test_worker_killed_mid_run_continues_from_checkpoint(datasets, tmp_path, tracking_store, weights_cache):
    job = "sr-x4-pixel"
    out = tmp_path / job
    killed: dict = {}

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            ev = train.read_events(out) if out.is_dir() else []
            if any(e["event"] == "checkpoint" and e["iteration"] >= 20 for e in ev):
                pid = [e["pid"] for e in ev if e["event"] == "start" and e["rank"] == 1][-1]
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, after=max(e["iteration"] for e in ev if e["event"] == "checkpoint"))
                return
            time.sleep(0.2)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    s = train.run_job(job, use_ray=True, overrides=quick(datasets, tmp_path, job, iterations=80))
    th.join(5)
    assert killed, "the worker was never killed"
    starts = [e for e in train.read_events(out) if e["event"] == "start"]
    assert killed["pid"] in {e["pid"] for e in starts}
    # The restarted group began at the last checkpoint Ray had committed when the worker died: the
    # one at `after` (20+) or, if its report was still in flight, the one before it; never at zero.
    assert s["restarts"] >= 1 and s["resumed_from"], s
    assert killed["after"] - 10 <= min(s["resumed_from"]) <= killed["after"], (killed, s)
    assert s["iterations"] == 80


@pytest.mark.full  # ~100 s on 2 cores: the full tier (`pytest -m full`) keeps `make test` under 30 minutes
def test_driver_killed_mid_run_resumes_on_ray(datasets, tmp_path, tracking_store, weights_cache):
    """`python -m pipelines.train` SIGKILLed after a checkpoint (a lost laptop, an OOM-killed head
    process): `--resume` continues on Ray from that checkpoint, in the same MLflow run, to the end."""
    from mlflow import MlflowClient

    job = "sr-x4-pixel"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(out_dir=str(tmp_path / "train"), report_every=5, checkpoint_every=10)
    params["train"]["sr"].update(data=str(datasets / "sr"), iterations=60, crop=64, batch_size=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PERCEPTUAL_PARAMS": str(tmp_path / "params.yaml")}
    out, cmd = tmp_path / "train" / job, [sys.executable, "-m", "pipelines.train", job]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        after, deadline = None, time.time() + 300
        while after is None and time.time() < deadline and proc.poll() is None:
            ev = train.read_events(out) if (out / train.EVENTS).is_file() else []
            done = [e["iteration"] for e in ev if e["event"] == "checkpoint"]
            if done and max(done) >= 20:
                proc.kill()
                after = max(done)
            time.sleep(0.2)
        proc.wait(60)
    assert after is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()
    run_id = (out / train.RUN_ID).read_text().strip()
    r = subprocess.run([*cmd, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # A local instance has no state API: Ray Train's placement-group cleaner is kept quiet about it.
    assert "Failed to query Ray Train Controller" not in r.stdout + r.stderr
    s = json.loads((out / train.SUMMARY).read_text())
    assert s["iterations"] == 60 and s["run_id"] == run_id
    rank0 = [e["iteration"] for e in train.read_events(out) if e["event"] == "start" and e["rank"] == 0]
    # The second driver began at the last checkpoint Ray had committed for the first: the one at `after`
    # or, when its report was still in flight at the kill, the one before it; never at zero. (Ray's
    # committed checkpoint wins over the rank-0 copy in out_dir/last: on a cluster only Ray's reaches
    # every worker, and all ranks must restore the same state.)
    assert rank0[0] == 0 and after - 10 <= rank0[-1] <= after + 10 and rank0[-1] > 0, (rank0, after)
    client = MlflowClient(tracking_store)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert max(m.step for m in client.get_metric_history(run_id, "loss_total")) == 60


def test_mlflow_server_killed_mid_training_loses_nothing(datasets, tmp_path, weights_cache):
    """The tracking server SIGKILLed after the checkpoint at 20 and kept down: training goes on to the
    end (one warning line), then exits 2 with one line that keeps the weights and names --resume;
    with the server back, --resume registers the model and MLflow has every report, in the same run.
    The URI's password never appears in what the user sees."""
    from mlflow import MlflowClient

    import perceptual_services as services

    stack = services.Stack(services.StackConfig(state_dir=tmp_path / "svc", ports={"mlflow": 0}, stop_grace=5))
    try:
        url = stack.up(["mlflow"])["MLFLOW_TRACKING_URI"]
        job = "sr-x4-pixel"
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["train"].update(out_dir=str(tmp_path / "train"), report_every=10, checkpoint_every=20)
        params["train"]["sr"].update(data=str(datasets / "sr"), iterations=60, crop=64, batch_size=2)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "PERCEPTUAL_PARAMS": str(tmp_path / "params.yaml"),
               "MLFLOW_TRACKING_URI": url.replace("http://", "http://alice:hunter2@")}
        out, cmd = tmp_path / "train" / job, [sys.executable, "-m", "pipelines.train", job, "--no-ray"]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed, deadline = None, time.time() + 300
        while killed is None and time.time() < deadline and proc.poll() is None:
            ev = train.read_events(out) if (out / train.EVENTS).is_file() else []
            done = [e["iteration"] for e in ev if e["event"] == "checkpoint"]
            if done and max(done) >= 20:
                rec = stack.state["services"]["mlflow"]
                os.killpg(rec["pgid"], signal.SIGKILL)
                killed = max(done)
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=600)
        assert killed is not None and killed < 60, stderr[-3000:]
        assert proc.returncode == 2, stderr[-3000:]
        assert stderr.count("unreachable at iteration") == 1, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: MLflow http://127.0.0.1:") and "--resume" in last and "Traceback" not in stderr
        assert "hunter2" not in stdout + stderr
        assert max(e["iteration"] for e in train.read_events(out) if e["event"] == "report") == 60
        assert (out / "last" / train.STATE).is_file() and not (out / "metrics.json").exists()
        run_id = (out / train.RUN_ID).read_text().strip()

        stack.up(["mlflow"])  # the server is back, on the same port and database
        r = subprocess.run([*cmd, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "hunter2" not in r.stdout + r.stderr
        s = json.loads((out / train.SUMMARY).read_text())
        assert s["iterations"] == 60 and s["run_id"] == run_id
        client = MlflowClient(url)
        assert sorted(m.step for m in client.get_metric_history(run_id, "loss_total")) == list(range(10, 61, 10))
        assert client.get_run(run_id).info.status == "FINISHED"
        assert client.get_model_version(job, s["version"]).run_id == run_id
    finally:
        stack.down()


def test_resume_after_driver_stop_plain_pytorch(datasets, tmp_path, tracking_store, weights_cache):
    """Without Ray (a GPU box for quick checks has none): stop at 10, then --resume to 20."""
    job = "sr-x8-pixel"
    first = train.run_job(job, use_ray=False, overrides=quick(datasets, tmp_path, job, iterations=10))
    s = train.run_job(job, use_ray=False, resume=True, overrides=quick(datasets, tmp_path, job, iterations=20))
    starts = [e["iteration"] for e in train.read_events(tmp_path / job) if e["event"] == "start"]
    assert starts == [0, 10] and s["iterations"] == 20
    # the DVC metrics: four numbers every job shares (no run id, name or list: each job is a row of `dvc metrics
    # show` in the same columns); all in summary.json
    from test_benchmark import headline

    assert headline(tmp_path / job / "metrics.json") == {
        "iterations": 20, "it_per_s": s["iterations_per_s"], "loss": s["loss_end"]["loss_total"],
        "wall_seconds": s["wall_seconds"]} and json.loads((tmp_path / job / train.SUMMARY).read_text()) == s
    # --resume continues the job's MLflow run: one loss curve over both legs
    assert s["run_id"] == first["run_id"]
    from mlflow import MlflowClient

    hist = MlflowClient(tracking.tracking_uri()).get_metric_history(s["run_id"], "loss_total")
    assert sorted({m.step for m in hist}) == [5, 10, 15, 20]


def test_time_budget_stops_at_a_report_with_a_checkpoint(datasets, tmp_path, tracking_store, weights_cache):
    """`max_seconds` (a GPU lease's budget): the run ends at the next report, checkpointed and registered."""
    job = "sr-x8-pixel"
    s = train.run_job(job, use_ray=False, overrides=quick(datasets, tmp_path, job, iterations=10_000,
                                                          max_seconds=1e-3))
    events = train.read_events(tmp_path / job)
    assert s["iterations"] == 5  # report_every 5
    assert [e["iteration"] for e in events if e["event"] == "time_budget"] == [5]
    assert [e["iteration"] for e in events if e["event"] == "checkpoint"] == [5]
    assert torch.load(tmp_path / job / "last" / train.STATE, weights_only=True)["iteration"] == 5


def test_iterations_may_be_set_per_job(monkeypatch, tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["sr"]["iterations"] = {"x4-pixel": 240, "x4-feat": 120}
    params["train"]["sr"]["lr"] = {"x4-feat": 1.0e-4}  # per job too; the others keep train.lr
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(tmp_path / "params.yaml"))
    from pipelines import config

    config._load.cache_clear()
    try:
        assert train.job_spec("sr-x4-pixel")["iterations"] == 240 and train.job_spec("sr-x4-feat")["iterations"] == 120
        assert train.job_spec("sr-x4-feat")["lr"] == 1.0e-4 and train.job_spec("sr-x4-pixel")["lr"] == params["train"]["lr"]
        with pytest.raises(ValueError, match=r"train.sr.iterations has no entry for 'x8-feat'"):
            train.job_spec("sr-x8-feat")
    finally:
        monkeypatch.undo()
        config._load.cache_clear()


def test_srcnn_trains_on_the_standard_protocols_lr(monkeypatch, tmp_path):
    """train.srcnn.degradation: bicubic (the official SRCNN's data, the protocol its bar is judged on)
    feeds MATLAB bicubic of the HR crop in 8 bits instead of the prepared blur LR; an unknown value is
    refused naming the setting; per-kind report/checkpoint intervals override train's."""
    from perceptual_core.resize import imresize

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["srcnn"].update(degradation="bicubic", report_every=250, checkpoint_every=1000)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(tmp_path / "params.yaml"))
    from pipelines import config

    config._load.cache_clear()
    try:
        spec = train.job_spec("srcnn-x4")
        assert (spec["degradation"], spec["report_every"], spec["checkpoint_every"]) == ("bicubic", 250, 1000)
        assert train.job_spec("sr-x4-pixel")["degradation"] == "blur"
        hr, blur_lr = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 24, 24)
        lr = train.training_lr(hr, blur_lr, spec)
        assert torch.equal(lr, (imresize(hr, 0.25).clamp(0, 1) * 255).round() / 255)
        assert train.training_lr(hr, blur_lr, train.job_spec("sr-x4-pixel")) is blur_lr
        params["train"]["srcnn"]["degradation"] = "gauss"
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        config._load.cache_clear()
        with pytest.raises(ValueError, match=r"train.srcnn.degradation must be one of .*'gauss'"):
            train.job_spec("srcnn-x4")
    finally:
        monkeypatch.undo()
        config._load.cache_clear()


def test_unknown_job_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown style job 'style-nope'"):
        train.job_spec("style-nope")
    with pytest.raises(ValueError, match="bad job name 'sr-x4-mse'"):
        train.job_spec("sr-x4-mse")


def test_a_job_can_start_from_another_models_weights(datasets, tmp_path, tracking_store, weights_cache):
    """train.sr.init (e.g. the released l_feat model starts from the l_pixel one): the first iteration
    starts from those weights (lr 0 keeps them: the trained model is the init); a different network is
    refused before any work, naming the setting."""
    from perceptual_core.checkpoint import load_model, save_checkpoint
    from perceptual_core.networks import build_model

    net = {"arch": "sr", "scale": 4, "norm": "none", "padding": "zero", "skip": "bicubic"}
    torch.manual_seed(3)
    init = save_checkpoint(tmp_path / "init.pt", build_model(net))
    job = "sr-x4-feat"
    s = train.run_job(job, use_ray=False, overrides=quick(datasets, tmp_path, job, iterations=5, report_every=5,
                                                          model=net, init=str(init), lr=0.0))
    got, want = load_model(tmp_path / job / "model.pt"), load_model(init)
    assert s["iterations"] == 5
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    rec = json.loads((tmp_path / job / train.INIT).read_text())  # what it started from, for the model card
    assert rec["ref"] == str(init) and rec["checkpoint_sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=r"train.sr.init of sr-x4-feat: .*init.pt holds .* not the job's network"):
        train.run_job(job, use_ray=False, overrides=quick(datasets, tmp_path, job, iterations=5, init=str(init)))
