"""Registry promotion (`perceptual promote`) against a real MLflow sqlite store: real registered
versions of a tiny SRCNN, bench.* metrics and bench.config tags logged as the benchmark stages do."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from perceptual_core.checkpoint import save_checkpoint
from perceptual_core.srcnn import SRCNN
from pipelines import cli, promote, tracking

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]
PSNR, TOTAL = "bench.psnr_y_mean", "bench.total_loss"
# Explicit margins, so each case below sits on a known side of them.
FAMILIES = [
    {"match": "sr-*-pixel", "metric": PSNR, "mode": "max", "min_delta": 0.05, "min_rel_delta": 0.01},
    {"match": "srcnn-*", "metric": PSNR, "mode": "max", "min_delta": 0.05},
    {"match": "style-*", "metric": TOTAL, "mode": "min", "min_rel_delta": 0.01},
    {"match": "sr-*-feat", "metric": "bench.vgg_relu2_2_mean", "mode": "min", "min_rel_delta": 0.01},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh sqlite registry and a params file whose promote section is FAMILIES (train jobs: the project's
    style, x4 l_feat and l_pixel, SRCNN x4)."""
    d = tmp_path_factory.mktemp("promote")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["promote"] = {"out": str(d / "promotion.json"), "families": FAMILIES}
    params["train"]["sr"]["jobs"], params["train"]["srcnn"]["jobs"] = ["x4-feat", "x4-pixel"], ["x4"]
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        mp.setenv("PERCEPTUAL_PARAMS", str(d / "params.yaml"))
        mp.setenv("PERCEPTUAL_CACHE_DIR", str(d / "cache"))
        yield d


def _client():
    from mlflow import MlflowClient

    return MlflowClient(tracking.tracking_uri())


def _version(store: Path, name: str, value: float | None = None, *, metric: str = PSNR, cfg: str | None = "cfg-a") -> str:
    """A trained-and-registered version (alias challenger), then what the benchmark logs for it."""
    run_id = tracking.start_run(name, {"job": name})
    model = SRCNN().eval()
    ckpt = save_checkpoint(store / f"{name}-{run_id}.pt", model)
    mv = tracking.finish_run(run_id, model, ckpt, model_name=name, example_hw=(8, 8))
    if value is not None:
        tracking.log_metrics(run_id, {metric: value}, step=0)
    if cfg is not None:
        tracking.set_version_tags(name, mv.version, {"bench.config": cfg, "bench.at": "2024-01-01T00:00:00+00:00"})
    return str(mv.version)


def _champion(name: str) -> str | None:
    v = _client().get_registered_model(name).aliases.get(promote.CHAMPION)
    return None if v is None else str(v)


def _tags(name: str, version: str) -> dict:
    return {k: v for k, v in _client().get_model_version(name, version).tags.items() if k.startswith("promotion.")}


def test_first_challenger_becomes_champion(store, capsys):
    v1 = _version(store, "srcnn-first", 27.0)
    assert cli.main(["promote", "srcnn-first", "--by", "alice"]) == 0
    assert _champion("srcnn-first") == v1
    t = _tags("srcnn-first", v1)
    assert t["promotion.decision"] == "first_champion" and t["promotion.challenger_value"] == "27.0"
    assert t["promotion.by"] == "alice" and t["promotion.at"].endswith("+00:00")
    assert "promotion.previous_champion" not in t  # nothing to roll back to
    assert "FIRST CHAMPION" in capsys.readouterr().out
    # Judged again: a no-op that writes nothing.
    d = promote.promote("srcnn-first", by="bob")
    assert d["decision"] == "already_champion" and _tags("srcnn-first", v1)["promotion.by"] == "alice"


def test_worse_challenger_is_not_promoted(store, capsys):
    v1 = _version(store, "srcnn-worse", 27.3)
    promote.promote("srcnn-worse")
    v2 = _version(store, "srcnn-worse", 27.1)
    assert cli.main(["promote", "srcnn-worse"]) == 0  # a rejection is a normal outcome
    assert _champion("srcnn-worse") == v1
    t = _tags("srcnn-worse", v2)
    assert t["promotion.decision"] == "rejected" and t["promotion.champion"] == v1
    assert float(t["promotion.delta"]) == pytest.approx(-0.2) and float(t["promotion.required"]) == 0.05
    assert t["promotion.metric"] == PSNR and t["promotion.champion_value"] == "27.3"
    out = capsys.readouterr().out
    assert "REJECTED" in out and "delta -0.2" in out and "needs >= +0.05" in out


