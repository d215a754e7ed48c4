"""Registry promotion: move the `champion` alias to the `challenger` only when the benchmark says it is better.

    perceptual promote NAME [--dry-run] [--by WHO]     compare NAME@challenger with NAME@champion
    perceptual promote NAME --rollback                 champion back to the one it replaced
    perceptual promote --all                           DVC stage `promote`: every model params' train jobs name
    (also: python -m pipelines.promote ...)

The metric, its direction and the margin come from params `promote.families` (first `match`, an
fnmatch pattern on the registered name, wins). The values are the `bench.*` metrics that
pipelines/benchmark/ logs to each judged version's MLflow run; two versions are compared only
when their `bench.config` tags (hash of the benchmark settings) are equal. Nothing is promoted on
a missing metric. Every decision is recorded as `promotion.*` tags on the challenger version;
`promotion.previous_champion` is what `--rollback` follows, so rolling back twice walks further back.
"""
from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
from datetime import datetime, timezone

from . import config, log, tracking
from .settings import PromoteSettings, TrainSettings
from .settings.bench import PromotionFamily

CHAMPION = "champion"
PREFIX = "promotion."
# Kept when a later decision on the same version does not promote it: the rollback chain and its history.
HISTORY_TAGS = ("previous_champion", "rolled_back_at", "rolled_back_by", "rolled_back_to")
MOVES = ("promoted", "first_champion")  # decisions that move `champion` to the challenger
# Refusal reasons. Only missing_metric fails `--all`: the benchmark should have produced the figure.
MISSING, MISMATCH, ROLLED_BACK = "missing_metric", "config_mismatch", "rolled_back"
BELOW_BASELINE = "below_baseline"  # a rejection: worse than the family's baseline (params promote.families[].baseline)


# ------------------------------------------------------------------------------- params

def settings() -> PromoteSettings:
    """params' `promote` section, checked: out (the DVC metrics: decision counts), decisions (every decision;
    default: beside `out`), families [{match, metric, mode, min_delta, min_rel_delta, baseline}]."""
    return config.load(PromoteSettings)  # a missing section is a SettingsError (a ValueError) naming the file


def family(name: str, s: PromoteSettings | None = None) -> PromotionFamily:
    """The first promote.families entry whose `match` pattern fits the registered model name."""
    s = s or settings()
    fam = s.family(name)
    if fam is None:
        pats = ", ".join(f.match for f in s.families)
        raise ValueError(f"{name}: no promote.families entry matches this model name (patterns: {pats}) "
                         f"in {config.params_path()}")
    return fam


def model_names(t: TrainSettings | None = None) -> list[str]:
    """Registered names of the models `dvc repro` trains: style-NAME, sr-JOB, srcnn-JOB."""
    t = t or config.load(TrainSettings)
    return [f"{kind}-{job}" for kind in ("style", "sr", "srcnn") for job in t.kind(kind).jobs]


# ------------------------------------------------------------------------------- registry reads

