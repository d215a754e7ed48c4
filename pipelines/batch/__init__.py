"""Batch jobs (Ray Data): stylize or upscale every image under a folder, a bucket prefix or inside archives.
One concern a module: settings (the job), keys (names), sources (reading inputs), rows (what flows between
stages), workers (the model's actors), sinks (writing outputs), files (filesystems, atomic writes),
summary (the job's account) and runner (the driver, `perceptual batch`)."""
from __future__ import annotations

from .files import filesystem, put_atomic
from .keys import output_key, safe_key
from .runner import _checkpoint_bytes, fused, run_batch
from .settings import BatchSpec
from .sources import MAX_MEMBER_BYTES, plan
from .summary import FAILURES, SUMMARY, Summary
from .workers import _writable

__all__ = ["FAILURES", "MAX_MEMBER_BYTES", "SUMMARY", "BatchSpec", "Summary", "filesystem", "fused",
           "output_key", "plan", "put_atomic", "run_batch", "safe_key",
           "_checkpoint_bytes", "_writable"]  # the last two: tests reach them through the package
