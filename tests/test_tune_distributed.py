"""Distributed `headstart tune` on keras-tuner's own chief/worker mode: one chief and two workers on 127.0.0.1.

Every process runs the same command with the same --name; keras-tuner's environment
variables (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT) tell it its
role. The chief serves the oracle over gRPC and writes the results; the workers ask it for
trials until it answers that the search is over. What a user relies on: every trial runs
once, on one of the workers, the work is shared, only the chief writes the results, and
every process exits.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

# A safety net against a hung process (keras-tuner's workers wait up to an hour for a chief
# that never answers), not a speed requirement: running out of it fails the test with
# every process's output.
SAFETY_TIMEOUT_SECONDS = 600
WORKERS = ("tuner0", "tuner1")
NAME = "shared"
GRID = ("1e-3", "3e-3", "1e-2", "3e-2", "1e-1", "3e-1")
BUDGET = ["--weights", "none", "--image-size", "8", "--epochs", "1", "--patience", "10"]
SEARCHES = {
    # A grid over the head's learning rate only (every other dimension fixed), 1 + 1 epochs a
    # trial; 4 trials of the grid's 6 points: the oracle, not the grid, ends the search.
    "grid": (["--tuner", "grid", "--lr", "|".join(GRID), "--dropout", "0.1", "--weight-decay", "1e-4",
              "--finetune-lr", "1e-3", "--finetune-epochs", "1", "--max-trials", "4"], 4),
    # keras-tuner's default schedule at 1 + 2 epochs, factor 3: a bracket of three 1-epoch
    # trials whose best is continued to epoch 3, and a bracket of two 3-epoch trials. The
    # continued trial starts from a checkpoint that may have been written by the other worker.
    "hyperband": (["--tuner", "hyperband", "--finetune-epochs", "2"], 6),
}

pytestmark = pytest.mark.slow


def tune_command(tuner, runs_dir):
    return [sys.executable, "-m", "headstart", "tune", *BUDGET, *SEARCHES[tuner][0], "--name", NAME,
            "--runs-dir", str(runs_dir)]


def free_port():
    """A port nothing listens on now; the OS picks it, so parallel test runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def role_environment(tuner_id, port):
    return {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            # Three processes share the CI machine's two cores.
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


class Process:
    """One role's process, its output in files (a pipe nobody reads could fill up and block it)."""

    def __init__(self, tuner_id, command, port, folder):
        self.tuner_id = tuner_id
        self.stdout = open(folder / f"{tuner_id}.stdout", "w+")
        self.stderr = open(folder / f"{tuner_id}.stderr", "w+")
        self.popen = subprocess.Popen(command, env=role_environment(tuner_id, port), cwd=folder,
                                      stdout=self.stdout, stderr=self.stderr, start_new_session=True)

    def output(self, stream):
        stream.flush()
        stream.seek(0)
        return stream.read()

    def report(self):
        return (f"--- {self.tuner_id} (exit {self.popen.poll()}) stdout ---\n{self.output(self.stdout)[-2000:]}\n"
                f"--- {self.tuner_id} stderr ---\n{self.output(self.stderr)[-3000:]}")

    def stop(self):
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self.stdout.close()
        self.stderr.close()


def serving(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, what, processes, exit_allowed=False):
    """Polls `condition` until it holds, failing with every output as soon as a process exits
    (with a non-zero code, when `exit_allowed`): a chief that stopped leaves its workers waiting."""
    deadline = time.monotonic() + SAFETY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        exited = [(process.tuner_id, process.popen.poll()) for process in processes
                  if process.popen.poll() is not None and not (exit_allowed and process.popen.poll() == 0)]
        if exited:
            pytest.fail(f"{exited} exited before {what}\n" + "\n".join(p.report() for p in processes))
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"not {what} after {SAFETY_TIMEOUT_SECONDS} s\n" + "\n".join(p.report() for p in processes))


