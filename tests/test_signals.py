"""Ctrl-C and SIGTERM: one line with the command that resumes the run, exit 130 / 143, the last
checkpoint kept; a signal during a checkpoint save waits for the save; a second one exits at once."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from headstart.callbacks.history_writer import read_history
from headstart.recipes.checkpoint import TrainingCheckpoint

SAFETY_TIMEOUT = 900   # a hang guard only


def _env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_in_one_line_with_the_command_that_resumes_it(tmp_path, signum, status):
    runs_dir = tmp_path / "runs"
    # No --name: the line must give the one the run got.
    command = ["pretrain", "--image-size", "8", "--epochs", "4", "--batch-size", "64", "--runs-dir", str(runs_dir)]
    (runs_dir / "pretrain").mkdir(parents=True)
    process_run = None
    process = subprocess.Popen([sys.executable, "-m", "headstart", *command], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while process_run is None or not TrainingCheckpoint(process_run / "checkpoint").exists():   # its first epoch
            runs = [path for path in (runs_dir / "pretrain").iterdir() if path.is_dir()]
            process_run = runs[0] if runs else None
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signum)
        stderr = process.stderr.read()
        process.wait(SAFETY_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == status
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"headstart: stopped by {name}; the last completed epoch's checkpoint in {process_run} "
                               "is kept: continue with `headstart pretrain "), lines[0]
    resume = shlex.split(lines[0].split("`")[1])
    assert resume[-3:] == ["--name", process_run.name, "--resume"]
    assert not list(process_run.rglob("*.tmp*")), "a temporary file was left behind"
    assert TrainingCheckpoint(process_run / "checkpoint").load()[0]["epoch"] >= 1
    if signum == signal.SIGTERM:
        return   # resuming is the same after either signal: once is enough (each run costs ~10 s of CPU)
    resumed = subprocess.run([sys.executable, "-m", *resume], capture_output=True, text=True, env=_env(),
                             timeout=SAFETY_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["epoch"] for row in read_history(process_run / "history.csv")] == [0, 1, 2, 3]


# Inside `saving()` a signal waits for the block to end; a second one exits at once. No TensorFlow:
# the process signals itself, so nothing races.
SAVING = """
import os, signal, sys
from headstart.recipes import faults
with faults.handling_signals():
    try:
        with faults.saving():
            os.kill(os.getpid(), signal.SIGTERM)
            print("the save went on", flush=True)
            if sys.argv[1] == "twice":
                os.kill(os.getpid(), signal.SIGINT)
                print("not reached", flush=True)
        print("not reached either", flush=True)
    except faults.Interrupted as error:
        print("interrupted after the save", error.exit_status, flush=True)
"""


def test_a_signal_during_a_save_waits_for_it_and_a_second_one_exits_at_once():
    once = subprocess.run([sys.executable, "-c", SAVING, "once"], capture_output=True, text=True, timeout=SAFETY_TIMEOUT)
    assert once.stdout.splitlines() == ["the save went on", "interrupted after the save 143"]
    twice = subprocess.run([sys.executable, "-c", SAVING, "twice"], capture_output=True, text=True,
                           timeout=SAFETY_TIMEOUT)
    assert twice.returncode == 130
    assert twice.stdout.splitlines() == ["the save went on"]
    assert twice.stderr.splitlines() == ["headstart: SIGINT again: stopped at once; the last complete checkpoint is kept"]


def test_the_resume_command_replaces_overwrite_and_names_the_run():
    from pathlib import Path

    from headstart.recipes.faults import resume_command

    assert resume_command(["pretrain", "--overwrite", "--epochs", "3"], Path("runs/pretrain/20250101-000000")) == (
        "headstart pretrain --epochs 3 --name 20250101-000000 --resume")
    assert resume_command(["finetune", "--name=a b", "--resume"], Path("runs/finetune/a b")) == (
        "headstart finetune '--name=a b' --resume")