def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # a container uid without a passwd entry
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _registered(client, name: str):
    """The RegisteredModel, or None when the store has no model of that name."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _value(client, name: str, mv, metric: str) -> tuple[float | None, str]:
    """(latest value of `metric` on the version's run, '') or (None, why it is missing)."""
    from mlflow.exceptions import MlflowException

    if not mv.run_id:
        return None, f"{name} v{mv.version} has no MLflow run"
    try:
        v = client.get_run(mv.run_id).data.metrics.get(metric)  # the latest value logged
    except MlflowException as e:
        return None, f"{name} v{mv.version}: run {mv.run_id} unreadable ({e.error_code})"
    if v is None:
        return None, f"{name} v{mv.version} (run {mv.run_id}) has no metric {metric}"
    if not math.isfinite(v):
        return None, f"{name} v{mv.version} (run {mv.run_id}) has a non-finite {metric} = {v}"
    if not mv.tags.get("bench.config"):
        return None, f"{name} v{mv.version} has {metric} but no bench.config tag (not from `benchmark`)"
    return float(v), ""


# ------------------------------------------------------------------------------- decisions

def _required(fam: PromotionFamily, champion_value: float) -> float:
    """The improvement the challenger needs: at least min_delta and at least min_rel_delta * |champion|."""
    return max(float(fam.min_delta), float(fam.min_rel_delta) * abs(champion_value))


def _record(client, name: str, version: str, dec: dict) -> None:
    """The decision as promotion.* tags on `version`; stale keys of an earlier decision are removed."""
    keys = ("decision", "reason", "metric", "mode", "champion", "challenger_value", "champion_value", "baseline_value",
            "delta",
            "improvement", "required", "bench_config", "by", "at", "previous_champion")
    tags = {PREFIX + k: str(dec[k]) for k in keys if dec.get(k) not in (None, "")}
    keep = set() if dec["decision"] in MOVES else {PREFIX + k for k in HISTORY_TAGS}
    old = client.get_model_version(name, version).tags
    for k in old:
        if k.startswith(PREFIX) and k not in tags and k not in keep:
            client.delete_model_version_tag(name, version, k)
    tracking.set_version_tags(name, version, tags)


def promote(name: str, *, rollback: bool = False, dry_run: bool = False, by: str | None = None) -> dict:
    """Judge NAME@challenger against NAME@champion (or roll back); returns the decision dict.

    decision: first_champion | promoted | rejected | already_champion | refused (reason_code:
    missing_metric | config_mismatch | rolled_back) | rolled_back. ValueError for an unknown model,
    a model without a challenger, a name no params family matches, or nothing to roll back to."""
    if rollback:
        return _rollback(name, dry_run=dry_run, by=by)
    fam = family(name)
    client = tracking._client()
    rm = _registered(client, name)
    if rm is None:
        raise ValueError(f"{name}: no registered model of this name at {tracking.tracking_uri()}")
    if tracking.CHALLENGER not in rm.aliases:
        raise ValueError(f"{name}: has no {tracking.CHALLENGER!r} alias (aliases: {sorted(rm.aliases) or 'none'})")
    chal = client.get_model_version(name, str(rm.aliases[tracking.CHALLENGER]))
    champ_v = rm.aliases.get(CHAMPION)
    champ = client.get_model_version(name, str(champ_v)) if champ_v else None
    metric, mode = fam.metric, fam.mode
    dec = {"model": name, "decision": None, "reason_code": None, "reason": "", "metric": metric, "mode": mode,
           "challenger": str(chal.version), "champion": str(champ.version) if champ else None,
           "new_champion": str(champ.version) if champ else None, "challenger_value": None,
           "champion_value": None, "baseline_value": None, "delta": None, "improvement": None, "required": None,
           "bench_config": chal.tags.get("bench.config"), "previous_champion": None,
           "by": _who(by), "at": _now(), "dry_run": dry_run}

    if champ is not None and str(champ.version) == str(chal.version):
        dec.update(decision="already_champion", reason=f"v{chal.version} is already {CHAMPION}")
        return dec  # nothing was decided: no tags
    if chal.tags.get(PREFIX + "rolled_back_at"):
        # A human demoted it; re-promoting it on the same figures would undo that. Retrain, or delete the tag.
        dec.update(decision="refused", reason_code=ROLLED_BACK,
                   reason=f"{name} v{chal.version} was rolled back from {CHAMPION} by "
                          f"{chal.tags.get(PREFIX + 'rolled_back_by', '?')} at {chal.tags[PREFIX + 'rolled_back_at']}; "
                          f"delete its tag {PREFIX}rolled_back_at to let it compete again")
        return _finish(client, dec, dry_run)
    dec["challenger_value"], why = _value(client, name, chal, metric)
    if dec["challenger_value"] is None:
        dec.update(decision="refused", reason_code=MISSING, reason=f"challenger {why}")
        return _finish(client, dec, dry_run)
    if fam.baseline:  # the floor: beat the family's baseline (bicubic, the unchanged photo), first or not
        base, why = _value(client, name, chal, fam.baseline)
        if base is None:
            dec.update(decision="refused", reason_code=MISSING, reason=f"challenger {why} (the baseline)")
            return _finish(client, dec, dry_run)
        dec["baseline_value"] = base
        if not (dec["challenger_value"] > base if mode == "max" else dec["challenger_value"] < base):
            dec.update(decision="rejected", reason_code=BELOW_BASELINE,
                       reason=f"{metric} {dec['challenger_value']:.6g} does not beat the baseline "
                              f"{fam.baseline} {base:.6g}")
            return _finish(client, dec, dry_run)
    if champ is None:
        dec.update(decision="first_champion", new_champion=str(chal.version),
                   reason=f"no {CHAMPION} yet: the first benchmarked challenger becomes {CHAMPION}")
        return _finish(client, dec, dry_run)
    dec["champion_value"], why = _value(client, name, champ, metric)
    if dec["champion_value"] is None:
        dec.update(decision="refused", reason_code=MISSING, reason=f"champion {why}")
        return _finish(client, dec, dry_run)
    if champ.tags.get("bench.config") != chal.tags.get("bench.config"):
        dec.update(decision="refused", reason_code=MISMATCH,
                   reason=f"{name} v{chal.version} and v{champ.version} were benchmarked with different settings "
                          f"(bench.config {chal.tags.get('bench.config')} vs {champ.tags.get('bench.config')}); "
                          f"benchmark both with the same params")
        return _finish(client, dec, dry_run)
    return _finish(client, _judge(dec, fam, champ), dry_run)


def _judge(dec: dict, fam: PromotionFamily, champ) -> dict:
    """``dec`` decided on its figures: promoted when better than the champion by the required margin."""
    delta = dec["challenger_value"] - dec["champion_value"]
    improvement = delta if dec["mode"] == "max" else -delta
    required = _required(fam, dec["champion_value"])
    # Float noise must not turn an improvement of exactly the margin into a rejection.
    tol = 1e-9 * max(1.0, abs(dec["champion_value"]))
    dec.update(delta=delta, improvement=improvement, required=required)
    if improvement > 0 and improvement >= required - tol:
        dec.update(decision="promoted", new_champion=dec["challenger"], previous_champion=str(champ.version),
                   reason=f"better than v{champ.version} by {improvement:.6g} (needs {required:.6g})")
    elif improvement <= 0:
        dec.update(decision="rejected", reason=f"not better than v{champ.version}")
    else:
        dec.update(decision="rejected", reason=f"better than v{champ.version} by {improvement:.6g}, "
                                               f"less than the required margin {required:.6g}")
    return dec


def unservable(uri: str) -> str | None:
    """Why the registry version behind ``uri`` may not serve batch jobs, or None when it may.

    Servable: a version `perceptual promote` moved to champion (promotion.decision promoted or
    first_champion, not rolled back since) or a shipped release (release.sha256, written by
    `pipelines.release register`). An alias alone proves nothing: anyone who can write to the
    registry can point `champion` anywhere; the decision tags record that the benchmark judged it."""
    from .release import RELEASE_TAG

    name, alias, version = tracking._parse_models_uri(uri)
    mv = tracking._lookup(uri, name, alias=alias, version=version)
    tags = mv.tags or {}
    if tags.get(RELEASE_TAG):
        return None
    if tags.get(PREFIX + "rolled_back_at"):
        return (f"{name} v{mv.version} was rolled back from {CHAMPION} by {tags.get(PREFIX + 'rolled_back_by', '?')} "
                f"at {tags[PREFIX + 'rolled_back_at']}")
    if tags.get(PREFIX + "decision") in MOVES:
        return None
    return (f"{name} v{mv.version} was never promoted (no {PREFIX}decision promoted/first_champion tag, not a "
            f"shipped release)")


def _finish(client, dec: dict, dry_run: bool) -> dict:
    if dry_run:
        return dec
    name, chal = dec["model"], dec["challenger"]
    _record(client, name, chal, dec)
    if dec["decision"] in MOVES:
        tracking.set_alias(name, CHAMPION, chal)
    return dec


def _rollback(name: str, *, dry_run: bool, by: str | None) -> dict:
    client = tracking._client()
    rm = _registered(client, name)
    if rm is None:
        raise ValueError(f"{name}: no registered model of this name at {tracking.tracking_uri()}")
    if CHAMPION not in rm.aliases:
        raise ValueError(f"{name}: has no {CHAMPION!r} alias: nothing to roll back")
    cur = client.get_model_version(name, str(rm.aliases[CHAMPION]))
    prev = cur.tags.get(PREFIX + "previous_champion")
    if not prev:
        raise ValueError(f"{name}: {CHAMPION} v{cur.version} has no {PREFIX}previous_champion tag (it became "
                         f"{CHAMPION} first or outside `perceptual promote`): no earlier {CHAMPION} to roll back to")
    existing = {str(v.version) for v in client.search_model_versions(f"name='{name}'")}
    if prev not in existing:
        raise ValueError(f"{name}: the previous {CHAMPION} v{prev} of v{cur.version} no longer exists")
    dec = {"model": name, "decision": "rolled_back", "reason_code": None,
           "reason": f"{CHAMPION} moved back from v{cur.version} to v{prev}", "champion": str(cur.version),
           "new_champion": prev, "by": _who(by), "at": _now(), "dry_run": dry_run}
    if not dry_run:
        tracking.set_alias(name, CHAMPION, prev)
        tracking.set_version_tags(name, cur.version, {PREFIX + "rolled_back_at": dec["at"],
                                                      PREFIX + "rolled_back_by": dec["by"],
                                                      PREFIX + "rolled_back_to": prev})
    return dec


def _headline(counts: dict) -> dict:
    """promote.out's numbers, one row of `dvc metrics show` in four short columns: champions moved
    (promoted, first champions included), challengers rejected, refusals, and models with nothing to judge
    (skipped, or the challenger already champion); each outcome's own count is in promote.decisions."""
    return {"promoted": counts["promoted"] + counts["first_champion"], "rejected": counts["rejected"],
            "refused": counts["refused"], "skipped": counts["skipped"] + counts["already_champion"]}


def promote_all(*, dry_run: bool = False, by: str | None = None) -> tuple[list, int]:
    """Every model params' train jobs name; writes (unless dry_run) the decisions to promote.decisions and
    their counts per outcome to promote.out (the DVC metrics: a few numbers, so `dvc metrics show` stays
    readable). Returns (decisions, exit code): 1 only if a refusal was for a missing metric."""
    s = settings()
    names = model_names()
    for n in names:  # a params mistake fails before any alias moves
        family(n, s)
    client = tracking._client()
    decisions = []
    for n in names:
        rm = _registered(client, n)
        if rm is None or tracking.CHALLENGER not in rm.aliases:
            note = "not registered" if rm is None else f"no {tracking.CHALLENGER!r} alias"
            decisions.append({"model": n, "decision": "skipped", "reason_code": None, "reason": note})
            continue
        decisions.append(promote(n, dry_run=dry_run, by=by))
    code = 1 if any(d.get("reason_code") == MISSING for d in decisions) else 0
    if not dry_run:
        counts = {k: sum(d["decision"] == k for d in decisions) for k in
                  ("promoted", "first_champion", "rejected", "already_champion", "refused", "skipped")}
        for path, doc in ((s.decisions, {"at": _now(), "by": _who(by),
                                            "tracking_uri": tracking.redact(tracking.tracking_uri()),
                                            "counts": counts, "decisions": decisions}),
                          (s.out, _headline(counts))):
            path = config.resolve(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=1) + "\n")
    return decisions, code


