"""EpochTimer: wall-clock seconds of every epoch, for benchmarks and phase reports."""

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Record the wall-clock seconds of each epoch in `seconds` (validation included).

    Example:

    >>> timer = EpochTimer()
    >>> model.fit(x, y, epochs=3, callbacks=[timer])
    >>> timer.seconds
    [2.91, 1.02, 1.01]
    """

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_begin(self, logs=None):
        # Allow instances to be re-used across `fit()` calls: seconds are this fit's.
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)
