"""Write infra/docker/constraints.txt: the exact pins (==) of pyproject.toml, which every image installs
with. tests/test_infra.py fails when the file and pyproject disagree.

    python infra/docker/gen_constraints.py          # rewrite the file
    python infra/docker/gen_constraints.py --check  # exit 1 if it is stale
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("constraints.txt")
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;,]+)\s*(;.*)?$")


def pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{normalised name: version} of every exact pin in [project] dependencies and optional extras."""
    proj = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(proj.get("dependencies", []))
    for extra in proj.get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for r in reqs:
        m = PIN.match(r)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    return out


def render(p: dict[str, str] | None = None) -> str:
    p = pins() if p is None else p
    head = ("# Generated from pyproject.toml by infra/docker/gen_constraints.py: do not edit by hand.\n"
            "# Every image installs the project with `pip install --constraint` this file.\n")
    return head + "".join(f"{k}=={v}\n" for k, v in sorted(p.items()))


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