def run_chief_and_workers(command, folder, run_dir, chief_first):
    """Runs the chief and both workers; returns {tuner_id: stdout} once all have exited with 0.

    `chief_first`: the workers start once the chief's oracle serves (the README's order).
    Otherwise the chief starts once a worker has made the run folder, the case a chief must
    not refuse as an earlier run. Either way both workers start together and ask for the
    first trials at about the same time. Any process still running after the safety timeout
    fails the test with every output; all are killed in any case.
    """
    port = free_port()
    processes = []

    def start(tuner_ids):
        processes.extend(Process(tuner_id, command, port, folder) for tuner_id in tuner_ids)

    try:
        if chief_first:
            start(["chief"])
            wait_until(lambda: serving(port), "the chief served the oracle", processes)
            start(WORKERS)
        else:
            start(WORKERS)
            wait_until(run_dir.is_dir, "a worker made the run folder", processes)
            start(["chief"])
        wait_until(lambda: all(process.popen.poll() == 0 for process in processes), "every process exited",
                   processes, exit_allowed=True)
        return {process.tuner_id: process.output(process.stdout) for process in processes}
    finally:
        for process in processes:
            process.stop()


def trials_printed(stdout):
    """The ids of the trials a process ran: it prints `trial ID: ...` as each one ends."""
    return [line.split(":")[0].split()[1] for line in stdout.splitlines() if line.startswith("trial ")]


# Each search with one start order, to keep the CI time to two searches.
@pytest.mark.parametrize("tuner, chief_first", [("grid", True), ("hyperband", False)])
def test_chief_and_two_workers_share_a_search_each_trial_once(tmp_path, tuner, chief_first):
    trials = SEARCHES[tuner][1]
    runs_dir = tmp_path / "runs"
    run = runs_dir / "tune" / NAME
    stdout = run_chief_and_workers(tune_command(tuner, runs_dir), tmp_path, run, chief_first)

    ran = {tuner_id: trials_printed(stdout[tuner_id]) for tuner_id in WORKERS}
    assert trials_printed(stdout["chief"]) == []                              # the chief serves, never trains
    assert all(ran[tuner_id] for tuner_id in WORKERS), ran                    # the work was shared
    everything = ran["tuner0"] + ran["tuner1"]
    assert len(everything) == len(set(everything)) == trials, ran             # each trial once, all of them
    for tuner_id in WORKERS:
        assert f"worker {tuner_id} done" in stdout[tuner_id]

    with open(run / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["trial_id"] for row in rows) == sorted(everything)
    assert [row["status"] for row in rows] == ["COMPLETED"] * trials
    # The results name the worker that printed each trial.
    assert {row["trial_id"]: row["tuner_id"] for row in rows} == {
        trial_id: tuner_id for tuner_id in WORKERS for trial_id in ran[tuner_id]}
    if tuner == "grid":
        # A grid point is never tried twice, and every point tried is on the grid.
        learning_rates = [float(row["lr"]) for row in rows]
        assert len(set(learning_rates)) == trials and set(learning_rates) <= {float(lr) for lr in GRID}
        assert all(int(row["epochs"]) == 2 for row in rows)
    else:
        # New values for every fresh trial; a continued one has its parent's values and ran
        # only the epochs Hyperband asked for on top of the parent's.
        searched = ("lr", "finetune_lr", "weight_decay", "dropout")
        fresh = [row for row in rows if not row["tuner/trial_id"]]
        assert len({tuple(row[name] for name in searched) for row in fresh}) == len(fresh) == trials - 1
        [continued] = [row for row in rows if row["tuner/trial_id"]]
        parent = next(row for row in rows if row["trial_id"] == continued["tuner/trial_id"])
        assert [continued[name] for name in searched] == [parent[name] for name in searched]
        assert int(continued["epochs"]) == int(continued["tuner/epochs"]) - int(continued["tuner/initial_epoch"])

    # The chief alone wrote the results, once every trial had ended.
    assert json.loads((run / "config.json").read_text())["role"] == "chief"
    assert f"{trials} trials completed, 0 failed" in stdout["chief"]
    best = json.loads((run / "best_hyperparameters.json").read_text())
    best_row = next(row for row in rows if row["trial_id"] == best["trial_id"])
    assert best["objective"]["value"] == pytest.approx(max(float(row["val_accuracy"]) for row in rows))
    assert best["objective"]["value"] == pytest.approx(float(best_row["val_accuracy"]))
    assert (run / "best.keras").stat().st_size > 0 and (run / "summary.md").exists()
