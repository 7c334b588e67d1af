"""Kill a training verb with SIGKILL after it completed an epoch, `--resume` it, and check that it
ends as the uninterrupted run does: every epoch once, and (with --deterministic) the same metrics
and weights bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keras

from headstart import models  # noqa: F401 (registers the initializers and regularizers best.keras refers to)
from headstart.recipes.checkpoint import TrainingCheckpoint
from headstart.callbacks.history_writer import read_history

SAFETY_TIMEOUT = 900   # a hang guard only; these runs take seconds to a minute

# verb -> (tiny options, checkpoint folder inside the run, metric keys compared, epochs in history.csv)
RUNS = {
    "pretrain": (["--image-size", "8", "--epochs", "8", "--patience", "20", "--batch-size", "64"],
                 "checkpoint", ("test_accuracy", "test_loss"), 8),
    "finetune": (["--weights", "none", "--image-size", "16", "--epochs", "3", "--finetune-epochs", "5",
                  "--patience", "20", "--labels-per-class", "40", "--no-compare-scratch"],
                 "checkpoint", ("test_accuracy", "test_loss"), 8),
    "semisupervised": (["--image-size", "8", "--autoencoder-epochs", "6", "--labels-per-class", "3",
                        "--epochs", "2", "--finetune-epochs", "2", "--patience", "20"],
                       "checkpoints/autoencoder", ("accuracy",), None),
}


def _command(verb, name, runs_dir, *extra):
    return [sys.executable, "-m", "headstart", verb, *RUNS[verb][0], "--deterministic", "--seed", "3",
            "--name", name, "--runs-dir", str(runs_dir), *extra]


def _env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(command):
    finished = subprocess.run(command, capture_output=True, text=True, timeout=SAFETY_TIMEOUT, env=_env())
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished


def _kill_after_first_epoch(command, checkpoint):
    """Start `command`, SIGKILL it as soon as its checkpoint holds a completed epoch; the saved epoch."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while not TrainingCheckpoint(checkpoint).exists():
            assert process.poll() is None, f"ended before its first checkpoint: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state, _ = TrainingCheckpoint(checkpoint).load()
    return state["epoch"]


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


# Runs every verb's command of RUNS, uninterrupted, one after the other in one process.
UNINTERRUPTED = """
import json, sys
from headstart.recipes.cli import main
for argv in map(json.loads, sys.argv[1:]):
    assert main(argv) == 0, argv
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The runs dir holding `VERB/whole`: each verb's run of RUNS, uninterrupted, with --deterministic.

    The killed-and-resumed runs are compared with these, and the determinism test's second run
    with the pretrain one. All in one fresh process, one verb after the other: a process costs
    ~10 CPU seconds of importing TensorFlow before it trains, and --deterministic runs are
    bit-identical whatever ran before them in the process (each seeds everything as it starts),
    so one process gives the same references as one each (checked when this was written).
    """
    runs_dir = tmp_path_factory.mktemp("uninterrupted")
    commands = [_command(verb, "whole", runs_dir)[3:] for verb in sorted(RUNS)]   # after `python -m headstart`
    _run([sys.executable, "-c", UNINTERRUPTED, *map(json.dumps, commands)])
    return runs_dir


