"""The run lock: one process writes a run; a second one is refused in one line naming it; a lock left
by a killed process is taken over. Real processes throughout: the lock is the kernel's (flock)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from headstart.callbacks.history_writer import read_history
from headstart.recipes.checkpoint import TrainingCheckpoint
from headstart.recipes.errors import UsageError
from headstart.recipes.rundir import RunDir, RunInUse, RunLock, check_run_name

SAFETY_TIMEOUT = 900   # a hang guard only

# Holds the lock of the run named in argv (shared and with a part when given), says so, waits for stdin.
HOLDER = ("import sys; from headstart.recipes.rundir import RunLock; "
          "part = sys.argv[2] if len(sys.argv) > 2 else None; "
          "RunLock(sys.argv[1]).acquire(shared=part is not None); part and RunLock(sys.argv[1], part).acquire(); "
          "print('held', flush=True); sys.stdin.read()")


def _env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _hold(run, part=None):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), *([part] if part else [])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_held_run_is_refused_naming_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    root = tmp_path / "runs"
    run = root / "pretrain" / "a"
    holder = _hold(run)
    try:
        for overwrite, resume in ((True, False), (False, True), (False, False)):
            with pytest.raises(RunInUse, match=f"in use by process {holder.pid} on "):
                check_run_name("pretrain", "a", str(root), overwrite=overwrite, resume=resume)
        with pytest.raises(RunInUse):   # two processes past the check at once: the lock still decides
            RunLock(run).acquire()
        assert not run.exists()
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((root / "pretrain" / ".a.lock").read_text())["pid"] == holder.pid   # left behind
    run_dir = RunDir.create("pretrain", "a", str(root), overwrite=True)
    assert run_dir.path.is_dir()
    from headstart.recipes import rundir

    lock = rundir._held_locks[os.path.abspath(root / "pretrain" / ".a.lock")]
    assert lock.taken_over["pid"] == holder.pid
    assert json.loads((root / "pretrain" / ".a.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert sorted(os.listdir(root / "pretrain")) == ["a"]   # released: the lock file goes


def test_a_distributed_search_shares_its_folder_but_not_a_tuner_id(tmp_path):
    run = tmp_path / "runs" / "tune" / "s"
    chief = _hold(run, "chief")
    try:
        worker = _hold(run, "tuner0")   # the chief and a worker write one folder by design
        try:
            check_run_name("tune", "s", str(tmp_path / "runs"), overwrite=True, shared=True)   # another worker joins
            with pytest.raises(RunInUse, match=f"process {chief.pid}|process {worker.pid}"):
                check_run_name("tune", "s", str(tmp_path / "runs"), overwrite=True)   # a standalone one: refused
            with pytest.raises(RunInUse, match=f"process {worker.pid}"):
                RunLock(run, "tuner0").acquire()          # a second worker with the same id
        finally:
            worker.kill()
            worker.wait()
    finally:
        chief.kill()
        chief.wait()
    RunLock(run).acquire().release()   # free once they are gone


def _command(name, runs_dir, *extra):
    return [sys.executable, "-m", "headstart", "pretrain", "--image-size", "8", "--epochs", "4", "--batch-size", "64",
            "--name", name, "--runs-dir", str(runs_dir), *extra]


def test_two_processes_on_one_run_have_exactly_one_writer(tmp_path):
    runs_dir = tmp_path / "runs"
    run = runs_dir / "pretrain" / "busy"
    first = subprocess.Popen(_command("busy", runs_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while not TrainingCheckpoint(run / "checkpoint").exists():
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)   # held mid-run for as long as the test needs: no race with its end
        before = sorted(str(path.relative_to(run)) for path in run.rglob("*"))
        for extra in (["--overwrite"], ["--resume"], []):
            second = subprocess.run(_command("busy", runs_dir, *extra), capture_output=True, text=True, env=_env(),
                                    timeout=SAFETY_TIMEOUT)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("headstart: error: run "), second.stderr
            assert f"in use by process {first.pid}" in lines[0] and "headstart pretrain" in lines[0]
        assert sorted(str(path.relative_to(run)) for path in run.rglob("*")) == before   # the second wrote nothing
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    resumed = subprocess.run(_command("busy", runs_dir, "--resume"), capture_output=True, text=True, env=_env(),
                             timeout=SAFETY_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"was locked by process {first.pid}, which is no longer running" in resumed.stderr
    assert [row["epoch"] for row in read_history(run / "history.csv")] == [0, 1, 2, 3]
    assert (run / "metrics.json").exists()
    assert sorted(os.listdir(runs_dir / "pretrain")) == ["busy"]   # the lock went with its process


def test_the_python_api_may_write_one_run_after_another_in_one_process(tmp_path):
    first = RunDir.create("pretrain", "again", str(tmp_path))
    again = RunDir.create("pretrain", "again", str(tmp_path), overwrite=True)   # this process holds it already
    assert first.path == again.path and again.path.is_dir()
    with pytest.raises(UsageError, match="already exists"):
        check_run_name("pretrain", "again", str(tmp_path))
