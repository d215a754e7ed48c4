"""`make run`'s wrapper (pipelines/make_run.py) on a real `dvc repro` in a temporary git repository:
stage i of n as each stage runs or is skipped, the stages' own output kept, DVC's exit code returned."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT), "DVC_SITE_CACHE_DIR": str(repo / ".site")}
    return subprocess.run([sys.executable, "-m", "pipelines.make_run", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def test_progress_counts_every_stage_and_keeps_dvcs_exit_code(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=repo, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    subprocess.run([DVC, "config", "core.analytics", "false"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  first:\n    cmd: echo one > one.txt\n    outs: [one.txt]\n"
        "  second:\n    cmd: cat one.txt > two.txt && echo stage-output\n    deps: [one.txt]\n    outs: [two.txt]\n")
    r = _run(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[make run]")]
    assert lines[0] == "[make run] dvc repro: 2 stages"
    assert lines[1].startswith("[make run] stage 1/2 first: running (")
    assert lines[2].startswith("[make run] stage 2/2 second: running (")
    assert lines[-1].startswith("[make run] done in ") and "stage-output" in r.stdout
    assert (repo / "two.txt").read_text() == "one\n"

    again = _run(repo)
    assert again.returncode == 0 and "stage 2/2 second: unchanged" in again.stdout, again.stdout

    (repo / "dvc.yaml").write_text((repo / "dvc.yaml").read_text().replace("cat one.txt", "cat missing.txt"))
    bad = _run(repo)
    assert bad.returncode != 0 and "[make run] failed (exit" in bad.stdout, bad.stdout + bad.stderr
