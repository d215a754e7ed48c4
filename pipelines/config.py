"""The one place that reads params.yaml (and the environment overrides of it)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def params_path() -> Path:
    return Path(os.environ.get("PERCEPTUAL_PARAMS", ROOT / "params.yaml"))


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"params file not found: {p} (set PERCEPTUAL_PARAMS)")
    with open(p) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping at the top level")
    return data


def read_params(path: str | Path) -> dict[str, Any]:
    """Another params file (e.g. the release's, written by pipelines/release.py): a fresh copy."""
    import copy

    return copy.deepcopy(_load(str(Path(path).resolve())))


def params() -> dict[str, Any]:
    return _load(str(params_path()))


def section(name: str) -> dict[str, Any]:
    """A copy of section ``name``: callers may change it without changing what the next caller reads
    (the file is parsed once per process and cached)."""
    import copy

    value = params().get(name)
    if not isinstance(value, dict):
        raise KeyError(f"{params_path()}: missing section {name!r}")
    return copy.deepcopy(value)


def resolve(path: str | Path) -> Path:
    """Resolve a params path relative to the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (ROOT / p).resolve()


def data_dir() -> Path:
    return resolve(os.environ.get("PERCEPTUAL_DATA_DIR") or params().get("data_dir", "../shared/data"))


def fetch_dir() -> Path:
    """Where `perceptual data fetch` writes: PERCEPTUAL_DATA_DIR if set, else the user's data folder
    (platformdirs: ~/.local/share/perceptual on Linux), never the project tree or ../shared."""
    if os.environ.get("PERCEPTUAL_DATA_DIR"):
        return resolve(os.environ["PERCEPTUAL_DATA_DIR"])
    import platformdirs

    return Path(platformdirs.user_data_dir("perceptual"))


def data_mirror() -> str | None:
    """PERCEPTUAL_DATA_MIRROR: a base URL that replaces every data URL by MIRROR/<relative path>."""
    return os.environ.get("PERCEPTUAL_DATA_MIRROR") or None


def vgg_weights_arg() -> str | None:
    w = section("loss_network").get("weights")
    return str(resolve(w)) if w else None


def loss_network():
    """The verified VGG-16 loss network, from the sources params allow."""
    from perceptual_core.vgg import VGG16Loss

    return VGG16Loss.pretrained(vgg_weights_arg(), allow_download=section("loss_network")["allow_download"])


def gatys_kwargs() -> dict[str, Any]:
    """Keyword arguments for perceptual_core.gatys.gatys from the `gatys` and `losses` sections."""
    g, ls = section("gatys"), section("losses")
    return dict(optimizer=g["optimizer"], init=g["init"], content_weight=g["content_weight"],
                style_weight=g["style_weight"], tv_weight=g["tv_weight"], style_size=ls["style_size"],
                content_layers=ls["content_layers"], style_layers=ls["style_layers"])
