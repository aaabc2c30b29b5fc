"""The platform under load on loopback: ``predict`` (MNIST model, batch 1), ``/v1/ai/analyze`` (offline advisor),
and predict mixed with the read routes while two training jobs run at once.

The benchmark starts ``forgeml serve --workers 2`` in a subprocess on a free 127.0.0.1 port with a temporary data
directory and an environment without any ``*_API_KEY`` or ``FORGEML_*`` variable, except
``FORGEML_AI_RATE_LIMIT=1000000``: ``/v1/ai/*`` is rate limited per client (60 a minute by default), and every
simulated client here comes from 127.0.0.1. It trains a short MNIST job (``mnist_mlp``, 2 epochs) to get a model,
then runs the scenarios (``--scenarios``, default all four, in this order), each at every client count of
``--concurrency`` (default 1,8,32,128):

* ``predict``: POST /v1/models/{id}/predict, one long ``mnist_mlp`` job training in the background (the
  conditions of the README's earlier figures and of the target: predict's p99 under 50 ms at 32 clients);
* ``analyze``: POST /v1/ai/analyze, one job training;
* ``predict-2jobs``: predict again, two long jobs training at once (both of the server's workers busy);
* ``mixed``: two jobs training at once, and each client sends
  in turn predict, GET /v1/jobs, predict, GET /v1/jobs/{first job}, predict, GET /healthz, predict,
  GET /v1/jobs/{second job}: half the requests are predictions, half the read routes.

Training is checked around every phase: before it, a job the scenario needs that has ended is replaced (and a job
it does not need is cancelled), and each is waited for until it is ``running``; after it, each is read again. A job
``running`` before and after the phase was running throughout (nothing resumes a job here), and the table says so
(``--no-background-job`` leaves training out of predict and analyze; the other two always train).

The clients are a closed loop: ``C`` coroutines on one asyncio event loop (uvloop when installed), each with its
own keep-alive HTTP/1.1 connection (a minimal client on asyncio streams, see :class:`Connection`); each sends its
next request as soon as its previous answer arrives. Requests are encoded once, before measuring, and answers are
not decoded while measuring, so the load generator spends little CPU per request; its own CPU use (and the
server's and the training workers', from /proc) is printed per phase, since on a machine with two cores they
compete. Each phase runs a warm-up, then measures for ``--duration`` seconds: requests that start inside the window
count, and the window closes when the last of them answers.

Printed per scenario and client count (and, for ``mixed``, per route too): requests, errors, requests/s and the
p50 / p95 / p99 / max latency in ms. An error is any answer that is not 2xx (counted as ``HTTP <status>``) or any
exception on the client's side (counted by its type, with the errno's name for an OS error, e.g.
``ConnectionResetError (ECONNRESET)``, and ``TimeoutError`` for an answer not complete in 30 s); the target is 0.

128 clients and the operating system: each client holds one socket in this process and one in the server. The
benchmark raises its soft limit on open files (RLIMIT_NOFILE, inherited by the server) to the clients plus 256
when it is lower and the hard limit allows (macOS's default soft limit is 256: the server's 128 sockets, its
database, model files and worker pipes come close to it); uvicorn's listen backlog (2048, capped by
net.core.somaxconn) holds 128 simultaneous connects, its ``limit_concurrency`` is unset (no 503s for many
connections), and the server's thread pool (anyio's 40 threads) only queues the read routes. Each phase closes its
connections, leaving at most 128 client ports in TIME_WAIT of the 28,000 ephemeral ones.

Usage: ``python benchmarks/bench_server.py [--duration 10] [--warmup 2] [--concurrency 1,8,32,128]
[--scenarios predict,analyze,predict-2jobs,mixed] [--workers 2] [--no-background-job] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from harness import environment, print_environment, write_json

TARGET_CONCURRENCY = 32
TARGET_P99_MS = 50.0
AI_RATE_LIMIT = "1000000"
TERMINAL = ("completed", "failed", "cancelled", "interrupted")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
REQUEST_TIMEOUT = 30.0  # seconds for one answer before the client counts a TimeoutError
SCENARIOS = {  # name: (what the clients send, training jobs running meanwhile)
    "predict": ("POST /v1/models/{id}/predict", 1),
    "analyze": ("POST /v1/ai/analyze", 1),
    "predict-2jobs": ("POST /v1/models/{id}/predict", 2),
    "mixed": ("predict, GET /v1/jobs, GET /v1/jobs/{id}, GET /healthz", 2),
}
ONE_JOB = ("predict", "analyze")  # the scenarios that --no-background-job runs without training
FD_HEADROOM = 256  # open files beyond one socket per client: the server's database, models, pipes, imports


# -- the server process -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(**extra: str) -> dict[str, str]:
    """This environment without any AI key or FORGEML_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGEML_") and not k.endswith("_API_KEY")}
    env.update(extra)
    return env


