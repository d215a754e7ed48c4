"""The embedded default: what `dvc repro` runs on where there is no data folder (a fresh clone, offline).

Why: the data folder (params `data_dir`, or PERCEPTUAL_DATA_DIR; `perceptual data fetch` fills one)
holds Set5/Set14/BSD100, the official SRCNN weights, the paintings and the content photos, and a
clone has none of it. Without it the pipeline still runs end to end on what the clone and its
dependencies carry:
- training photos: acquire's `builtin` source (real photos inside the scikit-image and matplotlib wheels);
- paintings: four public-domain ones committed under assets/ at the data folder's relative paths
  (config.data_file reads the data folder first, then them; provenance in assets/styles/SOURCES.md).
  Picasso's La Muse is not public domain: only a data folder has it;
- benchmark: photos inside dependency wheels that no training stage reads (the `benchmark.sr.sets`
  entries given as PACKAGE:FILE lists, and `benchmark.style.content_embedded`), scored like Set5.
  Data-folder sets that are missing are "not measured", with the `perceptual data fetch` command.

`describe` is the one line each benchmark stage prints and records, which the report repeats.
"""
from __future__ import annotations

from pathlib import Path

from . import config
from .settings import AcquireSettings, BenchmarkSettings


def builtin_photos(specs: list[str], key: str) -> list[Path]:
    """The files of builtin photos PACKAGE:FILE (acquire's lookup); errors name params ``key``."""
    from .acquire import builtin_path

    return [builtin_path(s, key) for s in specs]


def benchmark_specs() -> list[str]:
    """Every builtin photo the benchmarks may read (held out from training)."""
    b = config.load(BenchmarkSettings)
    specs = [s for v in b.sr.sets.values() if isinstance(v, tuple) for s in v]
    return list(dict.fromkeys(specs + list(b.style.content_embedded)))


def describe() -> str:
    """'data folder PATH', or 'embedded default: N builtin photos, committed paintings' with where the
    data folder was looked for."""
    if config.has_data_dir():
        return f"data folder {config.data_dir()}"
    acq = config.load(AcquireSettings)
    sources = list(acq.source) if isinstance(acq.source, tuple) else [acq.source]
    photos = list(dict.fromkeys((list(acq.builtin) if "builtin" in sources else []) + benchmark_specs()))
    return (f"embedded default: {len(photos)} builtin photos, committed paintings "
            f"({config.EMBEDDED_DATA.relative_to(config.ROOT)}/); no data folder at {config.data_dir()}")
