"""Run real multi-process jobs under ``mpiexec`` from a test, and read back what each rank reported.

The ``mpirun`` fixture (session-scoped, so module- and class-scoped fixtures can
use it too) is a function::

    run = mpirun(script, n=2, timeout=60.0, args=(), env=None, launcher_args=(), mpiexec=True)

It writes ``script`` (Python source text, dedented) to a fresh folder and runs
it as ``<venv>/bin/mpiexec *launcher_args -n N <python> script.py *args``, with
the ``mpiexec`` that sits next to ``sys.executable`` (the ``mpich`` wheel's,
which matches mpi4py's MPI library). ``mpiexec=False`` runs it as one plain
process instead: mpi4py then makes a world of one (an MPI singleton). The
ranks' environment is this one plus ``env``, with the repository root put
first on ``PYTHONPATH`` (so a rank can ``import tests.checked_cuda``) and any
PMI/Hydra variables of an outer launcher removed. The job gets a hard wall-clock
``timeout``: past it, every process of the job is killed and the test fails
with the output so far. The result is an :class:`MPIRun`: ``returncode``,
``stdout``, ``stderr``, ``seconds`` (wall time), and ``reports``.

Reporting from a rank. Next to the script lies a helper module, so a rank
script does::

    from mpi_report import report

    report(loss=1.5, weights=model.weight)   # any JSON-able values; arrays, tensors and NumPy scalars too

Each call appends one JSON line, ``{"rank": r, "values": {...}}``, to a file of
that rank's own in the job's folder (not to stdout: ``mpiexec`` forwards the
ranks' output in chunks, so long lines from two ranks interleave). A report
written before a rank died is kept. ``MPIRun.reports`` merges them into
``{rank: {key: value}}`` (arrays and tensors arrive as nested lists; feed them
to ``np.asarray``); a key reported twice by one rank is an error, so two code
paths cannot silently overwrite each other's results. The rank comes from
``PMI_RANK`` (set by Hydra's ``mpiexec``; 0 in a plain process). Whatever a rank
prints stays in ``stdout``/``stderr`` for the test to inspect.

``MPIRun.check()`` asserts the job exited 0 and every rank reported something,
and shows the job's output when it did not; it returns the reports::

    def test_something(mpirun):
        reports = mpirun(SCRIPT, n=2).check()
        assert reports[0]["total"] == reports[1]["total"]

The tests here skip only when mpi4py or that ``mpiexec`` is missing (``pip
install "forgeml[dist]"`` brings both; ``make test`` installs them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPORTS_ENV = "FORGEML_TEST_REPORTS"  # the folder the ranks write their reports into
MPIEXEC = Path(sys.executable).parent / "mpiexec"
REPO_ROOT = Path(__file__).resolve().parents[2]

# The helper module a rank script imports as ``from mpi_report import report``.
_REPORT_MODULE = f'''\
"""Written by tests/distributed/conftest.py: report(**values) appends one JSON line for the test to read."""

import json
import os

RANK = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))


def _plain(value):
    if hasattr(value, "numpy") and hasattr(value, "grad_fn"):  # a forgeml Tensor
        value = value.numpy()
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # an array or a NumPy scalar
        if value.dtype.kind == "f" and value.dtype.char not in "efdg":  # bfloat16 and the like
            value = value.astype("float64")
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"report(): cannot turn {{type(value).__name__}} into JSON")


def report(**values):
    line = json.dumps({{"rank": RANK, "values": values}}, default=_plain)
    with open(os.path.join(os.environ[{REPORTS_ENV!r}], f"rank{{RANK}}.jsonl"), "a") as file:
        file.write(line + "\\n")
'''


@dataclass
class MPIRun:
    """What one ``mpirun(...)`` job did."""

    n: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    reports: dict[int, dict] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"job of {self.n} rank(s) exited {self.returncode} after {self.seconds:.1f} s\n"
            f"--- stdout ---\n{_clip(self.stdout)}\n--- stderr ---\n{_clip(self.stderr)}"
        )

    def check(self) -> dict[int, dict]:
        """Assert a clean exit and a report from every rank; return ``reports``."""
        if self.returncode != 0:
            pytest.fail(f"the MPI job failed: {self.describe()}", pytrace=False)
        missing = sorted(set(range(self.n)) - set(self.reports))
        if missing:
            pytest.fail(f"rank(s) {missing} reported nothing: {self.describe()}", pytrace=False)
        return self.reports


def _clip(text: str, limit: int = 8000) -> str:
    return text if len(text) <= limit else f"...[{len(text) - limit} characters cut]...\n" + text[-limit:]


def _read_reports(folder: Path) -> dict[int, dict]:
    reports: dict[int, dict] = {}
    lines = [line for path in sorted(folder.glob("rank*.jsonl")) for line in path.read_text().splitlines()]
    for line in lines:
        message = json.loads(line)
        merged = reports.setdefault(message["rank"], {})
        for key, value in message["values"].items():
            if key in merged:
                raise AssertionError(f"rank {message['rank']} reported {key!r} twice")
            merged[key] = value
    return reports


def _child_env(extra: dict) -> dict:
    # A test process started under a launcher must not hand its own PMI wiring to the job it starts.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPI_LOCAL", "OMPI_"))}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _missing_requirement() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py is not installed (pip install "forgeml[dist]")'
    if not MPIEXEC.exists():
        return f'no mpiexec next to the Python interpreter ({MPIEXEC}); pip install "forgeml[dist]" brings one'
    return None


@pytest.fixture(scope="session")
def mpirun(tmp_path_factory):
    """Run a Python script text as an MPI job; see this module's docstring."""
    reason = _missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    jobs = tmp_path_factory.mktemp("mpi_jobs")
    counter = iter(range(1_000_000))

    def run(
        script: str,
        n: int = 2,
        *,
        timeout: float = 60.0,
        args: tuple | list = (),
        env: dict | None = None,
        launcher_args: tuple | list = (),
        mpiexec: bool = True,
    ) -> MPIRun:
        folder = jobs / f"job_{next(counter)}"
        (folder / "reports").mkdir(parents=True)
        (folder / "mpi_report.py").write_text(_REPORT_MODULE)
        path = folder / "script.py"
        path.write_text(textwrap.dedent(script))
        if mpiexec:
            command = [str(MPIEXEC), *map(str, launcher_args), "-n", str(n), sys.executable, str(path), *map(str, args)]
        else:
            if n != 1:
                raise ValueError("mpiexec=False runs one plain process: n must be 1")
            command = [sys.executable, str(path), *map(str, args)]
        start = time.monotonic()
        # A session of its own, so a job that overruns is killed whole: mpiexec, its proxies and every rank.
        proc = subprocess.Popen(
            command,
            cwd=folder,
            env=_child_env({REPORTS_ENV: str(folder / "reports"), **(env or {})}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(
                f"the MPI job ({' '.join(command[:4])} ...) did not finish within {timeout:g} s; killed.\n"
                f"--- stdout ---\n{_clip(stdout)}\n--- stderr ---\n{_clip(stderr)}",
                pytrace=False,
            )
        finally:
            # Strays that outlived mpiexec (it normally cleans up after itself).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        seconds = time.monotonic() - start
        return MPIRun(n, proc.returncode, stdout, stderr, seconds, _read_reports(folder / "reports"))

    return run