def test_better_challenger_is_promoted_on_its_latest_metric(store, capsys):
    v1 = _version(store, "srcnn-better", 27.0)
    promote.promote("srcnn-better")
    v2 = _version(store, "srcnn-better", 26.0)  # an earlier benchmark run ...
    time.sleep(0.01)
    run_id = _client().get_model_version("srcnn-better", v2).run_id
    tracking.log_metrics(run_id, {PSNR: 27.2}, step=0)  # ... superseded by the latest one
    assert cli.main(["promote", "srcnn-better", "--by", "ci-bot"]) == 0
    assert _champion("srcnn-better") == v2
    t = _tags("srcnn-better", v2)
    assert t["promotion.decision"] == "promoted" and t["promotion.previous_champion"] == v1
    assert float(t["promotion.delta"]) == pytest.approx(0.2) and t["promotion.by"] == "ci-bot"
    assert t["promotion.bench_config"] == "cfg-a"
    assert "PROMOTED" in capsys.readouterr().out


def test_improvement_below_the_margin_is_rejected(store):
    # Absolute margin 0.05 dB: +0.03 is not enough, exactly +0.05 is (float noise tolerated).
    v1 = _version(store, "srcnn-margin", 27.0)
    promote.promote("srcnn-margin")
    _version(store, "srcnn-margin", 27.03)
    d = promote.promote("srcnn-margin")
    assert d["decision"] == "rejected" and "less than the required margin 0.05" in d["reason"]
    v3 = _version(store, "srcnn-margin", 27.05)
    assert promote.promote("srcnn-margin")["decision"] == "promoted" and _champion("srcnn-margin") == v3
    assert v1 != v3
    # Both margins apply: at 30 dB, 1 % is 0.3 dB, so +0.1 (over min_delta 0.05) is still rejected.
    _version(store, "sr-x2-pixel", 30.0)
    promote.promote("sr-x2-pixel")
    _version(store, "sr-x2-pixel", 30.1)
    d = promote.promote("sr-x2-pixel")
    assert d["decision"] == "rejected" and d["required"] == pytest.approx(0.3)
    # Lower is better with a relative margin: 1 % of 100 is 1.0; -0.5 is rejected, -1.1 promoted.
    _version(store, "style-margin", 100.0, metric=TOTAL)
    promote.promote("style-margin")
    _version(store, "style-margin", 99.5, metric=TOTAL)
    assert promote.promote("style-margin")["decision"] == "rejected"
    v3 = _version(store, "style-margin", 98.9, metric=TOTAL)
    d = promote.promote("style-margin")
    assert d["decision"] == "promoted" and d["improvement"] == pytest.approx(1.1) and _champion("style-margin") == v3


def test_missing_metric_is_refused(store, capsys):
    v1 = _version(store, "srcnn-missing", None)  # trained, never benchmarked
    assert cli.main(["promote", "srcnn-missing"]) == 1
    assert _champion("srcnn-missing") is None  # not even a first champion
    err = capsys.readouterr().out
    assert "REFUSED" in err and f"srcnn-missing v{v1}" in err and PSNR in err
    assert _tags("srcnn-missing", v1)["promotion.decision"] == "refused"

    v2 = _version(store, "srcnn-missing", 27.0)
    assert cli.main(["promote", "srcnn-missing"]) == 0 and _champion("srcnn-missing") == v2
    v3 = _version(store, "srcnn-missing", None)
    assert cli.main(["promote", "srcnn-missing"]) == 1 and _champion("srcnn-missing") == v2
    assert f"srcnn-missing v{v3}" in capsys.readouterr().out
    # The champion's side missing refuses too, even for a far better challenger.
    tracking.set_alias("srcnn-missing", promote.CHAMPION, v1)
    _version(store, "srcnn-missing", 40.0)
    d = promote.promote("srcnn-missing")
    assert d["reason_code"] == promote.MISSING and d["reason"].startswith(f"champion srcnn-missing v{v1}")
    assert _champion("srcnn-missing") == v1
    # A metric without the bench.config tag did not come from the benchmark stage.
    v5 = _version(store, "srcnn-untagged", 27.0, cfg=None)
    d = promote.promote("srcnn-untagged")
    assert d["decision"] == "refused" and "bench.config" in d["reason"] and f"v{v5}" in d["reason"]


