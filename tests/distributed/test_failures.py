"""A rank that fails ends the whole job quickly: one that raises, one that dies, one that hangs.

Every job here would wait forever (or 30 s) if the failure handling did not
work; each test asserts the job ended well inside the harness's hard timeout.
"""

from __future__ import annotations

import pytest

# A failed job must end in seconds: MPI start-up is under one, the collective timeout below is 2.
QUICK = 10.0

RAISES = """
import threading

import forgeml as fm
import forgeml.distributed as dist
from mpi_report import report

dist.init_process_group("mpi")
rank = dist.get_rank()
report(started=True)
if rank == 1:
    if "{where}" == "thread":
        worker = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError("bad batch 17 on a worker")))
        worker.start()
        worker.join()
        dist.barrier()  # the job must end before this would complete
    raise ValueError("bad batch 17")
t = fm.ones(4)
dist.all_reduce(t)  # rank 0 waits here (default timeout: 30 minutes) for a rank that never comes
report(done=True)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_rank_that_raises_ends_the_job(mpirun, where):
    run = mpirun(RAISES.replace("{where}", where), n=2, timeout=60)
    assert run.returncode != 0, run.describe()
    assert run.seconds < QUICK, run.describe()
    message = "bad batch 17 on a worker" if where == "thread" else "bad batch 17"
    assert f"forgeml.distributed: rank 1 of 2 failed with ValueError: {message}" in run.stderr, run.describe()
    assert "Traceback" in run.stderr  # the rank's own traceback comes first
    assert run.reports[0] == {"started": True} and run.reports[1] == {"started": True}  # rank 0 never finished


DIES = """
import os
import signal

import forgeml as fm
import forgeml.distributed as dist
from mpi_report import report

dist.init_process_group("mpi")
rank = dist.get_rank()
report(pid=os.getpid())
dist.barrier()
if rank == 1:
    if "{how}" == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)
t = fm.ones(4)
dist.all_reduce(t)  # rank 0 waits here for the dead rank
report(done=True)
"""


def test_a_rank_killed_by_a_signal_ends_the_job(mpirun):
    run = mpirun(DIES.replace("{how}", "kill"), n=2, timeout=60)
    assert run.returncode != 0, run.describe()
    assert run.seconds < QUICK, run.describe()
    assert "done" not in run.reports[0]
    # Hydra names the dead process by its PID and signal, not by its rank: match the PID rank 1 reported.
    assert f"PID {run.reports[1]['pid']} " in run.output, run.describe()
    assert "signal 9" in run.output, run.describe()


def test_a_rank_that_exits_ends_the_job(mpirun):
    run = mpirun(DIES.replace("{how}", "exit"), n=2, timeout=60)
    # os._exit skips every Python hook and Hydra prints nothing for a plain non-zero exit. Its exit code is
    # that of the first death it noticed: usually the dead rank's 3, sometimes the 9 of rank 0, which it
    # killed itself. `forgeml launch` reports the rank that died first (tests/distributed/test_launch.py).
    assert run.returncode in (3, 9), run.describe()
    assert run.seconds < QUICK, run.describe()
    assert "done" not in run.reports[0]


HANGS = """
import time

import forgeml as fm
import forgeml.distributed as dist
from mpi_report import report

dist.init_process_group("mpi", timeout=2)
rank = dist.get_rank()
dist.barrier()
report(started=time.monotonic())
if rank == 1:
    time.sleep(30)  # hangs: never joins the all_reduce
t = fm.ones(4)
try:
    dist.all_reduce(t)
except dist.DistributedTimeoutError as exc:
    report(error=[type(exc).__name__, str(exc), isinstance(exc, TimeoutError)], raised=time.monotonic())
    raise
report(done=True)
"""


def test_a_rank_that_hangs_times_out_the_others(mpirun):
    run = mpirun(HANGS, n=2, timeout=60)
    assert run.returncode != 0, run.describe()
    assert run.seconds < QUICK, run.describe()  # not the 30 s rank 1 sleeps: the abort ends it too
    rank0 = run.reports[0]
    name, message, is_timeout = rank0["error"]
    assert name == "DistributedTimeoutError" and is_timeout
    assert "rank 0 of 2" in message and "all_reduce" in message and "2 s" in message
    assert 2.0 <= rank0["raised"] - rank0["started"] < 5.0  # the group's timeout, not the default 30 minutes
    assert "forgeml.distributed: rank 0 of 2 failed with DistributedTimeoutError" in run.stderr, run.describe()
    assert "done" not in run.reports[1]
