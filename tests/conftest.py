"""Shared fixtures: the real data folder and the real (offline) VGG-16 loss network."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERCEPTUAL_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


def pytest_configure(config):
    if not DATA.is_dir():
        raise pytest.UsageError(f"data folder not found: {DATA} (set PERCEPTUAL_DATA_DIR)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory) -> Path:
    """A fresh cache per test session, so the offline conversion itself is exercised."""
    d = tmp_path_factory.mktemp("vgg_cache")
    os.environ["PERCEPTUAL_CACHE_DIR"] = str(d)
    os.environ["PERCEPTUAL_OFFLINE"] = "1"  # CI has no route to download.pytorch.org
    return d


@pytest.fixture(scope="session")
def vgg(weights_cache):
    from perceptual_core.vgg import VGG16Loss

    return VGG16Loss.pretrained(allow_download=False)
