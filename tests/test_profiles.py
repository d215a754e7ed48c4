"""Benchmark profiles (params.yaml benchmark.profile): `make run`'s quick one has no BSD100 and no 1024²
speed row, `full` adds them and keeps everything else, and an unknown profile is a one-line error naming the setting."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import config
from pipelines.settings import BenchmarkSettings, plain

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, monkeypatch, profile: str) -> BenchmarkSettings:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["benchmark"]["profile"] = profile  # as `dvc exp run -S benchmark.profile=...` writes it
    f = tmp_path / f"params_{profile}.yaml"
    f.write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(f))
    return config.load(BenchmarkSettings)


def test_quick_is_the_default_and_full_adds_bsd100(tmp_path, monkeypatch):
    quick = config.load(BenchmarkSettings)
    assert quick.profile == "quick" and list(quick.sr.sets) == ["Embedded", "Set5", "Set14"]
    assert quick.sr.scales == (4, 8)
    full = _bench(tmp_path, monkeypatch, "full")
    assert full.profile == "full" and list(full.sr.sets) == ["Embedded", "Set5", "Set14", "BSD100"]
    assert full.sr.sets["BSD100"] == "BSD100/HR"
    assert {k: v for k, v in plain(full.sr).items() if k != "sets"} == \
        {k: v for k, v in plain(quick.sr).items() if k != "sets"}
    assert full.style == quick.style
    assert quick.speed.sizes == (256, 512) and full.speed.sizes == (256, 512, 1024)  # the paper's Table 1 sizes
    assert {k: v for k, v in plain(full.speed).items() if k != "sizes"} == \
        {k: v for k, v in plain(quick.speed).items() if k != "sizes"}


def test_an_unknown_profile_is_refused_naming_the_setting(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"benchmark.profile 'fast' is not one of quick, full"):
        _bench(tmp_path, monkeypatch, "fast")
