"""Distributed search on keras-tuner's own chief/worker mode: one chief and two workers on 127.0.0.1.

Each process is told its role by keras-tuner's environment variables (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT). The chief serves the oracle over gRPC; the
workers ask it for trials until it answers that the search is over. What a user relies on:
every trial runs once, on one of the workers, the work is shared, and every process exits.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

# A safety net against a hung process (keras-tuner's workers wait up to an hour for a chief
# that never answers), not a speed requirement: running out of it fails the test with
# every process's stderr.
SAFETY_TIMEOUT_SECONDS = 600
WORKERS = ("tuner0", "tuner1")

pytestmark = pytest.mark.slow

# A search small enough to run in seconds: a grid of 2 x 3 = 6 points of which 4 are tried.
# Each worker records which trials it ran, since keras-tuner's trial records do not say.
MINIMAL_SEARCH = textwrap.dedent("""
    import os
    import sys

    import keras
    import keras_tuner
    import numpy as np

    directory, max_trials = sys.argv[1], int(sys.argv[2])

    def build(hp):
        model = keras.Sequential([
            keras.Input((8,)),
            keras.layers.Dense(hp.Choice("units", [4, 8, 16]), activation="relu"),
            keras.layers.Dense(1),
        ])
        model.compile(keras.optimizers.SGD(hp.Choice("learning_rate", [1e-2, 1e-3])), "mse")
        return model

    class RecordingGridSearch(keras_tuner.GridSearch):
        def run_trial(self, trial, *args, **kwargs):
            record = os.path.join(directory, "ran", f"{trial.trial_id}.{self.tuner_id}")
            with open(record, "w") as file:
                file.write(repr(sorted(trial.hyperparameters.values.items())))
            return super().run_trial(trial, *args, **kwargs)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 8)), rng.normal(size=(256, 1))
    tuner = RecordingGridSearch(build, objective="val_loss", max_trials=max_trials,
                                directory=directory, project_name="search", seed=0)
    tuner.search(x, y, validation_split=0.25, epochs=5, verbose=0)
""")


def free_port():
    """A port nothing listens on now; the OS picks it, so parallel test runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def role_environment(tuner_id, port):
    return {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            # Two workers and a chief share the CI machine's two cores.
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def run_chief_and_workers(command, tmp_path):
    """Starts the chief and the workers with `command`, waits for all of them, returns {tuner_id: (code, stderr)}.

    Any process still running after the safety timeout fails the test with every stderr;
    all of them are killed in any case, so a failure leaves nothing behind.
    """
    port = free_port()
    processes = {}
    try:
        for tuner_id in ("chief",) + WORKERS:
            log = open(tmp_path / f"{tuner_id}.stderr", "w+")
            processes[tuner_id] = (subprocess.Popen(command, env=role_environment(tuner_id, port), cwd=tmp_path,
                                                    stdout=subprocess.DEVNULL, stderr=log,
                                                    start_new_session=True), log)
        outcome = {}
        for tuner_id, (process, log) in processes.items():
            try:
                process.wait(timeout=SAFETY_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{tuner_id} still running after {SAFETY_TIMEOUT_SECONDS} s\n" + all_stderr(processes))
            outcome[tuner_id] = (process.returncode, read_log(log))
        return outcome
    finally:
        for process, log in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()


def read_log(log):
    log.flush()
    log.seek(0)
    return log.read()


def all_stderr(processes):
    return "\n".join(f"--- {tuner_id} stderr ---\n{read_log(log)[-3000:]}" for tuner_id, (_, log) in processes.items())


def assert_all_exited_cleanly(outcome):
    failed = {tuner_id: stderr for tuner_id, (code, stderr) in outcome.items() if code != 0}
    assert not failed, "\n".join(f"--- {tuner_id} exited non-zero ---\n{stderr[-3000:]}"
                                 for tuner_id, stderr in failed.items())


def test_keras_tuner_chief_shares_a_grid_search_between_two_workers(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(MINIMAL_SEARCH)
    (tmp_path / "ran").mkdir()
    max_trials = 4

    outcome = run_chief_and_workers([sys.executable, str(script), str(tmp_path), str(max_trials)], tmp_path)
    assert_all_exited_cleanly(outcome)

    records = sorted(path.name.split(".") for path in (tmp_path / "ran").iterdir())
    trial_ids = [trial_id for trial_id, _ in records]
    assert len(trial_ids) == max_trials and len(set(trial_ids)) == max_trials      # each trial ran once
    assert {tuner_id for _, tuner_id in records} == set(WORKERS)                    # both workers, never the chief
    values = [(tmp_path / "ran" / f"{trial_id}.{tuner_id}").read_text() for trial_id, tuner_id in records]
    assert len(set(values)) == max_trials                                          # no grid point twice

    # The chief's oracle holds the same trials, all completed with a score.
    oracle_trials = [json.loads((tmp_path / "search" / f"trial_{trial_id}" / "trial.json").read_text())
                     for trial_id in trial_ids]
    assert [trial["status"] for trial in oracle_trials] == ["COMPLETED"] * max_trials
    assert all(trial["score"] is not None for trial in oracle_trials)
    assert sorted((tmp_path / "search").glob("trial_*")) == [tmp_path / "search" / f"trial_{trial_id}"
                                                             for trial_id in trial_ids]
