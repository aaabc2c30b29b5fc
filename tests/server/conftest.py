"""Fixtures for the platform's tests: an in-process app (TestClient) and a live server process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from forgeml.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"  # screenshots and logs of the server tests (git-ignored)
TERMINAL = ("completed", "failed", "cancelled", "interrupted")
# .ci/run sets it: there a missing system program (chromium, PostgreSQL, curl) fails its tests instead of skipping
REQUIRE_SYSTEM_DEPS = os.environ.get("FORGEML_REQUIRE_SYSTEM_DEPS", "") not in ("", "0")
TINY_MLP = {  # a small digit classifier: a job on it trains in a second or two
    "input_shape": [784],
    "layers": [
        {"type": "Linear", "args": {"in_features": 784, "out_features": 32}},
        {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 32, "out_features": 10}},
    ],
}


def require_system_program(found: bool, what: str, package: str) -> None:
    """Skip the test when the system program it drives is missing, naming the command that installs it
    (``make test`` installs it first when it can); under ``.ci/run`` (FORGEML_REQUIRE_SYSTEM_DEPS=1) fail."""
    if found:
        return
    message = (
        f"{what} is not installed: `make test` installs it when it can (as root or with passwordless sudo); "
        f"install it with: sudo apt-get install -y {package}"
    )
    if REQUIRE_SYSTEM_DEPS:
        pytest.fail(f"{message} (FORGEML_REQUIRE_SYSTEM_DEPS is set: .ci/run requires it)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(**extra) -> dict[str, str]:
    """The environment without any AI key or FORGEML_* setting, so tests never reach a real provider."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEML_") and not k.endswith("_API_KEY")}
    env.update(extra)
    return env


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", workers=1)


@pytest.fixture
def make_client(monkeypatch, tmp_path):
    """``make_client(**settings)`` -> a started TestClient (lifespan run) on a fresh data directory."""
    from fastapi.testclient import TestClient

    from forgeml.server.app import create_app

    for key in list(os.environ):
        if key.endswith("_API_KEY") or key.startswith("FORGEML_"):
            monkeypatch.delenv(key)
    clients = []

    def make(**overrides):
        values = {"data_dir": tmp_path / "data", "workers": 1, **overrides}
        client = TestClient(create_app(ServerSettings(**values)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@contextlib.contextmanager
def offline_app(data_dir, **settings):
    """A TestClient of an app on ``data_dir`` that no AI key and no FORGEML_* setting of this process reaches
    (for module-scoped fixtures: the app's worker pool is spawned once)."""
    from fastapi.testclient import TestClient

    from forgeml.server.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.endswith("_API_KEY") or key.startswith("FORGEML_"):
                mp.delenv(key)
        with TestClient(create_app(ServerSettings(data_dir=data_dir, workers=1, **settings))) as client:
            yield client


def wait_for_job(client, job_id: str, timeout: float = 300.0, states=TERMINAL) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout}s: {job}")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, starttime: tells a reused pid apart


def child_processes(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their start times (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found[int(entry.name)] = fields[19]
    return found


def end_processes(processes: dict[int, str], timeout: float = 15.0) -> list[int]:
    """Wait up to ``timeout`` s for ``processes`` to end by themselves; SIGKILL and return those that did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid, started in processes.items() if _start_time(pid) == started]
        if not alive:
            return []
        time.sleep(0.2)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


class LiveServer:
    """``forgeml serve`` in a subprocess on a free loopback port; ``stop()`` ends it (SIGTERM, or SIGKILL).

    Each LiveServer starts its log afresh (an earlier run's is removed); its restarts append to it."""

    def __init__(self, data_dir: Path, log_path: Path, **env) -> None:
        self.data_dir, self.log_path, self.extra_env = Path(data_dir), Path(log_path), env
        self.log_path.unlink(missing_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "forgeml.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--workers", "1"]
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=offline_env(**self.extra_env)
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop(kill=True)
        raise RuntimeError(f"the server did not become ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self, kill: bool = False, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


@pytest.fixture
def api(server):
    """A client of the module's ``server`` fixture (a :class:`LiveServer`); modules with an app of their own
    define ``api`` themselves."""
    with server.client() as client:
        yield client


@pytest.fixture
def live_server(tmp_path, request):
    """A started live server; stopped (and its log kept under test-output/) when the test ends."""
    name = request.node.name.replace("/", "_")
    server = LiveServer(tmp_path / "live-data", OUTPUT / "logs" / f"{name}.log")
    server.start()
    yield server
    server.stop()
