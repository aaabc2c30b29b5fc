"""``forgeml launch``: start a script on N processes of this machine, with ``mpiexec`` underneath.

``forgeml launch -n 4 train.py --lr 0.1`` runs ``mpiexec -n 4 <this python> train.py --lr 0.1``
and returns its exit code; the script calls ``forgeml.distributed.init_process_group()``
and learns its rank from MPI. The ranks get a fair share of the CPU threads
(``OMP_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` = cores // N, unless already set,
as ``torchrun`` does) and unbuffered output (``PYTHONUNBUFFERED=1``, unless set),
so that their lines appear as they are printed and survive a rank that aborts
the job. On several machines, call ``mpiexec`` or ``srun`` directly.

``mpiexec`` is looked for next to the Python interpreter (where the ``mpich``
wheel of ``pip install "forgeml[dist]"`` puts it), then in the interpreter's
scripts folder, then on ``PATH``; ``FORGEML_MPIEXEC`` names another one. It must
belong to the MPI that mpi4py was built against, or every rank believes it is
rank 0 of 1.
"""

from __future__ import annotations

import json
import numbers
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RANK_GUARD",
    "RankFailure",
    "available_cpus",
    "find_mpiexec",
    "first_rank_failure",
    "launch",
    "launch_command",
]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_GRACE_SECONDS = 5.0  # after a timeout or an interrupt: how long mpiexec gets to end the ranks before it is killed
_TIMEOUT_EXIT_CODE = 124  # as GNU timeout
_INTERRUPT_EXIT_CODE = 130  # as a shell reports Ctrl-C


def _say(message: str) -> None:
    sys.stderr.write(f"forgeml launch: {message}\n")
    sys.stderr.flush()


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def find_mpiexec() -> str:
    """The ``mpiexec`` to launch with: ``FORGEML_MPIEXEC``, else the one next to ``sys.executable`` (a venv's
    ``bin``, where the mpich wheel installs it), else the interpreter's scripts folder, else ``PATH``.

    Raises FileNotFoundError, naming what to install, when there is none.
    """
    override = os.environ.get("FORGEML_MPIEXEC")
    if override:
        found = shutil.which(override)
        if found is None:
            raise FileNotFoundError(f"FORGEML_MPIEXEC={override!r} is not an executable file")
        return found
    names = ("mpiexec.exe", "mpiexec") if os.name == "nt" else ("mpiexec",)
    folders = [Path(sys.executable).parent]  # not resolved: a venv's python links to the base interpreter
    scripts = sysconfig.get_path("scripts")
    if scripts:
        folders.append(Path(scripts))
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which("mpiexec")
    if found is not None:
        return found
    raise FileNotFoundError(
        'no mpiexec found (looked next to the Python interpreter and on PATH): pip install "forgeml[dist]" '
        "(mpi4py and the mpich wheel, which brings mpiexec), or install your system's MPI, or set FORGEML_MPIEXEC"
    )


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


RANK_GUARD = str(Path(__file__).with_name("rank_guard.py"))
RANK_STATUS_VARIABLE = "FORGEML_RANK_STATUS"  # as rank_guard.STATUS_VARIABLE (the guard imports nothing of ForgeML)


@dataclass(frozen=True)
class RankFailure:
    """A rank that died on its own (not ended by the launcher), as its guard recorded it."""

    rank: int
    size: int
    pid: int
    time: float
    code: int | None = None  # its exit code, or
    signal: int | None = None  # the signal that killed it

    @property
    def exit_code(self) -> int:
        """The exit code a shell would report for it (128 + the signal for a killed process)."""
        return 128 + self.signal if self.signal is not None else int(self.code or 0)

    def describe(self) -> str:
        """``rank 1 of 2 died: killed by SIGKILL (signal 9)`` or ``rank 1 of 2 died: exited with code 3``."""
        if self.signal is not None:
            known = self.signal in signal.valid_signals()
            name = signal.Signals(self.signal).name if known else "a signal"
            return f"rank {self.rank} of {self.size} died: killed by {name} (signal {self.signal})"
        return f"rank {self.rank} of {self.size} died: exited with code {self.code}"


