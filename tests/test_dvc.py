"""`dvc repro` runs the pipeline in a real git + DVC repository (a copy of the project)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")


def run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_dvc_repro_then_nothing_to_do(tmp_path, data_dir, weights_cache):
    repo = tmp_path / "repo"
    ign = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("perceptual_core", "pipelines"):
        shutil.copytree(ROOT / d, repo / d, ignore=ign)
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, repo / f)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["run"].update(sr_sets=["Set5"], gatys_iters=2, gatys_size=48)
    params["data_dir"] = str(data_dir)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc_site"),
           "PERCEPTUAL_DATA_DIR": str(data_dir), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # as with the venv activated
    env.pop("PERCEPTUAL_PARAMS", None)
    run(["git", "init", "-q"], repo, env)
    run([str(DVC), "init", "-q"], repo, env)
    run([str(DVC), "config", "core.analytics", "false"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "init"], repo, env)
    run([str(DVC), "repro"], repo, env)
    m = json.loads((repo / "outputs/run/sr_baselines.json").read_text())
    assert round(m["Set5"]["bicubic@standard_lr"]["psnr_y"], 2) == 28.42
    assert (repo / "dvc.lock").is_file()
    status = run([str(DVC), "status"], repo, env)
    assert "up to date" in status.stdout.lower(), status.stdout
    shown = run([str(DVC), "metrics", "show", "--json"], repo, env)
    assert "bicubic@standard_lr" in shown.stdout
