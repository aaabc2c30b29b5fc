"""forgeml launch: mpiexec on one machine, exit codes, thread shares, timeouts, and a clear error without MPI."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from forgeml import cli
from forgeml.distributed import launch as launch_module
from forgeml.distributed.launch import (
    RANK_GUARD,
    RankFailure,
    _rank_environment,
    find_mpiexec,
    first_rank_failure,
    launch,
    launch_command,
)

# As tests/distributed/conftest.py: jobs need mpi4py and the mpiexec of the mpich wheel beside the interpreter.
_MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not _MPIEXEC.exists(),
    reason='mpi4py or the mpiexec beside the Python interpreter is missing (pip install "forgeml[dist]")',
)

RANK_SCRIPT = """
import os, sys
from mpi4py import MPI

comm = MPI.COMM_WORLD
# one write per line: with unbuffered output, print() writes the text and the newline apart, and two ranks'
# lines can then mix
line = f"rank {comm.Get_rank()} of {comm.Get_size()} args={sys.argv[1:]} omp={os.environ.get('OMP_NUM_THREADS')}"
sys.stdout.write(line + "\\n")
sys.stdout.flush()
if "fail" in sys.argv and comm.Get_rank() == 1:
    sys.exit(3)
if "sleep" in sys.argv:
    import time
    time.sleep(60)
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "ranks.py"
    path.write_text(textwrap.dedent(RANK_SCRIPT))
    return path


