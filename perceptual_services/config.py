"""What a local stack is made of, in one place: its services, their ports (away from the usual
defaults), the names of its files, the fake AWS keys, and the settings of one stack (StackConfig)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SERVICES = ("ray", "mlflow", "s3")
DEFAULT_STATE_DIR = ROOT / "tmp" / "services"
DEFAULT_RAY_TMPDIR = ROOT / "tmp" / "ray"  # short: Ray's socket paths below it must stay < 108 bytes
MAX_RAY_TMPDIR_LEN = 40                    # + "/ray/session_<date>_<time>_<us>_<pid>/sockets/..." ~ 67
ENV_FILE, STATE_FILE = "services.env", "state.json"
TOKEN_FILE = "ray_auth_token"  # Ray's auth token, mode 0600, in the state folder while Ray runs
TAG_VAR = "PERCEPTUAL_SERVICE_TAG"

# Away from the usual defaults (Ray 6379/8265/10001/52365, MLflow and moto 5000, which macOS
# AirPlay also takes). 0 means "any free port" (chosen at the first start, then kept).
DEFAULT_PORTS = {
    "ray": 26379,            # GCS: RAY_ADDRESS
    "ray_dashboard": 28265,  # dashboard + Jobs API: RAY_API_SERVER_ADDRESS
    "ray_client": 20001,     # ray://127.0.0.1:PORT (Ray Client)
    "ray_agent": 0,          # the dashboard agent's HTTP port (Ray's default 52365 clashes between heads)
    "mlflow": 25000,
    "s3": 29000,
}
PORTS_OF = {"ray": ("ray", "ray_dashboard", "ray_client", "ray_agent"), "mlflow": ("mlflow",), "s3": ("s3",)}
WHAT = {"ray": "Ray head", "ray_dashboard": "Ray dashboard / Jobs API", "ray_client": "Ray Client server",
        "ray_agent": "Ray dashboard agent", "mlflow": "MLflow tracking server", "s3": "S3 endpoint (moto)"}
PORT_OPTION = {"ray": "--ray-port", "ray_dashboard": "--dashboard-port", "ray_client": "--ray-client-port",
               "ray_agent": "--ray-agent-port", "mlflow": "--mlflow-port", "s3": "--s3-port"}
# Obviously fake: moto accepts any key. Never real credentials in a file.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "local-moto-fake-key", "AWS_SECRET_ACCESS_KEY": "local-moto-fake-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}


class ServiceError(RuntimeError):
    """A service did not start, is unhealthy, or cannot be stopped; the message says what to do."""


class PortInUseError(ServiceError):
    pass


@dataclass
class StackConfig:
    """``ports``: per key of DEFAULT_PORTS, None = the port it last ran on, else the default; 0 = the port
    it last ran on, else any free one; N = exactly N."""
    state_dir: Path = DEFAULT_STATE_DIR
    ray_tmpdir: Path = DEFAULT_RAY_TMPDIR
    ports: dict = field(default_factory=dict)
    ray_num_cpus: int | None = None                 # None: Ray counts the cores
    ray_object_store_memory: int | None = 400_000_000
    timeout: float = 120.0                          # seconds to wait for health
    stop_grace: float = 10.0                        # SIGTERM, then SIGKILL after this many seconds

    def __post_init__(self):
        self.state_dir = Path(self.state_dir).resolve()
        self.ray_tmpdir = Path(self.ray_tmpdir).resolve()
        unknown = set(self.ports or {}) - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"unknown port keys {sorted(unknown)}; known: {', '.join(DEFAULT_PORTS)}")
        self.ports = {k: (self.ports or {}).get(k) for k in DEFAULT_PORTS}
