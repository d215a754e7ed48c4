"""The files of a stack's state folder: ``state.json`` (what runs: PIDs, start times, command lines,
ports), the env file a client sources, and the services' logs. Written atomically, so a crash of
`up` or `down` never leaves half a file for the next one to read."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from .config import DEFAULT_STATE_DIR, ENV_FILE


def _atomic_write(path: Path, text: str) -> None:
    from perceptual_core.io import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def load_state(path: Path) -> dict:
    """The recorded state, or a fresh one (a new stack id) when there is none."""
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError):
        st = {}
    st.setdefault("stack_id", uuid.uuid4().hex[:12])
    st.setdefault("services", {})
    st.setdefault("ports", {})  # ports each service last ran on (reused when the config says 0)
    return st


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(state, indent=1, sort_keys=True) + "\n")


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """``env`` as KEY=VALUE lines under a header that says how to use them; no file when ``env`` is empty."""
    if not env:
        path.unlink(missing_ok=True)
        return
    lines = [f"# Written by `perceptual services up` ({time.strftime('%Y-%m-%d %H:%M:%S')}); removed by `down`.",
             "# Use: set -a; . " + str(path) + "; set +a   (or: eval \"$(perceptual services env)\")",
             "# Local development only. Ray token auth is on: the token is in RAY_AUTH_TOKEN_PATH (mode 0600),",
             "# never in this file; unset RAY_AUTH_TOKEN, which would override it. The AWS keys are fake (moto)."]
    lines += [f"{k}={v}" for k, v in env.items()]
    _atomic_write(path, "\n".join(lines) + "\n")


def load_env_file(path: str | os.PathLike | None = None) -> dict[str, str]:
    """KEY=VALUE lines of a services env file (``tmp/services/services.env`` by default)."""
    p = Path(path) if path else DEFAULT_STATE_DIR / ENV_FILE
    out = {}
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip().removeprefix("export ").strip()] = v.strip()
    return out


def tail(path: Path, n: int = 3000) -> str:
    """The last ``n`` characters of a log ("" when there is none)."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
