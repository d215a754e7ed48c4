"""The SR table's columns at one scale: bicubic, the official SRCNN, the SRCNN retrained here and ours
l_pixel / l_feat from the registry (and their champions), each a function LR -> SR with its label. A
method without weights at a scale is a "not measured" entry, never a missing column without a reason.
"""
from __future__ import annotations

from .. import jobname
from ..settings.bench import BenchSRSettings
from .inputs import _data_path, _not_measured
from .registry import CHAMPION, champion_beside, registry_model
from .results import log
from .score_cache import model_key


def _srcnn_then_bicubic(net, scale: int, native: int):
    """SRCNN at its own scale, then MATLAB bicubic for the rest (x8 = x4 + bicubic x2, labelled so)."""
    from perceptual_core.resize import imresize
    from perceptual_core.srcnn import srcnn_upscale

    def run(lr):
        sr, y = srcnn_upscale(net, lr, native)
        if scale == native:
            return sr, y
        return imresize(sr, scale // native), None

    run.score_key = model_key("srcnn", net, native=native)
    return run


def bicubic(scale: int):
    """MATLAB bicubic, the table's first column (no weights: always the same scores)."""
    from perceptual_core import sr_eval as ev

    run = ev.bicubic_method(scale)
    run.score_key = {"method": "bicubic"}
    return run


def network(net, scale: int):
    """A feed-forward SR network, keyed by its weights (score_cache)."""
    from perceptual_core import sr_eval as ev

    run = ev.network_method(net, scale)
    run.score_key = model_key("network", net)
    return run


def official_weights(scale: int, sr: BenchSRSettings) -> tuple[int | None, str | None]:
    """(native scale, .mat path under data_dir) of the official SRCNN weights used at ``scale``: its own
    scale, else the largest one that divides it (run there, then bicubic); (None, None) when none does."""
    off = dict(sr.srcnn_official)
    native = scale if scale in off else max((s for s in off if scale % s == 0), default=None)
    return (native, off[native]) if native else (None, None)


def methods(scale: int, sr: BenchSRSettings, alias: str, judged: dict, missing: list) -> dict:
    """method id -> (label, fn). Adds each judged version to ``judged`` ({(label name, its scale): version})
    and each method not measured to ``missing``."""
    from perceptual_core.srcnn import load_srcnn_mat

    out = {"bicubic": ("bicubic", bicubic(scale))}
    native, mat = official_weights(scale, sr)
    if native and not _data_path(mat).is_file():
        nm = _not_measured(f"benchmark.sr.srcnn_official.{native}", mat, _data_path(mat))
        missing.append({"method": "srcnn-official", "scale": scale, "reason": nm["reason"],
                        "fetch": nm["fetch"]})
        log(f"benchmark_sr: x{scale} srcnn-official: {nm['reason']} ({nm['path']} is not there)")
    elif native:
        label = "SRCNN (official)" + ("" if native == scale else f" x{native} + bicubic x{scale // native}")
        out["srcnn-official"] = (label, _srcnn_then_bicubic(load_srcnn_mat(_data_path(mat)), scale, native))
    else:
        missing.append({"method": "srcnn-official", "scale": scale, "reason": "no official weights for this scale"})
    for mid, names in (("srcnn", list(dict.fromkeys([f"srcnn-x{scale}", "srcnn-x4"]))), ("pixel", [f"sr-x{scale}-pixel"]),
                       ("feat", [f"sr-x{scale}-feat"])):
        for name in names:
            model, mv = registry_model(name, alias)
            if model is not None:
                break
        versions = [(mid, name, model, mv)] if model is not None else []
        # the champion, judged on the same images so promotion can compare them; alone where this run
        # trained no challenger of that job (make run's quick default retrains x4 only)
        champion = champion_beside(name, alias, mv if versions else None)
        if champion is not None:
            versions.append((f"{mid}@{CHAMPION}", f"{name}@{CHAMPION}", *champion))
        if model is None:
            log(f"benchmark_sr: x{scale} {mid}: {'only the champion' if versions else 'skipped'} ({mv})")
            if not versions:
                missing.append({"method": mid, "scale": scale, "reason": mv})
        for m_id, label_name, net, v in versions:
            tag = f"{CHAMPION} v{v.version}" if "@" in m_id else f"v{v.version}"
            if mid == "srcnn":
                native = jobname.parse(name).scale
                label = f"SRCNN (ours, {tag})" + ("" if native == scale else f" + bicubic x{scale // native}")
                out[m_id] = (label, _srcnn_then_bicubic(net, scale, native))
            else:
                out[m_id] = (f"ours l_{mid} ({tag})", network(net, scale))
            judged.setdefault((label_name, scale if mid != "srcnn" else native), v)
    return out


def method_id(label_name: str) -> str:
    """The SR table's method id of a judged model: srcnn | pixel | feat, `@champion` for the champion."""
    name, at, alias = label_name.partition("@")
    return jobname.parse(name).method + (at + alias if at else "")
