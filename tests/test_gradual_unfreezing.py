"""Gradual unfreezing: the right blocks train at the right epochs, also across an interrupt and resume."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from headstart.callbacks import GradualUnfreezing
from headstart.models.heads import assemble, build_head
from headstart.models.layer_rates import with_layer_rates

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = ["stem", "block1", "block2"]                               # bottom to top
TARGETS = {"stem": 0.125, "block1": 0.25, "block2": 0.5, "head": 1.0}   # layer decay 0.5


def tiny_classifier():
    """inputs -> backbone (stem, block1, block2) -> head, compiled with layer decay 0.5."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="image")
    x = layers.Dense(5, activation="tanh", name="stem_dense")(inputs)
    x = layers.Dense(5, activation="tanh", name="block1_dense")(x)
    x = layers.Dense(4, activation="tanh", name="block2_dense")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    model = assemble(backbone, build_head((4,), 3), "tiny")
    model.compile(optimizer=with_layer_rates(keras.optimizers.Adam(0.01), model, decay=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 3, size=32)


def expected_multipliers(epoch, start_epoch, epochs_per_block, initial_scale, growth):
    """The closed form: block k from the top joins at start + k * epochs_per_block, then ramps."""
    expected = {"head": 1.0}
    for position, block in enumerate(reversed(BLOCKS)):
        since = epoch - start_epoch - position * epochs_per_block
        scale = 0.0 if since < 0 else min(1.0, initial_scale * growth ** since)
        expected[block] = TARGETS[block] * scale
    return expected


def test_scales_are_a_pure_function_of_the_epoch():
    schedule = GradualUnfreezing(epochs_per_block=2, start_epoch=1, initial_scale=0.25, growth=2.0)
    assert schedule.scales(0, BLOCKS) == {"stem": 0.0, "block1": 0.0, "block2": 0.0}
    assert schedule.scales(1, BLOCKS) == {"stem": 0.0, "block1": 0.0, "block2": 0.25}
    assert schedule.scales(3, BLOCKS) == {"stem": 0.0, "block1": 0.25, "block2": 1.0}
    assert schedule.scales(6, BLOCKS) == {"stem": 0.5, "block1": 1.0, "block2": 1.0}
    assert schedule.scales(9, BLOCKS) == {"stem": 1.0, "block1": 1.0, "block2": 1.0}

    explicit = GradualUnfreezing(schedule=[0, 3], initial_scale=1.0)   # stem never joins
    assert explicit.scales(2, BLOCKS) == {"stem": 0.0, "block1": 0.0, "block2": 1.0}
    assert explicit.scales(50, BLOCKS) == {"stem": 0.0, "block1": 1.0, "block2": 1.0}
    with pytest.raises(ValueError, match="schedule has 4 steps but the backbone has 3 blocks"):
        GradualUnfreezing(schedule=[0, 1, 2, 3]).scales(0, BLOCKS)


@pytest.mark.parametrize("arguments, message", [
    ({"epochs_per_block": 0}, "epochs_per_block"),
    ({"schedule": [2, 1]}, "non-decreasing"),
    ({"initial_scale": 0.0}, "initial_scale"),
    ({"growth": 0.5}, "growth"),
])
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        GradualUnfreezing(**arguments)


class RecordEpochs(keras.callbacks.Callback):
    """The live multipliers and each group's weights as every epoch begins."""

    def on_train_begin(self, logs=None):
        self.multipliers, self.weights = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.multipliers.append(self.model.optimizer.current_multipliers())
        backbone = self.model.get_layer("backbone")
        self.weights.append({block: backbone.get_layer(f"{block}_dense").kernel.numpy().copy() for block in BLOCKS})


def test_fit_unfreezes_the_right_blocks_at_the_right_epochs_without_recompiling():
    model = tiny_classifier()
    x, y = data()
    record = RecordEpochs()
    unfreezing = GradualUnfreezing(epochs_per_block=2, start_epoch=1, initial_scale=0.5, growth=2.0)
    model.fit(x, y, batch_size=16, epochs=8, verbose=0, shuffle=False, callbacks=[unfreezing, record])
    assert unfreezing.unfrozen == BLOCKS
    for epoch, multipliers in enumerate(record.multipliers):
        assert multipliers == pytest.approx(expected_multipliers(epoch, 1, 2, 0.5, 2.0)), epoch
    for epoch in range(len(record.weights) - 1):          # a frozen block does not move during its epoch
        for block in BLOCKS:
            moved = not np.array_equal(record.weights[epoch][block], record.weights[epoch + 1][block])
            assert moved == (record.multipliers[epoch][block] > 0), (epoch, block)


def test_needs_a_layer_rate_optimizer():
    model = tiny_classifier()
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="with_layer_rates"):
        model.fit(*data(), epochs=1, verbose=0, callbacks=[GradualUnfreezing()])


# The training run that gets killed and resumed: the same model and data as above.
class _Record(keras.callbacks.Callback):
    def __init__(self, record_path):
        super().__init__()
        self.record_path = record_path

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        with open(self.record_path, "a") as file:
            file.write(json.dumps({"epoch": epoch, "multipliers": optimizer.current_multipliers(),
                                   "iterations": int(optimizer.iterations)}) + "\n")


class _Kill(keras.callbacks.Callback):
    def __init__(self, kill_after):
        super().__init__()
        self.kill_after = kill_after

    def on_epoch_end(self, epoch, logs=None):   # after BackupAndRestore saved this epoch
        if epoch == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def train(backup_dir, record_path, kill_after):
    """Six epochs with BackupAndRestore and GradualUnfreezing; SIGKILLs itself after epoch `kill_after`."""
    model = tiny_classifier()
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=6, verbose=0, shuffle=False, callbacks=[
        keras.callbacks.BackupAndRestore(backup_dir),
        GradualUnfreezing(epochs_per_block=1, start_epoch=1, initial_scale=0.5, growth=2.0),
        _Record(record_path), _Kill(kill_after)])
    with open(record_path, "a") as file:
        file.write(json.dumps({"done": True}) + "\n")


SCRIPT = """
import sys
sys.path.insert(0, "tests")
from test_gradual_unfreezing import train

train(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def run_script(script, backup_dir, record, kill_after):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(script), str(backup_dir), str(record), str(kill_after)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_interrupted_and_resumed_run_continues_with_the_right_blocks(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    backup_dir, record = tmp_path / "backup", tmp_path / "record.jsonl"

    killed = run_script(script, backup_dir, record, kill_after=2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    first = [json.loads(line) for line in record.read_text().splitlines()]
    assert [row["epoch"] for row in first] == [0, 1, 2]
    assert backup_dir.exists()

    # Resumed in this process: the kill needs a process of its own, the resume reads what it
    # continues from `backup_dir` (a fresh process would import TensorFlow, ~10 CPU seconds, first).
    train(backup_dir, record, kill_after=-1)
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    second = rows[len(first):]
    assert second[-1] == {"done": True}
    assert [row["epoch"] for row in second[:-1]] == [3, 4, 5]     # resumed after the last saved epoch
    assert second[0]["iterations"] == 3 * 2                        # optimizer state restored: 2 steps/epoch
    for row in first + second[:-1]:
        assert row["multipliers"] == pytest.approx(expected_multipliers(row["epoch"], 1, 1, 0.5, 2.0)), row
    assert second[0]["multipliers"]["stem"] == pytest.approx(0.125 * 0.5)   # stem joined at the resumed epoch
    assert not backup_dir.exists()                                 # training completed