def first_rank_failure(folder: str | os.PathLike) -> RankFailure | None:
    """The rank that failed first among the records the rank guards left in ``folder``, or ``None``.

    mpiexec's exit code is that of the death it noticed first, which can be a healthy rank it killed
    while ending the job; the guards' records, stamped when each rank ended, tell which one began it."""
    failures = []
    for path in Path(folder).glob("rank-*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            failure = RankFailure(
                rank=int(record["rank"]),
                size=int(record["size"]),
                pid=int(record["pid"]),
                time=float(record["time"]),
                code=record.get("code"),
                signal=record.get("signal"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record from an older guard or a half-deleted folder: fall back to the others
        failures.append(failure)
    return min(failures, key=lambda failure: failure.time, default=None)


def launch_command(
    script: str,
    args: Sequence[str] = (),
    nprocs: int = 2,
    *,
    module: bool = False,
    mpiexec: str | None = None,
    guard: bool = True,
) -> list[str]:
    """The command line :func:`launch` runs: ``mpiexec -n N <python> script args`` (``-m script`` for a module).

    With ``guard`` each rank runs under ``rank_guard.py``, which names a rank that dies (mpiexec does not).
    """
    nprocs = _check_count("nprocs", nprocs)
    target = ["-m", script] if module else [script]
    guarded = [RANK_GUARD] if guard else []
    return [mpiexec or find_mpiexec(), "-n", str(nprocs), sys.executable, *guarded, *target, *map(str, args)]


def _rank_environment(nprocs: int, threads: int | None, env: Mapping[str, str] | None) -> dict[str, str]:
    environment = dict(os.environ)
    if env:
        environment.update({str(k): str(v) for k, v in env.items()})
    share = str(threads if threads is not None else max(1, available_cpus() // nprocs))
    for name in THREAD_VARIABLES:
        if threads is not None or name not in environment:  # an explicit --threads wins; else keep the user's
            environment[name] = share
    environment.setdefault("PYTHONUNBUFFERED", "1")
    return environment


def _stop(process: subprocess.Popen, sig: int) -> None:
    """Ask mpiexec to end the job (it passes the signal on to every rank); kill it after a grace period
    (its proxies then end the ranks)."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(sig)
        process.wait(_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:
        pass


def launch(
    script: str | os.PathLike,
    args: Sequence[str] = (),
    nprocs: int = 2,
    timeout: float | None = None,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    *,
    module: bool = False,
) -> int:
    """Run ``script`` (a module with ``module=True``) on ``nprocs`` processes of this machine through
    ``mpiexec``, and return the job's exit code.

    Args:
        script: the Python file to run (or, with ``module=True``, the module name, as ``python -m``).
        args: the script's arguments.
        nprocs: the number of ranks. More than this machine's cores works, slowly, with a warning.
        timeout: seconds after which the whole job is stopped (exit code 124); ``None`` waits for ever.
        threads: CPU threads per rank (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``); default
            cores // nprocs, unless those variables are set already.
        env: extra environment variables for the ranks, on top of this process's environment.

    Raises FileNotFoundError when the script or ``mpiexec`` is missing, ValueError for a bad count.
    """
    nprocs = _check_count("nprocs", nprocs)
    if threads is not None:
        threads = _check_count("threads", threads)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    script = os.fspath(script)
    if not module and not Path(script).is_file():
        raise FileNotFoundError(f"no such script: {script}")
    command = launch_command(script, args, nprocs, module=module)
    cpus = available_cpus()
    if nprocs > cpus:
        _say(
            f"warning: {nprocs} processes on {cpus} CPU cores; the ranks will share cores and run slower "
            "(oversubscribed)"
        )
    environment = _rank_environment(nprocs, threads, env)
    with tempfile.TemporaryDirectory(prefix="forgeml-launch-") as status:
        environment[RANK_STATUS_VARIABLE] = status
        code, ended_by_us = _run(subprocess.Popen(command, env=environment), timeout)
        first = first_rank_failure(status) if code != 0 and not ended_by_us else None
    if first is not None:
        code = first.exit_code  # the rank that began it, not whichever death mpiexec saw first
    if code != 0 and not ended_by_us:
        _say(f"the job failed with exit code {code}; the failing rank's error is above")
    return code


def _run(process: subprocess.Popen, timeout: float | None) -> tuple[int, bool]:
    """Wait for mpiexec; stop it on a timeout or Ctrl-C. Returns the exit code and whether the job was
    ended from outside (a timeout, Ctrl-C, mpiexec killed) rather than by its ranks."""
    forward = threading.current_thread() is threading.main_thread()
    # A SIGTERM to the launcher (a batch system ending the job) goes on to mpiexec, which ends the ranks.
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: process.send_signal(sig)) if forward else None
    try:
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(process, signal.SIGTERM)
            _say(f"the job did not finish within {timeout:g} s and was stopped")
            return _TIMEOUT_EXIT_CODE, True
        except KeyboardInterrupt:
            _stop(process, signal.SIGINT)
            _say("interrupted; the job was stopped")
            return _INTERRUPT_EXIT_CODE, True
    finally:
        if forward:  # back to what was there (None: a handler set outside Python, so the default)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if code < 0:  # mpiexec itself was killed by a signal
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        _say(f"mpiexec was ended by {name}; the job was stopped")
        return 128 - code, True
    return code, False
