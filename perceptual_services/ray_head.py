"""The Ray head: `ray start --head --block` with the dashboard (so the Jobs API works) and token auth on,
since not every Ray process can be bound to 127.0.0.1; its health, the addresses a client needs, and
the token file (``up`` creates it, mode 0600, never printed)."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .config import HOST, MAX_RAY_TMPDIR_LEN, ServiceError
from .net import http_ok, tcp_ok
from .processes import venv_tool


def urls(stack) -> dict[str, str]:
    return {"ray": f"{HOST}:{stack.port('ray')}", "ray_dashboard": f"http://{HOST}:{stack.port('ray_dashboard')}",
            "ray_client": f"ray://{HOST}:{stack.port('ray_client')}"}


def client_env(stack) -> dict[str, str]:
    u = urls(stack)
    return dict(RAY_ADDRESS=u["ray"], RAY_API_SERVER_ADDRESS=u["ray_dashboard"],
                RAY_DASHBOARD_URL=u["ray_dashboard"], RAY_CLIENT_ADDRESS=u["ray_client"],
                RAY_TMPDIR=str(stack.cfg.ray_tmpdir), RAY_AUTH_MODE="token",
                RAY_AUTH_TOKEN_PATH=str(stack.token_path))  # the file's path; the token stays in it


def healthy(stack, timeout: float) -> bool:
    base = f"http://{HOST}:{stack.port('ray_dashboard')}"
    return (tcp_ok(stack.port("ray"), timeout)
            and http_ok(f"{base}/api/version", timeout, headers=auth_header(stack.token_path))
            and http_ok(f"{base}/api/gcs_healthz", timeout))


def command(stack, env: dict) -> tuple[list[str], dict, Path]:
    cfg, tmp = stack.cfg, stack.cfg.ray_tmpdir
    if len(str(tmp)) > MAX_RAY_TMPDIR_LEN:
        raise ServiceError(f"Ray temp folder {tmp} is {len(str(tmp))} characters; Ray's socket paths "
                           f"below it must stay under 108 bytes: use one of at most {MAX_RAY_TMPDIR_LEN}")
    tmp.mkdir(parents=True, exist_ok=True)
    # Token auth on for every Ray process (they inherit this environment, job drivers too).
    env.update(RAY_TMPDIR=str(tmp), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(stack.token_path),
               RAY_enable_metrics_collection="0")  # else a Prometheus port on 0.0.0.0, without auth
    cmd = [venv_tool("ray"), "start", "--head", "--block", f"--port={stack.port('ray')}",
           f"--node-ip-address={HOST}", "--include-dashboard=true", f"--dashboard-host={HOST}",
           f"--dashboard-port={stack.port('ray_dashboard')}", f"--ray-client-server-port={stack.port('ray_client')}",
           f"--dashboard-agent-listen-port={stack.port('ray_agent')}", "--disable-usage-stats"]
    if cfg.ray_num_cpus is not None:
        cmd.append(f"--num-cpus={cfg.ray_num_cpus}")
    if cfg.ray_object_store_memory:
        cmd.append(f"--object-store-memory={cfg.ray_object_store_memory}")
    return cmd, env, cfg.state_dir


def ensure_token(path: Path) -> None:
    """Ray's auth token: created once (mode 0600, never printed), kept while Ray runs so a restart
    after a crash keeps the env file valid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size < 32:
            raise ServiceError(f"{path} is not a token file `up` made (a link, another owner's "
                               "or too short): remove it and run `up` again") from None
        if st.st_mode & 0o077:
            os.chmod(path, 0o600)
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate`


def auth_header(path: Path) -> dict[str, str]:
    try:
        return {"Authorization": "Bearer " + path.read_text().strip()}
    except OSError:
        return {}