class ServerProcess:
    """``forgeml serve`` in a subprocess on a free loopback port, its output in ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path, workers: int = 2, **env: str) -> None:
        self.data_dir, self.log_path, self.workers, self.extra_env = data_dir, log_path, workers, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "forgeml.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=offline_env(**self.extra_env)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready in {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), e.g. the server's training workers."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:  # gone, not Linux, or out of file descriptors (EMFILE): the clients count that
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += children
            todo += children
    return found


class CpuMeter:
    """CPU seconds over a window for this process (the load generator), the server and its children."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def sample(self) -> dict[str, float | None]:
        children = [cpu_seconds(p) for p in descendants(self.server_pid)]
        return {
            "wall": time.perf_counter(),
            "client": time.process_time(),
            "server": cpu_seconds(self.server_pid),
            "workers": sum(c for c in children if c is not None) if children else None,
        }

    @staticmethod
    def share(before: dict, after: dict) -> dict[str, float | None]:
        """Percent of one core each used between two samples."""
        wall = after["wall"] - before["wall"]
        out = {}
        for key in ("client", "server", "workers"):
            a, b = before[key], after[key]
            out[key] = None if a is None or b is None or wall <= 0 else max(0.0, (b - a) / wall * 100)
        return out


def ensure_open_files(clients: int) -> dict:
    """Raise this process's soft RLIMIT_NOFILE (the server inherits it) to ``clients + FD_HEADROOM`` when it is
    lower and the hard limit allows; what it was and is, for the report."""
    try:
        import resource
    except ImportError:  # not a Unix
        return {"soft": None, "hard": None, "raised_from": None}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need, raised_from = clients + FD_HEADROOM, None
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            raised_from, soft = soft, new
        if new < need:
            print(f"warning: open files limited to {new} (the hard limit): {clients} clients may hit EMFILE")
    infinite = resource.RLIM_INFINITY
    return {
        "soft": None if soft == infinite else soft,
        "hard": None if hard == infinite else hard,
        "raised_from": raised_from,
    }


# -- setup through the API ----------------------------------------------------------------------------


