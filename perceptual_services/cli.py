"""`perceptual services up|down|status|env` and `python -m perceptual_services ...`: one parser for both,
so the options and what they print are the same whichever way the stack is driven."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import (DEFAULT_PORTS, DEFAULT_RAY_TMPDIR, DEFAULT_STATE_DIR, PORT_OPTION, SERVICES, WHAT,
                     ServiceError, StackConfig)
from .files import load_env_file
from .stack import Stack


def _add_arguments(ss) -> None:
    def common(p):
        p.add_argument("--state-dir", default=os.environ.get("PERCEPTUAL_SERVICES_DIR") or str(DEFAULT_STATE_DIR),
                       help="state folder: services.env, state.json, logs, MLflow store "
                            "(default $PERCEPTUAL_SERVICES_DIR or tmp/services)")

    p = ss.add_parser("up", help="start what is not running (also after a crash of one service); write the env file")
    common(p)
    for key, opt in PORT_OPTION.items():
        p.add_argument(opt, type=int, default=None, dest=f"port_{key}",
                       help=f"{WHAT[key]} port (default {DEFAULT_PORTS[key] or 'any free'}; 0: any free port)")
    p.add_argument("--no-s3", action="store_true", help="leave out the moto S3 endpoint")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs the Ray head offers (default: all)")
    p.add_argument("--object-store-memory", type=int, default=400_000_000, help="Ray object store bytes")
    p.add_argument("--ray-tmpdir", default=str(DEFAULT_RAY_TMPDIR), help="Ray's temp folder (keep it short)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service's health check")
    p = ss.add_parser("down", help="stop exactly the processes `up` started")
    common(p)
    p = ss.add_parser("status", help="each service, its PID, address and health")
    common(p)
    p.add_argument("--json", action="store_true")
    p = ss.add_parser("env", help="print `export` lines for the running services: eval \"$(perceptual services env)\"")
    common(p)


def _config(a) -> StackConfig:
    ports = {key: getattr(a, f"port_{key}", None) for key in DEFAULT_PORTS}  # None: last used, else default
    return StackConfig(state_dir=Path(a.state_dir), ray_tmpdir=Path(getattr(a, "ray_tmpdir", DEFAULT_RAY_TMPDIR)),
                       ports=ports, ray_num_cpus=getattr(a, "num_cpus", None),
                       ray_object_store_memory=getattr(a, "object_store_memory", 400_000_000),
                       timeout=getattr(a, "timeout", 120.0))


def _print_status(stack: Stack) -> int:
    rows = stack.status()
    print(f"{'service':8} {'state':9} {'pid':>8}  address")
    for r in rows:
        state = "healthy" if r["healthy"] else ("unhealthy" if r["running"] else "stopped")
        addr = r["url"] or "-"
        if r["service"] == "ray" and r["url"]:
            addr += f"  (Jobs API / dashboard {stack.urls()['ray_dashboard']})"
        print(f"{r['service']:8} {state:9} {r['pid'] or '-':>8}  {addr}")
    if stack.env_path.exists():
        print(f"env file: {stack.env_path}")
    started = [r for r in rows if r["pid"]]
    return 0 if started and all(r["healthy"] for r in started) else 1


def cmd_services(a) -> int:
    """Handler of `perceptual services up|down|status|env`; returns the exit code."""
    stack = Stack(_config(a))
    try:
        if a.action == "up":
            stack.up([s for s in SERVICES if not (s == "s3" and a.no_s3)])
            return _print_status(stack)
        if a.action == "down":
            stopped = stack.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            return 0
        if a.action == "status":
            if a.json:
                print(json.dumps(stack.status(), indent=1))
                started = [r for r in stack.status() if r["pid"]]
                return 0 if started and all(r["healthy"] for r in started) else 1
            return _print_status(stack)
        if a.action == "env":
            if not stack.env_path.exists():
                print(f"error: no env file at {stack.env_path}: run `perceptual services up` first", file=sys.stderr)
                return 1
            env = load_env_file(stack.env_path)
            if "RAY_AUTH_TOKEN_PATH" in env:
                print("unset RAY_AUTH_TOKEN")  # it would take precedence over the stack's token file
            for k, v in env.items():
                print(f"export {k}={v}")
            return 0
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    raise ValueError(a.action)


def add_cli(subparsers) -> None:
    """Register `services up|down|status|env` on the `perceptual` parser's subparsers (sets fn=)."""
    s = subparsers.add_parser("services", help="local Ray head + MLflow server + S3 endpoint on 127.0.0.1 "
                                               "(development and tests)")
    _add_arguments(s.add_subparsers(dest="action", required=True))
    s.set_defaults(fn=cmd_services)


def main(argv: list[str] | None = None) -> int:
    import perceptual_services

    p = argparse.ArgumentParser(prog="python -m perceptual_services", description=perceptual_services.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p.add_subparsers(dest="action", required=True))
    return cmd_services(p.parse_args(argv))