def test_bench_config_mismatch_is_refused(store, capsys):
    v1 = _version(store, "srcnn-config", 27.0, cfg="cfg-a")
    promote.promote("srcnn-config")
    v2 = _version(store, "srcnn-config", 29.0, cfg="cfg-b")
    assert cli.main(["promote", "srcnn-config"]) == 1
    assert _champion("srcnn-config") == v1
    out = capsys.readouterr().out
    assert "different settings" in out and "cfg-a" in out and "cfg-b" in out
    assert _tags("srcnn-config", v2)["promotion.decision"] == "refused"


def test_rollback_walks_back_and_errors_without_history(store, capsys):
    v1 = _version(store, "srcnn-roll", 27.0)
    promote.promote("srcnn-roll")
    v2 = _version(store, "srcnn-roll", 27.5)
    promote.promote("srcnn-roll")
    v3 = _version(store, "srcnn-roll", 28.0)
    promote.promote("srcnn-roll")
    assert _champion("srcnn-roll") == v3

    assert cli.main(["promote", "srcnn-roll", "--rollback", "--by", "oncall"]) == 0
    assert _champion("srcnn-roll") == v2
    t = _tags("srcnn-roll", v3)
    assert t["promotion.rolled_back_to"] == v2 and t["promotion.rolled_back_by"] == "oncall"
    assert "promotion.rolled_back_at" in t
    # The demoted challenger is not re-promoted on the same figures.
    assert cli.main(["promote", "srcnn-roll"]) == 1 and _champion("srcnn-roll") == v2
    assert "rolled back" in capsys.readouterr().out
    assert _tags("srcnn-roll", v3)["promotion.rolled_back_to"] == v2  # the refusal kept the history

    assert promote.promote("srcnn-roll", rollback=True)["new_champion"] == v1
    assert _champion("srcnn-roll") == v1
    assert cli.main(["promote", "srcnn-roll", "--rollback"]) == 2  # v1 was the first champion
    assert "no earlier champion" in capsys.readouterr().err and _champion("srcnn-roll") == v1


def test_dry_run_changes_nothing(store, capsys):
    v1 = _version(store, "srcnn-dry", 27.0)
    d = promote.promote("srcnn-dry", dry_run=True)
    assert d["decision"] == "first_champion" and _champion("srcnn-dry") is None and _tags("srcnn-dry", v1) == {}
    promote.promote("srcnn-dry")
    v2 = _version(store, "srcnn-dry", 28.0)
    assert cli.main(["promote", "srcnn-dry", "--dry-run"]) == 0
    assert "PROMOTED (dry run: nothing changed)" in capsys.readouterr().out
    assert _champion("srcnn-dry") == v1 and _tags("srcnn-dry", v2) == {}
    promote.promote("srcnn-dry")
    assert promote.promote("srcnn-dry", rollback=True, dry_run=True)["new_champion"] == v1
    assert _champion("srcnn-dry") == v2 and "promotion.rolled_back_at" not in _tags("srcnn-dry", v2)


