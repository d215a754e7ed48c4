"""`perceptual benchmark sr` on the real Set5 and Set14: the bicubic and official-SRCNN rows equal
the anchor numbers of the core issue (which match the published ones). The trained-model rows,
promotion, the report and the scheduled history run in tests/test_dvc.py through `dvc repro`.
The DVC metrics files hold a few headline numbers; every figure is in the plots CSVs and the full
results JSON the report reads."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from test_cli import ROOT, cli

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

MAX_HEADLINE = 16  # numbers per DVC metrics file: `dvc metrics show|diff` and `dvc exp show` stay readable


def flat_metrics(doc: dict, prefix: str = "") -> dict:
    """A metrics document as DVC lists it: nested keys joined with dots."""
    out = {}
    for k, v in doc.items():
        out.update(flat_metrics(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def headline(doc_or_path) -> dict:
    """A DVC metrics file (or document): at most MAX_HEADLINE keys, each a number (no string, list or
    bool: DVC shows strings as wide columns and drops lists); returns them flat."""
    doc = json.loads(Path(doc_or_path).read_text()) if isinstance(doc_or_path, (str, Path)) else doc_or_path
    flat = flat_metrics(doc)
    assert 0 < len(flat) <= MAX_HEADLINE, (doc_or_path, sorted(flat))
    bad = {k: v for k, v in flat.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    assert not bad, (doc_or_path, bad)
    return flat


def headline_rows(folder) -> dict:
    """A DVC metrics folder (a row per method or model): {row: headline numbers} of its files."""
    return {f.stem: headline(f) for f in sorted(Path(folder).glob("*.json"))}


@pytest.fixture()
def bench_params(tmp_path, data_dir):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    b = params["benchmark"]
    b.update(out_dir=str(tmp_path / "out"), metrics_dir=str(tmp_path / "metrics"), plots_dir=str(tmp_path / "plots"))
    pf = tmp_path / "params.yaml"

    def write(**sr):
        b["sr"].update(sr)
        pf.write_text(yaml.safe_dump(params))
        return {"PERCEPTUAL_PARAMS": str(pf), "PERCEPTUAL_DATA_DIR": str(data_dir),
                # an empty registry: the trained-model rows are reported as missing, not invented
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    return write


def test_sr_benchmark_anchor_rows(tmp_path, bench_params, weights_cache):
    env = bench_params(sets={"Set5": "Set5/HR", "Set14": "Set14/HR"}, scales=[4, 8], protocols=["standard"],
                       primary="standard", vgg_layers=[], crop={"set": "Set5", "image": "butterfly", "size": 64})
    r = cli("benchmark", "sr", env_extra=env)
    doc = json.loads((tmp_path / "out/sr_results.json").read_text())  # the full results: the report's input
    x4 = doc["results"]["x4"]
    # the DVC metrics: the headline only, Set5 x4 Y-PSNR per method on the primary protocol, and the time
    assert headline(tmp_path / "metrics/benchmark_sr.json") == {"wall_seconds": doc["seconds"]}
    rows = headline_rows(tmp_path / "metrics/benchmark_sr")  # a row per method, a column per scale
    want: dict = {}
    for scale in ("x4", "x8"):
        for m, v in doc["results"][scale]["Set5"]["standard"].items():
            want.setdefault(m, {})[f"Set5_{scale}"] = pytest.approx(v["psnr_y"], abs=1e-4)
    assert rows == want and set(rows) == {"bicubic", "srcnn-official"} and set(x4["Set5"]["standard"]) == set(rows)
    # anchors (MATLAB protocol, Y channel, shave 4): bicubic on the standard LR files ...
    for set_name, (p, s) in {"Set5": (28.4177, 0.8101), "Set14": (25.9933, 0.7023)}.items():
        b = x4[set_name]["standard"]["bicubic"]
        assert abs(b["psnr_y"] - p) < 5e-4 and abs(b["ssim_y"] - s) < 1e-4, (set_name, b)
    # ... and the official SRCNN 9-5-5 (published 30.48 dB on Set5)
    assert round(x4["Set5"]["standard"]["srcnn-official"]["psnr_y"], 2) == 30.48
    assert x4["Set14"]["standard"]["srcnn-official"]["psnr_y"] > x4["Set14"]["standard"]["bicubic"]["psnr_y"] + 1
    # x8 has no LR files: made from HR with MATLAB bicubic; SRCNN has no x8 weights: x4 then bicubic x2, said so
    x8 = doc["results"]["x8"]["Set5"]["standard"]
    assert x8["bicubic"]["psnr_y"] < x4["Set5"]["standard"]["bicubic"]["psnr_y"] - 3
    assert doc["labels"]["x8/srcnn-official"] == "SRCNN (official) x4 + bicubic x2"
    # models not in the registry are listed with the reason, never scored
    missing = {(m["method"], m["scale"]) for m in doc["missing"]}
    assert {("pixel", 4), ("feat", 4), ("srcnn", 4), ("pixel", 8), ("feat", 8)} <= missing
    assert "no registered model 'sr-x4-pixel'" in next(m["reason"] for m in doc["missing"] if m["method"] == "pixel")
    with open(tmp_path / "plots/benchmark_sr.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # scales x sets x (bicubic, srcnn-official): every figure of the results
    for row in rows:
        got = doc["results"][f"x{row['scale']}"][row["set"]][row["protocol"]][row["method"]]
        assert {k: float(row[k]) for k in got} == pytest.approx(got), row
    assert {r["published_psnr_y"] for r in rows if r["method"] == "bicubic" and r["scale"] == "4"} == {"28.42", "25.99"}
    from pipelines.report import anchor_line

    line = anchor_line(doc)  # the report's sentence: what this run measured, beside the published value
    assert "bicubic x4 Set5 28.42 dB (published 28.42)" in line and "SRCNN (official) x4 Set5 30.48 dB" in line
    assert "BSD100" not in line  # not measured here, so not printed
    crops = json.loads((tmp_path / "out/sr_crops.json").read_text())
    assert {(c["scale"], c["method"]) for c in crops} == {(4, "bicubic"), (4, "srcnn-official"), (8, "bicubic"),
                                                          (8, "srcnn-official")}
    assert all((tmp_path / "out" / c["file"]).is_file() for c in crops)
    assert "PSNR-Y 28.42" in r.stderr


def test_sr_benchmark_names_a_missing_set(tmp_path, bench_params):
    env = bench_params(sets={"Nowhere": "no/such/HR"}, scales=[4], protocols=["standard"], primary="standard")
    r = cli("benchmark", "sr", env_extra=env, check=False)
    assert r.returncode == 2 and "benchmark.sr.sets.Nowhere" in r.stderr and "no/such/HR" in r.stderr


def test_report_without_results_says_what_to_run(tmp_path, bench_params):
    env = bench_params()
    r = cli("report", "-o", tmp_path / "reports", env_extra=env, check=False)
    assert r.returncode == 2 and str(tmp_path / "out") in r.stderr and "dvc repro benchmark_sr" in r.stderr
    assert not (tmp_path / "reports" / "benchmark.html").exists()


def test_report_anchor_line_prints_what_was_measured():
    from pipelines.report import anchor_line

    sr = {"results": {"x4": {"Set5": {"standard": {"bicubic": {"psnr_y": 27.1}}}}}}
    assert anchor_line(sr) == ("Anchors, measured by this run on the standard LR files: bicubic x4 Set5 27.10 dB "
                               "(published 28.42).")
    assert anchor_line({"results": {"x8": {}}}) is None


def test_sr_benchmark_judges_the_champion_beside_the_challenger(tmp_path, bench_params, monkeypatch):
    """A shipped release (or an earlier promotion) is `champion`, a retrain is `challenger`: both are
    scored on the same images and both runs get bench.* metrics, so `promote` can compare them."""
    import torch
    from mlflow import MlflowClient

    from perceptual_core.checkpoint import save_checkpoint
    from perceptual_core.networks import SRNet
    from pipelines import promote, tracking

    env = bench_params(sets={"Set5": "Set5/HR"}, scales=[4], protocols=["standard"], primary="standard",
                       vgg_layers=[], srcnn_official={}, crop={"set": "Set5", "image": "bird", "size": 32})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    versions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = SRNet(scale=4, width=0.25, skip="bicubic").eval()
        run_id = tracking.start_run("sr-x4-pixel", {"job": "x"})
        ckpt = save_checkpoint(tmp_path / f"m{seed}.pt", model)
        versions.append(str(tracking.finish_run(run_id, model, ckpt, model_name="sr-x4-pixel",
                                                example_hw=(8, 8)).version))
    tracking.set_alias("sr-x4-pixel", promote.CHAMPION, versions[0])  # v2 is the challenger
    cli("benchmark", "sr", env_extra=env)
    doc = json.loads((tmp_path / "out/sr_results.json").read_text())
    got = doc["results"]["x4"]["Set5"]["standard"]
    assert headline_rows(tmp_path / "metrics/benchmark_sr") == {
        m: {"Set5_x4": pytest.approx(got[m]["psnr_y"], abs=1e-4)} for m in ("bicubic", "pixel", "pixel@champion")}
    assert {"bicubic", "pixel", "pixel@champion"} <= set(got) and got["pixel"] != got["pixel@champion"]
    assert doc["labels"]["x4/pixel@champion"] == f"ours l_pixel (champion v{versions[0]})"
    assert doc["versions"]["sr-x4-pixel@champion"]["version"] == versions[0]
    client = MlflowClient(tracking.tracking_uri())
    for v, mid in zip(versions, ("pixel@champion", "pixel")):
        mv = client.get_model_version("sr-x4-pixel", v)
        m = client.get_run(mv.run_id).data.metrics
        assert m["bench.psnr_y_mean"] == pytest.approx(got[mid]["psnr_y"], abs=1e-4) and mv.tags["bench.config"]
        assert m["bench.bicubic.psnr_y_mean"] == pytest.approx(got["bicubic"]["psnr_y"], abs=1e-4)
    from pipelines.report import sr_tables

    head = sr_tables(doc)[0][1]
    assert "ours l_pixel (champion)" in head and "ours l_pixel" in head


def test_a_set_the_data_folder_lacks_is_not_measured(tmp_path, bench_params, data_dir, weights_cache):
    """A data folder with Set5 only (no Set14, no SRCNN weights): Set5 and the builtin-photo set are
    scored, Set14 and the official SRCNN are 'not measured' with the command that fetches them, in
    the JSON, the log and the report's data line; the crops come from a set that was measured."""
    from pipelines.report import data_line

    folder = tmp_path / "data"
    (folder / "Set5").mkdir(parents=True)
    (folder / "Set5" / "HR").symlink_to(data_dir / "Set5" / "HR")
    env = bench_params(sets={"Set5": "Set5/HR", "Set14": "Set14/HR", "Embedded": ["skimage:camera.png"]},
                       scales=[4], protocols=["standard"], primary="standard", vgg_layers=[], max_images=1)
    env["PERCEPTUAL_DATA_DIR"] = str(folder)
    r = cli("benchmark", "sr", env_extra=env)
    doc = json.loads((tmp_path / "out/sr_results.json").read_text())
    assert set(doc["results"]["x4"]) == {"Set5", "Embedded"}
    assert doc["data"] == f"data folder {folder}"
    gone = {m["set"]: m for m in doc["not_measured"]}
    assert set(gone) == {"Set14"} and gone["Set14"]["reason"] == "not measured: run `perceptual data fetch set14`"
    assert gone["Set14"]["path"] == str(folder / "Set14/HR")
    off = [m for m in doc["missing"] if m["method"] == "srcnn-official"]
    assert off and off[0]["reason"] == "not measured: run `perceptual data fetch srcnn`"
    assert "Set14: not measured: run `perceptual data fetch set14`" in r.stderr
    crops = json.loads((tmp_path / "out/sr_crops.json").read_text())
    assert {c["image"] for c in crops} == {"camera"}  # not Set14 (not measured): the first set, Embedded here
    assert data_line(doc, None) == (f"Data: data folder {folder}. Not measured: Set14, the official SRCNN: "
                                    f"run `perceptual data fetch set14 srcnn`.")


