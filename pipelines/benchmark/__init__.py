"""DVC stages `benchmark_sr` and `benchmark_style`: the paper's two tables for this project's models.

sr.py and style.py (+ speed.py) measure them on the inputs that are there (inputs.py), judge registry
versions (registry.py) and write results.py's files: `python -m pipelines.benchmark sr|style`.
"""
from __future__ import annotations

import argparse

import torch

from ..log import setup
from .inputs import _data_path, settings
from .results import SR_RESULTS, STYLE_RESULTS, sr_headline, style_headline
from .speed import PAPER_SPEED
from .sr import PUBLISHED, _crop_box, _pairs, run_sr, score_pairs
from .style import run_style, style_objective, style_quality

# what the report, the release and the tests use
__all__ = ["PAPER_SPEED", "PUBLISHED", "SR_RESULTS", "STYLE_RESULTS", "_crop_box", "_data_path", "_pairs", "main",
           "run_sr", "run_style", "score_pairs", "settings", "sr_headline", "style_headline", "style_objective",
           "style_quality"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["sr", "style"])
    p.add_argument("--alias", help="registry alias of the models judged (params: benchmark.alias)")
    a = p.parse_args(argv)
    setup()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    (run_sr if a.kind == "sr" else run_style)(settings(a.alias))
    return 0
