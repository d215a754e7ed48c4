"""Submit `perceptual` commands to a Ray cluster through the Ray Jobs API, and follow them.

    perceptual batch submit [--address URL] [--env KEY[=VALUE]]... [--wait] -- stylize --model ... --input s3://...
    perceptual batch status JOB_ID      perceptual batch logs JOB_ID [--follow]

The job runs `perceptual ARGS...` on the cluster, where the project is installed (the container
image in infra/); `--working-dir` ships a source tree instead. Its environment carries only what
is named: the tracking server, the S3 endpoint and --env. Credentials are refused here: runtime
env variables are visible in the dashboard, so jobs take them from the cluster (Kubernetes
Secrets, instance roles), never from the submitter.
"""
from __future__ import annotations

import os
import re
import shlex
import time

from .log import get

log = get(__name__)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
FORWARDED = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
_SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.I)
_EXCLUDES = [".venv", ".git", "data", "outputs", "tmp", "mlruns", "mlflow.db", ".perceptual_cache", ".dvc/cache"]


def address(arg: str | None = None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS (what `ray job` reads), else the local dashboard."""
    return arg or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS


def client(addr: str | None = None):
    from ray.job_submission import JobSubmissionClient

    a = address(addr)
    try:
        return JobSubmissionClient(a)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(f"--address {a}: no Ray dashboard / Jobs API answering there ({e})") from None


def without_credentials(key: str, value: str) -> str:
    """``value`` with any ``user:password@`` of a URI removed: a job's environment shows in the Ray
    dashboard and its logs, so passwords never travel in it (the cluster gets its own, e.g.
    MLFLOW_TRACKING_USERNAME/PASSWORD from a Kubernetes Secret)."""
    from .tracking import redact

    stripped = redact(value)
    if stripped != value:
        log.warning(f"jobs: {key}: the credentials in its URI are not sent with the job; give the cluster its own")
    return stripped


def job_env(pairs: list[str]) -> dict[str, str]:
    """The job's environment: forwarded settings that are set here, then --env KEY=VALUE / KEY; URIs
    lose any credentials (`without_credentials`)."""
    env = {k: os.environ[k] for k in FORWARDED if os.environ.get(k)}
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if uri and not uri.startswith(("http://", "https://", "databricks")):
        del env["MLFLOW_TRACKING_URI"]  # a local sqlite file means nothing on the cluster
    for p in pairs:
        key, sep, value = p.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--env {p!r}: expected KEY=VALUE or KEY")
        if _SECRET.search(key):
            raise ValueError(f"--env {key}: credentials are not sent with a job (they would show in the "
                             f"dashboard); give the cluster its own (a Kubernetes Secret, an instance role)")
        if not sep:
            if key not in os.environ:
                raise ValueError(f"--env {key}: not set in this environment")
            value = os.environ[key]
        env[key] = value
    return {k: without_credentials(k, v) for k, v in env.items()}


def submit(args: list[str], *, addr: str | None = None, env: list[str] = (), working_dir: str | None = None,
           job_id: str | None = None) -> str:
    if not args:
        raise ValueError("nothing to submit: give the command after --, e.g. -- stylize --model ...")
    runtime_env: dict = {"env_vars": job_env(list(env))}
    if working_dir:
        runtime_env.update(working_dir=working_dir, excludes=_EXCLUDES)
    entry = shlex.join(["perceptual", "batch", *args])
    return client(addr).submit_job(entrypoint=entry, runtime_env=runtime_env, submission_id=job_id)


TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def wait(job_id: str, addr: str | None = None, timeout: float | None = None, poll: float = 2.0) -> str:
    c = client(addr)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = str(c.get_job_status(job_id)).split(".")[-1]
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout} s")
        time.sleep(poll)


def cmd_submit(a) -> int:
    job = submit(a.args, addr=a.address, env=a.env, working_dir=a.working_dir, job_id=a.job_id)
    print(job)
    if not a.wait:
        log.info(f"follow it: perceptual batch logs {job} --follow --address {address(a.address)}")
        return 0
    status = wait(job, a.address)
    log.info("%sjob %s: %s", client(a.address).get_job_logs(job), job, status)  # the job's own logs end in a newline
    return 0 if status == "SUCCEEDED" else 1


def cmd_status(a) -> int:
    info = client(a.address).get_job_info(a.job_id)
    status = str(info.status).split(".")[-1]
    print(f"{a.job_id}: {status}" + (f" ({info.message})" if info.message else ""))
    return 0


def cmd_logs(a) -> int:
    c = client(a.address)
    if not a.follow:
        print(c.get_job_logs(a.job_id), end="")
        return 0
    import asyncio

    async def tail():
        async for lines in c.tail_job_logs(a.job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    return 0


def add_cli(sub) -> None:
    """`batch submit|status|logs` subcommands on the `batch` subparsers."""
    import argparse

    s = sub.add_parser("submit", help="submit a batch command to a Ray cluster (Ray Jobs API); prints the job id")
    s.add_argument("--address", help=f"Ray dashboard URL (default $RAY_API_SERVER_ADDRESS or {DEFAULT_ADDRESS})")
    s.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set in the job's environment (KEY alone: this environment's value); no credentials")
    s.add_argument("--working-dir", help="ship this source tree with the job (default: the cluster's install)")
    s.add_argument("--job-id", help="submission id (default: generated)")
    s.add_argument("--wait", action="store_true", help="wait for the job, print its logs, exit 1 if it failed")
    s.add_argument("args", nargs=argparse.REMAINDER, help="-- stylize|upscale OPTIONS (as for `perceptual batch`)")
    s.set_defaults(fn=lambda a: cmd_submit(_strip_dashdash(a)))
    for name, fn, helptext in (("status", cmd_status, "status of a submitted job"),
                               ("logs", cmd_logs, "logs of a submitted job")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("job_id")
        s.add_argument("--address")
        if name == "logs":
            s.add_argument("--follow", "-f", action="store_true")
        s.set_defaults(fn=fn)


def _strip_dashdash(a):
    if a.args and a.args[0] == "--":
        a.args = a.args[1:]
    return a
