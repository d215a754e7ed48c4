"""The MLflow tracking server: ``mlflow server`` on 127.0.0.1 with a sqlite store and a local artifact
folder in the state folder (so runs outlive a restart), its health and the URI a client needs."""
from __future__ import annotations

from pathlib import Path

from .config import HOST
from .net import http_ok
from .processes import venv_tool


def urls(stack) -> dict[str, str]:
    return {"mlflow": f"http://{HOST}:{stack.port('mlflow')}"}


def client_env(stack) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": urls(stack)["mlflow"]}


def healthy(stack, timeout: float) -> bool:
    return http_ok(f"http://{HOST}:{stack.port('mlflow')}/health", timeout)


def command(stack, env: dict) -> tuple[list[str], dict, Path]:
    d = stack.cfg.state_dir / "mlflow"
    (d / "artifacts").mkdir(parents=True, exist_ok=True)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # else a job-runner child outlives SIGTERM
    cmd = [venv_tool("mlflow"), "server", "--host", HOST, "--port", str(stack.port("mlflow")),
           "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
           "--artifacts-destination", str(d / "artifacts"), "--workers", "1"]
    return cmd, env, d
