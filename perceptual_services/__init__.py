"""Local services on 127.0.0.1 for development and tests: a Ray head (with the dashboard, so the
Ray Jobs API works), an ``mlflow server`` (sqlite + local artifact folder) and an S3-compatible
endpoint (moto's server), started and stopped by PID. Nothing here imports the pipelines.

    perceptual services up|down|status|env      (also: python -m perceptual_services ...;
    make services-up / make services-down)

``up`` writes one env file, ``tmp/services/services.env`` by default, with every address a
client needs (RAY_ADDRESS, RAY_API_SERVER_ADDRESS for the Jobs API, MLFLOW_TRACKING_URI,
AWS_ENDPOINT_URL, ...), and ``state.json`` beside it with each service's PID, process group,
start time, command line and ports. ``down`` stops exactly what ``up`` started: every process
it launched carries ``PERCEPTUAL_SERVICE_TAG=<stack id>:<service>`` in its environment (children
inherit it, also those that leave the process group, such as Ray job drivers), and a recorded
PID is only signalled after its start time and command line are checked again. Nothing is
ever killed by name. ``up`` again after a crash restarts only the services that are not running,
on the ports they had, so the env file stays valid.

Ray keeps token authentication on (``RAY_AUTH_MODE=token``): not every Ray process can be bound
to 127.0.0.1 (Ray 2.60's GCS, raylet, dashboard agent and workers listen on all interfaces,
whatever ``--node-ip-address`` says), so without a token anyone on the network could run code on
the head. ``up`` creates a random token (256 bits) in ``ray_auth_token`` in the state folder, mode
0600, and keeps it while Ray runs (a restart after a crash reuses it); ``down`` deletes it. The
token is never printed nor written anywhere else: the head and every Ray process, job driver and
worker read it through ``RAY_AUTH_TOKEN_PATH``, and the env file carries that path and
``RAY_AUTH_MODE=token``, which is what ``ray.init(address=...)``, ``ray job submit`` /
``JobSubmissionClient`` and ``perceptual batch`` need (a ``RAY_AUTH_TOKEN`` set in the shell would
take precedence: ``services env`` unsets it). The dashboard / Jobs API answers 401 without the
token. Left open by Ray: read-only Prometheus metrics of the autoscaler monitor and the dashboard;
the dashboard agent's metrics port is switched off (``RAY_enable_metrics_collection=0``). The
dashboard, MLflow and the S3 endpoint bind 127.0.0.1 only; tests/test_services.py checks all this.

The S3 endpoint accepts any credentials; the env file carries obviously fake ones. moto is a
development dependency (``pip install -e '.[test]'``): ``--no-s3`` leaves it out, e.g. to point
AWS_ENDPOINT_URL at your own MinIO. moto keeps buckets in memory, so they are gone after ``down``.

Modules: config (services, ports, file names, StackConfig), stack (up/down/status of one state
folder), ray_head / mlflow_server / s3_endpoint (each service's command line, health, addresses),
processes (PIDs, tags, signals; the venv's tools), files (state.json, the env file, logs), net
(port and health probes), cli (the `services` commands).
"""
from .cli import add_cli, main
from .config import (DEFAULT_PORTS, ENV_FILE, FAKE_AWS, SERVICES, STATE_FILE, TAG_VAR, TOKEN_FILE, PortInUseError,
                     ServiceError, StackConfig)
from .files import load_env_file
from .stack import Stack

__all__ = ["DEFAULT_PORTS", "ENV_FILE", "FAKE_AWS", "SERVICES", "STATE_FILE", "TAG_VAR", "TOKEN_FILE",
           "PortInUseError", "ServiceError", "Stack", "StackConfig", "add_cli", "load_env_file", "main"]
