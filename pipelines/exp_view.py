"""`make exp`: DVC's experiments table a screen wide.

`dvc exp show` prints every param of params.yaml, every metric and a hash column per code and data
dependency: about 270 columns for this pipeline, which its terminal table collapses to the first few
(the changed param is the first to go). DVC's answer is its own filters; this applies them and
shortens what they leave:

- DVC filters: `--only-changed` (the params and metrics that differ between the rows) and `--drop`
  of the dependency-hash columns (paths under the project's code and data folders, no `:`);
- turned round: a column per experiment, a line per figure (the changed params first, then the
  metrics), since the experiments shown are few and the figures many;
- a metric is named by its file's last folders without `metrics`/`outputs`/`.json`:
  `train/style-la_muse:loss` instead of `outputs/train/style-la_muse/metrics.json:loss`.

Arguments pass to `dvc exp show` (e.g. `--keep train.lr`, `-A`, `-n 5`). The numbers are DVC's (its
CSV output), printed to 5 significant digits as its own table prints them.
"""
from __future__ import annotations

import csv
import io
import subprocess
import sys

DEPS = r"^(assets|models|perceptual_core|pipelines|data|outputs|metrics|reports)(/[^:]*)?$"
_META = ("rev", "typ", "parent", "State", "Executor")


def short(column: str) -> tuple[str, str]:
    """(source, key) of a `dvc exp show` column: a metric's `path:key` -> its file's short name and key;
    a param or a bare metric name -> ("", column)."""
    path, sep, key = column.rpartition(":")
    if not sep:
        return "", column
    parts = [p for p in path.removesuffix(".json").split("/") if p not in ("metrics", "outputs", "")]
    return "/".join(parts[-2:]), key


def table(rows: list[dict[str, str]], params: set[str]) -> str:
    """One column per experiment, one line per changed param (first) and metric: the experiments shown
    are few (DVC's default: the last commit and its experiments), the changed figures many, so this way
    round stays a screen wide."""
    if not rows:
        return "no experiments"
    names = [c for c in rows[0] if c not in _META + ("Experiment", "Created")]
    first = [c for c in names if c in params]
    order = first + [c for c in names if c not in params]
    labels = [c if c in params else ":".join(p for p in short(c) if p) for c in order]
    head = [_cell(r, "Experiment") for r in rows]
    created = [_cell(r, "Created") for r in rows]
    body = [[_cell(r, c) for r in rows] for c in order]
    lw = max([len(x) for x in labels] + [len("created")])
    widths = [max(len(head[i]), len(created[i]), *(len(line[i]) for line in body)) for i in range(len(rows))]

    def line(label: str, cells: list[str]) -> str:
        return "  ".join([label.ljust(lw)] + [v.rjust(w) for v, w in zip(cells, widths)]).rstrip()

    out = [line("", head), line("created", created), "  ".join("-" * w for w in [lw] + widths)]
    for i, (label, cells) in enumerate(zip(labels, body)):
        if i == len(first) and first:
            out.append("")  # params above, metrics below
        out.append(line(label, cells))
    if not order:
        out.append("(no param or metric differs between these rows: `dvc metrics show` has the values)")
    return "\n".join(out)


def _cell(row: dict[str, str], col: str) -> str:
    v = row.get(col) or ""
    if col == "Experiment":
        rev = row.get("rev", "")
        return f"{v} ({rev})" if v and rev else v or rev
    if col == "Created":
        return v.replace("T", " ")[5:16] if v else "-"  # MM-DD HH:MM
    try:
        return f"{float(v):.5g}" if "." in v or "e" in v else v or "-"  # 5 digits, as DVC's own table
    except ValueError:
        return v or "-"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from perceptual_services.processes import venv_tool  # the venv's own dvc, else PATH's

    from .log import get, setup

    setup()
    try:
        dvc = venv_tool("dvc")
    except RuntimeError as e:
        get(__name__).error(f"make exp: {e}")
        return 2
    cmd = [dvc, "exp", "show", "--no-pager", "--only-changed", "--drop", DEPS, *argv, "--csv"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        get(__name__).error(f"make exp: dvc exp show failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        return r.returncode
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    print(table(rows, {c for c in (rows[0] if rows else {}) if is_param(c)}))
    return 0


def is_param(column: str) -> bool:
    """A params.yaml key as `dvc exp show` names it: dotted, no file path (a metric is `file:key`, or a
    bare key where only one file has it: this project's metric keys have no dots; top-level params such
    as `data_dir` are listed with the metrics)."""
    return ":" not in column and "." in column and "/" not in column


if __name__ == "__main__":
    sys.exit(main())
