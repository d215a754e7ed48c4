"""The job-name grammar (pipelines/jobname.py): one parser for train, benchmark, release and the GPU bundle."""
from __future__ import annotations

import pytest

from pipelines import jobname


@pytest.mark.parametrize("job,kind,style,scale,loss,data,method", [
    ("style-la_muse", "style", "la_muse", None, None, "style", "style"),
    ("style-starry_night_fast", "style", "starry_night_fast", None, None, "style", "style"),
    ("sr-x4-pixel", "sr", None, 4, "pixel", "sr", "pixel"),
    ("sr-x8-feat", "sr", None, 8, "feat", "sr", "feat"),
    ("srcnn-x4", "srcnn", None, 4, "pixel", "sr", "srcnn"),
])
def test_parse_names_every_part(job, kind, style, scale, loss, data, method):
    j = jobname.parse(job)
    assert (j.job, j.kind, j.style, j.scale, j.loss, j.data, j.method) == (job, kind, style, scale, loss, data, method)


@pytest.mark.parametrize("bad", ["style-", "style", "sr-x4-mse", "sr-4-pixel", "sr-x1-pixel", "sr-x4", "srcnn-x4-feat",
                                 "srcnn-4", "gan-x4", "", "sr-xx-feat"])
def test_bad_names_are_refused_with_the_grammar(bad):
    with pytest.raises(ValueError, match=rf"bad job name {bad!r}: use style-NAME, sr-xS-feat"):
        jobname.parse(bad)


def test_every_stage_reads_job_names_through_the_parser():
    """No stage splits a job name itself (the grammar was parsed four ways before)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pipelines"
    for f in ("train", "release", "benchmark", "gpu_bundle"):  # a module or a package of modules
        text = "".join(p.read_text() for p in [*root.glob(f"{f}.py"), *sorted((root / f).glob("*.py"))])
        assert "jobname.parse(" in text, f
        for pattern in ('job.partition("-")', 'job.split("-", 1)', 'name.rsplit("-", 1)', 'name.rsplit("x", 1)'):
            assert pattern not in text, f"{f}: {pattern}"
