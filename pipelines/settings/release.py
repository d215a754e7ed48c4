"""Settings of the released models (params.yaml: release; pipelines/release/): how each shipped model
is trained, scored, exported and registered."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReferenceSettings:
    photo: str
    size: int = 256


@dataclass(frozen=True)
class QualitySettings:
    """The style release bar: photos never trained on, at ``size`` px, Gatys on the same objective."""
    content: tuple[str, ...]
    size: int = 512
    gatys_iters: tuple[int, ...] = (100,)


@dataclass(frozen=True)
class ArtifactSettings:
    """The style release's artifact checks (perceptual_core/artifacts.py) on photos never trained on, at
    ``size`` px, tiled as `perceptual stylize` and `batch` tile (batch.tile, batch.overlap); ``bars``:
    lattice_levels (stride-locked pattern), frame_levels (border band), seam_min_psnr_db (tiled),
    blob_fill (white blobs: the largest share of a 16 px square)."""
    photos: tuple[str, ...]
    size: int = 2048
    pad: int = 64
    band: int = 16
    bars: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleSettings:
    set: str
    image: str
    size: int = 128


@dataclass(frozen=True)
class SRQualitySettings:
    """SR release scoring: benchmark.sr's protocols and layers, on these sets; the bars on each card."""
    sets: tuple[str, ...]
    sample: SampleSettings
    bars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReleaseSettings:
    """Everything `python -m pipelines.release` reads. The per-kind mappings (style, sr, srcnn, gpu)
    override train.<kind> for release jobs, key by key, so they stay open mappings."""
    SECTION = "release"
    models_dir: str
    registered: str
    workdir: str
    data: tuple[str, ...]
    reference: ReferenceSettings
    quality: QualitySettings
    sr_quality: SRQualitySettings
    artifacts: ArtifactSettings | None = None
    patches_per_image: int = 8
    val_fraction: float = 0.05
    report_every: int = 50
    checkpoint_every: int = 200
    half: bool = True
    style: Mapping[str, Any] = field(default_factory=dict)
    sr: Mapping[str, Any] = field(default_factory=dict)
    srcnn: Mapping[str, Any] = field(default_factory=dict)
    gpu: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, str] = field(default_factory=dict)
