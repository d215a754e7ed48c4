"""pipelines/ray_logs.py: the error lines of the newest Ray session, as `make test` prints them when
the test process dies without a summary."""
from __future__ import annotations

import os

from pipelines import ray_logs


def _session(tmp_path):
    logs = tmp_path / "ray" / "session_2026-12-02_01-00-00_000000_1" / "logs"
    logs.mkdir(parents=True)
    os.symlink(logs.parent, tmp_path / "ray" / "session_latest")
    return logs


def test_digest_keeps_errors_and_the_ends_of_daemon_logs(tmp_path):
    logs = _session(tmp_path)
    (logs / "raylet.out").write_text("\n".join(
        [f"[2026-12-02 01:00:0{i},000 I 10 10] (raylet) node_manager.cc:1: fine {i}" for i in range(9)]
        + ["[2026-12-02 01:00:10,000 F 10 10] (raylet) store.cc:9: Check failed: plasma"]))
    (logs / "gcs_server.out").write_text("[2026-12-02 01:00:00,000 I 11 11] (gcs_server) all well\n")
    (logs / "python-core-driver-01_12.log").write_text(
        "[2026-12-02 01:00:00,000 E 12 12] core_worker.cc:2465: Actor with class name: 'X' has constructor "
        "arguments in the object store and max_restarts > 0.\n"
        "[2026-12-02 01:00:11,000 E 12 12] core_worker.cc:1: Failed to connect to GCS within 60 seconds\n")
    (logs / "worker-ab-01-13.err").write_text(":job_id:01000000\n:actor_name:Foo\n")
    (logs / "worker-cd-01-14.err").write_text(":job_id:01000000\nTraceback (most recent call last):\n  boom\n")
    out = ray_logs.digest(tmp_path, lines=30)
    text = "\n".join(out)
    assert "Check failed: plasma" in text and "fine 8" in text and "fine 0" not in text  # tail of 8
    assert "Failed to connect to GCS" in text and "constructor" not in text  # Ray Data's noise left out
    assert "worker-ab" not in text and "boom" in text  # an .err file of markers only says nothing
    assert ":job_id:" not in text


def test_digest_without_a_session_says_so(tmp_path):
    assert ray_logs.digest(tmp_path) == [f"ray logs: no Ray session under {tmp_path}"]
    assert ray_logs.main([str(tmp_path)]) == 0