def _results(sets: list[str], scales=(4, 8), protocols=("standard", "blur"), methods=(
        "bicubic", "srcnn-official", "srcnn", "srcnn@champion", "pixel", "pixel@champion", "feat", "feat@champion")):
    figs = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "vgg_relu2_2", "vgg_relu3_3")
    return {f"x{s}": {name: {p: {m: {f: 30.0 + i + 0.1 * j for j, f in enumerate(figs)} for i, m in enumerate(methods)}
                             for p in protocols} for name in sets} for s in scales}


def test_headlines_stay_a_few_numbers_whatever_was_measured():
    """Every set, scale, protocol, method and figure of the default benchmark (4 sets x 2 scales x 2
    protocols x 8 methods x 6 figures, 5 styles and their champions, 3 sizes) gives a row per method or
    model with one to two numbers in shared short keys, and a few numbers for the stage; without Set5 the
    headline set is the first set measured, so named."""
    from pipelines.benchmark import sr_headline, style_headline

    doc = {"seconds": 812.5, "results": _results(["Embedded", "Set5", "Set14", "BSD100"]), "labels": {"x4/feat": "l"}}
    stage, rows = sr_headline(doc, "blur")
    assert headline(stage) == {"wall_seconds": 812.5} and len(rows) == 8  # a row per method, a column per scale
    assert {m: set(headline(r)) for m, r in rows.items()} == {m: {"Set5_x4", "Set5_x8"} for m in rows}
    assert rows["feat@champion"]["Set5_x8"] == doc["results"]["x8"]["Set5"]["blur"]["feat@champion"]["psnr_y"]
    _, rows = sr_headline({"seconds": 1.0, "results": _results(["Embedded"], scales=(8,))}, "blur")
    assert set(rows) == {"bicubic", "srcnn-official", "srcnn", "srcnn@champion", "pixel", "pixel@champion", "feat",
                         "feat@champion"} and {k for r in rows.values() for k in r} == {"Embedded_x8"}

    q = {"photo": {"total_loss": 9.0}, "ours": {"total_loss": 2.0, "style_loss": 1.0}, "gatys500": {"total_loss": 1.5}}
    styles = ("starry_night", "composition_vii", "great_wave", "the_scream", "la_muse")
    speed = {str(n): {"ours_s": 0.01 * n, "plain_eager_s": 0.02, "gatys100_s": 3.0, "speedup100": 300.0,
                      "gatys500_s": 15.0, "speedup500": 1500.123456, "gatys500_measured": False}
             for n in (256, 512, 1024)}
    st = {"seconds": 40.0, "speed": speed, "quality": {f"style-{s}{c}": q for s in styles for c in ("", "@champion")}}
    stage, rows = style_headline(st)
    assert headline(stage) == {"speed_size": 1024, "ours_s": 10.24, "speedup500": 1500.0, "wall_seconds": 40.0}
    assert rows["great_wave@champion"] == {"total_loss": 2.0} and len(rows) == 2 * len(styles)
    assert style_headline({"seconds": 3.0, "speed": {}, "quality": {}}) == ({"wall_seconds": 3.0}, {})