def test_all_writes_the_decisions_json(store):
    # Names from params' train jobs: srcnn-x4 is benchmarked, sr-x4-pixel is not, the rest are not registered.
    # promote.out: the DVC metrics, the counts only; promote.decisions (unset here: beside it) every decision
    out, full = store / "promotion.json", store / "promotion_decisions.json"
    v1 = _version(store, "srcnn-x4", 27.0)
    pv1 = _version(store, "sr-x4-pixel", None)
    assert cli.main(["promote", "--all", "--dry-run"]) == 1
    assert not out.exists() and not full.exists() and _champion("srcnn-x4") is None
    # As the DVC stage runs it (a subprocess: the module's own entry point).
    r = subprocess.run([sys.executable, "-m", "pipelines.promote", "--all", "--by", "dvc"], cwd=ROOT,
                       env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # a missing metric fails the stage
    res = json.loads(full.read_text())
    assert str(full) in r.stderr
    by_model = {d["model"]: d for d in res["decisions"]}
    # the DVC metrics: four columns (a first champion counts as promoted; each outcome's own count: the decisions)
    assert json.loads(out.read_text()) == {"promoted": 1, "rejected": 0, "refused": 1, "skipped": len(by_model) - 2}
    assert list(by_model) == promote.model_names() and "style-starry_night" in by_model
    assert by_model["srcnn-x4"]["decision"] == "first_champion" and by_model["srcnn-x4"]["challenger_value"] == 27.0
    assert by_model["sr-x4-pixel"]["reason_code"] == "missing_metric" and f"v{pv1}" in by_model["sr-x4-pixel"]["reason"]
    assert by_model["style-starry_night"] == {"model": "style-starry_night", "decision": "skipped",
                                             "reason_code": None, "reason": "not registered"}
    assert res["counts"]["first_champion"] == 1 and res["counts"]["refused"] == 1 and res["by"] == "dvc"
    assert "sr-x4-pixel: REFUSED" in r.stdout and _champion("srcnn-x4") == v1

    # Benchmarked later, and a worse srcnn-x4: a rejection is a normal outcome (exit 0).
    tracking.log_metrics(_client().get_model_version("sr-x4-pixel", pv1).run_id, {PSNR: 26.0}, step=0)
    _version(store, "srcnn-x4", 26.5)
    decisions, code = promote.promote_all()
    assert code == 0 and _champion("srcnn-x4") == v1 and _champion("sr-x4-pixel") == pv1
    res = json.loads(full.read_text())
    assert json.loads(out.read_text())["rejected"] == res["counts"]["rejected"] == 1
    assert [d["decision"] for d in res["decisions"] if d["model"] in ("sr-x4-pixel", "srcnn-x4")] == \
        ["first_champion", "rejected"]


def test_errors_name_the_model(store, capsys):
    assert cli.main(["promote", "srcnn-nothing"]) == 2
    assert "srcnn-nothing: no registered model" in capsys.readouterr().err
    assert cli.main(["promote", "gan-x4"]) == 2
    assert "gan-x4: no promote.families entry" in capsys.readouterr().err
    assert cli.main(["promote"]) == 2 and "NAME or --all" in capsys.readouterr().err


def test_project_params_judge_every_trained_model_on_its_paper_metric(monkeypatch):
    monkeypatch.delenv("PERCEPTUAL_PARAMS", raising=False)  # the project's params.yaml, not the test's
    want = {"style": TOTAL, "srcnn": PSNR, "pixel": PSNR, "feat": "bench.vgg_relu2_2_mean"}
    names = promote.model_names()
    assert names and all(n.startswith(("style-", "sr-", "srcnn-")) for n in names)
    for n in names:
        kind = n.split("-")[0] if not n.startswith("sr-") else n.split("-")[-1]
        f = promote.family(n)
        assert f.metric == want[kind], n
        assert f.min_delta > 0 or f.min_rel_delta > 0, f"{n}: promotion without a margin"


def test_batch_jobs_serve_promoted_versions_only(store, tmp_path, capsys):
    """A registry version reaches a batch job only once `promote` made it champion (or it is a release):
    moving an alias by hand is not enough, a rolled-back version is refused, --allow-unpromoted overrides."""
    import numpy as np
    from PIL import Image

    from pipelines import batch

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")

    def run(uri, *extra):
        return cli.main(["batch", "upscale", "--model", uri, "--scale", "4", "--input", str(tmp_path / "a.png"),
                         "--output", str(tmp_path / "out"), "--no-ray", "--overwrite", *extra])

    v1 = _version(store, "srcnn-serve", 27.0)
    assert run("models:/srcnn-serve@challenger") == 2
    err = capsys.readouterr().err
    assert f"srcnn-serve v{v1} was never promoted" in err and "--allow-unpromoted" in err
    assert not (tmp_path / "out").exists()
    tracking.set_alias("srcnn-serve", promote.CHAMPION, v1)  # an alias moved by hand proves nothing
    assert run("models:/srcnn-serve@champion") == 2 and "never promoted" in capsys.readouterr().err
    assert run("models:/srcnn-serve@champion", "--allow-unpromoted") == 0
    assert Image.open(tmp_path / "out" / "a.png").size == (80, 96)

    _client().delete_registered_model_alias("srcnn-serve", promote.CHAMPION)
    promote.promote("srcnn-serve")  # first champion: servable by alias and by version
    assert run("models:/srcnn-serve@champion") == 0 and run(f"models:/srcnn-serve/{v1}") == 0
    v2 = _version(store, "srcnn-serve", 28.0)
    promote.promote("srcnn-serve")
    spec = batch.BatchSpec.from_params(kind="upscale", model="models:/srcnn-serve@champion", input="x", output="y",
                                       scale=4)
    assert batch._checkpoint_bytes(spec)  # v2, promoted
    promote.promote("srcnn-serve", rollback=True)
    with pytest.raises(ValueError, match=f"srcnn-serve v{v2} was rolled back"):
        batch._checkpoint_bytes(batch.BatchSpec.from_params(
            kind="upscale", model=f"models:/srcnn-serve/{v2}", input="x", output="y", scale=4))
    assert batch._checkpoint_bytes(spec)  # champion is v1 again, still promoted
