import csv
import json
import math
import os
import stat

import keras
import numpy as np
import pytest

from headstart.callbacks import HistoryWriter, read_history
from headstart.callbacks.atomic import atomic_write_bytes, atomic_write_text


def _compiled_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse", metrics=["mae"])
    return model


def _data():
    return np.random.rand(32, 4).astype("float32"), np.random.rand(32, 1).astype("float32")


class _FileSnapshots(keras.callbacks.Callback):
    """Reads the history file after each epoch, as an observer of the run would."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(read_history(self.path))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_writes_the_full_history_after_every_epoch(tmp_path, suffix):
    path = tmp_path / "run" / f"history{suffix}"
    x, y = _data()
    model = _compiled_model()
    snapshots = _FileSnapshots(path)
    history = model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[HistoryWriter(path), snapshots])
    assert [len(rows) for rows in snapshots.snapshots] == [1, 2, 3]
    rows = read_history(path)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert set(rows[0]) == {"epoch", "loss", "mae", "val_loss", "val_mae"}
    for key in ("loss", "val_mae"):
        np.testing.assert_allclose([row[key] for row in rows], history.history[key], rtol=1e-6)
    assert [name for name in os.listdir(path.parent)] == [path.name]  # no temporary files left


def test_csv_is_plain_csv(tmp_path):
    path = tmp_path / "history.csv"
    x, y = _data()
    _compiled_model().fit(x, y, epochs=2, verbose=0, callbacks=[HistoryWriter(path)])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "loss", "mae"]
    assert [row["epoch"] for row in rows] == ["0", "1"]


def test_resuming_keeps_the_epochs_before_initial_epoch(tmp_path):
    path = tmp_path / "history.csv"
    x, y = _data()
    model = _compiled_model()
    model.fit(x, y, epochs=4, verbose=0, callbacks=[HistoryWriter(path)])
    first_run = read_history(path)
    # Resume from epoch 2 (say, the last checkpoint): epochs 2 and 3 are redone.
    model.fit(x, y, initial_epoch=2, epochs=5, verbose=0, callbacks=[HistoryWriter(path)])
    rows = read_history(path)
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3, 4]
    assert rows[:2] == first_run[:2]
    assert rows[2] != first_run[2]


def test_a_fit_from_epoch_zero_starts_a_fresh_file(tmp_path):
    path = tmp_path / "history.json"
    x, y = _data()
    model = _compiled_model()
    writer = HistoryWriter(path)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[writer])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[writer])
    assert [row["epoch"] for row in read_history(path)] == [0]


def test_a_second_phase_may_add_columns(tmp_path):
    path = tmp_path / "history.csv"
    x, y = _data()
    model = _compiled_model()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[HistoryWriter(path)])
    model.compile(keras.optimizers.SGD(0.01), "mse", metrics=["mae", "mse"])
    model.fit(x, y, initial_epoch=2, epochs=3, verbose=0, callbacks=[HistoryWriter(path)])
    rows = read_history(path)
    assert rows[0]["mse"] is None and rows[2]["mse"] is not None


def test_json_writes_non_finite_values_as_null(tmp_path):
    path = tmp_path / "history.json"
    writer = HistoryWriter(path)
    writer.on_train_begin()
    writer.on_epoch_begin(0)
    writer.on_epoch_end(0, {"loss": math.nan, "val_loss": 1.5})
    with open(path) as handle:
        assert json.load(handle) == [{"epoch": 0, "loss": None, "val_loss": 1.5}]


def test_rejects_an_unknown_format():
    with pytest.raises(ValueError, match=r"Received: path='history.txt'"):
        HistoryWriter("history.txt")


def test_atomic_write_replaces_the_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new ü")
    assert path.read_text(encoding="utf-8") == "new ü"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "history.csv"
    atomic_write_bytes(path, b"epoch,loss\n0,1.0\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"epoch,loss\n0,1.0\n"
    assert os.listdir(tmp_path) == ["history.csv"]