def wait_for_job(client: httpx.Client, job_id: str, states, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not reach {states} in {timeout:.0f}s: {job}")


def start_job(client: httpx.Client, epochs: int, name: str) -> str:
    response = client.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": epochs, "name": name})
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/jobs answered {response.status_code}: {response.text}")
    return response.json()["id"]


def job_state(client: httpx.Client, job_id: str) -> dict:
    job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    return {"id": job_id, "state": job["state"], "epochs_done": job["epochs_done"], "epochs": job["epochs"]}


class Training:
    """The long background jobs: ``ensure(n)`` leaves exactly ``n`` of them running before a phase."""

    def __init__(self, client: httpx.Client, epochs: int) -> None:
        self.client, self.epochs = client, epochs
        self.jobs: list[str] = []
        self.started = 0

    def ensure(self, count: int) -> list[str]:
        alive = [j for j in self.jobs if job_state(self.client, j)["state"] in ("queued", "running")]
        for extra in alive[count:]:
            self.client.post(f"/v1/jobs/{extra}/cancel").raise_for_status()
            wait_for_job(self.client, extra, TERMINAL, timeout=120)
        self.jobs = alive[:count]
        while len(self.jobs) < count:
            self.started += 1
            job = start_job(self.client, self.epochs, f"bench background training {self.started}")
            self.jobs.append(job)
            print(f"(background job {job}: mnist_mlp, {self.epochs} epochs)", flush=True)
        for job in self.jobs:
            state = wait_for_job(self.client, job, ("running", *TERMINAL), timeout=120)["state"]
            if state != "running":
                raise RuntimeError(f"background job {job} ended {state} before it ran a phase")
        return list(self.jobs)

    def states(self, jobs: list[str]) -> list[dict]:
        return [job_state(self.client, j) for j in jobs]


def digit_bodies(count: int = 16) -> tuple[list[bytes], list[int]]:
    """Real MNIST test digits as predict bodies (pixels in [0, 1], 4 decimals), encoded once; and their labels."""
    from forgeml.data.datasets import MNIST

    digits = MNIST("test", flatten=True)
    pixels = digits.data[:count].reshape(count, 784).astype(np.float64) / 255.0
    bodies = [json.dumps({"inputs": [np.round(row, 4).tolist()]}).encode() for row in pixels]
    return bodies, [int(t) for t in digits.targets[:count]]


def analyze_body() -> bytes:
    """A ten-epoch run that starts to overfit, as the dashboard would send it."""
    epochs = np.arange(1, 11)
    metrics = {
        "train_loss": np.round(1.2 * 0.72**epochs, 4).tolist(),
        "val_loss": np.round(0.35 + 0.9 * 0.6**epochs + 0.012 * epochs, 4).tolist(),
        "train_accuracy": np.round(1 - 0.25 * 0.7**epochs, 4).tolist(),
        "val_accuracy": np.round(0.955 - 0.2 * 0.6**epochs - 0.002 * epochs, 4).tolist(),
    }
    description = "MLP 784-512-256-10 with ReLU and Dropout(0.2) on MNIST, Adam lr 0.001, batch 64"
    return json.dumps({"model_description": description, "performance_metrics": metrics}).encode()


# -- the load generator -------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that sends pre-encoded requests and reads whole answers.

    A few dozen lines of asyncio streams instead of an HTTP client library: the load generator shares
    two cores with the server and the training workers, so each request must cost it little CPU
    (httpx's AsyncClient spent about 3 ms of CPU a request here, more than the server did).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> int:
        """Send one request; return the answer's status after reading its whole body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise ConnectionError(f"answer without Content-Length (status {status})")
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def encode_request(host: str, port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("ascii") + (body or b"")


def error_kind(exc: BaseException) -> str:
    """An exception as an error kind: its type, and the errno's name for an OS error."""
    code = getattr(exc, "errno", None)
    name = type(exc).__name__
    return f"{name} ({errno.errorcode.get(code, code)})" if isinstance(code, int) else name


def latency_summary(latencies: list[float], errors: Counter, seconds: float) -> dict:
    lat_ms = np.asarray(latencies) * 1000.0
    pct = (lambda q: float(np.percentile(lat_ms, q))) if lat_ms.size else (lambda q: float("nan"))
    return {
        "requests": int(lat_ms.size),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(sorted(errors.items())),
        "rps": lat_ms.size / seconds,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": float(lat_ms.max()) if lat_ms.size else float("nan"),
    }


async def run_phase(
    url: str, mix: list[tuple[str, bytes]], concurrency: int, warmup: float, duration: float, meter: CpuMeter
) -> dict:
    """``concurrency`` closed-loop clients send the requests of ``mix`` (route name, encoded request) in turn,
    client ``i`` starting at its ``i``-th, for ``warmup + duration`` s."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port
    routes = list(dict.fromkeys(name for name, _ in mix))
    latencies: dict[str, list[float]] = {name: [] for name in routes}
    errors: dict[str, Counter] = {name: Counter() for name in routes}
    statuses: Counter = Counter()
    start = time.perf_counter()
    window_start, window_end = start + warmup, start + warmup + duration
    last_end = window_start
    cpu_before: dict = {}
    connections = [Connection(host, port) for _ in range(concurrency)]
    try:

        async def user(index: int) -> None:
            nonlocal last_end
            connection, turn = connections[index], index
            while True:
                began = time.perf_counter()
                if began >= window_end:
                    return
                route, request = mix[turn % len(mix)]
                turn += 1
                status, kind = None, None
                try:
                    status = await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
                    connection.close()
                    kind = error_kind(exc)
                ended = time.perf_counter()
                if began < window_start:
                    continue
                latencies[route].append(ended - began)
                last_end = max(last_end, ended)
                if status is not None:
                    statuses[status] += 1
                    if not 200 <= status < 300:
                        kind = f"HTTP {status}"
                if kind is not None:
                    errors[route][kind] += 1

        async def sample_cpu_at_window_start() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            cpu_before.update(meter.sample())

        await asyncio.gather(sample_cpu_at_window_start(), *(user(i) for i in range(concurrency)))
        cpu_after = meter.sample()
        cpu = CpuMeter.share(cpu_before, cpu_after)
    finally:
        for connection in connections:
            connection.close()

    seconds = max(last_end - window_start, 1e-9)
    total = latency_summary([x for name in routes for x in latencies[name]], sum(errors.values(), Counter()), seconds)
    return {
        **total,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": seconds,
        "cpu_percent": cpu,
        # the server's CPU time per answer: what a request costs it, less sensitive to other work on the machine
        # than latency (which also counts the time the server waited for a core)
        "server_cpu_ms_per_request": (
            (cpu_after["server"] - cpu_before["server"]) * 1000 / total["requests"]
            if total["requests"] and cpu_after["server"] is not None and cpu_before.get("server") is not None
            else None
        ),
        "routes": {name: latency_summary(latencies[name], errors[name], seconds) for name in routes},
    }


def new_event_loop_runner():
    """``asyncio.run`` on uvloop when it is installed (a cheaper loop for the load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run, "asyncio"
    return uvloop.run, f"uvloop {uvloop.__version__}"


def scenario_mix(scenario: str, host: str, port: int, model_id: str, bodies: list[bytes], jobs: list[str]):
    """The requests a scenario's clients send in turn, as (route name, encoded request)."""
    predict_path = f"/v1/models/{model_id}/predict"
    if scenario.startswith("predict"):
        return [("predict", encode_request(host, port, "POST", predict_path, b)) for b in bodies]
    if scenario == "analyze":
        return [("analyze", encode_request(host, port, "POST", "/v1/ai/analyze", analyze_body()))]
    reads = [
        ("GET /v1/jobs", encode_request(host, port, "GET", "/v1/jobs")),
        ("GET /v1/jobs/{id}", encode_request(host, port, "GET", f"/v1/jobs/{jobs[0]}")),
        ("GET /healthz", encode_request(host, port, "GET", "/healthz")),
        ("GET /v1/jobs/{id}", encode_request(host, port, "GET", f"/v1/jobs/{jobs[-1]}")),
    ]
    mix = []
    for i, body in enumerate(bodies):
        mix += [("predict", encode_request(host, port, "POST", predict_path, body)), reads[i % len(reads)]]
    return mix


# -- the report ---------------------------------------------------------------------------------------


def fmt_cpu(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:5.0f}%"


def fmt_ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def fmt_training(training: dict | None) -> str:
    if not training or not training["required"]:
        return "-"
    after = training["after"]
    progress = ", ".join(f"{j['epochs_done']}/{j['epochs']}" for j in after)
    if training["ran_throughout"]:
        return f"{len(after)} running throughout ({progress} epochs)"
    return "NOT running throughout: " + ", ".join(f"{j['id']} {j['state']}" for j in after)


HEADER = (
    f"{'scenario':13s} {'route':18s} {'clients':>7s} {'requests':>8s} {'errors':>6s} {'req/s':>8s} {'p50 ms':>8s} "
    f"{'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}  {'cpu: client':>11s} {'server':>6s} {'workers':>7s} "
    f"{'ms/req':>6s}  training"
)


def print_row(r: dict) -> None:
    cpu = r["cpu_percent"]
    route = "all" if len(r["routes"]) > 1 else next(iter(r["routes"]))
    print(
        f"{r['scenario']:13s} {route:18s} {r['concurrency']:7d} {r['requests']:8d} {r['errors']:6d} {r['rps']:8.1f} "
        f"{r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}  "
        f"{fmt_cpu(cpu['client']):>11s} {fmt_cpu(cpu['server'])} {fmt_cpu(cpu['workers']):>7s} "
        f"{fmt_ms(r['server_cpu_ms_per_request'])}  "
        f"{fmt_training(r['training'])}",
        flush=True,
    )
    if len(r["routes"]) > 1:
        for name, s in r["routes"].items():
            print(
                f"{'':13s}  {name:17s} {r['concurrency']:7d} {s['requests']:8d} {s['errors']:6d} {s['rps']:8.1f} "
                f"{s['p50_ms']:8.2f} {s['p95_ms']:8.2f} {s['p99_ms']:8.2f} {s['max_ms']:8.2f}",
                flush=True,
            )
    if r["errors"]:
        print(f"{'':13s}   errors: {r['errors_by_kind']}", flush=True)


def target_verdict(results: list[dict], scenario: str, background: bool = True) -> dict:
    """Predict's p99 against the target at 32 clients in ``scenario`` (with its training jobs running)."""
    jobs = SCENARIOS[scenario][1] if background or scenario not in ONE_JOB else 0
    what = f"{jobs} job{'s' if jobs > 1 else ''} training" if jobs else "no job training"
    title = f"target (predict p99 < {TARGET_P99_MS:.0f} ms at {TARGET_CONCURRENCY} clients, {what})"
    rows = [r for r in results if r["scenario"] == scenario and r["concurrency"] == TARGET_CONCURRENCY]
    if not rows:
        return {"scenario": scenario, "measured": False, "met": None, "line": f"{title}: not measured"}
    r = rows[0]
    training_ran = r["training"]["ran_throughout"] and len(r["training"]["after"]) == jobs
    met = r["p99_ms"] < TARGET_P99_MS and r["errors"] == 0 and training_ran
    why = []
    if r["p99_ms"] >= TARGET_P99_MS:
        why.append(f"p99 {r['p99_ms']:.1f} ms >= {TARGET_P99_MS:.0f} ms")
    if r["errors"]:
        why.append(f"{r['errors']} errors")
    if not training_ran:
        why.append("the training did not run throughout")
    line = (
        f"{title}: "
        + ("MET" if met else "NOT MET")
        + f" - p99 {r['p99_ms']:.1f} ms, p50 {r['p50_ms']:.1f} ms, {r['rps']:.0f} req/s"
        + (f" ({'; '.join(why)})" if why else "")
    )
    return {
        "scenario": scenario,
        "training_jobs": jobs,
        "measured": True,
        "met": met,
        "p99_ms": r["p99_ms"],
        "line": line,
    }


def error_verdict(results: list[dict]) -> dict:
    kinds: Counter = Counter()
    for r in results:
        kinds.update(r["errors_by_kind"])
    requests, count = sum(r["requests"] for r in results), sum(kinds.values())
    where = [f"{r['scenario']}@{r['concurrency']}: {r['errors_by_kind']}" for r in results if r["errors"]]
    line = f"errors (target 0): {count} in {requests} requests over {len(results)} phases" + (
        " - " + "; ".join(where) if where else ""
    )
    return {"errors": count, "requests": requests, "by_kind": dict(kinds), "met": count == 0, "line": line}


def mixed_lines(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        if r["scenario"] != "mixed" or r["concurrency"] not in (
            TARGET_CONCURRENCY,
            max(x["concurrency"] for x in results),
        ):
            continue
        p = r["routes"]["predict"]
        reads = {k: v for k, v in r["routes"].items() if k != "predict"}
        lines.append(
            f"mixed, two jobs training, {r['concurrency']} clients: predict p99 {p['p99_ms']:.1f} ms "
            f"({'under' if p['p99_ms'] < TARGET_P99_MS else 'over'} {TARGET_P99_MS:.0f} ms), read routes p99 "
            + ", ".join(f"{k} {v['p99_ms']:.1f} ms" for k, v in reads.items())
            + f"; {r['rps']:.0f} req/s in all"
            + ("" if r["training"]["ran_throughout"] else " (the jobs did NOT run throughout)")
        )
    return lines


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase (default 2)")
    parser.add_argument(
        "--concurrency", default="1,8,32,128", help="client counts, comma-separated (default 1,8,32,128)"
    )
    parser.add_argument(
        "--scenarios",
        "--endpoints",
        dest="scenarios",
        default=",".join(SCENARIOS),
        help=f"which scenarios, in order, comma-separated (default {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="the server's training workers (default 2; predict-2jobs and mixed need 2 or more)",
    )
    parser.add_argument(
        "--no-background-job",
        action="store_true",
        help="measure predict and analyze without a job training (the scenarios with two jobs still train)",
    )
    parser.add_argument(
        "--background-epochs", type=int, default=500, help="epochs of each background job (default 500, the API's max)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data directory and server log")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the server (e.g. OPENBLAS_NUM_THREADS=1); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"bad --concurrency {args.concurrency!r}")
    args.scenario_list = [e.strip() for e in args.scenarios.split(",") if e.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown or not args.scenario_list or not args.levels or min(args.levels) < 1:
        parser.error(f"bad --scenarios {sorted(unknown)} or --concurrency {args.concurrency!r}")
    two = [name for name in args.scenario_list if SCENARIOS[name][1] > 1]
    if two and args.workers < 2:
        parser.error(f"{' and '.join(two)} train two jobs at once: --workers must be 2 or more, not {args.workers}")
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    for item in args.server_env:
        if "=" not in item or item.startswith(("FORGEML_AI_RATE_LIMIT=",)) or item.split("=")[0].endswith("_API_KEY"):
            parser.error(f"--server-env {item!r}: NAME=VALUE, not an API key nor the rate limit")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    run, loop_name = new_event_loop_runner()
    print_environment()
    open_files = ensure_open_files(max(args.levels))
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    extra_env["FORGEML_AI_RATE_LIMIT"] = AI_RATE_LIMIT
    print(
        f"server: forgeml serve on 127.0.0.1, {args.workers} training workers; FORGEML_AI_RATE_LIMIT={AI_RATE_LIMIT} "
        "(raised from the default 60/min: every client here is 127.0.0.1); no *_API_KEY passed (offline advisor)"
        + (f"; extra env: {' '.join(args.server_env)}" if args.server_env else "")
    )
    print(
        f"clients: closed loop, {loop_name}, one keep-alive HTTP/1.1 connection per client (asyncio streams); "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured per phase; open files: soft limit "
        f"{open_files['soft'] or 'unlimited'}"
        + (f" (raised from {open_files['raised_from']})" if open_files["raised_from"] else "")
    )

    workdir = Path(tempfile.mkdtemp(prefix="forgeml-bench-server-"))
    server = ServerProcess(workdir / "data", workdir / "server.log", workers=args.workers, **extra_env)
    results: list[dict] = []
    report: dict = {}
    try:
        t0 = time.perf_counter()
        server.start()
        meter = CpuMeter(server.process.pid)
        print(f"server ready at {server.url} in {time.perf_counter() - t0:.1f} s (log: {server.log_path})")
        with httpx.Client(base_url=server.url, timeout=60, headers={"content-type": "application/json"}) as client:
            t0 = time.perf_counter()
            job = wait_for_job(client, start_job(client, 2, "bench model"), TERMINAL, timeout=600)
            if job["state"] != "completed" or not job["model_id"]:
                raise RuntimeError(f"the model's training job ended {job['state']}: {job.get('error')}")
            model_id = job["model_id"]
            print(f"model {model_id}: mnist_mlp, 2 epochs, trained in {time.perf_counter() - t0:.1f} s")

            bodies, labels = digit_bodies()
            answers = [
                client.post(f"/v1/models/{model_id}/predict", content=b).raise_for_status().json() for b in bodies
            ]
            right = sum(int(a["predictions"][0]) == y for a, y in zip(answers, labels))
            print(
                f"predict check: {right}/{len(labels)} test digits classified right (batch 1, {len(bodies[0])} B body)"
            )
            advice = client.post("/v1/ai/analyze", content=analyze_body()).raise_for_status().json()
            print(f"analyze check: answered by {advice.get('provider', '?')!r}")

            training = Training(client, args.background_epochs)
            parsed = httpx.URL(server.url)
            print(HEADER)
            for scenario in args.scenario_list:
                required = SCENARIOS[scenario][1]
                if args.no_background_job and scenario in ONE_JOB:
                    required = 0
                for level in args.levels:
                    jobs = training.ensure(required)
                    mix = scenario_mix(scenario, parsed.host, parsed.port, model_id, bodies, jobs)
                    before = training.states(jobs)
                    r = run(run_phase(server.url, mix, level, args.warmup, args.duration, meter))
                    after = training.states(jobs)
                    r.update(
                        scenario=scenario,
                        concurrency=level,
                        training={
                            "required": required,
                            "before": before,
                            "after": after,
                            "ran_throughout": all(j["state"] == "running" for j in before + after),
                        },
                    )
                    results.append(r)
                    print_row(r)

        background = not args.no_background_job
        verdicts = [target_verdict(results, name, background) for name in ("predict", "predict-2jobs")]
        verdicts = [v for v in verdicts if v["measured"]] or verdicts[:1]
        errors = error_verdict(results)
        print()
        for verdict in verdicts:
            print(verdict["line"])
        print(errors["line"])
        for line in mixed_lines(results):
            print(line)
        print("latency: from sending the request to its whole answer, on the client; req/s over the measured window")
        print(
            f"cpu: percent of one core over the measured window ({os.cpu_count()} cores on this machine); "
            "workers: all the server's child processes together; ms/req: the server's CPU ms per answer"
        )
        report = {
            "benchmark": "bench_server",
            "environment": environment(),
            "client": {
                "loop": loop_name,
                "http": "asyncio streams, HTTP/1.1 keep-alive, one connection per client",
                "request_timeout_s": REQUEST_TIMEOUT,
                "open_files": open_files,
            },
            "server": {
                "workers": args.workers,
                "env": {"FORGEML_AI_RATE_LIMIT": AI_RATE_LIMIT, **dict(item.split("=", 1) for item in args.server_env)},
            },
            "scenarios": {name: {"requests": what, "training_jobs": jobs} for name, (what, jobs) in SCENARIOS.items()},
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "background_job": not args.no_background_job,
            "background_epochs": args.background_epochs,
            "results": results,
            "target": verdicts[0],
            "targets": verdicts,
            "errors": errors,
        }
    except BaseException:
        print(f"\nserver log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
        if args.keep_data:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
