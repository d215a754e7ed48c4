"""The one place that reads params.yaml (and the environment overrides of it)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
# Committed files at the data folder's own relative paths (the public-domain paintings, see its
# styles/SOURCES.md): what `data_file` falls back to, so a clone without a data folder still runs.
EMBEDDED_DATA = ROOT / "assets"


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
    """Another params file (e.g. the release's, written by pipelines/release/): a fresh copy."""
    import copy

    return copy.deepcopy(_load(str(Path(path).resolve())))


def params() -> dict[str, Any]:
    return _load(str(params_path()))


def _section(name: str) -> dict[str, Any]:
    """A copy of the raw section ``name`` (the file is parsed once per process and cached), the styles
    resolved and the benchmark profile applied: what ``load`` checks and freezes. Stages never see it."""
    import copy

    value = params().get(name)
    if not isinstance(value, dict):
        from .settings.schema import SettingsError

        raise SettingsError(f"{params_path()}: missing section {name!r}")
    value = copy.deepcopy(value)
    if name == "train" and isinstance((value.get("style") or {}).get("styles"), dict):
        _resolve_styles(value["style"])
    if name == "benchmark":
        value = apply_profile(value)
    return value


def load(cls: type[T], name: str | None = None, **overrides: Any) -> T:
    """Section ``name`` of params.yaml (default: ``cls.SECTION``) as the frozen settings object ``cls``
    (pipelines/settings/), every value checked, with ``overrides`` (e.g. the CLI's options; None means
    "not given") applied and checked the same way. A bad value is one SettingsError naming file and key."""
    from .settings import schema

    name = name or cls.SECTION
    where = f"{params_path()}: {name}"
    raw = _section(name)
    obj = schema.build(cls, raw, where)
    return schema.replace(obj, where, **overrides) if overrides else obj


def _merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, dicts key by key (so a profile can add one set), the rest replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_profile(bench: dict) -> dict:
    """The benchmark settings of ``benchmark.profile``: the section itself for the default profile,
    merged with ``benchmark.profiles[NAME]`` otherwise (`dvc exp run -S benchmark.profile=full`)."""
    name = bench.get("profile") or "quick"
    profiles = bench.get("profiles") or {}
    if name == "quick" and name not in profiles:
        return bench
    if name not in profiles:
        raise ValueError(f"{params_path()}: benchmark.profile {name!r} is not one of quick, "
                         f"{', '.join(sorted(profiles))} (benchmark.profiles)")
    return _merge(bench, profiles[name])


def resolve(path: str | Path) -> Path:
    """Resolve a params path relative to the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (ROOT / p).resolve()


def data_dir() -> Path:
    return resolve(os.environ.get("PERCEPTUAL_DATA_DIR") or params().get("data_dir", "../shared/data"))


def has_data_dir() -> bool:
    """Whether the data folder exists and holds anything (else the run is on the embedded default)."""
    d = data_dir()
    return d.is_dir() and any(d.iterdir())


def data_file(rel: str | Path) -> Path:
    """A data-folder path from params: absolute as given; else under data_dir(); else the committed
    copy under EMBEDDED_DATA; else (neither has it) the data-folder path, which an error then names."""
    p = Path(rel).expanduser()
    if p.is_absolute():
        return p
    found = data_dir() / p
    if not found.exists() and (EMBEDDED_DATA / p).exists():
        return EMBEDDED_DATA / p
    return found


_ANNOUNCED: set[str] = set()


def _resolve_styles(style: dict) -> None:
    """train.style.styles entries as absolute paths through data_file (train.job_spec joins relative
    ones to data_dir(), so a painting missing from the data folder is found in the committed copy), and
    one line per process on stderr for each style `dvc repro` trains: which file, from where."""
    from .log import get

    rels = dict(style["styles"])
    style["styles"] = {k: str(data_file(v)) for k, v in rels.items()}
    for job in style.get("jobs") or []:
        if job not in rels or job in _ANNOUNCED:
            continue
        _ANNOUNCED.add(job)
        path = Path(style["styles"][job])
        if Path(rels[job]).is_absolute():
            where = "as given"
        elif path.is_relative_to(EMBEDDED_DATA):
            where = f"the committed painting: the data folder {data_dir()} has none"
        elif path.is_file():
            where = "the data folder"
        else:
            from .data_fetch import fetch_command

            cmd = fetch_command([Path(rels[job]).as_posix()])
            where = (f"missing: not in the data folder and not committed under {EMBEDDED_DATA}"
                     + (f"; run `{cmd}`" if cmd else ""))
        get(__name__).info(f"style image of style-{job}: {path} ({where})")


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
    from .settings import LossNetworkSettings

    w = load(LossNetworkSettings).weights
    return str(resolve(w)) if w else None


def loss_network():
    """The verified VGG-16 loss network, from the sources params allow."""
    from perceptual_core.vgg import VGG16Loss

    from .settings import LossNetworkSettings

    return VGG16Loss.pretrained(vgg_weights_arg(), allow_download=load(LossNetworkSettings).allow_download)


def gatys_kwargs() -> dict[str, Any]:
    """Keyword arguments for perceptual_core.gatys.gatys from the `gatys` and `losses` sections."""
    from .settings import GatysSettings, LossesSettings

    g, ls = load(GatysSettings), load(LossesSettings)
    return dict(optimizer=g.optimizer, init=g.init, content_weight=g.content_weight,
                style_weight=g.style_weight, tv_weight=g.tv_weight, style_size=ls.style_size,
                content_layers=list(ls.content_layers), style_layers=list(ls.style_layers))