def test_report_lists_the_released_style_models_with_their_bars():
    """The report's released-models table reads each shipped style model's manifest entry: its style ratio
    and the artifact bars as the card judges them; a model measured before the artifact checks shows '—'."""
    from dataclasses import replace

    from perceptual_core import zoo
    from pipelines.report.tables import released_style_table

    styles = [e for e in zoo.entries() if e.task == "stylize"]
    title, head, rows = released_style_table(zoo.entries())
    assert [r[0] for r in rows] == [e.name for e in styles] and len(head) == len(rows[0]) == 8
    for e, r in zip(styles, rows):
        m = e.info["quality"]["mean"]
        assert r[2].startswith(f"{m['ours']['style_loss'] / m['photo']['style_loss']:.3f}")
        card = e.card.read_text()
        if "artifacts" in e.info:
            frame = e.info["artifacts"]["worst"]["frame_levels"]
            assert r[5] == f"{frame:.2f} ({'met' if frame <= 4.0 else 'NOT met'})"
            assert ("no border frame" in card) and (("NOT met" in r[5]) == (f"NOT met ({frame:.2f})" in card))
    bare = replace(styles[0], info={k: v for k, v in styles[0].info.items() if k != "artifacts"})
    assert released_style_table([bare])[2][0][4:] == ["—", "—", "—", "—"]
    assert released_style_table([e for e in zoo.entries() if e.task == "upscale"]) is None
