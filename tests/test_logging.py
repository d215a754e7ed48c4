"""Issue 19: the library and the stages narrate through `logging` (pipelines/log.py: the `perceptual`
loggers), so `perceptual -q` quiets them; only the CLI prints its own output to stderr."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

from pysource import parse

ROOT = Path(__file__).resolve().parents[1]


def _writes_to_stderr(node: ast.AST) -> bool:
    """print(..., file=sys.stderr) or sys.stderr.write(...)."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Name) and f.id == "print":
        return any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr" for k in node.keywords)
    return isinstance(f, ast.Attribute) and f.attr == "write" and ast.unparse(f.value) == "sys.stderr"


def test_no_print_to_stderr_outside_the_cli():
    allowed = {"pipelines/cli.py"}  # the command line's own output: summaries, `error: ...` lines
    found = []
    for d in ("perceptual_core", "pipelines"):
        for f in sorted((ROOT / d).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            if rel in allowed:
                continue
            found += [f"{rel}:{n.lineno}" for n in ast.walk(parse(f)) if _writes_to_stderr(n)]
    assert not found, f"log through pipelines/log.py (perceptual_core: logging.getLogger('perceptual.core...')): {found}"


def test_quiet_silences_the_narration_and_the_default_shows_it(monkeypatch, capsys):
    from pipelines import cli, jobs

    monkeypatch.setattr(jobs, "submit", lambda *a, **k: "raysubmit_1")  # no Ray cluster needed
    for flags, shown in (([], True), (["-q"], False), (["--verbose"], True), (["--quiet"], False)):
        assert cli.main([*flags, "batch", "submit", "--", "upscale"]) == 0
        out, err = capsys.readouterr()
        assert out == "raysubmit_1\n", flags  # the command's own output stays
        assert ("follow it: perceptual batch logs raysubmit_1" in err) is shown, (flags, err)
    assert logging.getLogger("perceptual").level == logging.WARNING


def test_setup_is_idempotent_and_keeps_an_explicit_level(capsys):
    from pipelines import log

    log.setup(logging.WARNING)
    log.setup()  # a stage's main() under `perceptual -q`: still quiet, still one handler
    logger = logging.getLogger("perceptual")
    assert logger.level == logging.WARNING and sum(getattr(h, "perceptual", False) for h in logger.handlers) == 1
    log.get("pipelines.promote").info("hidden")
    log.get("pipelines.promote").warning("shown")
    assert capsys.readouterr().err == "shown\n" and log.get("pipelines.train.tracked").name == "perceptual.train.tracked"


def test_a_line_prints_once_where_a_library_configured_the_root_logger(capsys):
    """Some of the driver's imports call logging.basicConfig: the `perceptual` handler must not leave
    the record to print a second time through the root logger."""
    import sys

    from pipelines import log

    root = logging.getLogger()
    extra = logging.StreamHandler(sys.stderr)
    root.addHandler(extra)
    try:
        log.setup()
        log.get("pipelines.test").info("said once")
        assert capsys.readouterr().err.count("said once") == 1
    finally:
        root.removeHandler(extra)
