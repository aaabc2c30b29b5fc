"""Run one rank of an MPI job as a child process and say which rank it was if it dies.

``mpiexec`` reports a rank killed by a signal with its PID only, and one that
exits with an error code not at all. ``forgeml launch`` therefore starts each
rank as ``python rank_guard.py script.py args``: this small parent (run by path,
so it imports nothing of ForgeML) starts the real rank with the MPI launcher's
environment and file descriptors, waits for it, and on a death prints
``forgeml launch: rank R of W (pid P) was killed by SIGKILL`` (or ``exited with
code C``) before exiting the same way. The rank is killed if the guard is (Linux:
the parent-death signal), so no orphan stays behind waiting in a collective.
Signals sent to the guard (SIGTERM, SIGINT from mpiexec ending the job) are
passed on to the rank, and those deaths are not reported as failures.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_PR_SET_PDEATHSIG = 1


def _first(names) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return "?"


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the guard dies (Linux only; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: rank_guard.py script.py [args ...] (or -m module [args ...])\n")
        return 2
    rank, size = _first(_RANK_VARIABLES), _first(_SIZE_VARIABLES)
    child = subprocess.Popen(
        [sys.executable, *argv],
        close_fds=False,  # the MPI launcher's connection (PMI_FD) must reach the rank
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )
    forwarded: list[int] = []

    def forward(sig, frame) -> None:
        forwarded.append(sig)
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        if -code not in forwarded:
            sys.stderr.write(f"forgeml launch: rank {rank} of {size} (pid {child.pid}) was killed by {name}\n")
        return 128 - code
    if code != 0 and not forwarded:
        sys.stderr.write(f"forgeml launch: rank {rank} of {size} (pid {child.pid}) exited with code {code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
