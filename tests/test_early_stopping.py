import copy
import json
import math
import warnings

import keras
import numpy as np
import pytest

from headstart.callbacks import EarlyStopping


def _marked_model():
    """A one-weight model; the scripted runs set its weight to the epoch index."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.stop_training = False
    return model


def _mark(model, epoch):
    model.set_weights([np.full((1, 1), float(epoch), dtype="float32")])


def _marker(model):
    return float(model.get_weights()[0][0, 0])


def run_scripted(callback, values, monitor="val_loss", losses=None, model=None):
    """Drive `callback` as `fit` would, with scripted epoch logs instead of training.

    Returns the model and the epochs that ran.
    """
    model = model or _marked_model()
    callback.set_model(model)
    callback.on_train_begin()
    epochs = []
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch)
        _mark(model, epoch)
        logs = {"loss": 1.0 if losses is None else losses[epoch], monitor: value}
        callback.on_epoch_end(epoch, logs)
        epochs.append(epoch)
        if model.stop_training:
            break
    callback.on_train_end()
    return model, epochs


def test_patience_stops_and_restores_the_best_epoch():
    callback = EarlyStopping(patience=2)
    model, epochs = run_scripted(callback, [1.0, 0.8, 0.9, 0.85, 0.7])
    assert epochs == [0, 1, 2, 3]
    assert callback.stop_reason == "patience"
    assert callback.stopped_epoch == 3
    assert (callback.best_epoch, callback.best_value) == (1, 0.8)
    assert callback.restored_from == "best_epoch"
    assert _marker(model) == 1.0


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    callback = EarlyStopping(patience=0)
    _, epochs = run_scripted(callback, [1.0, 0.9, 0.95, 0.5])
    assert epochs == [0, 1, 2]
    assert callback.stop_reason == "patience"


def test_best_weights_are_restored_when_epochs_run_out():
    callback = EarlyStopping(patience=5)
    model, epochs = run_scripted(callback, [1.0, 0.5, 0.7])
    assert epochs == [0, 1, 2]
    assert callback.stop_reason is None and callback.stopped_epoch is None
    assert callback.restored_from == "best_epoch"
    assert _marker(model) == 1.0


def test_weights_are_left_alone_when_the_last_epoch_is_the_best():
    callback = EarlyStopping(patience=5)
    model, _ = run_scripted(callback, [1.0, 0.7, 0.5])
    assert callback.restored_from is None
    assert _marker(model) == 2.0


def test_restore_best_weights_false_keeps_the_last_weights():
    callback = EarlyStopping(patience=1, restore_best_weights=False)
    model, epochs = run_scripted(callback, [1.0, 0.8, 0.9])
    assert epochs == [0, 1, 2]
    assert callback.restored_from is None and callback.best_weights is None
    assert _marker(model) == 2.0


def test_max_mode_for_accuracy():
    callback = EarlyStopping(monitor="val_accuracy", mode="max", patience=1)
    model, epochs = run_scripted(callback, [0.5, 0.7, 0.6], monitor="val_accuracy")
    assert epochs == [0, 1, 2]
    assert callback.best_epoch == 1 and _marker(model) == 1.0


def test_start_from_epoch_ignores_the_warm_up():
    callback = EarlyStopping(patience=1, start_from_epoch=2)
    model, epochs = run_scripted(callback, [0.1, 0.2, 1.0, 0.9, 0.95])
    assert epochs == [0, 1, 2, 3, 4]
    assert callback.stop_reason == "patience" and callback.stopped_epoch == 4
    assert callback.best_epoch == 3 and _marker(model) == 3.0


def test_absolute_min_delta():
    callback = EarlyStopping(patience=2, min_delta=0.1)
    _, epochs = run_scripted(callback, [1.0, 0.95, 0.92, 0.5])
    assert epochs == [0, 1, 2]
    assert callback.best_epoch == 0


def test_relative_min_delta():
    # 10% of the best value: 95 is not enough after 100, 89 is.
    callback = EarlyStopping(patience=2, min_delta=0.1, min_delta_mode="relative")
    _, epochs = run_scripted(callback, [100.0, 95.0, 89.0, 88.0, 87.0])
    assert epochs == [0, 1, 2, 3, 4]
    assert callback.stop_reason == "patience" and callback.best_epoch == 2


def test_baseline_never_beaten_stops_after_patience():
    callback = EarlyStopping(patience=2, baseline=0.5)
    model, epochs = run_scripted(callback, [1.0, 0.9, 0.8, 0.7])
    assert epochs == [0, 1]
    assert callback.stop_reason == "patience"
    assert callback.best_epoch == 1 and _marker(model) == 1.0
    assert "baseline=0.5" in callback.summary()["message"]


def test_beating_the_baseline_resets_patience():
    callback = EarlyStopping(patience=2, baseline=0.5)
    _, epochs = run_scripted(callback, [1.0, 0.4, 0.45, 0.5, 0.3])
    assert epochs == [0, 1, 2, 3]
    assert callback.best_epoch == 1


def test_nan_monitored_value_stops_at_once_and_restores():
    callback = EarlyStopping(patience=10)
    model, epochs = run_scripted(callback, [1.0, 0.8, math.nan, 0.1])
    assert epochs == [0, 1, 2]
    assert callback.stop_reason == "non_finite" and callback.stopped_epoch == 2
    assert callback.restored_from == "best_epoch" and _marker(model) == 1.0
    assert "val_loss became nan" in callback.summary()["message"]


def test_infinite_training_loss_stops_even_with_a_finite_monitor():
    callback = EarlyStopping(patience=10)
    _, epochs = run_scripted(callback, [1.0, 0.8, 0.7], losses=[1.0, math.inf, 1.0])
    assert epochs == [0, 1]
    assert callback.stop_reason == "non_finite"


def test_nan_batch_loss_in_the_first_epoch_restores_the_starting_weights():
    model = _marked_model()
    _mark(model, -1)
    callback = EarlyStopping()
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    _mark(model, 0)
    callback.on_train_batch_end(0, {"loss": 2.0})
    callback.on_train_batch_end(1, {"loss": math.nan})
    assert model.stop_training
    callback.on_epoch_end(0, {"loss": math.nan, "val_loss": math.nan})
    callback.on_train_end()
    assert (callback.stop_reason, callback.stopped_epoch, callback.best_epoch) == ("non_finite", 0, None)
    assert callback.restored_from == "train_begin" and _marker(model) == -1.0


def test_check_finite_false_ignores_nan():
    callback = EarlyStopping(patience=10, check_finite=False)
    _, epochs = run_scripted(callback, [1.0, math.nan, 0.5])
    assert epochs == [0, 1, 2] and callback.stop_reason is None


def test_divergence_threshold_stops_and_restores():
    callback = EarlyStopping(patience=10, divergence_threshold=10.0)
    model, epochs = run_scripted(callback, [1.0, 2.0, 12.0, 0.5])
    assert epochs == [0, 1, 2]
    assert callback.stop_reason == "diverged" and callback.stopped_epoch == 2
    assert _marker(model) == 0.0


def test_stopping_threshold_stops_when_the_target_is_reached():
    callback = EarlyStopping(monitor="val_accuracy", mode="max", patience=10, stopping_threshold=0.95)
    model, epochs = run_scripted(callback, [0.5, 0.8, 0.95, 0.97], monitor="val_accuracy")
    assert epochs == [0, 1, 2]
    assert callback.stop_reason == "target_reached" and callback.stopped_epoch == 2
    assert callback.restored_from is None and _marker(model) == 2.0


def test_summary_is_json_ready_and_says_what_happened():
    callback = EarlyStopping(patience=1)
    run_scripted(callback, [1.0, 0.5, 0.75])
    summary = json.loads(json.dumps(callback.summary()))
    assert summary == {
        "monitor": "val_loss", "mode": "min", "stop_reason": "patience", "stopped_epoch": 2,
        "best_epoch": 1, "best_value": 0.5, "restored_from": "best_epoch",
        "message": "Stopped at epoch 3: val_loss did not improve for 1 epoch. "
                   "Restored the weights of epoch 2 (val_loss=0.5).",
    }


def test_state_is_reset_between_fits():
    callback = EarlyStopping(patience=1)
    run_scripted(callback, [1.0, 0.5, 0.75])
    _, epochs = run_scripted(callback, [3.0, 2.0, 1.0])
    assert epochs == [0, 1, 2]
    assert callback.stop_reason is None and callback.best_epoch == 2 and callback.best_value == 1.0


def test_unknown_monitor_warns_once_with_the_available_keys():
    callback = EarlyStopping(monitor="val_acc", patience=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, epochs = run_scripted(callback, [1.0, 2.0, 3.0], monitor="val_accuracy")
    messages = [str(warning.message) for warning in caught if "EarlyStopping" in str(warning.message)]
    assert len(messages) == 1
    assert "`val_acc`" in messages[0] and "Available keys: loss, val_accuracy" in messages[0]
    assert epochs == [0, 1, 2] and callback.stop_reason is None


def test_auto_mode_reads_the_direction_of_compiled_metrics():
    x = np.random.rand(32, 4).astype("float32")
    y = (x.sum(axis=1) > 2).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(0.0), "binary_crossentropy", metrics=["accuracy"])
    callback = EarlyStopping(monitor="val_accuracy", patience=1)
    # Learning rate 0: accuracy cannot improve, so patience 1 stops at the second epoch.
    history = model.fit(x, y, validation_split=0.25, epochs=5, verbose=0, callbacks=[callback])
    assert callback.summary()["mode"] == "max"
    assert len(history.epoch) == 2 and callback.stop_reason == "patience"


def test_auto_mode_asks_for_a_mode_when_the_direction_is_unknown():
    callback = EarlyStopping(monitor="val_sharpness")
    with pytest.raises(ValueError, match="pass mode='min' or mode='max'.*monitor='val_sharpness'"):
        run_scripted(callback, [1.0], monitor="val_sharpness")


def test_stops_a_real_fit_that_diverges_and_restores_finite_weights():
    x = np.random.rand(64, 4).astype("float32")
    y = 100 * np.random.rand(64, 1).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    # A learning rate this large sends the loss to inf/nan within a few steps.
    model.compile(keras.optimizers.SGD(10.0), "mse")
    callback = EarlyStopping(monitor="loss", patience=50)
    history = model.fit(x, y, batch_size=8, epochs=50, verbose=0, callbacks=[callback])
    assert callback.stop_reason == "non_finite"
    assert len(history.epoch) == callback.stopped_epoch + 1 < 50
    assert all(np.all(np.isfinite(weight)) for weight in model.get_weights())


@pytest.mark.parametrize("arguments, name", [
    ({"patience": -1}, "patience"),
    ({"patience": 1.5}, "patience"),
    ({"start_from_epoch": -2}, "start_from_epoch"),
    ({"min_delta": -0.1}, "min_delta"),
    ({"min_delta_mode": "percent"}, "min_delta_mode"),
    ({"mode": "lowest"}, "mode"),
    ({"monitor": ""}, "monitor"),
    ({"baseline": math.nan}, "baseline"),
    ({"divergence_threshold": math.inf}, "divergence_threshold"),
    ({"stopping_threshold": "0.9"}, "stopping_threshold"),
    ({"mode": "min", "stopping_threshold": 2.0, "divergence_threshold": 1.0}, "stopping_threshold"),
])
def test_bad_arguments_raise_value_error_naming_them(arguments, name):
    with pytest.raises(ValueError, match=f"Received: .*{name}="):
        EarlyStopping(**arguments)


def test_deep_copy_of_a_used_callback_starts_fresh():
    callback = EarlyStopping(patience=1)
    run_scripted(callback, [1.0, 0.5, 0.75])
    copied = copy.deepcopy(callback)
    _, epochs = run_scripted(copied, [1.0, 0.9, 0.8])
    assert epochs == [0, 1, 2] and copied.stop_reason is None
    assert callback.stop_reason == "patience"


class _RecordingEarlyStopping(EarlyStopping):
    """Keeps each trial's summary; the list is a class attribute, so deep copies share it."""

    summaries = []

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self.summaries.append(self.summary())


def test_works_inside_keras_tuner_trials(tmp_path):
    import keras_tuner
    x = np.random.rand(64, 4).astype("float32")
    y = x.sum(axis=1, keepdims=True)

    def build_model(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("units", 2, 8), activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(0.01), "mse")
        return model

    tuner = keras_tuner.RandomSearch(build_model, objective="val_loss", max_trials=2, seed=0,
                                     directory=tmp_path, project_name="early_stopping")
    callback = _RecordingEarlyStopping(patience=1)
    _RecordingEarlyStopping.summaries.clear()
    tuner.search(x, y, validation_split=0.25, epochs=2, batch_size=16, callbacks=[callback], verbose=0)
    assert len(tuner.oracle.trials) == 2
    assert len(_RecordingEarlyStopping.summaries) == 2
    assert all(summary["best_epoch"] is not None for summary in _RecordingEarlyStopping.summaries)
    # Trials ran on copies: the original was never attached to a model.
    assert callback.best_epoch is None
