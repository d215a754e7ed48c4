"""The typed settings (pipelines/settings/): params.yaml becomes one frozen, checked object per stage,
and a bad value is one line naming the file and the key."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from pipelines import config, settings
from pipelines.settings import (BatchSettings, BenchmarkSettings, InferenceSettings, PrepareSettings, SettingsError,
                                TrainSettings)


def _stage_sections():
    for cls in settings.STAGES:
        for name in (("prepare_style", "prepare_sr") if cls is PrepareSettings else (cls.SECTION,)):
            yield cls, name


@pytest.mark.parametrize("cls,name", list(_stage_sections()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_section_of_the_real_params_builds_and_round_trips(cls, name):
    obj = config.load(cls, name)
    raw = yaml.safe_load(config.params_path().read_text())[name]
    if name == "benchmark":
        raw = config.apply_profile(raw)
    got = settings.plain(obj)
    # every key written in the file comes back as written (the styles are resolved to absolute paths)
    for key, value in raw.items():
        if (name, key) == ("train", "style"):
            value = {**value, "styles": got["style"]["styles"]}
        _assert_holds(got[key], value, f"{name}.{key}")


def _assert_holds(got, written, where):
    """``got`` holds everything ``written`` (nested settings add their defaults for keys left out)."""
    if isinstance(written, dict):
        assert isinstance(got, dict), where
        for k, v in written.items():
            _assert_holds(got[k], v, f"{where}.{k}")
    elif isinstance(written, list):
        assert isinstance(got, list) and len(got) == len(written), where
        for i, (g, w) in enumerate(zip(got, written)):
            _assert_holds(g, w, f"{where}[{i}]")
    else:
        assert got == written and type(got) in (type(written), float), where


def test_settings_are_frozen_and_a_load_cannot_change_the_next():
    t = config.load(TrainSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.lr = 1.0
    with pytest.raises(TypeError):
        t.style.style_weights["la_muse"] = 1.0
    assert config.load(TrainSettings) == t


def test_per_style_values_resolve_from_one_place():
    s = config.load(TrainSettings).style
    assert s.weights("la_muse")["style"] == s.style_weights["la_muse"]
    assert s.network_of("starry_night_fast")["width"] == 0.3 and "width" not in s.network_of("starry_night")
    assert settings.per_job({"x4-pixel": 3}, "x4-pixel", "w") == 3 and settings.per_job(7, "any", "w") == 7
    with pytest.raises(ValueError, match=r"train.sr.iterations has no entry for 'x8-feat'"):
        settings.per_job({"x4-pixel": 3}, "x8-feat", "train.sr.iterations")



def test_a_style_job_continues_from_its_init_weights_and_the_others_start_fresh():
    """train.style.init (the release continues each style from its shipped file): per style, into the job spec."""
    from pipelines.release import release_params
    from pipelines.train import job_spec

    t = settings.build(TrainSettings, release_params()["train"], "release params: train")
    assert t.style.init == {"wave": "style-wave", "starry_night_fast": "style-starry_night_fast",
                            "starry_night": "style-starry_night", "la_muse": "style-la_muse",
                            "composition_vii": "style-composition_vii"}
    assert job_spec("style-wave", t)["init"] == "style-wave"
    assert job_spec("style-composition_vii", t)["init"] == "style-composition_vii"
    for job in ("style-wave", "style-composition_vii"):
        assert job_spec(job)["init"] is None, job  # `dvc repro`'s quick runs train from scratch


def test_the_release_fine_tunes_starry_night_at_its_own_tv_weight_and_rate():
    """release.style: the starry_night models, la_muse and composition_vii continue at TV 100 and lr 1e-4, wave
    at style 6e-5 and TV 20 (its style loss is a quarter of the others'); the common weights and Adam rate
    stay, and `dvc repro`'s quick runs keep their objectives (the shipped Gatys snapshots)."""
    from pipelines.release import release_params
    from pipelines.train import job_spec

    t = settings.build(TrainSettings, release_params()["train"], "release params: train")
    for job in ("style-starry_night", "style-starry_night_fast", "style-la_muse", "style-composition_vii"):
        spec = job_spec(job, t)
        assert (spec["weights"]["tv"], spec["lr"]) == (100.0, 1.0e-4), job
        assert spec["weights"]["style"] == 3.0e-5, job
    spec = job_spec("style-wave", t)
    assert (spec["weights"]["style"], spec["weights"]["tv"], spec["lr"]) == (6.0e-5, 20.0, 1.0e-4)
    assert (t.style.style_weight, t.style.tv_weight, t.lr) == (3.0e-5, 1.0e-5, 1.0e-3)
    for job in ("style-starry_night", "style-la_muse", "style-composition_vii", "style-wave"):
        assert (job_spec(job)["weights"]["style"], job_spec(job)["weights"]["tv"]) == (3.0e-5, 1.0e-5), job
        assert job_spec(job)["tv_size"] is None and job_spec(job, t)["tv_size"] == 362, job


def test_a_style_job_weighs_tv_as_at_the_release_size_on_its_crops(vgg):
    """release.style.tv_size 362: the release's 128² crops train with 8 times the TV weight the card scores
    (losses.tv_scale), a GPU bundle's 256² ones with 2 times; `dvc repro` with the weight itself."""
    from pipelines.release import release_params
    from pipelines.train import job_spec
    from pipelines.train.step import style_criterion

    t = settings.build(TrainSettings, release_params()["train"], "release params: train")
    spec = job_spec("style-starry_night", t)
    assert (spec["crop"], spec["weights"]["tv"]) == (128, 100.0)
    assert style_criterion(spec, vgg).weights["tv"] == pytest.approx(800.0, rel=1e-3)
    assert style_criterion({**spec, "crop": 256}, vgg).weights["tv"] == pytest.approx(200.0, rel=1e-3)
    muse = job_spec("style-la_muse", t)  # release.style.crops: la_muse went on at 256²
    assert muse["crop"] == 256 and style_criterion(muse, vgg).weights["tv"] == pytest.approx(200.0, rel=1e-3)
    quick = job_spec("style-la_muse")
    assert style_criterion(quick, vgg).weights["tv"] == quick["weights"]["tv"]


def test_a_style_trains_on_its_own_crop_where_set_and_a_gpu_bundle_on_the_gpus(vgg):
    """train.style.crops: one painting's crop side (its TV weighed for it, and on its card); the others keep
    `crop`. A GPU bundle drops the mapping, so its own crop (release.gpu) holds for every style."""
    from pipelines import gpu_bundle
    from pipelines.release import release_params
    from pipelines.release.records import _job_params
    from pipelines.train import job_spec
    from pipelines.train.step import style_criterion

    p = release_params()
    p["train"]["style"]["crops"] = {"wave": 192}
    t = settings.build(TrainSettings, p["train"], "release params: train")
    wave, other = job_spec("style-wave", t), job_spec("style-starry_night", t)
    assert (wave["crop"], other["crop"]) == (192, t.style.crop) and t.style.crop != 192
    tv = wave["weights"]["tv"] * (362 / 192) ** 2
    assert style_criterion(wave, vgg).weights["tv"] == pytest.approx(tv, rel=1e-3)
    assert (_job_params(p, "style-wave")["crop"], _job_params(p, "style-starry_night")["crop"]) == (192, t.style.crop)
    gpu_bundle._lay_gpu_settings(p, "style", gpu_bundle.gpu_settings("style"))
    assert "crops" not in p["train"]["style"]
    gpu = settings.build(TrainSettings, p["train"], "bundle params: train")
    assert job_spec("style-wave", gpu)["crop"] == gpu_bundle.gpu_settings("style")["crop"] == 256
    p["train"]["style"]["crops"] = {"waev": 192}  # a misspelt painting is named, not ignored
    with pytest.raises(SettingsError, match=r"train.style.crops: 'waev' is not one of the styles"):
        settings.build(TrainSettings, p["train"], "release params: train")


@pytest.mark.parametrize("section,change,message", [
    ("batch", {"tile": "big"}, r"batch.tile: expected an integer, got 'big'"),
    ("batch", {"tiel": 512}, r"batch.tiel: unknown setting"),
    ("batch", {"actors": 0}, r"batch.actors: must be >= 1"),
    ("batch", {"border": -2}, r"batch.border: must be >= 0, got -2"),
    ("inference", {"engine": "tensorrt"}, r"inference.engine: 'tensorrt' is not one of auto, eager, compile, onnx"),
    ("inference", {"verify": "yes"}, r"inference.verify: expected true or false"),
    ("benchmark", {"sr": {"sets": {}, "protocols": ["blur"], "primary": "standard"}}, r"benchmark.sr.primary"),
    ("train", {"lr": None}, r"train.lr: must be set"),
    ("train", {"style": {"data": "d", "styles": {"a": "a.jpg"}, "jobs": ["b"]}}, r"train.style.jobs: 'b' is not one of the styles"),
    ("train", {"style": {"data": "d", "styles": {"a": "a.jpg"}, "init": {"b": "style-b"}}},
     r"train.style.init: 'b' is not one of the styles"),
])
def test_a_bad_value_is_one_line_naming_the_file_and_key(tmp_path, monkeypatch, section, change, message):
    params = yaml.safe_load(config.params_path().read_text())
    params[section] = {**params[section], **change}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PERCEPTUAL_PARAMS", str(path))
    cls = {"batch": BatchSettings, "inference": InferenceSettings, "benchmark": BenchmarkSettings,
           "train": TrainSettings}[section]
    with pytest.raises(SettingsError, match=message) as e:
        config.load(cls)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_overrides_are_checked_like_the_file():
    b = config.load(BatchSettings, tile=512, overlap=None)
    assert (b.tile, b.overlap) == (512, config.load(BatchSettings).overlap)
    with pytest.raises(SettingsError, match=r"batch.format: expected a string"):
        config.load(BatchSettings, format=3)


def test_choices_come_from_the_core():
    from perceptual_core.options import ENGINES, PRECISIONS

    import typing

    hints = typing.get_type_hints(InferenceSettings)
    assert typing.get_args(hints["engine"]) == ENGINES and typing.get_args(hints["precision"]) == PRECISIONS
    for p in PRECISIONS:
        assert config.load(InferenceSettings, precision=p).precision == p
