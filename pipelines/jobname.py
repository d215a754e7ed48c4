"""The job-name grammar, parsed in one place.

    style-NAME          a fast style network for params train.style.styles[NAME]
    sr-xS-feat          SR network xS trained with l_feat (VGG relu2_2) + TV
    sr-xS-pixel         SR network xS trained with l_pixel (MSE)
    srcnn-xS            SRCNN retrained at xS (per-pixel loss on the Y channel)

A job's name is also its registered model name (MLflow) and its shipped file's stem
(`models/JOB.safetensors`), so training, benchmarking, release and the GPU bundle all read it
here rather than splitting strings each their own way.
"""
from __future__ import annotations

from dataclasses import dataclass

GRAMMAR = "style-NAME, sr-xS-feat, sr-xS-pixel or srcnn-xS (e.g. style-la_muse, sr-x4-pixel, srcnn-x4)"
SR_LOSSES = ("feat", "pixel")


@dataclass(frozen=True)
class Job:
    job: str                 # the name as given (= registered model name)
    kind: str                # style | sr | srcnn
    style: str | None = None  # style jobs: the key in train.style.styles
    scale: int | None = None  # sr / srcnn
    loss: str | None = None   # sr: feat | pixel; srcnn: pixel

    @property
    def key(self) -> str:
        """The name after the kind: la_muse, x4-feat, x4 (the key of per-job settings in params)."""
        return self.job.split("-", 1)[1]

    @property
    def data(self) -> str:
        """The prepare stage whose patches it trains on: style | sr."""
        return "style" if self.kind == "style" else "sr"

    @property
    def method(self) -> str:
        """Its column in the SR benchmark: srcnn | pixel | feat (style jobs: style)."""
        return "style" if self.kind == "style" else "srcnn" if self.kind == "srcnn" else self.loss


def parse(job: str) -> Job:
    """The parts of ``job``; ValueError naming it and the grammar otherwise."""
    kind, sep, rest = str(job).partition("-")
    if kind == "style" and sep and rest:
        return Job(job, "style", style=rest)
    if kind in ("sr", "srcnn") and sep:
        scale_s, _, loss = rest.partition("-")
        if scale_s.startswith("x") and scale_s[1:].isdigit() and int(scale_s[1:]) >= 2:
            if kind == "srcnn" and not loss:
                return Job(job, "srcnn", scale=int(scale_s[1:]), loss="pixel")
            if kind == "sr" and loss in SR_LOSSES:
                return Job(job, "sr", scale=int(scale_s[1:]), loss=loss)
    raise ValueError(f"bad job name {job!r}: use {GRAMMAR}")
