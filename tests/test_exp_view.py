"""`make exp` (pipelines/exp_view.py): DVC's experiments table turned round and shortened. The real
`dvc exp run`/`exp show` pair is in test_dvc's whole-pipeline test; these pin the naming and layout."""
from pipelines.exp_view import DEPS, is_param, short, table
import re


def test_metric_columns_get_short_names_params_stay():
    assert short("outputs/train/style-la_muse/metrics.json:loss") == ("train/style-la_muse", "loss")
    assert short("metrics/benchmark_sr/pixel@champion.json:Set5_x4") == ("benchmark_sr/pixel@champion", "Set5_x4")
    assert short("metrics/benchmark_sr.json:wall_seconds") == ("benchmark_sr", "wall_seconds")
    assert short("train.style.iterations") == ("", "train.style.iterations")
    assert is_param("train.style.iterations") and not is_param("metrics/promotion.json:promoted")
    assert not is_param("speedup100") and not is_param("perceptual_core/io.py")


def test_dependency_columns_are_dropped_metrics_and_params_kept():
    drop = re.compile(DEPS)
    for dep in ("perceptual_core", "pipelines/train", "data/style", "outputs/train", "metrics/benchmark_sr.json",
                "assets", "models", "pipelines/settings/data.py"):
        assert drop.match(dep), dep
    for kept in ("outputs/train/style-la_muse/metrics.json:loss", "metrics/benchmark_sr.json:wall_seconds",
                 "data_dir", "train.style.iterations", "ours_s"):
        assert not drop.match(kept), kept


def test_table_has_a_column_per_experiment_and_params_first():
    rows = [
        {"Experiment": "", "rev": "workspace", "typ": "baseline", "Created": "",
         "metrics/benchmark_sr/bicubic.json:Set5_x4": "31.216", "train.lr": "0.001"},
        {"Experiment": "", "rev": "main", "typ": "baseline", "Created": "2026-12-03T11:48:57",
         "metrics/benchmark_sr/bicubic.json:Set5_x4": "30.36412345", "train.lr": "0.002"},
        {"Experiment": "cured-lulu", "rev": "d5e8c27", "typ": "branch_base", "Created": "2026-12-03T11:53:38",
         "metrics/benchmark_sr/bicubic.json:Set5_x4": "", "train.lr": "0.001"},
    ]
    lines = table(rows, {"train.lr"}).splitlines()
    assert lines[0].split() == ["workspace", "main", "cured-lulu", "(d5e8c27)"]
    assert lines[1].split() == ["created", "-", "12-03", "11:48", "12-03", "11:53"]
    assert lines[3].split() == ["train.lr", "0.001", "0.002", "0.001"]
    assert lines[4] == ""  # params above, metrics below
    assert lines[5].split() == ["benchmark_sr/bicubic:Set5_x4", "31.216", "30.364", "-"]  # 5 digits, as DVC
    nothing = table([{"Experiment": "", "rev": "workspace", "Created": ""}], set())
    assert "no param or metric differs" in nothing
