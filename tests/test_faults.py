"""Rows of the fault matrix (benchmarks/faults.py) run as tests: each injects its fault into a real
`perceptual batch` subprocess against a real moto S3 server on 127.0.0.1 and counts what was lost."""
from __future__ import annotations

import shutil

import pytest

from benchmarks import faults

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)


@pytest.fixture
def photos(data_dir, tmp_path):
    inp = tmp_path / "photos"
    shutil.copytree(data_dir / "Set5" / "LR_bicubic_x4", inp)
    return inp


def test_s3_access_denied_is_refused_in_one_line_before_any_work(photos, tmp_path):
    """Real credentials that the bucket's policy refuses (moto's IAM enforcement): exit 2 with one
    line naming the input and the cause; no traceback, no secret, nothing written."""
    rc, line, counts, extra = faults.row_s3_access_denied(photos, tmp_path)
    assert rc == 2, line
    assert line == "error: --input s3://photos/in/: access denied (check the credentials and the bucket's policy)"
    assert not extra["traceback"] and not extra["secret_in_output"]
    assert counts["outputs"] == 0 and counts["partial_files"] == 0


def test_s3_connection_resets_are_retried_and_nothing_is_lost(photos, tmp_path):
    """Input and output on S3 behind a proxy that resets every 4th request: every photo is written
    exactly once, no partial object is left and the job exits 0 (pyarrow's AWS retry strategy)."""
    rc, line, counts, extra = faults.row_s3_resets(photos, tmp_path)
    assert extra["resets"] >= 3, extra  # the fault really happened
    assert rc == 0, line
    assert counts == {"inputs": 5, "outputs": 5, "failure_rows": 0, "lost": 0, "duplicates": 0, "partial_files": 0}


def test_malicious_pickle_as_a_registry_artifact_never_runs(photos, tmp_path):
    """A registry version whose checkpoint artifact is a pickle that would run a command (found by
    alias, as batch jobs find models): refused in one line before any work; the payload never runs."""
    rc, line, counts, extra = faults.row_malicious_registry_artifact(photos, tmp_path)
    assert rc == 2, line
    assert line.startswith("error: models:/style-evil@challenger: not a readable checkpoint")
    assert not extra["payload_ran"]
    assert counts["outputs"] == 0 and counts["partial_files"] == 0


def test_a_ray_node_lost_mid_job_loses_nothing(photos, tmp_path):
    """One of two Ray nodes (`ray start` on 127.0.0.1, one inference actor each) SIGKILLed at the first
    output: the job finishes on the node that is left, exit 0, every photo written once."""
    rc, line, counts, extra = faults.row_ray_node_loss(photos, tmp_path)
    assert extra["killed_after_outputs"] is not None, line  # the node died while work was left
    assert rc == 0, line
    assert counts == {"inputs": 10, "outputs": 10, "failure_rows": 0, "lost": 0, "duplicates": 0, "partial_files": 0}


def test_ray_address_with_no_cluster_is_one_line_at_once(photos, tmp_path):
    """Before: ray.init retried silently for over 10 minutes. Now: exit 2, one line naming RAY_ADDRESS."""
    rc, line, counts, extra = faults.row_ray_address_dead(photos, tmp_path)
    assert rc == 2, line
    assert line.startswith(f"error: RAY_ADDRESS={extra['address']}: cannot connect to a Ray cluster there")
    assert counts["outputs"] == 0 and counts["partial_files"] == 0


def test_the_inference_actor_killed_mid_job_loses_nothing(photos, tmp_path):
    """SIGKILL of the Ray actor that runs the model (local instance), with work left: Ray Data restarts
    it and retries; every photo written once, exit 0."""
    rc, line, counts, extra = faults.row_ray_actor_killed(photos, tmp_path)
    assert extra["killed_after_outputs"] is not None and extra["killed_after_outputs"] < counts["inputs"], extra
    assert rc == 0, line
    assert counts == {"inputs": 20, "outputs": 20, "failure_rows": 0, "lost": 0, "duplicates": 0, "partial_files": 0}


@pytest.mark.full
def test_a_ray_node_lost_mid_training_finishes_on_what_is_left(photos, tmp_path):
    """A 2-worker training run (elastic, train.ray.min_workers 1) on two Ray nodes; the second node
    SIGKILLed after the second checkpoint: the run goes on from a checkpoint (never from zero) on one
    worker and trains every iteration, exit 0. Full tier (`pytest -m full`): minutes on 2 cores."""
    rc, line, counts, extra = faults.row_ray_node_loss_training(photos, tmp_path)
    assert extra["killed_after_checkpoint"] is not None, line
    assert rc == 0, line
    assert counts["lost"] == 0 and counts["duplicates"] == 0, (counts, extra)
    assert extra["world_sizes"][0] == 2 and extra["world_sizes"][-1] == 1, extra
    assert extra["restarts"] >= 1 and extra["resumed_from"] and min(extra["resumed_from"]) >= 10, extra
