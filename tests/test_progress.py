"""Progress by default: one line per epoch (ProgressLogger, added by the engine), --quiet and
--verbose, and TensorFlow's start-up messages kept off stderr."""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import keras

from headstart.callbacks import ProgressLogger
from headstart.recipes import cli, engine
from test_engine import _model, _splits

SAFETY_TIMEOUT = 900   # a hang guard only; these runs take seconds
# The start-up lines of TensorFlow 2.21 on a machine without a GPU (see recipes/cli.py).
NOISE = ("cuInit", "cuda_platform.cc", "cpu_feature_guard", "absl::InitializeLog", "cudart_stub")
# `finetune  epoch 3/20  loss 0.412  val_loss 0.530  val_accuracy 0.842  0.4 s  ~7 s left`
EPOCH_LINE = re.compile(r"^(?P<phase>\w+)  epoch (?P<k>\d+)/(?P<n>\d+)  loss \d+\.\d+  val_loss \d+\.\d+  "
                        r"val_accuracy \d\.\d{3}  \d+(\.\d)? s  (?P<left>~\d+ s left|~\d+ min \d\d s left|<1 s left|done)$")


class Clock:
    """A clock the test sets."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _tiny_fit(logger, *, initial_epoch=0, epochs=2):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=8, validation_data=(x, y), initial_epoch=initial_epoch, epochs=epochs, verbose=0,
              callbacks=[logger])
    return model


def test_epochs_are_numbered_within_the_phase_across_fit_calls_and_on_resume():
    # Phase 2 of a run whose phase 1 had 3 epochs: fit's epochs 3..5 are the phase's 1/3..3/3.
    phase = ProgressLogger("finetune", epochs=3, first_epoch=3, stream=io.StringIO())
    _tiny_fit(phase, initial_epoch=3, epochs=6)
    assert [line.split("  loss")[0] for line in phase.lines] == [
        "finetune  epoch 1/3", "finetune  epoch 2/3", "finetune  epoch 3/3"]
    assert all(EPOCH_LINE.match(line) for line in phase.lines), phase.lines
    assert phase.lines[-1].endswith("  done")
    # The same phase resumed after its first epoch: it goes on at 2/3.
    resumed = ProgressLogger("finetune", epochs=3, first_epoch=3, stream=io.StringIO())
    _tiny_fit(resumed, initial_epoch=4, epochs=6)
    assert [line.split("  loss")[0] for line in resumed.lines] == ["finetune  epoch 2/3", "finetune  epoch 3/3"]
    # Without a phase: fit's own epochs.
    plain = ProgressLogger(stream=io.StringIO())
    _tiny_fit(plain, epochs=2)
    assert [line.split("  loss")[0] for line in plain.lines] == ["train  epoch 1/2", "train  epoch 2/2"]
    assert plain.stream.getvalue() == "".join(line + "\n" for line in plain.lines)


def test_time_left_is_the_mean_epoch_after_the_first_times_the_epochs_left():
    clock, out = Clock(), io.StringIO()
    logger = ProgressLogger("head", epochs=5, stream=out, clock=clock)
    logger.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    logger.set_params({"epochs": 5, "steps": 4})
    logger.on_train_begin()
    logs = {"loss": 0.5, "accuracy": 0.7, "val_loss": 0.6, "val_accuracy": 0.65}
    for epoch, seconds in enumerate((30.0, 2.0, 4.0)):   # the first epoch traces the step: left out once others exist
        logger.on_epoch_begin(epoch)
        clock.now += seconds
        logger.on_epoch_end(epoch, logs)
    assert logger.lines == [
        "head  epoch 1/5  loss 0.500  val_loss 0.600  val_accuracy 0.650  30 s  ~2 min 00 s left",   # 30 x 4
        "head  epoch 2/5  loss 0.500  val_loss 0.600  val_accuracy 0.650  2.0 s  ~6 s left",         # 2 x 3
        "head  epoch 3/5  loss 0.500  val_loss 0.600  val_accuracy 0.650  4.0 s  ~6 s left",         # 3 x 2
    ]
    logger.model.stop_training = True   # early stopping ended the phase after its third epoch
    logger.on_train_end()
    assert out.getvalue().splitlines()[-1] == "head  stopped early at epoch 3/5"


def test_live_line_on_a_terminal_only_and_throttled():
    terminal = Terminal()
    live = ProgressLogger("head", stream=terminal, refresh=0.0)   # redraw at every step
    _tiny_fit(live, epochs=2)
    screen = terminal.getvalue()
    assert "\rhead  epoch 1/2  step 1/4  loss " in screen and "\rhead  epoch 2/2  step 4/4  loss " in screen
    # Each epoch's line replaces its live line, then a newline: what stays is the epoch lines.
    assert [part.rsplit("\r", 1)[-1].rstrip() for part in screen.split("\n")[:-1]] == live.lines

    frozen = Terminal()
    throttled = ProgressLogger("head", stream=frozen, clock=Clock(), refresh=0.2)   # time stands still
    _tiny_fit(throttled, epochs=1)
    assert "step" not in frozen.getvalue()

    log_file = io.StringIO()   # not a terminal: lines only
    _tiny_fit(ProgressLogger("head", stream=log_file, refresh=0.0), epochs=2)
    assert "\r" not in log_file.getvalue() and "step" not in log_file.getvalue()
    assert len(log_file.getvalue().splitlines()) == 2


def test_engine_prints_a_line_per_epoch_of_each_phase_keras_replaces_them_quiet_prints_nothing(capsys):
    engine.fine_tune(lambda: _model(), _splits(), head_epochs=2, finetune_epochs=2, learning_rate=1e-2,
                     finetune_learning_rate=1e-3, options=engine.TrainingOptions(patience=10))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("head  computing the frozen backbone's features once")
    assert [line.split("  loss")[0] for line in lines[1:]] == [
        "head  epoch 1/2", "head  epoch 2/2", "finetune  epoch 1/2", "finetune  epoch 2/2"]

    engine.fine_tune(lambda: _model(), _splits(), head_epochs=1, finetune_epochs=0, learning_rate=1e-2,
                     finetune_learning_rate=1e-3, options=engine.TrainingOptions(patience=10, progress="keras"))
    out = capsys.readouterr().out
    assert "step - accuracy: " in out and "head  epoch" not in out   # Keras' bar, not our line

    engine.fine_tune(lambda: _model(), _splits(), head_epochs=1, finetune_epochs=1, learning_rate=1e-2,
                     finetune_learning_rate=1e-3, options=engine.TrainingOptions(patience=10, progress="quiet"))
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="progress must be one of"):
        engine.run_phases(_model, _splits(), [], engine.TrainingOptions(progress="bars"))


def test_start_up_noise_filter_keeps_warnings_errors_and_python_output():
    assert cli.is_start_up_noise("WARNING: All log messages before absl::InitializeLog() is called are written "
                                 "to STDERR\n")
    assert cli.is_start_up_noise("I0000 00:00:1796160593.135284    4416 cudart_stub.cc:31] Could not find cuda\n")
    assert not cli.is_start_up_noise("I0000 00:00:1796160593.135284    4416 cudart_stub.cc:31] x\n", info=False)
    assert not cli.is_start_up_noise("W0000 00:00:1796160593.135284    4416 some_op.cc:12] a real warning\n")
    assert not cli.is_start_up_noise("E0000 00:00:1796160593.135284    4416 some_op.cc:12] a real error\n")
    assert not cli.is_start_up_noise("/path/x.py:3: UserWarning: Image foo.png could not be decoded\n")


def _headstart(*arguments, runs_dir):
    # Without TF_CPP_MIN_LOG_LEVEL (conftest sets one): the defaults a user gets.
    environ = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "headstart", *arguments, "--runs-dir", str(runs_dir)],
                          capture_output=True, text=True, timeout=SAFETY_TIMEOUT, env=environ)


def test_finetune_prints_its_epochs_in_order_and_no_tensorflow_start_up_messages(tmp_path):
    done = _headstart("finetune", "--weights", "none", "--image-size", "8", "--epochs", "2", "--finetune-epochs", "3",
                      "--patience", "20", "--labels-per-class", "10", "--no-compare-scratch", "--name", "lines",
                      runs_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\r" not in done.stdout   # a pipe, not a terminal: no live line
    epochs = [EPOCH_LINE.match(line) for line in done.stdout.splitlines() if "  epoch " in line]
    assert all(epochs), done.stdout
    assert [(match["phase"], int(match["k"]), int(match["n"])) for match in epochs] == [
        ("head", 1, 2), ("head", 2, 2), ("finetune", 1, 3), ("finetune", 2, 3), ("finetune", 3, 3)]
    assert [match["left"] == "done" for match in epochs] == [False, True, False, False, True]
    assert "| transfer (resnet8, weights none, two-phase) |" in done.stdout
    assert not [line for line in done.stderr.splitlines() if any(noise in line for noise in NOISE)], done.stderr


def test_quiet_prints_only_the_result_and_quiet_with_verbose_is_a_usage_error(tmp_path):
    done = _headstart("pretrain", "--image-size", "8", "--epochs", "2", "--batch-size", "64", "--quiet",
                      "--name", "quiet", runs_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.splitlines()) == 1 and done.stdout.startswith("pretrained resnet8 on digits"), done.stdout
    assert not [line for line in done.stderr.splitlines() if any(noise in line for noise in NOISE)], done.stderr

    refused = _headstart("finetune", "--quiet", "--verbose", runs_dir=tmp_path)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "--verbose: not allowed with argument --quiet" in refused.stderr


def test_lr_find_prints_a_line_every_tenth_of_the_scan_with_the_time_left(capsys):
    from headstart.recipes import lr_find

    clock = Clock()

    def train_step(rate):
        clock.now += 5.0 if clock.now == 0 else 1.0   # the first step traces: 5 s, then 1 s a step
        return 2.0

    step = lr_find.with_progress_lines(train_step, 10, lines=5, clock=clock)
    for rate in lr_find.learning_rates(1e-3, 1.0, 10):
        step(rate)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  lr ")[0] for line in lines] == [f"lr-find  step {k}/10" for k in (2, 4, 6, 8, 10)]
    assert lines[0].endswith("loss 2.000  6.0 s  ~8 s left")   # 1 s a step after the first, 8 steps left
    assert lines[-1].endswith("14.0 s  done")


def test_resume_may_change_quiet_and_verbose_but_not_what_is_trained(tmp_path):
    from headstart.recipes import resume
    from headstart.recipes.cli import options_for
    from headstart.recipes.errors import UsageError
    from headstart.recipes.rundir import run_config

    run = tmp_path / "pretrain" / "killed"
    run.mkdir(parents=True)
    started = options_for("pretrain", name="killed", runs_dir=str(tmp_path), verbose=True)
    (run / "config.json").write_text(json.dumps(resume._plain(run_config(started, recipe="pretrain"))))
    resumed = options_for("pretrain", name="killed", runs_dir=str(tmp_path), resume=True, quiet=True)
    resume.check(resumed, "pretrain", run)   # started with --verbose, resumed with --quiet: fine
    with pytest.raises(UsageError, match="epochs"):
        resume.check(options_for("pretrain", name="killed", runs_dir=str(tmp_path), resume=True, epochs=3),
                     "pretrain", run)
