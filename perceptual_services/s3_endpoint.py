"""The S3-compatible endpoint: moto's server on 127.0.0.1, a development dependency. It accepts any
credentials (the env file carries obviously fake ones) and keeps buckets in memory, so they are gone
after ``down``; ``up --no-s3`` leaves it out, e.g. to point AWS_ENDPOINT_URL at your own MinIO."""
from __future__ import annotations

import sys
from pathlib import Path

from .config import FAKE_AWS, HOST, ServiceError
from .net import http_ok


def urls(stack) -> dict[str, str]:
    return {"s3": f"http://{HOST}:{stack.port('s3')}"}


def client_env(stack) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": urls(stack)["s3"], **FAKE_AWS}


def healthy(stack, timeout: float) -> bool:
    return http_ok(f"http://{HOST}:{stack.port('s3')}/", timeout, any_status=True)


def command(stack, env: dict) -> tuple[list[str], dict, Path]:
    import importlib.util

    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise ServiceError("the local S3 endpoint is moto's server, a development dependency: "
                           "pip install -e '.[test]' (or `services up --no-s3` and set "
                           "AWS_ENDPOINT_URL to your own S3-compatible endpoint, e.g. MinIO)")
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(stack.port("s3"))], env, stack.cfg.state_dir
