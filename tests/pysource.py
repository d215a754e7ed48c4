"""Parse the project's own Python files for the house-rule tests (test_layout, test_logging)."""
from __future__ import annotations

import ast
from pathlib import Path


def parse(path: Path) -> ast.Module:
    """ast.parse of a file, retried once on CPython 3.11.7's spurious "AST constructor recursion depth
    mismatch" SystemError (gh-106905, fixed in 3.11.8): seen once in a full suite run, on a file that
    parses cleanly on its own, after other tests left threads running in the process."""
    text = path.read_text()
    try:
        return ast.parse(text)
    except SystemError as e:
        if "recursion depth mismatch" not in str(e):
            raise
        return ast.parse(text)
