"""HistoryWriter: the epoch history on disk, rewritten atomically after every epoch."""

import csv
import io
import json
import math
import os

import keras

from headstart.callbacks.atomic import atomic_write_text

FORMATS = (".csv", ".json")


class HistoryWriter(keras.callbacks.Callback):
    """Write the epoch logs to a CSV or JSON file after every epoch, atomically.

    One row per epoch: `epoch` (counted from 0, as in `history.epoch`) followed by every key
    of the epoch logs (loss, metrics, validation metrics). The whole file is rewritten each
    epoch through `headstart.callbacks.atomic.atomic_write_text`, so an interrupted run leaves the
    last complete history, never a half-written file. Keys that appear in later rows only
    (a second `fit` phase with more metrics) are added as columns; missing cells are empty
    in CSV and `null` in JSON.

    Resuming and phases: rows already in the file for epochs before the first epoch of this
    `fit` (its `initial_epoch`) are kept and the new epochs follow them; rows from that
    epoch on are replaced. A `fit` starting from epoch 0 therefore starts a fresh file.

    The format follows the suffix: `.csv`, or `.json` (a list of row objects; JSON has no
    NaN, so non-finite values are written as `null`).

    Args:
        path: The file to write; its directory is created if missing.

    Example:

    >>> model.fit(x, y, epochs=5, callbacks=[HistoryWriter("runs/cifar/history.csv")])
    >>> model.fit(x, y, initial_epoch=5, epochs=10, callbacks=[HistoryWriter("runs/cifar/history.csv")])
    """

    def __init__(self, path):
        super().__init__()
        suffix = os.path.splitext(os.fspath(path))[1].lower()
        if suffix not in FORMATS:
            raise ValueError(f"`path` must end in {' or '.join(FORMATS)}. Received: path={path!r}")
        self.path = path
        self.rows = []

    def on_train_begin(self, logs=None):
        # Allow instances to be re-used across `model.fit()` calls.
        self.rows = []
        self._earlier_rows = read_history(self.path) if os.path.isfile(self.path) else []

    def on_epoch_begin(self, epoch, logs=None):
        if self._earlier_rows is not None:
            # The first epoch of this fit is its initial_epoch: keep what came before it.
            self.rows = [row for row in self._earlier_rows if row["epoch"] < epoch]
            self._earlier_rows = None

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        write_history(self.path, self.rows)


def write_history(path, rows):
    """Write `rows` (dicts with `epoch` first) as `HistoryWriter` does: atomically, CSV or JSON by suffix."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    atomic_write_text(path, _format(rows, os.fspath(path).lower().endswith(".json")))


def read_history(path):
    """The rows of a history file written by `HistoryWriter`, as dicts (epoch an int).

    Empty CSV cells and JSON nulls come back as `None`.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        if os.fspath(path).lower().endswith(".json"):
            rows = json.load(handle)
        else:
            rows = [{key: None if value == "" else float(value) for key, value in row.items()}
                    for row in csv.DictReader(handle)]
    return [{**row, "epoch": int(row["epoch"])} for row in rows]


def _format(rows, as_json):
    if as_json:
        finite_rows = [{key: value if value is None or math.isfinite(value) else None for key, value in row.items()}
                       for row in rows]
        return json.dumps(finite_rows, indent=1, allow_nan=False) + "\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return text.getvalue()
