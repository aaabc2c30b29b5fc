"""The platform under load on loopback: ``predict`` (MNIST model, batch 1) and ``/v1/ai/analyze`` (offline advisor).

The benchmark starts ``forgeml serve`` in a subprocess on a free 127.0.0.1 port with a temporary data
directory and an environment without any ``*_API_KEY`` or ``FORGEML_*`` variable, except
``FORGEML_AI_RATE_LIMIT=1000000``: ``/v1/ai/*`` is rate limited per client (60 a minute by default),
and every simulated client here comes from 127.0.0.1. It trains a short MNIST job (``mnist_mlp``,
2 epochs) to get a model, then starts a long ``mnist_mlp`` job so that training runs in the worker
process while the clients measure (``--no-background-job`` leaves it out), and says after each
phase whether that job is still running.

The clients are a closed loop: ``C`` coroutines on one asyncio event loop (uvloop when installed),
each with its own keep-alive HTTP/1.1 connection (a minimal client on asyncio streams, see
:class:`Connection`); each sends its next request as soon as its previous answer arrives. Request bodies are encoded once, before measuring, and
answers are not decoded while measuring, so the load generator spends little CPU per request; its
own CPU use (and the server's and the training worker's, from /proc) is printed per phase, since
on a machine with two cores the three compete. Each phase runs a warm-up, then measures for
``--duration`` seconds: requests that start inside the window count, and the window closes when
the last of them answers.

Printed per endpoint and concurrency: requests, errors (non-2xx answers or transport errors),
requests/s and the p50 / p90 / p99 / max latency in ms, and whether the issue's target was met:
predict's p99 under 50 ms at 32 concurrent clients while a training job runs.

Usage: ``python benchmarks/bench_server.py [--duration 10] [--warmup 2] [--concurrency 1,8,32]
[--no-background-job] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from harness import print_environment

TARGET_CONCURRENCY = 32
TARGET_P99_MS = 50.0
AI_RATE_LIMIT = "1000000"
TERMINAL = ("completed", "failed", "cancelled", "interrupted")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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

    def __init__(self, data_dir: Path, log_path: Path, workers: int = 1, **env: str) -> None:
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
    """Every process below ``pid`` (Linux /proc), e.g. the server's training worker."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
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
            "worker": sum(c for c in children if c is not None) if children else None,
        }

    @staticmethod
    def share(before: dict, after: dict) -> dict[str, float | None]:
        """Percent of one core each used between two samples."""
        wall = after["wall"] - before["wall"]
        out = {}
        for key in ("client", "server", "worker"):
            a, b = before[key], after[key]
            out[key] = None if a is None or b is None or wall <= 0 else max(0.0, (b - a) / wall * 100)
        return out


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
    """One keep-alive HTTP/1.1 connection that POSTs pre-encoded requests and reads whole answers.

    A few dozen lines of asyncio streams instead of an HTTP client library: the load generator shares
    two cores with the server and the training worker, so each request must cost it little CPU
    (httpx's AsyncClient spent about 3 ms of CPU a request here, more than the server did).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> int:
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


def encode_post(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def run_phase(
    url: str, path: str, bodies: list[bytes], concurrency: int, warmup: float, duration: float, meter: CpuMeter
) -> dict:
    """``concurrency`` closed-loop clients POST ``bodies`` (in turn) to ``path`` for ``warmup + duration`` s."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port
    requests = [encode_post(host, port, path, body) for body in bodies]
    latencies: list[float] = []
    errors = {"non_2xx": 0, "transport": 0}
    statuses: dict[int, int] = {}
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
                request = requests[turn % len(requests)]
                turn += 1
                try:
                    status = await asyncio.wait_for(connection.post(request), 30.0)
                except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    connection.close()
                    status = None
                ended = time.perf_counter()
                if began < window_start:
                    continue
                latencies.append(ended - began)
                last_end = max(last_end, ended)
                if status is None:
                    errors["transport"] += 1
                else:
                    statuses[status] = statuses.get(status, 0) + 1
                    if not 200 <= status < 300:
                        errors["non_2xx"] += 1

        async def sample_cpu_at_window_start() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            cpu_before.update(meter.sample())

        await asyncio.gather(sample_cpu_at_window_start(), *(user(i) for i in range(concurrency)))
        cpu = CpuMeter.share(cpu_before, meter.sample())
    finally:
        for connection in connections:
            connection.close()

    lat_ms = np.asarray(latencies) * 1000.0
    elapsed = max(last_end - window_start, 1e-9)
    pct = (lambda q: float(np.percentile(lat_ms, q))) if lat_ms.size else (lambda q: float("nan"))
    return {
        "requests": int(lat_ms.size),
        "errors": errors["non_2xx"] + errors["transport"],
        "transport_errors": errors["transport"],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": elapsed,
        "rps": lat_ms.size / elapsed,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": float(lat_ms.max()) if lat_ms.size else float("nan"),
        "cpu_percent": cpu,
    }


