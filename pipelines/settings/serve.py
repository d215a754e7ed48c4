"""Settings of inference (params.yaml: inference, batch): the engine every command builds, and the
defaults of `perceptual batch` (BatchSpec adds the job's own options to these)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from perceptual_core.options import ENGINES, PRECISIONS

from .schema import SettingsError


@dataclass(frozen=True)
class InferenceSettings:
    """The engine behind `stylize`, `upscale` and `batch` (perceptual_core/engines/), verified first."""
    SECTION = "inference"
    engine: Literal[ENGINES] = "auto"
    precision: Literal[PRECISIONS] = "auto"
    verify: bool = True
    tolerance: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # per precision
    onnx_cache: str | None = None

    def check(self, where: str) -> None:
        unknown = [p for p in self.tolerance if p not in PRECISIONS]
        if unknown:
            raise SettingsError(f"{where}.tolerance.{unknown[0]}: not a precision ({', '.join(PRECISIONS[1:])})")


@dataclass(frozen=True)
class BatchSettings:
    """`perceptual batch` defaults; each is also a CLI option."""
    SECTION = "batch"
    format: str = "png"
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    read_cpus: float = 0.5
    pipeline: Literal["auto", "fused", "staged"] = "auto"
    tile: int = 1024
    overlap: int = 48
    border: int = 32
    upscale_tile: int = 640
    shard_size: int = 64
    max_pixels: int = 178_956_970
    require_promoted: bool = True
    device: str = "auto"

    def check(self, where: str) -> None:
        for name in ("actors", "shard_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.border < 0:
            raise SettingsError(f"{where}.border: must be >= 0, got {self.border}")

    def tile_for(self, kind: str | None) -> int:
        """The default tile of a job: upscaling tiles by output pixels (sr_blocks.py), so it has its own."""
        return self.upscale_tile if kind == "upscale" else self.tile
