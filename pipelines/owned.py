"""Folders a stage may delete: only those it made itself.

Stages replace their output folders wholesale (prepare's shards, a fresh training run, the
report's assets). A mistyped ``out_dir: .`` or ``out_dir: data`` must not delete the project or a
data folder, so every folder a stage creates gets a marker file naming the stage, and a stage
deletes an existing folder only when it is empty or carries its marker (or, for folders made
before markers existed, the stage's own signature file: ``manifest.csv``, ``events.jsonl``), or
holds nothing but files git may carry for the stage (``tracked``: DVC's ``.gitignore`` and the
stage's committed metrics, which a fresh clone has before the stage ever ran there).
The project root, its parents, the home folder and ``/`` are never deleted, marker or not.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import config

MARKER = ".perceptual-stage"


def claim(folder: Path, stage: str) -> None:
    """Mark ``folder`` (created if needed) as made by ``stage``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(stage + "\n")


def check_deletable(folder: Path, stage: str, param: str, signature: str | None = None,
                    tracked: tuple[str, ...] = ()) -> None:
    """ValueError naming ``param`` unless ``stage`` may delete ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if not folder.exists():
        return
    real = folder.resolve()
    protected = {Path("/").resolve(), Path.home().resolve(), config.ROOT.resolve(), *config.ROOT.resolve().parents}
    if real in protected:
        raise ValueError(f"{param}={folder}: refusing to replace {real} (the project, a parent of it, home or /)")
    if not folder.is_dir():
        raise ValueError(f"{param}={folder}: exists and is not a folder")
    if all(p.name in tracked and p.is_file() for p in folder.iterdir()):  # empty, or only git-carried files
        return
    mark = folder / MARKER
    if mark.is_file() and mark.read_text().strip() == stage:
        return
    if not mark.exists() and signature and (folder / signature).is_file():
        return
    made_by = f"made by {mark.read_text().strip()!r}" if mark.is_file() else "not made by this stage"
    raise ValueError(f"{param}={folder}: exists and was {made_by} (no {MARKER} naming {stage!r}); "
                     f"the stage replaces this folder, so remove it yourself or choose another {param}")


def remove(folder: Path, stage: str, param: str, signature: str | None = None, tracked: tuple[str, ...] = ()) -> None:
    """Delete ``folder`` if ``stage`` may (else ValueError naming ``param``)."""
    check_deletable(folder, stage, param, signature, tracked)
    shutil.rmtree(folder, ignore_errors=True)