# ------------------------------------------------------------------------------- output and CLI

def _fmt(v) -> str:
    return "-" if v is None else f"{v:.6g}"


def describe(d: dict) -> str:
    """One line: what happened, on which figures, with the margin."""
    head = f"{d['model']}: {d['decision'].upper().replace('_', ' ')}"
    if d.get("dry_run"):
        head += " (dry run: nothing changed)"
    if d["decision"] == "rolled_back":
        return f"{head}: {d['reason']}"
    if d["decision"] in ("skipped", "already_champion"):
        return f"{head}: {d['reason']}"
    figs = (f"challenger v{d['challenger']} {d['metric']} = {_fmt(d['challenger_value'])}"
            + (f", champion v{d['champion']} = {_fmt(d['champion_value'])}" if d.get("champion") else ""))
    if d.get("delta") is not None:
        sign = ">= +" if d["mode"] == "max" else "<= -"
        figs += f", delta {d['delta']:+.6g} (needs {sign}{d['required']:.6g}, {d['mode']} is better)"
    return f"{head}: {figs}; {d['reason']}"


def _add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="registered model name, e.g. sr-x4-pixel, srcnn-x4, style-la_muse")
    p.add_argument("--all", action="store_true",
                   help="every model params' train jobs name; writes promote.decisions and promote.out "
                        "(the DVC stage)")
    p.add_argument("--rollback", action="store_true", help="move champion back to the version it replaced")
    p.add_argument("--dry-run", action="store_true", help="decide and print; change no alias, tag or file")
    p.add_argument("--by", help="who decides (recorded in promotion.by; default $USER)")


