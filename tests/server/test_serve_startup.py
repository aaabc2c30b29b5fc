"""`forgeml serve` and `make run` at start-up: a port that cannot be bound is refused before anything
claims the server is serving, and `make run PORT=N` passes the port on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from forgeml.server.app import port_problem

from .conftest import ROOT, offline_env


def test_a_busy_port_is_refused_before_serving_is_announced(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert "in use" in port_problem("127.0.0.1", port)
        command = [sys.executable, "-m", "forgeml.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        result = subprocess.run(
            [*command, "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=offline_env(),
        )
    assert result.returncode != 0
    assert "serving at" not in result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: it is in use" in result.stderr
    assert "--port" in result.stderr


def test_a_free_port_has_no_problem():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("args", "expected"), [(["PORT=5001"], "serve --port 5001"), ([], "serve")])
def test_make_run_passes_the_port(args, expected):
    # Under `make test` this runs inside make: drop the outer make's variables (MAKEFLAGS, MAKELEVEL), which
    # would make the inner one print "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    command = ["make", "--no-print-directory", "-n", "run", *args]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, env=env).stdout
    serve = [line for line in out.splitlines() if "forgeml serve" in line]
    assert len(serve) == 1, out
    assert serve[0].split("forgeml ", 1)[1].strip() == expected
