"""`make run`: `dvc repro` with the whole job's progress, stage i of n and the time since the start.

DVC prints progress inside a stage (the stages' own bars) but not where the job stands: on 2 cores a
fresh `make run` takes minutes, and a user cannot tell the fourth stage of fourteen from the last.
This wrapper lists the pipeline's stages (`dvc stage list`), runs `dvc repro` unchanged (arguments
pass through, e.g. `python -m pipelines.make_run -f report`), and prints a line as each stage starts
or is skipped as unchanged, then the total time. DVC writes its own messages to stdout, which is
read line by line here (unbuffered); the stages' stderr, where their progress bars are, passes
straight through.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

_STAGE = re.compile(r"^(Running stage|Stage) '([^']+)'")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def stages(dvc: str) -> list[str]:
    r = subprocess.run([dvc, "stage", "list", "--name-only"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"dvc stage list failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return [s for s in r.stdout.split() if s]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from perceptual_services.processes import venv_tool  # the venv's own, else PATH; one-line error if neither

    from .log import get, setup

    setup()

    try:
        dvc = venv_tool("dvc")
        names = stages(dvc)
    except RuntimeError as e:  # ServiceError: no dvc; or `dvc stage list` failed
        get(__name__).error(f"[make run] error: {e}")
        return 2
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1"}
    seen: set[str] = set()
    t0 = time.monotonic()
    print(f"[make run] dvc repro: {len(names)} stages", flush=True)
    proc = subprocess.Popen([dvc, "repro", *argv], stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
    for line in proc.stdout:
        m = _STAGE.match(line)
        if m and m.group(2) not in seen:
            seen.add(m.group(2))
            what = "running" if m.group(1) == "Running stage" else "unchanged"
            print(f"[make run] stage {len(seen)}/{len(names)} {m.group(2)}: {what} "
                  f"({_clock(time.monotonic() - t0)} elapsed)", flush=True)
        sys.stdout.write(line)
        sys.stdout.flush()
    rc = proc.wait()
    state = "done" if rc == 0 else f"failed (exit {rc})"
    print(f"[make run] {state} in {_clock(time.monotonic() - t0)}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