@pytest.mark.parametrize("verb", sorted(RUNS))
def test_killed_run_resumes_and_ends_as_the_uninterrupted_one(tmp_path, uninterrupted, verb):
    _, checkpoint_folder, metric_keys, epochs = RUNS[verb]
    runs_dir = tmp_path / "runs"
    whole_run = uninterrupted / verb / "whole"

    killed = runs_dir / verb / "killed"
    saved_epoch = _kill_after_first_epoch(_command(verb, "killed", runs_dir), killed / checkpoint_folder)
    assert saved_epoch >= 1
    assert not (killed / "metrics.json").exists()
    for path in killed.rglob("*.json"):   # nothing half-written: every file there reads back whole
        json.loads(path.read_text())

    _run(_command(verb, "killed", runs_dir, "--resume"))

    whole, resumed = _metrics(whole_run), _metrics(killed)
    for key in metric_keys:
        assert resumed[key] == whole[key], key                     # bit-identical with --deterministic
    if epochs is not None:
        rows = read_history(killed / "history.csv")
        assert [row["epoch"] for row in rows] == list(range(epochs))
        assert rows == read_history(whole_run / "history.csv")
    for name in ("best.keras",) if verb != "semisupervised" else ("autoencoder.keras",):
        for resumed_weight, whole_weight in zip(keras.saving.load_model(killed / name).weights,
                                                keras.saving.load_model(whole_run / name).weights):
            np.testing.assert_array_equal(resumed_weight.numpy(), whole_weight.numpy())
    assert not (killed / checkpoint_folder).exists()   # removed once the run is complete


def test_resume_refuses_other_options_and_finished_runs(tmp_path):
    from headstart.recipes import pretrain, resume
    from headstart.recipes.cli import options_for
    from headstart.recipes.rundir import RunDir, release_locks

    runs_dir = tmp_path / "runs"
    started = options_for("pretrain", image_size=8, epochs=3, name="a", runs_dir=str(runs_dir))
    pretrain.validate(started)
    resume.start(RunDir.create("pretrain", "a", str(runs_dir)), started, "pretrain")   # as a killed run left it
    release_locks()   # its lock went with it
    run = runs_dir / "pretrain" / "a"
    command = [sys.executable, "-m", "headstart", "pretrain", "--image-size", "8", "--epochs", "4",
               "--name", "a", "--runs-dir", str(runs_dir), "--resume"]
    refused = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=SAFETY_TIMEOUT)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith("headstart: error: --resume:")
    assert "was started with epochs=3, not 4" in refused.stderr

    (run / "metrics.json").write_text("{}")
    refused = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=SAFETY_TIMEOUT)
    assert refused.returncode == 2 and "already finished" in refused.stderr
    assert sorted(path.name for path in run.iterdir()) == ["config.json", "metrics.json"]


def test_deterministic_runs_are_bit_identical(tmp_path, uninterrupted):
    # The first run is the uninterrupted pretrain reference (the same command, another --name),
    # the second one a fresh process of its own.
    runs_dir = tmp_path / "runs"
    _run(_command("pretrain", "two", runs_dir))
    one, two = uninterrupted / "pretrain" / "whole", runs_dir / "pretrain" / "two"
    assert _metrics(one)["test_loss"] == _metrics(two)["test_loss"]
    assert read_history(one / "history.csv") == read_history(two / "history.csv")
    for weight_one, weight_two in zip(keras.saving.load_model(one / "best.keras").weights,
                                      keras.saving.load_model(two / "best.keras").weights):
        np.testing.assert_array_equal(weight_one.numpy(), weight_two.numpy())


def test_a_diverging_run_stops_in_one_line_with_exit_1_and_keeps_its_best_weights(tmp_path, capfd):
    # In-process (no kill, nothing process-wide such as --deterministic): the CLI's own exit
    # status and everything written to file descriptors 1 and 2 (capfd), without the ~10 s a
    # fresh process spends importing TensorFlow.
    from headstart.recipes.cli import main

    runs_dir = tmp_path / "runs"
    status = main(["pretrain", "--image-size", "8", "--epochs", "3", "--lr", "1e9", "--name", "nan",
                   "--runs-dir", str(runs_dir)])
    stderr = capfd.readouterr().err
    assert status == 1
    assert "Traceback" not in stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("headstart: error: training diverged in phase train at epoch 1, step ")
    assert "try a lower learning rate than 1e+09" in last
    run = runs_dir / "pretrain" / "nan"
    model = keras.saving.load_model(run / "best.keras")
    assert all(np.isfinite(weight.numpy()).all() for weight in model.weights)
    assert not (run / "metrics.json").exists()   # not a finished run
