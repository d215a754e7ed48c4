"""Settings of the benchmark, report and promotion stages (params.yaml: benchmark, report, promote).

``benchmark.profile`` picks a profile that is merged into the section before it is checked
(config.apply_profile), so a BenchmarkSettings is always the profile's whole benchmark.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from .schema import SettingsError

PROTOCOLS = ("standard", "blur")  # MATLAB bicubic LR | the paper's blur + bicubic (degradation)


@dataclass(frozen=True)
class CropSettings:
    set: str
    image: str | None = None
    size: int = 128


@dataclass(frozen=True)
class BenchSRSettings:
    """The SR table: sets (an HR folder, or builtin PACKAGE:FILE photos), scales, protocols, baselines."""
    sets: Mapping[str, str | tuple[str, ...]]
    scales: tuple[int, ...] = (4,)
    protocols: tuple[Literal[PROTOCOLS], ...] = PROTOCOLS
    primary: Literal[PROTOCOLS] = "blur"
    lr_files: str | None = None
    max_images: int | None = None
    srcnn_official: Mapping[int, str] = field(default_factory=dict)
    vgg_layers: tuple[str, ...] = ("relu2_2",)
    crop: CropSettings | None = None
    reuse_scores: bool = True  # score_cache: a method with the same weights on the same image is not scored again

    def check(self, where: str) -> None:
        if self.primary not in self.protocols:
            raise SettingsError(f"{where}.primary: {self.primary!r} is not one of the protocols measured "
                                f"{list(self.protocols)} (benchmark.sr.protocols)")


@dataclass(frozen=True)
class BenchStyleSettings:
    """The style table: held-out photos at ``size`` px, Gatys et al. after ``gatys_iters`` L-BFGS steps."""
    content: tuple[str, ...] = ()
    content_embedded: tuple[str, ...] = ()
    size: int = 128
    gatys_iters: tuple[int, ...] = (100,)
    reuse_gatys: bool = True  # gatys_cache: the same photo, painting and objective is not optimised again


@dataclass(frozen=True)
class SpeedSettings:
    sizes: tuple[int, ...] = (256, 512)
    repeats: int = 3
    gatys_timed_iters: int = 2
    engine: str | None = None  # null: inference.engine
    gatys_iters: tuple[int, ...] = (100,)


@dataclass(frozen=True)
class BenchmarkSettings:
    """Everything `pipelines.benchmark` reads, after the profile is applied."""
    SECTION = "benchmark"
    out_dir: str
    sr: BenchSRSettings
    style: BenchStyleSettings
    alias: str = "challenger"
    profile: str = "quick"
    profiles: Mapping[str, Any] = field(default_factory=dict)
    metrics_dir: str = "metrics"
    plots_dir: str = "plots"
    speed: SpeedSettings = field(default_factory=SpeedSettings)


@dataclass(frozen=True)
class ReportSettings:
    """`perceptual report`: where the report goes, and the scheduled runs' folder and history."""
    SECTION = "report"
    out_dir: str = "reports"
    schedule_dir: str = "reports/scheduled"
    schedule_alias: str = "champion"
    history: str = "reports/scheduled/history.parquet"


@dataclass(frozen=True)
class PromotionFamily:
    """How one family of registered models (fnmatch on the name) is judged."""
    match: str
    metric: str
    mode: Literal["max", "min"]
    min_delta: float = 0.0
    min_rel_delta: float = 0.0
    baseline: str | None = None

    def check(self, where: str) -> None:
        for name in ("match", "metric"):
            if not getattr(self, name):
                raise SettingsError(f"{where}.{name}: must not be empty")
        for name in ("min_delta", "min_rel_delta"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class PromoteSettings:
    """`perceptual promote`: challenger -> champion only past both margins of its family."""
    SECTION = "promote"
    out: str = "metrics/promotion.json"
    decisions: str | None = None  # null: beside `out` (metrics/promotion_decisions.json); always set once built
    families: tuple[PromotionFamily, ...] = ()

    def __post_init__(self) -> None:
        if self.decisions is None:
            out = PurePosixPath(self.out)
            object.__setattr__(self, "decisions", str(out.with_name(f"{out.stem}_decisions.json")))

    def check(self, where: str) -> None:
        if not self.families:
            raise SettingsError(f"{where}.families: must be a non-empty list")

    def family(self, name: str) -> PromotionFamily | None:
        """The first family whose ``match`` fits the registered model ``name``."""
        from fnmatch import fnmatchcase

        return next((f for f in self.families if fnmatchcase(name, f.match)), None)