def new_event_loop_runner():
    """``asyncio.run`` on uvloop when it is installed (a cheaper loop for the load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run, "asyncio"
    return uvloop.run, f"uvloop {uvloop.__version__}"


# -- the report ---------------------------------------------------------------------------------------


def fmt_cpu(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:5.0f}%"


def print_header() -> None:
    print(
        f"\n{'endpoint':9s} {'conc':>4s} {'requests':>8s} {'errors':>6s} {'req/s':>8s} {'p50 ms':>8s} "
        f"{'p90 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}  {'cpu: client':>11s} {'server':>6s} {'worker':>6s}  training"
    )


def print_row(r: dict) -> None:
    cpu = r["cpu_percent"]
    training = r.get("training_after") or {}
    state = f"{training['state']} ({training['epochs_done']}/{training['epochs']} epochs)" if training else "-"
    print(
        f"{r['endpoint']:9s} {r['concurrency']:4d} {r['requests']:8d} {r['errors']:6d} {r['rps']:8.1f} "
        f"{r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}  "
        f"{fmt_cpu(cpu['client']):>11s} {fmt_cpu(cpu['server'])} {fmt_cpu(cpu['worker'])}  {state}",
        flush=True,
    )


def target_verdict(results: list[dict], background: bool) -> dict:
    rows = [r for r in results if r["endpoint"] == "predict" and r["concurrency"] == TARGET_CONCURRENCY]
    if not rows:
        return {
            "measured": False,
            "met": None,
            "line": f"target not measured: no predict phase at {TARGET_CONCURRENCY}",
        }
    r = rows[0]
    training_ran = bool(r.get("training_after")) and r["training_after"]["state"] == "running"
    met = r["p99_ms"] < TARGET_P99_MS and r["errors"] == 0 and training_ran
    why = []
    if r["p99_ms"] >= TARGET_P99_MS:
        why.append(f"p99 {r['p99_ms']:.1f} ms >= {TARGET_P99_MS:.0f} ms")
    if r["errors"]:
        why.append(f"{r['errors']} errors")
    if not training_ran:
        why.append("no training job was running" if background else "run without the background training job")
    line = (
        f"target (predict p99 < {TARGET_P99_MS:.0f} ms at {TARGET_CONCURRENCY} clients, training in the background): "
        + ("MET" if met else "NOT MET")
        + f" - p99 {r['p99_ms']:.1f} ms, p50 {r['p50_ms']:.1f} ms, {r['rps']:.0f} req/s"
        + (f" ({'; '.join(why)})" if why else "")
    )
    return {"measured": True, "met": met, "p99_ms": r["p99_ms"], "line": line}


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase (default 2)")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts, comma-separated (default 1,8,32)")
    parser.add_argument(
        "--endpoints", default="predict,analyze", help="which endpoints, comma-separated (default predict,analyze)"
    )
    parser.add_argument("--no-background-job", action="store_true", help="measure without a training job running")
    parser.add_argument(
        "--background-epochs", type=int, default=500, help="epochs of the background job (default 500, the API's max)"
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
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.endpoint_list = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    unknown = set(args.endpoint_list) - {"predict", "analyze"}
    if unknown or not args.levels or min(args.levels) < 1:
        parser.error(f"bad --endpoints {sorted(unknown)} or --concurrency {args.concurrency!r}")
    for item in args.server_env:
        if "=" not in item or item.startswith(("FORGEML_AI_RATE_LIMIT=",)) or item.split("=")[0].endswith("_API_KEY"):
            parser.error(f"--server-env {item!r}: NAME=VALUE, not an API key nor the rate limit")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    run, loop_name = new_event_loop_runner()
    print_environment()
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    extra_env["FORGEML_AI_RATE_LIMIT"] = AI_RATE_LIMIT
    print(
        f"server: forgeml serve on 127.0.0.1, 1 training worker; FORGEML_AI_RATE_LIMIT={AI_RATE_LIMIT} "
        "(raised from the default 60/min: every client here is 127.0.0.1); no *_API_KEY passed (offline advisor)"
        + (f"; extra env: {' '.join(args.server_env)}" if args.server_env else "")
    )
    print(
        f"clients: closed loop, {loop_name}, one keep-alive HTTP/1.1 connection per client (asyncio streams); "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured per phase"
    )

    workdir = Path(tempfile.mkdtemp(prefix="forgeml-bench-server-"))
    server = ServerProcess(workdir / "data", workdir / "server.log", **extra_env)
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
            endpoints = {
                "predict": (f"/v1/models/{model_id}/predict", bodies),
                "analyze": ("/v1/ai/analyze", [analyze_body()]),
            }

            background = None
            if not args.no_background_job:
                background = start_job(client, args.background_epochs, "bench background training")
                wait_for_job(client, background, ("running", *TERMINAL), timeout=120)
                print(
                    f"background job {background}: mnist_mlp, {args.background_epochs} epochs, {job_state(client, background)['state']}"
                )

            print_header()
            for name in args.endpoint_list:
                path, payload = endpoints[name]
                for level in args.levels:
                    r = run(run_phase(server.url, path, payload, level, args.warmup, args.duration, meter))
                    r.update(endpoint=name, concurrency=level)
                    if background is not None:
                        r["training_after"] = job_state(client, background)
                        if r["training_after"]["state"] != "running":
                            background = start_job(client, args.background_epochs, "bench background training")
                            wait_for_job(client, background, ("running", *TERMINAL), timeout=120)
                            print(f"(the background job was {r['training_after']['state']}; started {background})")
                    results.append(r)
                    print_row(r)

        verdict = target_verdict(results, background is not None)
        print("\n" + verdict["line"])
        print("latency: from sending the request to its whole answer, on the client; req/s over the measured window")
        print(f"cpu: percent of one core over the measured window ({os.cpu_count()} cores on this machine)")
        report = {
            "benchmark": "bench_server",
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "client": {"loop": loop_name, "http": "asyncio streams, HTTP/1.1 keep-alive"},
            "server_env": {
                "FORGEML_AI_RATE_LIMIT": AI_RATE_LIMIT,
                **dict(item.split("=", 1) for item in args.server_env),
            },
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "background_job": not args.no_background_job,
            "results": results,
            "target": verdict,
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
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
