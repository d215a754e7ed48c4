"""Settings of the training stages (params.yaml: train) and the per-job values they resolve to.

A number that may differ per job (``iterations``, ``lr``) is either one number or a mapping from the
job's key (``la_muse``, ``x4-pixel``) to a number; ``per_job`` reads either.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .schema import SettingsError

PerJobInt = int | Mapping[str, int]
PerJobFloat = float | Mapping[str, float]
# LR used for SR/SRCNN training: "blur" = the prepared lr_x* files (sigma 1 blur + bicubic, the paper's
# protocol); "bicubic" = MATLAB bicubic of the HR crop (the standard protocol, the official SRCNN's data).
DEGRADATIONS = ("blur", "bicubic")


def _check_degradation(value: str, where: str) -> None:
    if value not in DEGRADATIONS:
        raise SettingsError(f"{where}.degradation must be one of {DEGRADATIONS}, not {value!r}")


def per_job(value: Any, key: str, where: str, fallback: Any = None) -> Any:
    """``value`` for the job ``key``: the number itself, or its entry in a per-job mapping (``fallback``
    when the mapping has none and a fallback is given; otherwise a one-line error naming ``where``)."""
    if not isinstance(value, Mapping):
        return value
    if key in value:
        return value[key]
    if fallback is not None:
        return fallback
    raise ValueError(f"{where} has no entry for {key!r} (it has {sorted(value)})")


@dataclass(frozen=True)
class RaySettings:
    """Ray Train's worker group (DDP: gloo on CPU, NCCL with use_gpu)."""
    num_workers: int = 2
    use_gpu: bool = False
    gpus_per_worker: float = 1
    max_failures: int = 2
    min_workers: int | None = None

    def check(self, where: str) -> None:
        if self.num_workers < 1:
            raise SettingsError(f"{where}.num_workers: must be >= 1, got {self.num_workers}")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            raise SettingsError(f"{where}.min_workers: must be in 1..{self.num_workers} or null, got {self.min_workers}")


@dataclass(frozen=True)
class StyleTrainSettings:
    """The style-transfer jobs (style-NAME): one network per painting in ``styles``."""
    data: str
    styles: Mapping[str, str]  # NAME -> image path (under data_dir unless absolute; config resolves it)
    jobs: tuple[str, ...] = ()
    network: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 4
    iterations: PerJobInt = 40000
    crop: int = 256
    content_weight: float = 1.0
    style_weight: float = 3.0e-5
    tv_weight: float = 1.0e-5
    style_weights: Mapping[str, float] = field(default_factory=dict)  # per style
    tv_weights: Mapping[str, float] = field(default_factory=dict)
    crops: Mapping[str, int] = field(default_factory=dict)  # per style: its training crop side, else `crop`
    # the image side the TV weight is meant at (null: the crop's): tv_loss sums over pixels while the content
    # and style losses are means, so at S px TV weighs (S/crop)^2 times what it does on a crop; training on
    # crops with tv * (tv_size/crop)^2 learns the balance the objective has at tv_size px (losses.tv_scale)
    tv_size: int | None = None
    networks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per style network changes
    init: Mapping[str, str] = field(default_factory=dict)  # per style: continue from these weights (e.g. a shipped model)
    lr: PerJobFloat | None = None  # null: train.lr
    report_every: int | None = None  # null: train's
    checkpoint_every: int | None = None

    def check(self, where: str) -> None:
        for key, names in (("jobs", self.jobs), ("init", self.init), ("crops", self.crops)):
            unknown = [j for j in names if j not in self.styles]
            if unknown:
                raise SettingsError(f"{where}.{key}: {unknown[0]!r} is not one of the styles ({', '.join(self.styles)})")

    def weights(self, name: str) -> dict[str, float]:
        """The loss weights of style ``name``: its own style/TV weight where set, else the common one."""
        return dict(content=self.content_weight, style=self.style_weights.get(name, self.style_weight),
                    tv=self.tv_weights.get(name, self.tv_weight))

    def crop_of(self, name: str) -> int:
        """The crop side style ``name`` trains on: its own where set (``crops``), else the common one."""
        return int(self.crops.get(name, self.crop))

    def network_of(self, name: str) -> dict[str, Any]:
        return {**self.network, **self.networks.get(name, {})}


@dataclass(frozen=True)
class SRTrainSettings:
    """The super-resolution jobs (sr-xS-pixel|feat): the paper's l_pixel and l_feat networks."""
    data: str
    jobs: tuple[str, ...] = ()
    network: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 4
    iterations: PerJobInt = 200000
    crop: int = 288
    feat_layer: str = "relu2_2"
    tv_weight: float = 1.0e-5
    init: Mapping[str, str] = field(default_factory=dict)  # per job: start from these weights
    lr: PerJobFloat | None = None
    degradation: str = "blur"  # one of DEGRADATIONS
    report_every: int | None = None
    checkpoint_every: int | None = None

    def check(self, where: str) -> None:
        _check_degradation(self.degradation, where)


@dataclass(frozen=True)
class SrcnnTrainSettings:
    """SRCNN (9-1-5), the SR baseline trained by the project (srcnn-xS)."""
    jobs: tuple[str, ...] = ()
    network: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 4
    iterations: PerJobInt = 30
    crop: int = 96
    lr: PerJobFloat | None = None
    degradation: str = "blur"  # one of DEGRADATIONS; bicubic: SRCNN's own data (the standard protocol)
    report_every: int | None = None
    checkpoint_every: int | None = None
    init: Mapping[str, str] = field(default_factory=dict)

    def check(self, where: str) -> None:
        _check_degradation(self.degradation, where)


@dataclass(frozen=True)
class TrainSettings:
    """Everything `pipelines.train` reads (params.yaml: train)."""
    SECTION = "train"
    out_dir: str
    style: StyleTrainSettings
    sr: SRTrainSettings
    srcnn: SrcnnTrainSettings = field(default_factory=SrcnnTrainSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    channels_last: bool = True
    compile: bool = False
    max_seconds: float | None = None
    lr: float = 1.0e-3
    seed: int = 0
    report_every: int = 10
    checkpoint_every: int = 20

    def check(self, where: str) -> None:
        for name in ("report_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")

    def kind(self, kind: str) -> StyleTrainSettings | SRTrainSettings | SrcnnTrainSettings:
        """The settings of a job kind: style | sr | srcnn."""
        return {"style": self.style, "sr": self.sr, "srcnn": self.srcnn}[kind]
