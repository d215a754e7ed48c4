"""`dvc repro` runs the pipeline in a real git + DVC repository (a copy of the project): acquire
from a folder of 32 real COCO photos plus planted bad files, prepare both patch datasets on
the session's Ray instance, one training job of each kind on Ray Train with MLflow, the
benchmarks of the trained models, promotion and the report; then nothing to do, and a forced
rerun is byte-identical; then two scheduled report runs build a history with trends. And the same
pipeline with no data folder at all, on the embedded default (builtin photos, committed paintings)."""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_benchmark import headline, headline_rows
from test_prepare import plant_bad_files

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")


def run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def make_repo(tmp_path: Path, params: dict) -> tuple[Path, dict]:
    repo = tmp_path / "repo"
    ign = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("perceptual_core", "pipelines", "models", "assets"):
        shutil.copytree(ROOT / d, repo / d, ignore=ign)
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, repo / f)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc_site"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # as with the venv activated
    env.pop("PERCEPTUAL_PARAMS", None)
    run(["git", "init", "-q"], repo, env)
    run([str(DVC), "init", "-q"], repo, env)
    run([str(DVC), "config", "core.analytics", "false"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "init"], repo, env)
    return repo, env


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_benchmarks_promotion_report(repo: Path, env: dict, client) -> None:
    """benchmark_sr / benchmark_style judged the quickly trained models (and the shipped releases, which
    register_release made champion v1 of style-la_muse, sr-x4-feat and srcnn-x4), logged to their MLflow
    runs; promotion refused the quick style, l_feat and SRCNN models against the releases, and the report
    shows every method. The DVC metrics files hold the headline; the full results are the report's input."""
    sr = json.loads((repo / "outputs/benchmark/sr_results.json").read_text())
    x4 = sr["results"]["x4"]["Set5"]
    assert set(x4) == {"standard", "blur"}
    # the shipped sr-x4-feat (champion) is judged beside the quick one; sr-x4-pixel was not trained, so its
    # champion is judged alone (as make run's quick default judges x8)
    assert set(x4["standard"]) == {"bicubic", "srcnn-official", "srcnn", "srcnn@champion", "feat", "feat@champion",
                                   "pixel@champion"}
    assert not [m for m in sr["missing"] if m["method"] == "pixel"]
    assert x4["standard"]["srcnn@champion"]["psnr_y"] > x4["standard"]["srcnn"]["psnr_y"]  # the release
    assert x4["blur"]["feat@champion"]["vgg_relu2_2"] < x4["blur"]["feat"]["vgg_relu2_2"]
    assert x4["blur"]["bicubic"]["psnr_y"] < x4["standard"]["bicubic"]["psnr_y"]  # blurred LR is harder
    assert all(v["vgg_relu2_2"] > 0 for v in x4["standard"].values())
    assert headline(repo / "metrics/benchmark_sr.json") == {"wall_seconds": sr["seconds"]}
    # a row per method: Set5 x4 Y-PSNR on the primary protocol (blur)
    assert headline_rows(repo / "metrics/benchmark_sr") == {
        m: {"Set5_x4": pytest.approx(v["psnr_y"], abs=1e-4)} for m, v in x4["blur"].items()}
    st = json.loads((repo / "outputs/benchmark/style_results.json").read_text())
    q = st["quality"]["style-la_muse"]
    assert set(q) == {"photo", "ours", "gatys2", "gatys4"} and q["gatys4"]["total_loss"] <= q["gatys2"]["total_loss"]
    rel = st["quality"]["style-la_muse@champion"]  # the release, judged on the same config
    assert rel["ours"]["total_loss"] < q["ours"]["total_loss"] and rel["gatys4"] == q["gatys4"]
    sp = st["speed"]["64"]
    assert sp["gatys2_measured"] is True and sp["gatys100_measured"] is False and sp["speedup100"] > 1
    assert headline(repo / "metrics/benchmark_style.json") == {
        "speed_size": 64, "ours_s": pytest.approx(sp["ours_s"], rel=1e-3),
        "speedup100": pytest.approx(sp["speedup100"], rel=1e-3), "wall_seconds": st["seconds"]}
    assert headline_rows(repo / "metrics/benchmark_style") == {
        "la_muse": {"total_loss": pytest.approx(q["ours"]["total_loss"], rel=1e-5)},
        "la_muse@champion": {"total_loss": pytest.approx(rel["ours"]["total_loss"], rel=1e-5)}}
    with open(repo / "plots/benchmark_style_speed.csv", newline="") as f:  # the detail: dvc plots data
        assert {(r["size"], r["iterations"]) for r in csv.DictReader(f)} >= {("64", "100"), ("48", "2")}
    for name, metric, v, decision in (("sr-x4-feat", "bench.vgg_relu2_2_mean", "2", "rejected"),
                                      ("srcnn-x4", "bench.psnr_y_mean", "2", "rejected")):
        mv = client.get_model_version(name, v)
        assert metric in client.get_run(mv.run_id).data.metrics, (name, metric)
        assert "bench.bicubic." + metric[6:] in client.get_run(mv.run_id).data.metrics  # the floor's figure
        assert mv.tags["bench.config"] and mv.tags["promotion.decision"] == decision
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    shipped = client.get_model_version("sr-x4-feat", "1")  # the release: judged too, so promote could compare
    assert shipped.tags["release.sha256"] and shipped.tags["bench.config"]
    assert "bench.vgg_relu2_2_mean" in client.get_run(shipped.run_id).data.metrics
    release = client.get_model_version_by_alias("style-la_muse", "champion")
    assert str(release.version) == "1" and release.tags["release.sha256"]
    quick = client.get_model_version_by_alias("style-la_muse", "challenger")
    assert str(quick.version) == "2" and quick.tags["promotion.decision"] == "rejected"
    assert "bench.total_loss" in client.get_run(release.run_id).data.metrics
    promo = (repo / "outputs/promotion_decisions.json").read_text()
    assert "srcnn-x4" in promo and "sr-x4-feat" in promo and "rejected" in promo
    counts = headline(repo / "metrics/promotion.json")
    assert counts["rejected"] == json.loads(promo)["counts"]["rejected"] >= 3 and counts["promoted"] == 0
    page = (repo / "reports/benchmark.html").read_text()
    for method in ("bicubic", "SRCNN (official)", "SRCNN (retrained)", "ours l_feat", "Gatys 4 it", "ours (s)",
                   "Training loss curves", "Promotion decisions", "Released models", "stride-locked pattern",
                   "git_commit"):
        assert method in page, method
    assert page.count("data:image/png;base64,") >= 8  # crops, style outputs, loss curves: inlined
    md = (repo / "reports/benchmark.md").read_text()
    assert "| x4 | Set5 |" in md and all((repo / "reports" / m).is_file()
                                         for m in re.findall(r"\]\((assets/[^)]+)\)", md))


