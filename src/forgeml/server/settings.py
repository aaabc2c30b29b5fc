"""Server settings: keyword arguments, then ``FORGEML_*`` environment variables, then defaults."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .limits import default_worker_memory_limit, machine_memory_bytes, parse_count, parse_size

__all__ = ["DeviceUnavailableError", "ServerSettings", "check_device_spec", "default_max_processes", "resolve_device"]

DEVICE_HELP = "auto (a GPU when one is there, else the CPU), cpu, cuda or cuda:N"


class DeviceUnavailableError(RuntimeError):
    """A device was asked for explicitly (a setting, a job) but this machine cannot provide it."""


def check_device_spec(value: str) -> str:
    """``value`` normalised (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); a ValueError for anything else."""
    spec = str(value).strip().lower()
    if spec in ("auto", "cpu", "cuda"):
        return spec
    kind, sep, index = spec.partition(":")
    if kind == "cuda" and sep and index.isdigit():
        return f"cuda:{int(index)}"
    raise ValueError(f"device must be {DEVICE_HELP}; got {value!r}")


def resolve_device(spec: str | None) -> str:
    """The device a setting or a job names, checked against this machine: ``'cpu'`` or ``'cuda:N'``.

    ``auto`` (or None) is ``cuda:0`` when :func:`forgeml.cuda.is_available`, else ``cpu``. An explicit CUDA
    device that is not there raises :class:`DeviceUnavailableError` with what to do instead.
    """
    from forgeml import cuda

    spec = check_device_spec(spec or "auto")
    if spec == "auto":
        return "cuda:0" if cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    index = int(spec.partition(":")[2] or 0)
    if not cuda.is_available():
        raise DeviceUnavailableError(
            f"device {spec!r} was asked for, but CUDA is not available on this machine (no CuPy, or no GPU that "
            'CuPy sees; pip install "forgeml[gpu]" on a GPU machine). Use device "auto" or "cpu" '
            "(FORGEML_DEVICE, forgeml serve --device) to train on the CPU."
        )
    count = cuda.device_count()
    if count and index >= count:
        raise DeviceUnavailableError(
            f"device {spec!r} was asked for, but this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
        )
    return f"cuda:{index}"


def default_max_processes() -> int:
    """The default cap on a job's ``processes``: this machine's cores, at most 4."""
    from ..distributed.launch import available_cpus

    return min(4, available_cpus())


class ServerSettings(BaseModel):
    """How the platform runs. The API key is a ``SecretStr``: it never appears in a repr, log or response.

    With ``api_key`` set, every ``/v1`` route needs ``Authorization: Bearer <key>``; ``/metrics`` needs it too
    when ``metrics_require_key`` is true (``FORGEML_METRICS_REQUIRE_KEY=true``), and stays open otherwise (the
    default, for a Prometheus scraper on a private network). Without an API key ``/metrics`` is always open.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=0, le=65535)
    data_dir: Path = Path("forgeml-data")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in data_dir")
    api_key: SecretStr | None = None
    workers: int = Field(default=2, ge=1, le=64, description="training jobs that run at once (worker processes)")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    ai_rate_limit: int = Field(default=60, ge=1, description="requests per minute per client on /v1/ai/*")
    max_predict_batch: int = Field(default=1024, ge=1)
    fast_predict: bool = Field(
        default=True,
        description="answer plain predictions from loaded models without FastAPI's routing (same answers, about a "
        "third less CPU; forgeml.server.fast_predict); false: every prediction goes through the route",
    )
    worker_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="scheduling niceness of training workers: the API and predictions stay responsive while jobs run",
    )

    device: str = Field(
        default="auto",
        description=f"where training jobs and predictions run: {DEVICE_HELP} (FORGEML_DEVICE)",
    )

    worker_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="BLAS threads per training worker; default: the cores left after one for the server, shared "
        "among the workers (at least 1)",
    )

    max_processes: int = Field(
        default_factory=default_max_processes,
        ge=1,
        le=256,
        description="the most processes one training job may ask for (its 'processes'; more is a 422); default: "
        "this machine's cores, at most 4 (FORGEML_MAX_PROCESSES)",
    )

    metrics_require_key: bool = Field(
        default=False,
        description="GET /metrics needs 'Authorization: Bearer <api_key>' like the /v1 routes (401 without it); "
        "only when an API key is set (FORGEML_METRICS_REQUIRE_KEY: true/false, 1/0, yes/no, on/off)",
    )

    ai_calls_max_rows: int = Field(
        default=100_000,
        ge=1,
        description="rows of the ai_calls table (the AI calls training jobs made) kept, at most; older ones are "
        "added into the ai_call_totals roll-up and deleted, so /metrics totals stay whole (FORGEML_AI_CALLS_MAX_ROWS)",
    )
    ai_calls_max_age: float = Field(
        default=90 * 86400,
        gt=0,
        description="seconds an ai_calls row is kept, at most; older ones are rolled up and deleted the same way "
        "(FORGEML_AI_CALLS_MAX_AGE)",
    )

    # Resource limits of training jobs (forgeml.server.limits): a job over one is refused with a 422 that gives
    # its estimate; 0 or none turns a limit off.
    max_job_parameters: int | None = Field(
        default=100_000_000,
        description="the most parameters a job's model may have (a 422 on 'model' above it; 0 or none: no limit) "
        "(FORGEML_MAX_JOB_PARAMETERS)",
    )
    max_job_memory_bytes: int | None = Field(
        default=None,
        description="the most memory a job may need by its estimate (model, gradients, optimizer state, the "
        "trainer's copies, activations of a batch and data, times its processes; a 422 above it); sizes like "
        "'8GiB' are accepted; default: two thirds of worker_memory_limit_bytes, or half this machine's memory "
        "without a worker limit; 0 or none: no limit (FORGEML_MAX_JOB_MEMORY_BYTES)",
    )
    max_job_samples: int | None = Field(
        default=100_000_000,
        description="the most samples a job may train on, epochs x its dataset's training rows (a 422 on "
        "'epochs' above it; 0 or none: no limit) (FORGEML_MAX_JOB_SAMPLES)",
    )
    worker_memory_limit_bytes: int | None = Field(
        default_factory=default_worker_memory_limit,
        description="the data memory (RLIMIT_DATA) each training worker process may use; a job that needs more "
        "fails with an out-of-memory error, the worker and the server live on. The ranks of a multi-process job "
        "share it. Sizes like '8GiB' are accepted; default: 75% of this machine's (or container's) memory; 0 or "
        "none: no limit (FORGEML_WORKER_MEMORY_LIMIT_BYTES)",
    )

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value) -> str:
        return check_device_spec(value)

    @field_validator("max_job_memory_bytes", "worker_memory_limit_bytes", mode="before")
    @classmethod
    def _size(cls, value) -> int | None:
        return parse_size(value)

    @field_validator("max_job_parameters", "max_job_samples", mode="before")
    @classmethod
    def _count(cls, value) -> int | None:
        return parse_count(value)

    @model_validator(mode="after")
    def _default_job_memory(self) -> ServerSettings:
        if "max_job_memory_bytes" not in self.model_fields_set:  # not given: follows the worker's limit
            if self.worker_memory_limit_bytes:
                self.max_job_memory_bytes = self.worker_memory_limit_bytes * 2 // 3
            else:
                total = machine_memory_bytes()
                self.max_job_memory_bytes = None if total is None else total // 2
        return self

    def resolved_device(self) -> str:
        """``device`` on this machine: ``'cpu'`` or ``'cuda:N'`` (see :func:`resolve_device`)."""
        return resolve_device(self.device)

    @property
    def blas_threads_per_worker(self) -> int:
        return self.worker_threads or max(1, ((os.cpu_count() or 1) - 1) // self.workers)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'forgeml.sqlite').resolve()}"

    @property
    def loopback(self) -> bool:
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_exposure(self) -> None:
        """Refuse to serve a non-loopback address without an API key."""
        if not self.loopback and self.api_key is None:
            raise SystemExit(
                f"refusing to listen on {self.host} without an API key: anyone who can reach it could train and "
                "download models. Set FORGEML_API_KEY=<a long random secret> (clients send it as "
                "'Authorization: Bearer <key>'), or bind 127.0.0.1."
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> ServerSettings:
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("FORGEML_HOST"):
            values["host"] = env["FORGEML_HOST"]
        if env.get("FORGEML_PORT"):
            values["port"] = int(env["FORGEML_PORT"])
        if env.get("FORGEML_DATA_DIR"):
            values["data_dir"] = Path(env["FORGEML_DATA_DIR"])
        if env.get("FORGEML_DATABASE_URL"):
            values["database_url"] = env["FORGEML_DATABASE_URL"]
        if env.get("FORGEML_API_KEY"):
            values["api_key"] = env["FORGEML_API_KEY"]
        if env.get("FORGEML_DEVICE"):
            values["device"] = env["FORGEML_DEVICE"]
        for var, field in (
            ("FORGEML_METRICS_REQUIRE_KEY", "metrics_require_key"),
            ("FORGEML_FAST_PREDICT", "fast_predict"),
        ):
            if env.get(var):
                values[field] = env[var].strip()  # a boolean: pydantic checks the value
        for var, field in (  # sizes and counts: pydantic parses them ("8GiB", "1e8", "none")
            ("FORGEML_MAX_JOB_PARAMETERS", "max_job_parameters"),
            ("FORGEML_MAX_JOB_MEMORY_BYTES", "max_job_memory_bytes"),
            ("FORGEML_MAX_JOB_SAMPLES", "max_job_samples"),
            ("FORGEML_WORKER_MEMORY_LIMIT_BYTES", "worker_memory_limit_bytes"),
        ):
            if env.get(var):
                values[field] = env[var].strip()
        for var, field in (
            ("FORGEML_WORKERS", "workers"),
            ("FORGEML_MAX_BODY_BYTES", "max_body_bytes"),
            ("FORGEML_MAX_UPLOAD_BYTES", "max_upload_bytes"),
            ("FORGEML_AI_RATE_LIMIT", "ai_rate_limit"),
            ("FORGEML_WORKER_NICE", "worker_nice"),
            ("FORGEML_WORKER_THREADS", "worker_threads"),
            ("FORGEML_MAX_PROCESSES", "max_processes"),
            ("FORGEML_AI_CALLS_MAX_ROWS", "ai_calls_max_rows"),
        ):
            if env.get(var):
                values[field] = int(env[var])
        if env.get("FORGEML_AI_CALLS_MAX_AGE"):
            values["ai_calls_max_age"] = float(env["FORGEML_AI_CALLS_MAX_AGE"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
