"""ProgressLogger: one line per epoch, with the phase, k/n, the losses, seconds and the time left.

    head  epoch 3/10  loss 1.214  val_loss 1.390  val_accuracy 0.560  0.4 s  ~3 s left

Keras' own progress bar (`verbose=1`) knows one `fit` call, not the phase it is part of, nor
the time the phase has left. This callback prints plain lines wherever the output goes
(a log file, CI); on a terminal it also keeps a live line within the epoch (step k/n and
the running loss, redrawn in place with `\\r`, at most a few times a second) that the
epoch's line then replaces.
"""

import math
import sys
import time

import keras


class ProgressLogger(keras.callbacks.Callback):
    """Print one line per epoch: phase, epoch k/n, loss, validation metrics, seconds, time left.

    Epochs are counted within the phase: a run of several `fit` calls numbers its epochs
    on through `initial_epoch`, so `first_epoch` (the run's epoch, from 0, at which this
    phase starts) and `epochs` (the phase's length) say which k/n an epoch is. A phase
    resumed part-way starts at a k above 1.

    The time left is the mean duration of this phase's epochs so far (as measured by this
    callback, validation included; the first one left out once there are others, since it
    includes tracing the training step) times the epochs left in the phase. It is an upper
    bound when early stopping may end the phase sooner; after the first epoch only, it is
    high.

    Args:
        phase: the name that starts every line. Defaults to `"train"`.
        epochs: epochs in the phase (the n of k/n). Defaults to `None`: the `epochs` given
            to `fit` minus `first_epoch`.
        first_epoch: the epoch (from 0) at which the phase starts. Defaults to `0`.
        stream: where to write. Defaults to `None`: `sys.stdout` at the time of writing.
        live: redraw a line within each epoch. Defaults to `None`: when `stream` is a
            terminal (`isatty()`); never in a file or a pipe.
        refresh: seconds between redraws of the live line. Defaults to `0.2`.
        clock: a function returning seconds (injected by tests). Defaults to
            `time.perf_counter`.

    Example:

    >>> model.fit(x, y, validation_split=0.2, epochs=3, verbose=0, callbacks=[ProgressLogger()])
    train  epoch 1/3  loss 2.113  val_loss 1.950  val_accuracy 0.310  1.9 s  ~4 s left
    train  epoch 2/3  loss 1.802  val_loss 1.700  val_accuracy 0.420  0.3 s  ~1 s left
    train  epoch 3/3  loss 1.560  val_loss 1.512  val_accuracy 0.510  0.3 s  done
    """

    # Only writes text (the live line, throttled): Keras may call it off the main thread,
    # and it waits for those calls before `on_epoch_end`.
    async_safe = True

    def __init__(self, phase="train", epochs=None, first_epoch=0, *, stream=None, live=None, refresh=0.2,
                 clock=time.perf_counter):
        super().__init__()
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0):
            raise ValueError(f"`epochs` must be an integer >= 0 or None. Received: epochs={epochs!r}")
        self.phase, self.epochs, self.first_epoch = phase, epochs, first_epoch
        self.stream, self.live, self.refresh, self.clock = stream, live, refresh, clock
        self.seconds = []          # this phase's epoch durations, as measured here
        self.lines = []            # every epoch line printed (without the live line's redraws)
        self._epoch = None
        self._drawn = 0            # length of the live line on screen, to blank it when redrawn shorter

    # ## Keras hooks

    def on_train_begin(self, logs=None):
        self.seconds, self._last_epoch = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._started = epoch, self.clock()
        self._last_draw = self._started
        if self._is_live():
            self._draw(f"{self._where(epoch)}  ...")

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch is None or not self._is_live():
            return
        now = self.clock()
        if now - self._last_draw < self.refresh:
            return
        self._last_draw = now
        steps = self.params.get("steps") if self.params else None
        loss = (logs or {}).get("loss")
        self._draw(f"{self._where(self._epoch)}  step {batch + 1}" + (f"/{steps}" if steps else "")
                   + (f"  loss {_number(float(loss))}" if loss is not None else ""))

    def on_test_begin(self, logs=None):
        if self._epoch is not None and self._is_live():   # fit's validation pass
            self._draw(f"{self._where(self._epoch)}  validating")

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.clock() - self._started
        self.seconds.append(seconds)
        self._epoch, self._last_epoch = None, epoch
        line = self.epoch_line(epoch, logs or {}, seconds)
        self.lines.append(line)
        self._write(line)

    def on_train_end(self, logs=None):
        last = self._last_epoch
        if last is not None and self.model is not None and self.model.stop_training and self._left(last) > 0:
            self._write(f"{self.phase}  stopped early at epoch {self._k(last)}/{self._n()}")

    # ## The line

    def epoch_line(self, epoch, logs, seconds):
        """The line for `epoch` (of the run, from 0) with these logs, after `self.seconds` were measured."""
        metrics = [(key, logs[key]) for key in ("loss", "val_loss") if key in logs]
        metrics += [(key, value) for key, value in logs.items() if key.startswith("val_") and key != "val_loss"]
        parts = [self._where(epoch), *(f"{key} {_number(float(value))}" for key, value in metrics),
                 f"{_seconds(seconds)} s"]
        left = self._left(epoch)
        if left == 0:
            parts.append("done")
        else:
            seconds_left = self.time_left(epoch)
            parts.append("<1 s left" if seconds_left < 0.5 else f"~{duration(seconds_left)} left")
        return "  ".join(parts)

    def time_left(self, epoch):
        """Seconds the phase still needs after `epoch`: the mean epoch so far times the epochs left.

        The first epoch measured is left out of the mean once there are others: it includes
        tracing the training step (in our runs, 10 to 30 times a later epoch).
        """
        if not self.seconds:
            return math.nan
        measured = self.seconds[1:] or self.seconds
        return sum(measured) / len(measured) * self._left(epoch)

    def _k(self, epoch):
        return epoch - self.first_epoch + 1

    def _n(self):
        if self.epochs is not None:
            return self.epochs
        total = (self.params or {}).get("epochs")
        return None if total is None else total - self.first_epoch

    def _left(self, epoch):
        n = self._n()
        return 0 if n is None else max(n - self._k(epoch), 0)

    def _where(self, epoch):
        n = self._n()
        return f"{self.phase}  epoch {self._k(epoch)}" + (f"/{n}" if n is not None else "")

    # ## Output

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def _is_live(self):
        if self.live is not None:
            return self.live
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def _draw(self, text):
        """The live line: back to the line's start, the text, blanks over what is left of the last one."""
        out = self._out()
        out.write("\r" + text + " " * max(self._drawn - len(text), 0))
        out.flush()
        self._drawn = len(text)

    def _write(self, line):
        out = self._out()
        if self._drawn:
            out.write("\r" + line + " " * max(self._drawn - len(line), 0) + "\n")
            self._drawn = 0
        else:
            out.write(line + "\n")
        out.flush()


def _number(value):
    """3 decimals where that reads well (losses, accuracies); 3 significant digits for small values."""
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 0.1 <= abs(value) < 1000:
        return f"{value:.3f}"
    return f"{value:#.3g}"   # '#': 0.0280, not 0.028, so columns of values line up


def _seconds(seconds):
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


def duration(seconds):
    """`7 s`, `3 min 05 s`, `2 h 10 min`: how long, to the precision that matters."""
    if not math.isfinite(seconds):
        return "? s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
