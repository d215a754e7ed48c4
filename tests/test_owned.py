"""pipelines/owned.py: a stage deletes only folders it made (a mistyped out_dir must not delete the
project or a data folder)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import owned
from pipelines import prepare as prep
from pipelines import train
from pipelines.settings import DegradationSettings, PrepareSettings, build

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def prep_settings(kind: str, **changes):
    """(PrepareSettings, DegradationSettings) of the project params, with ``changes`` to prepare_KIND."""
    return (build(PrepareSettings, {**PARAMS[f"prepare_{kind}"], **changes}, f"params.yaml: prepare_{kind}"),
            build(DegradationSettings, PARAMS["degradation"], "params.yaml: degradation"))


def _user_folder(tmp_path: Path) -> Path:
    d = tmp_path / "precious"
    (d / "sub").mkdir(parents=True)
    (d / "thesis.txt").write_text("years of work")
    (d / "sub" / "photo.jpg").write_bytes(b"\xff\xd8")
    return d


def test_rules(tmp_path):
    d = _user_folder(tmp_path)
    with pytest.raises(ValueError, match=r"prepare_style.out_dir=.*not made by this stage"):
        owned.remove(d, "prepare_style", "prepare_style.out_dir")
    assert (d / "thesis.txt").read_text() == "years of work"
    owned.claim(d, "report")  # another stage's folder is refused too
    with pytest.raises(ValueError, match="made by 'report'"):
        owned.check_deletable(d, "prepare_style", "prepare_style.out_dir")
    owned.claim(d, "prepare_style")
    owned.remove(d, "prepare_style", "x")
    assert not d.exists()
    legacy = _user_folder(tmp_path)
    (legacy / "manifest.csv").write_text("key\n")  # made before markers existed
    owned.check_deletable(legacy, "prepare_style", "x", signature="manifest.csv")
    (tmp_path / "empty").mkdir()
    owned.remove(tmp_path / "empty", "any", "x")
    owned.check_deletable(tmp_path / "missing", "any", "x")


@pytest.mark.parametrize("where", ["root", "parent", "home"])
def test_never_the_project_its_parents_or_home(where):
    folder = {"root": ROOT, "parent": ROOT.parent, "home": Path.home()}[where]
    with pytest.raises(ValueError, match="refusing to replace"):
        owned.check_deletable(folder, "prepare_style", "prepare_style.out_dir", signature="README.md")


def test_prepare_refuses_a_foreign_out_dir_before_any_work(tmp_path, data_dir):
    photos = tmp_path / "in"
    photos.mkdir()
    for p in sorted((data_dir / "coco128_train2017" / "images").glob("*.jpg"))[:2]:
        shutil.copy(p, photos / p.name)
    d = _user_folder(tmp_path)
    with pytest.raises(ValueError, match="prepare_style.out_dir="):
        prep.prepare("style", *prep_settings("style"), input_dir=photos, out_dir=d, use_ray=False)
    assert (d / "thesis.txt").is_file() and not list(tmp_path.glob("precious.tmp-*"))
    out = tmp_path / "style"
    prep.prepare("style", *prep_settings("style"), input_dir=photos, out_dir=out, use_ray=False)
    assert (out / owned.MARKER).read_text().strip() == "prepare_style"
    prep.prepare("style", *prep_settings("style"), input_dir=photos, out_dir=out, use_ray=False)  # its own: replaced
    assert (out / "manifest.csv").is_file()


def test_training_refuses_a_foreign_out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    d = _user_folder(tmp_path)
    with pytest.raises(ValueError, match="train.out_dir/JOB="):
        train.run_job("srcnn-x4", use_ray=False, overrides={"out_dir": str(d)})
    assert (d / "thesis.txt").is_file() and (d / "sub" / "photo.jpg").is_file()


def test_training_replaces_a_folder_holding_only_what_git_carries(tmp_path, monkeypatch):
    """A fresh clone of a project that commits its DVC metrics has outputs/train/JOB/ with only DVC's
    .gitignore and metrics.json in it: the training stage goes on (a fresh `make run` failed here), while
    one more file of anyone else's still stops it."""
    from pipelines import owned

    d = tmp_path / "sr-x4-pixel"
    d.mkdir()
    (d / ".gitignore").write_text("/model.pt\n")
    (d / "metrics.json").write_text("{}\n")
    keep = (".gitignore", "metrics.json", "summary.json")
    owned.check_deletable(d, "train sr-x4-pixel", "train.out_dir/JOB", tracked=keep)  # no error
    with pytest.raises(ValueError, match="not made by this stage"):
        owned.check_deletable(d, "train sr-x4-pixel", "train.out_dir/JOB")  # what train passed before
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="train.out_dir/JOB="):
        owned.check_deletable(d, "train sr-x4-pixel", "train.out_dir/JOB", tracked=keep)