@needs_mpi
def test_cli_runs_the_script_on_every_rank(script):
    result = subprocess.run(
        [sys.executable, "-m", "forgeml.cli", "launch", "-n", "2", str(script), "--lr", "0.1", "-n", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("rank"))
    # everything after the script is the script's own, even options that look like the launcher's
    assert [line.split(" omp=")[0] for line in lines] == [
        "rank 0 of 2 args=['--lr', '0.1', '-n', '5']",
        "rank 1 of 2 args=['--lr', '0.1', '-n', '5']",
    ]


@needs_mpi
def test_a_failing_rank_sets_the_exit_code(script, capfd):
    assert launch(script, ["fail"], nprocs=2) == 3
    err = capfd.readouterr().err
    assert "forgeml launch: the job failed with exit code 3; the failing rank's error is above" in err


@needs_mpi
def test_oversubscription_warns_and_gives_each_rank_one_thread(script, capfd, monkeypatch):
    monkeypatch.setattr(launch_module, "available_cpus", lambda: 1)  # so that 2 ranks oversubscribe, fast
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert launch(script, nprocs=2) == 0
    out, err = capfd.readouterr()
    assert "warning: 2 processes on 1 CPU cores" in err and "oversubscribed" in err
    assert out.count("omp=1") == 2


def test_each_rank_gets_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(launch_module, "available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("PYTHONUNBUFFERED", "")
    env = _rank_environment(3, None, {"EXTRA": 7})
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"  # 8 // 3
    assert env["EXTRA"] == "7" and env["PYTHONUNBUFFERED"] == ""  # a variable already set stays as it is
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    env = _rank_environment(2, None, None)
    assert (env["OMP_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"]) == ("5", "4")  # the user's setting wins
    env = _rank_environment(2, 3, None)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"  # --threads wins over both


@needs_mpi
def test_timeout_stops_a_hanging_job(script, capfd):
    assert launch(script, ["sleep"], nprocs=2, timeout=1) == 124
    assert "did not finish within 1 s and was stopped" in capfd.readouterr().err


@needs_mpi
def test_module_mode_and_extra_environment(tmp_path, capfd):
    (tmp_path / "ranks_module.py").write_text(textwrap.dedent(RANK_SCRIPT))
    code = launch("ranks_module", ["x"], nprocs=2, threads=2, env={"PYTHONPATH": str(tmp_path)}, module=True)
    assert code == 0
    out = capfd.readouterr().out
    assert "rank 0 of 2 args=['x'] omp=2" in out and "rank 1 of 2 args=['x'] omp=2" in out


@needs_mpi
def test_command_line_and_mpiexec_lookup():
    assert find_mpiexec() == str(Path(sys.executable).parent / "mpiexec")  # the mpich wheel's, in the venv
    assert launch_command("train.py", ["--lr", 0.1], 4, mpiexec="mpiexec") == [
        "mpiexec", "-n", "4", sys.executable, RANK_GUARD, "train.py", "--lr", "0.1"
    ]  # fmt: skip
    assert launch_command("pkg.train", (), 2, module=True, mpiexec="mpiexec", guard=False)[3:] == [
        sys.executable, "-m", "pkg.train"
    ]  # fmt: skip


@needs_mpi
def test_a_rank_that_dies_is_named(tmp_path, capfd):
    """mpiexec names a killed rank by its PID only and a rank that exits with an error code not at all:
    the rank guard says which rank it was."""
    body = "import os, signal, forgeml.distributed as dist, forgeml as fm\n"
    body += "dist.init_process_group('mpi')\n"
    killed, exited = tmp_path / "killed.py", tmp_path / "exited.py"
    killed.write_text(body + "if dist.get_rank() == 1:\n    os.kill(os.getpid(), signal.SIGKILL)\ndist.barrier()\n")
    exited.write_text(body + "if dist.get_rank() == 1:\n    os._exit(3)\ndist.barrier()\n")
    # The exit code is the dead rank's, never the 9 of rank 0 that mpiexec kills while ending the job (its
    # own exit code is whichever death it noticed first).
    for _ in range(3):
        assert launch(killed, nprocs=2, timeout=60) == 128 + signal.SIGKILL
        assert "rank 1 of 2" in capfd.readouterr().err.split("was killed by SIGKILL")[0].splitlines()[-1]
        assert launch(exited, nprocs=2, timeout=60) == 3
        assert "forgeml launch: rank 1 of 2 (pid " in capfd.readouterr().err


def test_the_first_failure_is_read_from_the_guards_records(tmp_path):
    assert first_rank_failure(tmp_path) is None
    (tmp_path / "rank-0.json").write_text(json.dumps({"rank": "0", "size": "2", "pid": 5, "time": 2.5, "signal": 9}))
    (tmp_path / "rank-1.json").write_text(json.dumps({"rank": "1", "size": "2", "pid": 6, "time": 2.0, "code": 3}))
    (tmp_path / "rank-2.json").write_text("{half a rec")  # unreadable: ignored
    first = first_rank_failure(tmp_path)
    assert (first.rank, first.size, first.exit_code) == (1, 2, 3)
    assert first.describe() == "rank 1 of 2 died: exited with code 3"
    later = RankFailure(rank=0, size=2, pid=5, time=2.5, signal=9)
    assert (later.exit_code, later.describe()) == (137, "rank 0 of 2 died: killed by SIGKILL (signal 9)")


def test_missing_mpiexec_names_what_to_install(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(launch_module.sysconfig, "get_path", lambda name: str(tmp_path / "scripts"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("FORGEML_MPIEXEC", raising=False)
    with pytest.raises(FileNotFoundError, match=r'pip install "forgeml\[dist\]"'):
        find_mpiexec()
    assert cli.main(["launch", "-n", "2", str(script)]) == 2
    assert "no mpiexec found" in capsys.readouterr().err


def test_forgeml_mpiexec_overrides_the_lookup(monkeypatch):
    monkeypatch.setenv("FORGEML_MPIEXEC", "/no/such/mpiexec")
    with pytest.raises(FileNotFoundError, match="FORGEML_MPIEXEC='/no/such/mpiexec' is not an executable"):
        find_mpiexec()
    monkeypatch.setenv("FORGEML_MPIEXEC", sys.executable)
    assert find_mpiexec() == sys.executable


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nprocs": 0}, ValueError, "nprocs must be an integer of at least 1, got 0"),
        ({"nprocs": 2.5}, ValueError, "nprocs must be an integer"),
        ({"threads": 0}, ValueError, "threads must be an integer of at least 1"),
        ({"timeout": -1}, ValueError, "timeout must be a positive number of seconds"),
    ],
)
def test_bad_arguments(script, kwargs, error, match):
    with pytest.raises(error, match=match):
        launch(script, **kwargs)


def test_missing_script(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such script"):
        launch(tmp_path / "nope.py")
    assert cli.main(["launch", "-n", "2", str(tmp_path / "nope.py")]) == 2
    assert "forgeml launch: no such script" in capsys.readouterr().err


def test_cli_requires_a_process_count(capsys):
    with pytest.raises(SystemExit):
        cli.main(["launch", "train.py"])
    assert "-n" in capsys.readouterr().err


def test_environment_is_untouched(monkeypatch):
    before = dict(os.environ)
    _rank_environment(2, 4, {"A": "b"})
    assert dict(os.environ) == before
