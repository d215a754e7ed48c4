"""House rules that keep the layout honest."""
from __future__ import annotations

import ast
from pathlib import Path

from pysource import parse

ROOT = Path(__file__).resolve().parents[1]


PACKAGES = ("perceptual_core", "pipelines", "perceptual_services")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _sources():
    return [f for d in PACKAGES for f in sorted((ROOT / d).rglob("*.py"))]


def test_perceptual_core_is_pure_pytorch():
    banned = {"ray", "mlflow", "dvc", "boto3", "botocore", "pooch", "perceptual_services", "pipelines"}
    for f in (ROOT / "perceptual_core").rglob("*.py"):
        for node in ast.walk(parse(f)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in banned, f"{f.name} imports {n}"


def test_params_is_read_in_one_place():
    readers = [f.relative_to(ROOT).as_posix() for d in ("perceptual_core", "pipelines") for f in (ROOT / d).rglob("*.py")
               if "params.yaml" in f.read_text() and "yaml.safe_load" in f.read_text()]
    assert readers == ["pipelines/config.py"]


def test_only_config_reads_a_raw_section():
    """Stages take their typed settings (config.load -> pipelines/settings/), never the raw dicts."""
    callers = []
    for d in PACKAGES + ("benchmarks", "scripts", "tests"):
        for f in sorted((ROOT / d).rglob("*.py")):
            for node in ast.walk(parse(f)):
                if isinstance(node, ast.Attribute) and node.attr in ("section", "_section") and \
                        isinstance(node.value, ast.Name) and node.value.id == "config":
                    callers.append(f"{f.relative_to(ROOT).as_posix()}:{node.lineno}")
    assert not callers, f"config.section outside pipelines/config.py: {callers}"


def test_settings_are_frozen():
    """No caller can change what the next caller reads (a benchmark used to set train.ray.num_workers
    on the section it was given): settings objects are frozen and their mappings read-only."""
    import dataclasses

    import pytest

    from pipelines import config
    from pipelines.settings import TrainSettings

    t = config.load(TrainSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.ray.num_workers = 99
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.lr = -1
    with pytest.raises(TypeError):
        t.style.styles["la_muse"] = "x.jpg"
    with pytest.raises(TypeError):
        t.style.style_weights["la_muse"] = 1.0
    assert isinstance(t.style.jobs, tuple)
    again = config.load(TrainSettings)
    assert again == t and again.ray.num_workers != 99 and again.lr > 0 and "x.jpg" not in again.style.styles.values()


def test_engine_choices_are_written_out_once():
    """--engine / --precision choices live in perceptual_core/options.py (torch-free, so the CLI parser
    needs no torch); the engines, the batch job spec and the CLI read them from there."""
    import sys

    from perceptual_core.options import ENGINES, PRECISIONS

    root = Path(__file__).resolve().parents[1]
    for f in [*root.glob("perceptual_core/**/*.py"), *root.glob("pipelines/**/*.py")]:
        if f.name == "options.py":
            continue
        text = f.read_text()
        for lst in (ENGINES, PRECISIONS):
            for quoted in (", ".join(f'"{c}"' for c in lst[1:]), ", ".join(f"'{c}'" for c in lst[1:])):
                assert quoted not in text, f"{f.name} writes out {lst}: import it from perceptual_core.options"
    import subprocess

    r = subprocess.run([sys.executable, "-c", "import sys, pipelines.cli as c; c.build_parser(); "
                        "print('torch' in sys.modules)"], cwd=root, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_every_training_setting_the_job_reads_is_a_dvc_param_of_its_stage():
    """A changed setting retrains: each train_* stage lists, as DVC params, every `train.*` value
    train.job_spec puts into the job (and the `losses` section for style jobs)."""
    import yaml

    from pipelines import train

    root = Path(__file__).resolve().parents[1]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    common = {"train.seed", "train.precision", "train.channels_last", "train.compile", "train.max_seconds",
              "train.report_every", "train.checkpoint_every", "train.ray"}
    need = {"train_style": common | {"train.style", "train.lr", "losses"},
            "train_sr": common | {"train.sr", "train.lr"},
            "train_srcnn": common | {"train.srcnn", "train.sr.data"}}
    for stage, keys in need.items():
        params = set(stages[stage]["do"]["params"])
        assert keys <= params, f"{stage}: missing DVC params {sorted(keys - params)}"
    import inspect

    src = inspect.getsource(train.job_spec)
    for k in ("lr", "report_every", "checkpoint_every", "seed", "precision", "channels_last", "compile", "max_seconds"):
        assert f'"{k}"' in src, k  # the list above follows what job_spec reads


def test_modules_and_functions_stay_small():
    """A module a newcomer reads in one sitting, a function that fits on a screen (issue 19)."""
    too_long = []
    for f in _sources():
        text = f.read_text()
        rel = f.relative_to(ROOT).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(parse(f)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert not too_long, f"over {MAX_MODULE_LINES} lines a module / {MAX_FUNCTION_LINES} a function: {too_long}"


def test_the_services_stack_does_not_import_the_pipeline():
    """perceptual_services (Ray head, MLflow server, S3 endpoint on 127.0.0.1) is infrastructure: the
    pipeline may use it, never the other way round (the core's atomic writer is all it borrows)."""
    for f in (ROOT / "perceptual_services").rglob("*.py"):
        for node in ast.walk(parse(f)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for m in mods:
                assert m.split(".")[0] != "pipelines", f"{f.name} imports {m}"


def test_the_fast_tier_keeps_a_real_smoke_test_of_each_component():
    """`make test-fast` (issue 19) leaves the slow modules out, but still runs Ray, MLflow, DVC, the S3
    server and the published anchors for real: the Makefile's own marker expression, collected."""
    import re
    import subprocess
    import sys

    expr = re.search(r"^test-fast:.*\n\t.*pytest -m '([^']+)'", (ROOT / "Makefile").read_text(), re.M).group(1)
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", expr], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    ids = r.stdout
    for component, test in [("Ray + S3 server", "tests/test_batch.py::test_s3_bucket_in_and_out"),
                            ("MLflow", "tests/test_tracking.py::"),
                            ("DVC", "tests/test_make_run.py::"),
                            ("published anchors", "tests/test_resize_metrics.py::test_anchor_bicubic_x4[Set5]")]:
        assert test in ids, f"make test-fast runs no {component} test"
    assert "tests/test_dvc.py::" not in ids and "tests/test_train.py::" not in ids
