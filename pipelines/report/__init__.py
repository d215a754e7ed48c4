"""DVC stage `report` and `perceptual report [--schedule-run]`: the benchmark report.

`report` renders reports/benchmark.html (self-contained) and benchmark.md (images under
reports/assets/) from the benchmark stages' outputs (render.py); `--schedule-run` (history.py)
benchmarks the champions on a schedule and renders the same page with trends over a history.
"""
from __future__ import annotations

import argparse

from .. import config
from ..log import setup
from ..settings import BenchmarkSettings, ReportSettings
from .history import schedule_run
from .render import render
from .tables import anchor_line, data_line, sr_tables

# what the CLI and the tests use
__all__ = ["add_args", "anchor_line", "data_line", "main", "render", "run_cli", "schedule_run", "sr_tables"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="perceptual report", description="render the benchmark report")
    add_args(p)
    a = p.parse_args(argv)
    setup()
    return run_cli(a)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule-run", action="store_true",
                   help="benchmark the champion models, append the history, render with trends")
    p.add_argument("--alias", help="with --schedule-run: judge this alias instead (params: report.schedule_alias)")
    p.add_argument("-o", "--output", help="folder for benchmark.html/.md (params: report.out_dir)")


def run_cli(a) -> int:
    if a.schedule_run:
        schedule_run(a.alias)
        return 0
    from .. import promote

    b, r = config.load(BenchmarkSettings), config.load(ReportSettings)
    render(b, config.resolve(a.output or r.out_dir),
           promotion=config.resolve(promote.settings().decisions))
    return 0
