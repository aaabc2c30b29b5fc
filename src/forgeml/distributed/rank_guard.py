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

When ``FORGEML_RANK_STATUS`` names a folder, a failed rank also leaves a record
there (``rank-R.json``: rank, size, pid, exit code or signal, and the time).
mpiexec's own exit code is that of whichever death it noticed first, which may
be a healthy rank it killed while ending the job; the launcher reads the records
to report the rank that failed first (:func:`forgeml.distributed.launch.first_rank_failure`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_PR_SET_PDEATHSIG = 1
STATUS_VARIABLE = "FORGEML_RANK_STATUS"


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


def _record(rank: str, size: str, pid: int, code: int) -> None:
    """Leave this rank's failure where the launcher looks (written whole, then renamed: never half a record)."""
    folder = os.environ.get(STATUS_VARIABLE)
    if not folder:
        return
    record = {"rank": rank, "size": size, "pid": pid, "time": time.time()}
    record.update({"signal": -code} if code < 0 else {"code": code})
    path = os.path.join(folder, f"rank-{rank}.json")
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(path + ".tmp", path)
    except OSError as exc:  # the launcher falls back to mpiexec's exit code
        sys.stderr.write(f"forgeml launch: could not record rank {rank}'s failure in {folder}: {exc}\n")


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
            _record(rank, size, child.pid, code)
            sys.stderr.write(f"forgeml launch: rank {rank} of {size} (pid {child.pid}) was killed by {name}\n")
        return 128 - code
    if code != 0 and not forwarded:
        _record(rank, size, child.pid, code)
        sys.stderr.write(f"forgeml launch: rank {rank} of {size} (pid {child.pid}) exited with code {code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
