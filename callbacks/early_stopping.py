"""EarlyStopping: stop when the monitored value stops improving, and go back to the best epoch."""

import math
import numbers
import warnings

import keras
import numpy as np

REASONS = ("patience", "non_finite", "diverged", "target_reached")


class EarlyStopping(keras.callbacks.Callback):
    """Stop training when a monitored value stops improving; end with the best epoch's weights.

    A drop-in for `keras.callbacks.EarlyStopping`: the same arguments in the same order
    (`monitor, min_delta, patience, verbose, mode, baseline, restore_best_weights,
    start_from_epoch`) with the same meaning, and the same decisions (which epoch stops,
    which weights are restored). Two defaults differ on purpose: `restore_best_weights` is
    on (a model that ends on its worst epochs is rarely what a recipe wants) and
    `check_finite` (headstart's) stops at once on NaN. headstart's own arguments are
    keyword-only.

    At the end of each epoch the monitored value (any key of the epoch logs, e.g.
    `"val_loss"` or `"val_accuracy"`) is compared with the best so far. A metric logged as
    a one-element array (e.g. `keras.metrics.F1Score(average=None)` on one class) counts as
    its single number; a longer array is a `ValueError`. Training stops for the first of
    these reasons, recorded in `stop_reason`:

    - `"non_finite"`: the monitored value or the training loss is NaN or infinite (checked
      after every batch and every epoch when `check_finite`); the epoch's weights are
      useless, so the best weights (or, before any epoch finished, those from the start of
      training) are restored.
    - `"target_reached"`: the monitored value is at least as good as `stopping_threshold`.
    - `"diverged"`: the monitored value is worse than `divergence_threshold`.
    - `"patience"`: as in Keras, `wait` counts the epochs since the last one that improved
      on the best value (by more than `min_delta`) and, if `baseline` is set, also beat
      `baseline`; training stops at an epoch that did not improve on the best value once
      `wait >= patience`. An epoch that improves on the best value never stops training,
      even if it misses `baseline`; with `strict_baseline=True` it can (see below).

    With `restore_best_weights`, training always ends with the weights of the best epoch,
    the point before the monitored value started to get worse: after an early stop for any
    reason, and also when `fit` runs out of epochs (or another callback stops it) after the
    best one, as Keras does. Epochs before `start_from_epoch` are not judged (no best, no
    patience, no thresholds), but a non-finite value stops training during them too.

    What happened is kept for the recipe to print and save: `stop_reason` (one of `REASONS`,
    or `None` if training was not stopped by this callback), `stopped_epoch` (the epoch it
    stopped at, `0` when it did not stop, as in Keras; `stop_reason` tells that apart from a
    stop in the first epoch), `best_epoch`, `best_value` (also as Keras' `best`), `wait`,
    `restored_from` (`"best_epoch"`, `"train_begin"` or `None`) and `summary()`, a
    JSON-ready dict with a one-line `"message"`. Epoch indices count from 0, as in
    `history.epoch`; the message counts from 1, as the progress bar does.

    All state is reset in `on_train_begin`, so one instance can serve several `fit` calls
    and keras-tuner trials (which deep-copy it). To continue an interrupted `fit`, pass
    `state()` (and `best_weights`) saved after its last epoch to `resume_from` before the
    next `fit`: its `on_train_begin` then starts from them instead of from scratch.

    Args:
        monitor: Key of the epoch logs to watch. Defaults to `"val_loss"`.
        min_delta: Smallest change that counts as an improvement (on the best value and on
            `baseline`); must be >= 0. Defaults to `0`.
        patience: Epochs without improvement after which training stops; `0` stops at the
            first epoch that does not improve. Defaults to `0`.
        verbose: `1` prints the summary message when training ends. Defaults to `0`.
        mode: `"min"`, `"max"`, or `"auto"` to take the direction from the metric (losses go
            down; Keras metrics know their direction, e.g. accuracy and AUC go up). Defaults
            to `"auto"`.
        baseline: A value to beat: `wait` is only reset by epochs that improve on both the
            best value and `baseline`, so if no epoch beats it training stops at the first
            epoch from the `patience`-th on that does not improve on the best value.
            Defaults to `None`.
        restore_best_weights: End training with the best epoch's weights (Keras' default
            is `False`). Defaults to `True`.
        start_from_epoch: Epochs to wait before judging the monitored value (a warm-up in
            which no improvement is expected). Defaults to `0`.
        strict_baseline: Keyword-only. With `True`, epochs that improve on the best value
            but not on `baseline` count towards `patience` too, so training stops `patience`
            epochs after the last epoch that beat `baseline` (or after the first epoch) even
            while the value is still improving. Defaults to `False` (Keras' rule).
        min_delta_mode: Keyword-only. `"absolute"`, or `"relative"` to read `min_delta` as a
            fraction of the value compared with. Defaults to `"absolute"`.
        stopping_threshold: Keyword-only. Stop at once when the monitored value reaches
            this. Defaults to `None`.
        divergence_threshold: Keyword-only. Stop at once when the monitored value is worse
            than this. Defaults to `None`.
        check_finite: Keyword-only. Stop at once on a NaN or infinite monitored value or
            loss. Defaults to `True`.

    Example:

    >>> early_stopping = EarlyStopping(monitor="val_loss", patience=3)
    >>> model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[early_stopping])
    >>> early_stopping.summary()["message"]
    'Stopped at epoch 9: val_loss did not improve for 3 epochs. Restored the weights of epoch 6 (val_loss=0.3127).'
    """

    # Only reads the batch's loss and sets flags, so Keras may run it off the main thread.
    async_safe = True

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=True, start_from_epoch=0, *, strict_baseline=False,
                 min_delta_mode="absolute", stopping_threshold=None, divergence_threshold=None, check_finite=True):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be the name of a logged metric. Received: monitor={monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be one of 'auto', 'min', 'max'. Received: mode={mode!r}")
        for name, value in (("patience", patience), ("start_from_epoch", start_from_epoch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value!r}")
        if not _is_number(min_delta) or min_delta < 0:
            raise ValueError(f"`min_delta` must be a finite number >= 0. Received: min_delta={min_delta!r}")
        if min_delta_mode not in ("absolute", "relative"):
            raise ValueError("`min_delta_mode` must be 'absolute' or 'relative'. "
                             f"Received: min_delta_mode={min_delta_mode!r}")
        if not isinstance(strict_baseline, bool):
            raise ValueError(f"`strict_baseline` must be True or False. Received: strict_baseline={strict_baseline!r}")
        for name, value in (("baseline", baseline), ("divergence_threshold", divergence_threshold),
                            ("stopping_threshold", stopping_threshold)):
            if value is not None and not _is_number(value):
                raise ValueError(f"`{name}` must be a finite number or None. Received: {name}={value!r}")
        if mode != "auto" and divergence_threshold is not None and stopping_threshold is not None:
            if not _better(stopping_threshold, divergence_threshold, mode):
                raise ValueError(f"In mode '{mode}', `stopping_threshold` must be better than `divergence_threshold`. "
                                 f"Received: stopping_threshold={stopping_threshold!r}, "
                                 f"divergence_threshold={divergence_threshold!r}")
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = mode
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.strict_baseline = strict_baseline
        self.min_delta_mode = min_delta_mode
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.check_finite = check_finite
        self._reset()

    @property
    def best(self):
        """The best monitored value so far, under Keras' name (`None` before the first judged epoch)."""
        return self.best_value

    def _reset(self):
        self.stop_reason = None
        self.stopped_epoch = 0     # as in Keras: 0 unless this callback stopped training
        self.stopped_step = None   # the batch (from 0) whose loss was not finite
        self.best_epoch = None
        self.best_value = None
        self.best_weights = None
        self.restored_from = None
        self.wait = 0
        self._direction = None if self.mode == "auto" else self.mode
        self._detail = ""
        self._epoch = 0
        self._last_epoch = None
        self._initial_weights = None
        self._warned_missing = False

    def state(self):
        """The counters to carry over an interruption, JSON-ready (the best weights are not included)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "wait": self.wait,
                "direction": self._direction, "stop_reason": self.stop_reason,
                "stopped_epoch": self.stopped_epoch, "detail": self._detail}

    def resume_from(self, state, best_weights=None):
        """Start the next `fit` from a `state()` saved earlier, with that run's best weights."""
        self._pending_resume = (dict(state), best_weights)

    def on_train_begin(self, logs=None):
        # Allow instances to be re-used across `model.fit()` calls.
        self._reset()
        pending, self._pending_resume = getattr(self, "_pending_resume", None), None
        if pending is not None:
            state, self.best_weights = pending
            self.best_value, self.best_epoch, self.wait = state["best_value"], state["best_epoch"], state["wait"]
            self._direction = state["direction"] or self._direction
            # Checkpoints written before stopped_epoch followed Keras hold None for "did not stop".
            self.stop_reason, self.stopped_epoch = state["stop_reason"], state["stopped_epoch"] or 0
            self._detail = state["detail"]
        if self.restore_best_weights and self.check_finite:
            # A NaN in the first epoch leaves no best epoch to go back to: keep the start.
            self._initial_weights = self.model.get_weights()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.check_finite and self.stop_reason is None:
            loss = (logs or {}).get("loss")
            if loss is not None and not _all_finite(loss):
                self.stopped_step = batch
                self._stop(self._epoch, "non_finite", f"loss became {_plain(loss)} at step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.stop_reason is not None:
            return  # stopped during this epoch; its values say nothing about the weights to keep
        self._last_epoch = epoch
        logs = logs or {}
        current = logs.get(self.monitor)
        if current is not None:
            current = self._scalar(current)
        if self.check_finite:
            for key in dict.fromkeys((self.monitor, "loss")):
                value = current if key == self.monitor else logs.get(key)
                if value is not None and not _all_finite(value):
                    self._stop(epoch, "non_finite", f"{key} became {_plain(value)}")
                    return
        if current is None:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(f"EarlyStopping is monitoring `{self.monitor}`, which is not in the logs, so it will not "
                              f"stop training. Available keys: {', '.join(sorted(logs)) or 'none'}. Received: "
                              f"monitor={self.monitor!r}", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self._direction is None:
            self._direction = self._infer_direction()

        # Keras' rule: count the epoch, then reset the count if it beats both the best value and the baseline.
        self.wait += 1
        improved = self.best_value is None or self._improves_on(current, self.best_value)
        if improved:
            self.best_value, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improves_on(current, self.baseline):
                self.wait = 0

        if self.stopping_threshold is not None and not _better(self.stopping_threshold, current, self._direction):
            self._stop(epoch, "target_reached",
                       f"{self.monitor}={current:.4g} reached stopping_threshold={self.stopping_threshold:g}")
        elif self.divergence_threshold is not None and _better(self.divergence_threshold, current, self._direction):
            self._stop(epoch, "diverged",
                       f"{self.monitor}={current:.4g} is worse than divergence_threshold={self.divergence_threshold:g}")
        elif (not improved or self.strict_baseline) and self.wait > 0 and self.wait >= self.patience:
            # Keras never stops on an improving epoch; strict_baseline does, when it missed the baseline.
            self._stop(epoch, "patience", f"{self.monitor} did not improve for {self.wait} epoch{'s' if self.wait > 1 else ''}"
                       + ("" if self.baseline is None else f" beyond baseline={self.baseline:g}"))

    def on_train_end(self, logs=None):
        if self.restore_best_weights:
            weights_are_bad = self.stop_reason == "non_finite"
            if self.best_weights is not None and (weights_are_bad or self.best_epoch != self._last_epoch):
                self.model.set_weights(self.best_weights)
                self.restored_from = "best_epoch"
            elif self.best_weights is None and weights_are_bad and self._initial_weights is not None:
                self.model.set_weights(self._initial_weights)
                self.restored_from = "train_begin"
        self._initial_weights = None
        if self.verbose > 0:
            print(self.summary()["message"])

    def summary(self):
        """What happened, as a JSON-ready dict: the attributes above plus a one-line message."""
        return {
            "monitor": self.monitor,
            "mode": self._direction or self.mode,
            "stop_reason": self.stop_reason,
            "stopped_epoch": self.stopped_epoch,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "restored_from": self.restored_from,
            "message": self._message(),
        }

    def _message(self):
        if self.stop_reason is None:
            message = "Ran all epochs."
        else:
            message = f"Stopped at epoch {self.stopped_epoch + 1}: {self._detail}."
        if self.best_epoch is not None:
            best = f"epoch {self.best_epoch + 1} ({self.monitor}={self.best_value:.4g})"
            if self.restored_from == "best_epoch":
                message += f" Restored the weights of {best}."
            else:
                message += f" Best: {best}."
        elif self.restored_from == "train_begin":
            message += " Restored the weights from the start of training."
        return message

    def _stop(self, epoch, reason, detail):
        self.stop_reason, self.stopped_epoch, self._detail = reason, epoch, detail
        self.model.stop_training = True

    def _scalar(self, value):
        """The monitored value as a float; a one-element array (a one-class per-class metric) is its element."""
        if isinstance(value, numbers.Real):
            return float(value)
        shape = tuple(np.shape(value))
        if math.prod(shape) != 1:
            raise ValueError(f"EarlyStopping can only monitor a single number, but `{self.monitor}` is logged as an "
                             f"array of shape {shape} (e.g. a per-class metric): monitor an averaged metric instead "
                             f"(e.g. F1Score(average='macro')). Received: monitor={self.monitor!r} with shape {shape}")
        return float(np.reshape(np.asarray(value), ()))

    def _improves_on(self, current, reference):
        if self.min_delta_mode == "relative":
            delta = self.min_delta * abs(reference)
        else:
            delta = self.min_delta
        # Written as Keras' MonitorCallback._is_improvement does, so ties round the same way.
        if self._direction == "min":
            return current + delta < reference
        return current - delta > reference

    def _infer_direction(self):
        name = self.monitor.removeprefix("val_")
        if name == "loss" or name.endswith("_loss"):
            return "min"
        for metric in _compiled_metrics(self.model):
            # Keras metrics carry "up" or "down"; ours follow the same convention.
            if metric.name == name and getattr(metric, "_direction", None) in ("up", "down"):
                return "max" if metric._direction == "up" else "min"
        raise ValueError(f"EarlyStopping cannot tell whether `{self.monitor}` should go up or down: pass "
                         f"mode='min' or mode='max'. Received: monitor={self.monitor!r}, mode='auto'")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _all_finite(value):
    return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


def _plain(value):
    """A logged value for a message: a number as itself, a one-element array as its element."""
    array = np.asarray(value, dtype=np.float64)
    return float(array.reshape(())) if array.size == 1 else array.tolist()


def _better(value, reference, direction):
    """Whether `value` is strictly better than `reference` in `direction` ("min" or "max")."""
    return value < reference if direction == "min" else value > reference


def _compiled_metrics(model):
    for metric in getattr(model, "metrics", []):
        # compile() wraps the user's metrics in containers that hold them in `.metrics`.
        yield from getattr(metric, "metrics", None) or [metric]