def cmd_promote(a) -> int:
    """Handler of `perceptual promote`; returns the exit code (1: refused)."""
    if a.all == bool(a.name):
        raise ValueError("promote: give a model NAME or --all (not both)")
    if a.all:
        if a.rollback:
            raise ValueError("promote: --rollback needs a model NAME, not --all")
        decisions, code = promote_all(dry_run=a.dry_run, by=a.by)
        for d in decisions:
            print(describe(d))
        if not a.dry_run:
            s = settings()
            log.get(__name__).info(f"decisions written to {config.resolve(s.decisions)} "
                                   f"(counts: {config.resolve(s.out)})")
        return code
    d = promote(a.name, rollback=a.rollback, dry_run=a.dry_run, by=a.by)
    print(describe(d))
    return 1 if d["decision"] == "refused" else 0


def add_cli(subparsers) -> None:
    """Register `promote` on the `perceptual` parser's subparsers (sets fn=)."""
    s = subparsers.add_parser("promote", help="DVC stage: move the registry's champion alias to a better "
                                              "challenger (or --rollback)")
    _add_arguments(s)
    s.set_defaults(fn=cmd_promote)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.promote", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    log.setup()
    try:
        return cmd_promote(p.parse_args(argv))
    except ValueError as e:  # these name the model and the parameter
        log.get(__name__).error(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