def test_dvc_repro_whole_pipeline(tmp_path, data_dir, weights_cache, ray_address):
    coco = sorted((data_dir / "coco128_train2017" / "images").glob("*.jpg"))
    assert len(coco) == 128
    coco = coco[::4]  # 32 real photos (one of them under the SR patch's 288 px) keep the stages quick
    source = tmp_path / "photos"
    expect = plant_bad_files(source, coco[:4])
    for p in coco[4:]:
        shutil.copy(p, source / p.name)
        expect[p.name] = "ok"

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data_dir"] = str(data_dir)
    params["acquire"]["source"] = str(source)
    params["prepare_style"].update(patches_per_image=1, shard_rows=10)
    params["prepare_sr"].update(patches_per_image=1)
    b = params["benchmark"]  # Set5 (2 images), both LR protocols; tiny style and speed tables
    b["sr"].update(sets={"Set5": "Set5/HR"}, max_images=2, scales=[4], crop={"set": "Set5", "image": None, "size": 48})
    b["style"].update(size=48, gatys_iters=[2, 4])
    b["speed"].update(sizes=[48, 64], repeats=1, gatys_timed_iters=2, gatys_iters=[2, 100])
    for fam in params["promote"]["families"]:  # quick SR models cannot beat bicubic: no floor here, so the
        if not fam["match"].startswith("style"):  # scheduled runs below have SR champions (test_release: floor)
            fam.pop("baseline", None)
    tr = params["train"]  # one job of each kind, a few iterations (test_train.py covers the rest)
    tr.update(report_every=2, checkpoint_every=4)
    tr["style"].update(jobs=["la_muse"], iterations=4, crop=64, batch_size=2)
    tr["sr"].update(jobs=["x4-feat"], iterations=4, crop=64, batch_size=2)
    tr["srcnn"].update(jobs=["x4"], iterations=4, crop=64, batch_size=2)
    repo, env = make_repo(tmp_path, params)
    env["PERCEPTUAL_DATA_DIR"] = str(data_dir)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run([str(DVC), "repro"], repo, env)

    # acquire: every file of the source, bytes untouched (bad ones too: prepare judges them)
    acquired = read_csv(repo / "data/acquired/sources.csv")
    assert len(acquired) == len(expect) == 32 + 8
    assert (repo / "data/acquired/images/truncated.jpg").read_bytes() == (source / "truncated.jpg").read_bytes()

    for kind in ("style", "sr"):
        out = repo / "data" / kind
        manifest = read_csv(out / "manifest.csv")
        rejected = {r["file"]: r["kind"] for r in read_csv(out / "rejected.csv")}
        used = {m["file"] for m in manifest}
        assert all(rejected.get(f) == k for f, k in expect.items() if k != "ok")
        # nothing good is lost: every good photo gave a patch or is listed as too small (SR only)
        for f, k in expect.items():
            if k == "ok":
                assert f in used or (kind == "sr" and rejected.get(f) == "too_small"), (kind, f)
        splits = {m["split"] for m in manifest}
        assert splits == {"train", "val"}
        val_files = {m["file"] for m in manifest if m["split"] == "val"}
        assert not val_files & {m["file"] for m in manifest if m["split"] == "train"}  # split by image
        metrics = json.loads((repo / f"metrics/prepare_{kind}.json").read_text())
        assert metrics["patches"] == len(manifest) and metrics["images"] == len(used)
    style = read_csv(repo / "data/style/manifest.csv")
    assert len({m["shard"] for m in style if m["split"] == "train"}) >= 2  # shard_rows=10 rolls over
    sr_rej = {r["file"]: r["kind"] for r in read_csv(repo / "data/sr/rejected.csv")}
    assert sr_rej["small.png"] == "too_small" and sum(k == "too_small" for k in sr_rej.values()) >= 2

    # training stages: each registered its model as version 1 with alias challenger
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for job, name, v in (("style-la_muse", "style-la_muse", "2"), ("sr-x4-feat", "sr-x4-feat", "2"),
                         ("srcnn-x4", "srcnn-x4", "2")):  # v1 of each: the release
        assert headline(repo / f"outputs/train/{job}/metrics.json")["iterations"] == 4  # numbers only
        tm = json.loads((repo / f"outputs/train/{job}/summary.json").read_text())
        assert tm["iterations"] == 4 and tm["model"] == name
        assert str(client.get_model_version_by_alias(name, "challenger").version) == tm["version"] == v
        assert (repo / f"outputs/train/{job}/model.pt").is_file()

    check_benchmarks_promotion_report(repo, env, client)

    status = run([str(DVC), "status"], repo, env)
    assert "up to date" in status.stdout.lower(), status.stdout
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "run"], repo, env)
    lock = (repo / "dvc.lock").read_text()
    # a forced rerun of the data stages gives byte-identical outputs: dvc.lock's hashes do not move
    run([str(DVC), "repro", "-f", "prepare_style", "prepare_sr"], repo, env)
    assert (repo / "dvc.lock").read_text() == lock
    # DVC's own views stay readable: every metrics file of the pipeline holds a few numbers (checked by
    # headline) in keys the rows share, a row per stage, training job, SR method and style model; none of the
    # per-set/protocol/figure detail; the bare `dvc metrics show` about a screen wide
    shown = json.loads(run([str(DVC), "metrics", "show", "--json"], repo, env).stdout)
    files = shown[""]["data"]
    x4_methods = json.loads((repo / "outputs/benchmark/sr_results.json").read_text())["results"]["x4"]["Set5"]["blur"]
    rows = {f"metrics/benchmark_sr/{m}.json" for m in x4_methods} | \
        {f"metrics/benchmark_style/{m}.json" for m in ("la_muse", "la_muse@champion")}
    assert set(files) == {"metrics/prepare_style.json", "metrics/prepare_sr.json", "metrics/benchmark_sr.json",
                          "metrics/benchmark_style.json", "metrics/promotion.json"} | rows | \
        {f"outputs/train/{j}/metrics.json" for j in ("style-la_muse", "sr-x4-feat", "srcnn-x4")}
    columns = {k for f, d in files.items() for k in headline(d["data"])}
    assert columns == {"images", "rejected", "patches", "iterations", "it_per_s", "loss", "wall_seconds", "Set5_x4",
                       "total_loss", "speed_size", "ours_s", "speedup100", "promoted", "refused", "skipped"}, columns
    table = run([str(DVC), "metrics", "show"], repo, env).stdout
    print(table)
    assert "Set5_x4" in table and "vgg" not in table and "standard" not in table
    assert max(len(line.rstrip()) for line in table.splitlines()) <= 250, table

    # two scheduled runs on the champions: a Parquet history and a report with trend plots
    import pandas as pd

    for _ in range(2):
        run([sys.executable, "-m", "pipelines.cli", "report", "--schedule-run"], repo, env)
    hist = pd.read_parquet(repo / "reports/scheduled/history.parquet")
    assert hist["run"].nunique() == 2 and set(hist.groupby("run").size()) == {len(hist) // 2}
    key = "sr.x4.Set5.blur.feat.psnr_y"
    assert len(hist[hist["metric"] == key]) == 2 and (hist["models"].str.contains("sr-x4-feat:v1")).all()
    page = (repo / "reports/scheduled/benchmark.html").read_text()
    assert "Trends over the scheduled runs" in page and "champion models" in page
    assert len(list((repo / "reports/scheduled/runs").iterdir())) == 2

    # `make exp`: one experiment on a benchmark setting (only benchmark_sr, promote and report rerun); its
    # changed param first, then the figures that moved under short names, a column per row of `dvc exp show`
    # (workspace, the commit, the experiment), no dependency-hash columns, a screen wide
    run([str(DVC), "exp", "run", "-S", "benchmark.sr.max_images=1"], repo, env)
    view = run([sys.executable, "-m", "pipelines.exp_view"], repo, env).stdout
    print(view)
    lines = view.splitlines()
    assert len(lines[0].split()) == 4 and lines[3].split() == ["benchmark.sr.max_images", "1", "2", "1"], view
    labels = [ln.split()[0] for ln in lines[5:] if ln]
    assert "benchmark_sr/bicubic:Set5_x4" in labels and "benchmark_sr:wall_seconds" in labels, labels
    assert not [x for x in labels if x.startswith(("perceptual_core", "pipelines", "data", "outputs", "metrics"))]
    assert not [x for x in labels if x.startswith(("train/", "prepare"))]  # unchanged by this experiment
    assert max(len(ln) for ln in lines) <= 120, view


def test_dvc_repro_without_a_data_folder(tmp_path, weights_cache, ray_address):
    """A fresh clone without the data folder: `dvc repro` runs every stage on the embedded default (the
    builtin photos, a committed painting, the held-out builtin benchmark photos) and exits 0; the sets
    and weights only a data folder has are 'not measured' with the command that fetches them, and the
    run and the report say which data they used. Tiny settings: one style job, no SR training."""
    empty = tmp_path / "no_data"
    empty.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data_dir"] = str(tmp_path / "no_such_folder")
    assert params["acquire"]["source"] == "builtin"  # the default: photos inside the dependency wheels
    params["prepare_style"].update(patches_per_image=1)
    params["prepare_sr"].update(patches_per_image=1)
    b = params["benchmark"]
    b["sr"].update(max_images=1, scales=[4])  # the default (quick) profile's sets: Embedded, Set5, Set14
    b["style"].update(size=48, gatys_iters=[2])
    b["speed"].update(sizes=[48], repeats=1, gatys_timed_iters=1, gatys_iters=[1, 100])
    tr = params["train"]
    tr.update(report_every=2, checkpoint_every=2)
    tr["style"].update(jobs=["starry_night"], iterations=2, crop=64, batch_size=2)  # a committed painting
    tr["sr"]["jobs"], tr["srcnn"]["jobs"] = [], []
    repo, env = make_repo(tmp_path, params)
    env["PERCEPTUAL_DATA_DIR"] = str(empty)  # set, and empty: as hidden as unset with no ../shared/data
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = run([str(DVC), "repro"], repo, env)
    log = r.stdout + r.stderr

    painting = repo / "assets/styles/style_images/starry_night.jpg"
    assert f"style image of style-starry_night: {painting} (the committed painting" in log
    assert (repo / "outputs/train/style-starry_night/model.pt").is_file()
    assert {row["origin"].split(":")[0] for row in read_csv(repo / "data/acquired/sources.csv")} <= {"skimage",
                                                                                                   "matplotlib"}
    sr = json.loads((repo / "outputs/benchmark/sr_results.json").read_text())
    assert sr["data"].startswith("embedded default: ") and str(empty) in sr["data"]
    assert headline_rows(repo / "metrics/benchmark_sr") == {  # no Set5: the set measured, so named
        m: {"Embedded_x4": pytest.approx(v["psnr_y"], abs=1e-4)} for m, v in sr["results"]["x4"]["Embedded"]["blur"].items()}
    assert set(sr["results"]["x4"]) == {"Embedded"} and {"standard", "blur"} == set(sr["results"]["x4"]["Embedded"])
    gone = {m["set"]: m["reason"] for m in sr["not_measured"]}
    assert gone == {s: f"not measured: run `perceptual data fetch {s.lower()}`" for s in ("Set5", "Set14")}
    assert "Set5: not measured: run `perceptual data fetch set5`" in log
    assert any(m["method"] == "srcnn-official" and "perceptual data fetch srcnn" in m["reason"] for m in sr["missing"])
    st = json.loads((repo / "outputs/benchmark/style_results.json").read_text())
    assert st["style_images"] == {"style-starry_night": str(painting)} and st["content"][0].endswith("china.jpg")
    assert set(st["quality"]["style-starry_night"]) == {"photo", "ours", "gatys2"}
    assert st["quality"]["style-starry_night@champion"]  # the shipped release, judged on the same photo
    page = (repo / "reports/benchmark.html").read_text()
    assert "Data: embedded default: " in page and "| x4 | Embedded |" in (repo / "reports/benchmark.md").read_text()
    line = next(x for x in html.unescape(page).split("<p>") if x.startswith("Data: "))
    assert "Not measured: " in line and "the official SRCNN, the content photo amber.jpg: run " \
           "`perceptual data fetch set5 set14 srcnn styles`.</p>" in line
