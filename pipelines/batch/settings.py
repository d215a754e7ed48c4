"""One batch job's settings: the `batch` and `inference` sections of params.yaml under the CLI's options,
checked before any work, so a bad value is a one-line usage error rather than N failed images."""
from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..settings import BatchSettings, InferenceSettings, plain
from .keys import SAVE_EXT


@dataclass
class BatchSpec:
    """One batch job. Defaults come from the `batch` section of params.yaml (see from_params)."""
    kind: str  # "stylize" | "upscale"
    model: str  # checkpoint path or models:/NAME@ALIAS
    input: str
    output: str
    scale: int | None = None
    fmt: str = "png"
    overwrite: bool = False
    output_archive: bool = False
    shard_size: int = 64
    preserve_color: bool = False
    tile: int = 1024
    overlap: int = 48
    border: int = 32  # stylize: reflect-padded context around the image, cropped off (inference.stylize_image)
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    read_cpus: float = 0.5
    pipeline: str = "auto"  # auto | fused | staged (runner.py's doc)
    max_pixels: int = 178_956_970
    endpoint: str | None = None  # S3-compatible endpoint (else AWS_ENDPOINT_URL)
    device: str = "auto"
    # inference engine in each actor (params: inference; perceptual_core/engines/); `engine` of
    # run_batch is the job runner (ray | local)
    model_engine: str = "auto"
    precision: str = "auto"
    engine_verify: bool = True
    engine_tolerance: dict | None = None
    engine_cache: str | None = None  # inference.onnx_cache, absolute (a worker that cannot write it exports)
    require_promoted: bool = True  # models:/ refs: only versions `promote` moved to champion, or releases

    @classmethod
    def from_params(cls, **kw) -> BatchSpec:
        """params' BatchSettings and InferenceSettings under the job's own options ``kw`` (None: not given)."""
        bs, inf = config.load(BatchSettings), config.load(InferenceSettings)
        sec = {k: v for k, v in plain(bs).items() if k not in ("format", "upscale_tile")}
        sec.update(fmt=bs.format, tile=bs.tile_for(kw.get("kind")), model_engine=inf.engine, precision=inf.precision,
                   engine_verify=inf.verify, engine_tolerance=plain(inf.tolerance) or None,
                   engine_cache=str(config.resolve(inf.onnx_cache)) if inf.onnx_cache else None)
        sec.update({k: v for k, v in kw.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in sec.items() if k in known})

    def check(self) -> None:
        if self.kind not in ("stylize", "upscale"):
            raise ValueError(f"kind must be stylize or upscale, got {self.kind!r}")
        if self.fmt != "same" and f".{self.fmt.lower().lstrip('.')}" not in SAVE_EXT:
            raise ValueError(f"--format {self.fmt!r}: use same or one of {sorted(e[1:] for e in SAVE_EXT)}")
        for name in ("actors", "shard_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        from perceptual_core.tiling import check_tile

        check_tile(self.tile)
        if self.kind == "upscale" and self.scale:
            from perceptual_core.sr_blocks import check_tile as check_sr_tile

            check_sr_tile(self.tile, self.scale)
        if self.overlap < 0:
            raise ValueError(f"--overlap must be >= 0, got {self.overlap}")
        if self.border < 0:
            raise ValueError(f"--border must be >= 0, got {self.border}")
        if not 0 < self.cpus_per_actor or self.read_cpus <= 0 or self.gpus_per_actor < 0:
            raise ValueError("--cpus-per-actor and read_cpus must be > 0 and --gpus >= 0")
        if self.pipeline not in ("auto", "fused", "staged"):
            raise ValueError(f"--pipeline must be auto, fused or staged, got {self.pipeline!r}")
        if self.preserve_color and self.kind != "stylize":
            raise ValueError("--preserve-color only applies to stylize")
        from perceptual_core.options import ENGINES, PRECISIONS

        if self.model_engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {self.model_engine!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
