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
    return [sys.executable, "-m", "recipes", "tune", *BUDGET, *SEARCHES[tuner][0], "--name", NAME,
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


def wait_until_serving(chief, port, processes):
    """Until the chief's oracle accepts connections; fails at once with its output if the chief exits."""
    deadline = time.monotonic() + SAFETY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if chief.popen.poll() is not None:
            pytest.fail("the chief exited before serving the oracle\n" + "\n".join(p.report() for p in processes))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the chief did not serve within {SAFETY_TIMEOUT_SECONDS} s\n" + chief.report())


def run_chief_and_workers(command, folder):
    """Runs the chief, then (once it serves) both workers; returns {tuner_id: (exit code, stdout)}.

    Starting the workers together once the oracle is up lets both ask for the first trials at
    about the same time, whatever order their start-up finishes in. Any process still running
    after the safety timeout fails the test with every output; all are killed in any case.
    """
    port = free_port()
    processes = []
    try:
        chief = Process("chief", command, port, folder)
        processes.append(chief)
        wait_until_serving(chief, port, processes)
        processes += [Process(tuner_id, command, port, folder) for tuner_id in WORKERS]
        for process in processes[1:] + [chief]:
            try:
                process.popen.wait(timeout=SAFETY_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{process.tuner_id} still running after {SAFETY_TIMEOUT_SECONDS} s\n"
                            + "\n".join(p.report() for p in processes))
        failed = [process for process in processes if process.popen.returncode != 0]
        assert not failed, "\n".join(process.report() for process in failed)
        return {process.tuner_id: process.output(process.stdout) for process in processes}
    finally:
        for process in processes:
            process.stop()


def trials_printed(stdout):
    """The ids of the trials a process ran: it prints `trial ID: ...` as each one ends."""
    return [line.split(":")[0].split()[1] for line in stdout.splitlines() if line.startswith("trial ")]


@pytest.mark.parametrize("tuner", sorted(SEARCHES))
def test_chief_and_two_workers_share_a_search_each_trial_once(tmp_path, tuner):
    trials = SEARCHES[tuner][1]
    runs_dir = tmp_path / "runs"
    stdout = run_chief_and_workers(tune_command(tuner, runs_dir), tmp_path)

    ran = {tuner_id: trials_printed(stdout[tuner_id]) for tuner_id in WORKERS}
    assert trials_printed(stdout["chief"]) == []                              # the chief serves, never trains
    assert all(ran[tuner_id] for tuner_id in WORKERS), ran                    # the work was shared
    everything = ran["tuner0"] + ran["tuner1"]
    assert len(everything) == len(set(everything)) == trials, ran             # each trial once, all of them
    for tuner_id in WORKERS:
        assert f"worker {tuner_id} done" in stdout[tuner_id]

    run = runs_dir / "tune" / NAME
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
