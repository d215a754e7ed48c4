"""benchmark_sr's reusable scores (pipelines/benchmark/score_cache.py): an entry is keyed by everything
that determines it, a cached score equals a fresh one, and the release's models/scores.json still
matches what the code computes today (a stale file, e.g. after a metric changed without SCORE_VERSION,
fails here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perceptual_core import sr_eval as ev
from perceptual_core import zoo
from pipelines.benchmark import score_cache, score_pairs, sr_methods
from pipelines.benchmark.score_cache import ScoreCache, entry_key, model_key


@pytest.fixture(scope="module")
def pairs(data_dir):
    return ev.load_pairs(data_dir / "Set5" / "HR", 4, data_dir / "Set5" / "LR_bicubic_x4")[:2]


def test_key_follows_every_input(pairs):
    net = zoo.load("sr-x4-pixel")
    k = model_key("network", net)
    base = entry_key(k, pairs[0], 4, ("relu2_2",), "vggsha")
    assert base == entry_key(model_key("network", zoo.load("sr-x4-pixel")), pairs[0], 4, ("relu2_2",), "vggsha")
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-3
    changed = [entry_key(model_key("network", net), pairs[0], 4, ("relu2_2",), "vggsha"),  # other weights
               entry_key(k, pairs[1], 4, ("relu2_2",), "vggsha"),                          # other image
               entry_key(k, ev.Pair(pairs[0].name, pairs[0].hr, pairs[0].lr.astype(np.float64) / 255), 4,
                         ("relu2_2",), "vggsha"),                                          # other LR
               entry_key(k, pairs[0], 8, ("relu2_2",), "vggsha"),                          # other scale
               entry_key(k, pairs[0], 4, ("relu2_2", "relu3_3"), "vggsha"),                # other layers
               entry_key(k, pairs[0], 4, ("relu2_2",), "othervgg")]                        # other loss network
    assert len({base, *changed}) == 7


def test_registry_copy_is_the_same_method():
    """A champion loaded from the registry (the release as a project checkpoint) keys as the shipped file."""
    from perceptual_core.checkpoint import load_model

    data = zoo.checkpoint_bytes("sr-x8-feat")
    assert model_key("network", load_model("ckpt", data=data)) == model_key("network", zoo.load("sr-x8-feat"))


def test_cached_scores_equal_fresh_ones_and_crops_still_come(pairs, vgg, tmp_path):
    methods = {"bicubic": ("bicubic", sr_methods.bicubic(4)),
               "ours": ("ours", sr_methods.network(zoo.load("sr-x4-pixel"), 4)),
               "plain": ("unkeyed", ev.bicubic_method(4))}  # no score_key: always scored
    cache = ScoreCache([tmp_path / "scores.json"])
    first = score_pairs(methods, pairs, 4, vgg, ("relu2_2",), "first", cache=cache)
    assert (cache.hits, cache.misses) == (0, 4)
    assert cache.save() == tmp_path / "scores.json"
    seen = []
    again = ScoreCache([tmp_path / "scores.json"])
    second = score_pairs(methods, pairs, 4, vgg, ("relu2_2",), "second", cache=again,
                         on_image=lambda mid, label, p, img, m: seen.append((mid, p.name, img.shape)),
                         wanted=lambda p: p.name == pairs[1].name)
    assert (again.hits, again.misses) == (4, 0)
    assert second == first
    assert first["plain"] == first["bicubic"]  # the unkeyed copy scored the same
    assert sorted(seen) == sorted((m, pairs[1].name, pairs[1].hr.shape) for m in methods)  # only the wanted image


def test_a_damaged_cache_file_is_named(tmp_path):
    f = tmp_path / "scores.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match=str(f)):
        ScoreCache([f])


def test_shipped_scores_match_a_rescore(data_dir, vgg):
    """A sample of models/scores.json (Set5, both protocols, x4 and x8, a baseline and the shipped
    networks) rescored now: the same figures."""
    from pipelines import config
    from pipelines.benchmark.sr import _pairs
    from pipelines.release.scores import shipped_methods
    from pipelines.settings import BenchmarkSettings, DegradationSettings

    shipped = json.loads((zoo.models_dir() / score_cache.SHIPPED).read_text())
    assert shipped["version"] == score_cache.SCORE_VERSION
    sr = config.load(BenchmarkSettings).sr
    layers = tuple(sr.vgg_layers)
    checked = 0
    for scale in (4, 8):
        methods = shipped_methods(scale, sr)
        assert {"bicubic", "srcnn-official", f"sr-x{scale}-pixel", f"sr-x{scale}-feat", "srcnn-x4"} <= set(methods)
        for protocol, ps in _pairs("Set5", data_dir / "Set5/HR", scale, sr, config.load(DegradationSettings)).items():
            p = ps[checked % len(ps)]
            fresh = score_pairs(methods, [p], scale, vgg, layers, f"rescore x{scale} {protocol}")
            for mid, (_, fn) in methods.items():
                key = entry_key(fn.score_key, p, scale, layers, vgg.info.sha256)
                assert key in shipped["entries"], (scale, protocol, mid, p.name)
                assert shipped["entries"][key] == pytest.approx(fresh[mid][0], rel=1e-9), (scale, protocol, mid)
            checked += 1
    assert checked == 4


def test_gatys_store_round_trip_and_keys(vgg, tmp_path):
    """A stored Gatys run comes back as the same tensors; any input that determines it changes the key."""
    from perceptual_core.gatys import gatys
    from pipelines.benchmark.gatys_cache import GatysStore, gatys_key

    g = torch.Generator().manual_seed(0)
    c, s = torch.rand(3, 24, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    opts = {"optimizer": "lbfgs", "init": "content", "style_size": 32}
    res = gatys(c, s, vgg, iters=3, snapshot_at=[1, 3], content_weight=1.0, style_weight=1e-5, tv_weight=1e-6, **opts)
    key = gatys_key(c, s, (1.0, 1e-5, 1e-6), [1, 3], opts, vgg.info.sha256)
    store = GatysStore([tmp_path / "a", tmp_path / "b"])
    assert store.get(key) is None
    assert store.put(key, res.snapshots, 1.5) == tmp_path / "a" / f"{key}.safetensors"
    snaps, evals = GatysStore([tmp_path / "b", tmp_path / "a"]).get(key)  # found in any folder
    assert evals == 1.5 and snaps.keys() == {1, 3}
    assert all(torch.equal(snaps[i], res.snapshots[i]) for i in (1, 3))
    others = {gatys_key(c.flip(-1), s, (1.0, 1e-5, 1e-6), [1, 3], opts, vgg.info.sha256),
              gatys_key(c, s.flip(-1), (1.0, 1e-5, 1e-6), [1, 3], opts, vgg.info.sha256),
              gatys_key(c, s, (1.0, 2e-5, 1e-6), [1, 3], opts, vgg.info.sha256),
              gatys_key(c, s, (1.0, 1e-5, 1e-6), [1, 5], opts, vgg.info.sha256),
              gatys_key(c, s, (1.0, 1e-5, 1e-6), [1, 3], {**opts, "init": "noise"}, vgg.info.sha256),
              gatys_key(c, s, (1.0, 1e-5, 1e-6), [1, 3], opts, "other")}
    assert len(others | {key}) == 7
    (tmp_path / "a" / f"{key}.safetensors").write_bytes(b"damaged")
    with pytest.raises(ValueError, match=f"{key}.safetensors"):
        GatysStore([tmp_path / "a"]).get(key)


@pytest.mark.slow
def test_shipped_gatys_matches_a_rerun(vgg):
    """models/gatys/ holds benchmark_style's default photo x style: its 100-iteration image scores as a
    fresh run's 100 iterations on the same objective (L-BFGS is not bit-reproducible across CPUs: a run
    on another machine ended up to 1.0 apart in some pixels, its loss 0.08% from this one), and the 300/500
    snapshots continue to lower it."""
    from perceptual_core.gatys import gatys
    from perceptual_core.inference import resize_longer
    from perceptual_core.io import load_image
    from pipelines import config, embedded
    from pipelines.benchmark import style_objective
    from pipelines.benchmark.gatys_cache import SHIPPED_DIR, GatysStore, gatys_key
    from pipelines.settings import BenchmarkSettings, TrainSettings

    st, job = config.load(BenchmarkSettings).style, config.load(TrainSettings).style.jobs[0]
    weights, style_path = style_objective(job)
    w = tuple(float(weights[k]) for k in ("content", "style", "tv"))
    gkw, iters = config.gatys_kwargs(), sorted(st.gatys_iters)
    opts = {k: gkw[k] for k in ("optimizer", "init", "style_size", "content_layers", "style_layers")}
    photo = embedded.builtin_photos(list(st.content_embedded), "content_embedded")[0]  # the no-data default
    c, s = resize_longer(load_image(photo).to_tensor(), st.size), load_image(style_path).to_tensor()
    found = GatysStore([zoo.models_dir() / SHIPPED_DIR]).get(gatys_key(c, s, w, iters, opts, vgg.info.sha256))
    assert found is not None, "models/gatys/ lacks the default photo: run `python -m pipelines.release scores`"
    snaps, evals = found
    assert set(snaps) == set(iters) and 1.0 <= evals <= 5.0
    fresh = gatys(c, s, vgg, iters=iters[0], snapshot_at=[iters[0]], content_weight=w[0], style_weight=w[1],
                  tv_weight=w[2], **opts)
    from perceptual_core.losses import PerceptualLoss

    crit = PerceptualLoss(vgg, opts["content_layers"], opts["style_layers"], content_weight=1.0, style_weight=1.0,
                          tv_weight=1.0)
    crit.set_style(s, opts["style_size"])

    def total(img):
        with torch.no_grad():
            r = crit(img[None], content=c[None])
        return w[0] * float(r["content"]) + w[1] * float(r["style"]) + w[2] * float(r["tv"])

    stored = [total(snaps[i]) for i in iters]
    assert total(fresh.snapshots[iters[0]]) == pytest.approx(stored[0], rel=0.05)
    assert stored == sorted(stored, reverse=True) and stored[-1] < total(c)
