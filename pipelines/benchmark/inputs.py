"""What the benchmarks read: params' section and the sets and photos that are there. The data folder's
(Set5, Set14, BSD100) or builtin photos no stage trains on (pipelines/embedded.py); a data-folder file
that is missing is "not measured" with the `perceptual data fetch` command that brings it, so a fresh
clone still gets a table, and a path the data manifest does not know is an error in params.
"""
from __future__ import annotations

from pathlib import Path

from .. import config
from ..settings import BenchmarkSettings
from ..settings.bench import BenchSRSettings, BenchStyleSettings


def settings(alias: str | None = None, dirs: dict | None = None) -> BenchmarkSettings:
    """params' benchmark settings; ``alias`` and ``dirs`` (out_dir/metrics_dir/plots_dir) override them."""
    return config.load(BenchmarkSettings, alias=alias, **(dirs or {}))


def _data_path(p: str) -> Path:
    """A data-folder path: the data folder's file, else the committed copy (config.data_file)."""
    return config.data_file(p)


def _not_measured(key: str, rel: str, path: Path) -> dict:
    """A data-folder file or set that is not there: 'not measured' with the `perceptual data fetch`
    command that brings it. A path the data manifest does not know is a mistake in params: an error."""
    from ..data_fetch import fetch_command

    cmd = None if Path(rel).is_absolute() else fetch_command([Path(rel).as_posix()])
    if cmd is None:
        raise FileNotFoundError(f"{key}: not found: {path}")
    return {"key": key, "path": str(path), "fetch": cmd, "reason": f"not measured: run `{cmd}`"}


def sr_sets(sr: BenchSRSettings) -> tuple[dict, list[dict]]:
    """({set name: HR folder, or the list of files of a builtin-photo set}, [not-measured entries]):
    a builtin set is always there; a data-folder set that is missing is not measured."""
    from .. import embedded

    sets, missing = {}, []
    for name, spec in sr.sets.items():
        key = f"benchmark.sr.sets.{name}"
        if isinstance(spec, tuple):
            sets[name] = embedded.builtin_photos(list(spec), key)
        elif _data_path(spec).is_dir():
            sets[name] = _data_path(spec)
        else:
            missing.append({"set": name, **_not_measured(key, spec, _data_path(spec))})
    return sets, missing


def style_content(st: BenchStyleSettings) -> tuple[list[Path], list[dict]]:
    """(content photos, [not-measured entries]): the `content` photos the data folder has; when it has
    none of them, the held-out builtin photos of `content_embedded` (none there either: an error)."""
    from .. import embedded

    found, missing = [], []
    for i, c in enumerate(st.content):
        if _data_path(c).is_file():
            found.append(_data_path(c))
        else:
            missing.append({"photo": Path(c).name, **_not_measured(f"benchmark.style.content[{i}]", c, _data_path(c))})
    if not found and st.content_embedded:
        found = embedded.builtin_photos(list(st.content_embedded), "benchmark.style.content_embedded")
    if not found:
        raise FileNotFoundError(f"benchmark.style.content: no content photo: "
                                f"{'; '.join(m['path'] + ': ' + m['reason'] for m in missing)}")
    return found, missing
