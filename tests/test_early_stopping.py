"""EarlyStopping: headstart's stop reasons and thresholds, and Keras' own behaviour, checked
against `keras.callbacks.EarlyStopping` itself (Keras' test cases, rewritten)."""

import copy
import inspect
import json
import math
import warnings

import keras
import numpy as np
import pytest

from headstart.callbacks import EarlyStopping

KERAS_ARGUMENTS = ("monitor", "min_delta", "patience", "verbose", "mode", "baseline", "restore_best_weights",
                   "start_from_epoch")


def _marked_model():
    """A one-weight model; the scripted runs set its weight to the epoch index."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.stop_training = False
    return model


def _mark(model, epoch):
    model.set_weights([np.full((1, 1), float(epoch), dtype="float32")])


def _marker(model):
    return float(model.get_weights()[0][0, 0])


def run_scripted(callback, values, monitor="val_loss", losses=None, model=None, external_stop_at=None):
    """Drive `callback` (ours or Keras') as `fit` would, with scripted epoch logs instead of training.

    `external_stop_at`: the epoch at which another callback stops training. Returns the
    model and the epochs that ran.
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
        if epoch == external_stop_at:
            model.stop_training = True
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
    # As in Keras, stopped_epoch is 0 when training was not stopped early.
    assert callback.stop_reason is None and callback.stopped_epoch == 0
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


def test_baseline_never_beaten_keeps_training_while_the_value_improves():
    # Keras' rule: an epoch that improves on the best value never stops training.
    callback = EarlyStopping(patience=2, baseline=0.5)
    model, epochs = run_scripted(callback, [1.0, 0.9, 0.8, 0.7])
    assert epochs == [0, 1, 2, 3] and callback.stop_reason is None and callback.stopped_epoch == 0
    assert callback.wait == 4 and callback.best_epoch == 3 and _marker(model) == 3.0


def test_baseline_never_beaten_stops_at_the_first_epoch_without_improvement_after_patience():
    callback = EarlyStopping(patience=2, baseline=0.5)
    model, epochs = run_scripted(callback, [1.0, 0.9, 0.8, 0.85, 0.7])
    assert epochs == [0, 1, 2, 3]
    assert callback.stop_reason == "patience" and callback.stopped_epoch == 3
    assert callback.best_epoch == 2 and _marker(model) == 2.0
    assert "beyond baseline=0.5" in callback.summary()["message"]


def test_strict_baseline_stops_after_patience_even_while_improving():
    callback = EarlyStopping(patience=2, baseline=0.5, strict_baseline=True)
    model, epochs = run_scripted(callback, [1.0, 0.9, 0.8, 0.7])
    assert epochs == [0, 1]
    assert callback.stop_reason == "patience" and callback.stopped_epoch == 1
    assert callback.best_epoch == 1 and _marker(model) == 1.0
    assert "baseline=0.5" in callback.summary()["message"]


def test_strict_baseline_gives_patience_epochs_to_beat_the_baseline():
    values = [1.0, 0.9, 0.8, 0.45, 0.6, 0.7, 0.8]
    # Strict: three improving epochs that miss 0.5 use up patience 3.
    strict = EarlyStopping(patience=3, baseline=0.5, strict_baseline=True)
    _, epochs = run_scripted(strict, values)
    assert epochs == [0, 1, 2] and strict.stop_reason == "patience" and strict.best_epoch == 2
    # Keras' rule: they keep training; 0.45 beats the baseline and resets the count, so it
    # stops three epochs without improvement later.
    keras_rule = EarlyStopping(patience=3, baseline=0.5)
    _, epochs = run_scripted(keras_rule, values)
    assert epochs == [0, 1, 2, 3, 4, 5, 6] and keras_rule.stopped_epoch == 6 and keras_rule.best_epoch == 3
    # Once the baseline is beaten the two rules agree.
    strict = EarlyStopping(patience=3, baseline=0.5, strict_baseline=True)
    _, epochs = run_scripted(strict, [1.0, 0.45, 0.6, 0.7, 0.8])
    assert epochs == [0, 1, 2, 3, 4] and strict.stopped_epoch == 4 and strict.best_epoch == 1


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
    ({"strict_baseline": "yes"}, "strict_baseline"),
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


# ## Keras compatibility: the signature, and Keras' own test cases run through both callbacks.


def test_signature_is_keras_order_then_keyword_only_additions():
    ours = inspect.signature(EarlyStopping).parameters
    theirs = inspect.signature(keras.callbacks.EarlyStopping).parameters
    assert tuple(theirs) == KERAS_ARGUMENTS
    assert tuple(ours)[:len(KERAS_ARGUMENTS)] == KERAS_ARGUMENTS
    assert all(ours[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for name in KERAS_ARGUMENTS)
    assert {name for name, parameter in ours.items() if parameter.kind is inspect.Parameter.KEYWORD_ONLY} == {
        "strict_baseline", "min_delta_mode", "stopping_threshold", "divergence_threshold", "check_finite"}
    # Keras' defaults, except restore_best_weights (on here, on purpose).
    assert {name: ours[name].default for name in KERAS_ARGUMENTS if name != "restore_best_weights"} == {
        name: theirs[name].default for name in KERAS_ARGUMENTS if name != "restore_best_weights"}
    assert ours["restore_best_weights"].default is True and theirs["restore_best_weights"].default is False


def test_positional_arguments_mean_what_they_mean_in_keras():
    arguments = ("val_accuracy", 0.01, 3, 1, "max", 0.9, False, 2)
    ours, theirs = EarlyStopping(*arguments), keras.callbacks.EarlyStopping(*arguments)
    for name, value in zip(KERAS_ARGUMENTS, arguments):
        assert getattr(ours, name) == getattr(theirs, name) == value, name
    with pytest.raises(TypeError):
        EarlyStopping(*arguments, True)   # the additions are keyword-only


def _compare_with_keras(arguments, values, monitor="val_loss", external_stop_at=None):
    """Run Keras' EarlyStopping and ours with the same arguments on the same scripted epochs."""
    # Our restore_best_weights default differs from Keras': unless a case sets it, use Keras'.
    arguments = {"restore_best_weights": False, **arguments}
    ours, theirs = EarlyStopping(**arguments), keras.callbacks.EarlyStopping(**arguments)
    our_model, our_epochs = run_scripted(ours, values, monitor=monitor, external_stop_at=external_stop_at)
    their_model, their_epochs = run_scripted(theirs, values, monitor=monitor, external_stop_at=external_stop_at)
    assert our_epochs == their_epochs
    assert ours.stopped_epoch == theirs.stopped_epoch
    assert ours.wait == theirs.wait
    assert _marker(our_model) == _marker(their_model)   # the weights of the same epoch
    if theirs.best is None:   # no epoch was judged (start_from_epoch not reached)
        assert ours.best is None and ours.best_epoch is None
    else:
        assert ours.best_epoch == theirs.best_epoch
        assert ours.best == float(np.reshape(theirs.best, ()))
    return ours, our_epochs, _marker(our_model)


PATIENCE_LOSSES = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_keras_patience_case(patience):
    ours, _, _ = _compare_with_keras({"monitor": "loss", "patience": patience}, PATIENCE_LOSSES, monitor="loss")
    # Keras' own expectation for these losses.
    assert ours.stopped_epoch == max(patience, 1) + 2 and ours.stop_reason == "patience"


# (label, Keras arguments, scripted values, monitor, epoch another callback stops at,
#  the epochs run and the weights (epoch index) training ends with).
KERAS_CASES = [
    ("restore after a patience stop", {"patience": 2, "restore_best_weights": True},
     [0.2, 0.15, 0.1, 0.11, 0.12], "val_loss", None, 5, 2.0),
    ("restore when epochs run out", {"patience": 5, "restore_best_weights": True},
     [1.0, 0.5, 0.7], "val_loss", None, 3, 1.0),
    ("no restore", {"patience": 1, "restore_best_weights": False},
     [1.0, 0.8, 0.9], "val_loss", None, 3, 2.0),
    ("no restore, no stop", {"patience": 5}, [1.0, 0.5, 0.7], "val_loss", None, 3, 2.0),
    ("baseline never beaten", {"patience": 5, "baseline": 0.5, "restore_best_weights": True},
     [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], "val_loss", None, 5, 2.0),
    ("baseline never beaten, still improving", {"patience": 2, "baseline": 0.5, "restore_best_weights": True},
     [1.0, 0.9, 0.8, 0.7], "val_loss", None, 4, 3.0),
    ("baseline beaten", {"patience": 2, "baseline": 0.5, "restore_best_weights": True},
     [1.0, 0.4, 0.45, 0.5, 0.3], "val_loss", None, 4, 1.0),
    ("baseline and min_delta", {"patience": 1, "min_delta": 0.1, "baseline": 0.5, "restore_best_weights": True},
     [0.8, 0.55, 0.52, 0.3], "val_loss", None, 3, 1.0),
    ("baseline, max mode", {"monitor": "val_accuracy", "mode": "max", "patience": 1, "baseline": 0.9},
     [0.5, 0.6, 0.55, 0.7], "val_accuracy", None, 3, 2.0),
    ("another callback stops", {"patience": 5, "baseline": 0.5, "restore_best_weights": True},
     [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], "val_loss", 3, 4, 2.0),
    ("min_delta", {"patience": 1, "min_delta": 0.5, "restore_best_weights": True},
     [10.0, 9.0, 8.7, 8.4, 8.0, 7.0], "val_loss", None, 3, 1.0),
    ("max mode", {"monitor": "val_accuracy", "mode": "max", "patience": 1, "restore_best_weights": True},
     [0.5, 0.7, 0.6, 0.8, 0.75, 0.7], "val_accuracy", None, 3, 1.0),
    ("min mode on a score", {"monitor": "val_accuracy", "mode": "min", "patience": 1},
     [0.5, 0.4, 0.45, 0.3], "val_accuracy", None, 3, 2.0),
    ("start_from_epoch", {"patience": 1, "start_from_epoch": 2, "restore_best_weights": True},
     [0.1, 0.2, 1.0, 0.9, 0.95, 0.5], "val_loss", None, 5, 3.0),
    ("start_from_epoch, patience 0", {"patience": 0, "start_from_epoch": 2},
     [0.5, 0.6, 0.7, 0.8], "val_loss", None, 4, 3.0),
    ("start_from_epoch never reached", {"patience": 0, "start_from_epoch": 5, "restore_best_weights": True},
     [1.0, 0.5, 0.7], "val_loss", None, 3, 2.0),
]


@pytest.mark.parametrize("label, arguments, values, monitor, external_stop_at, epochs_run, weights",
                         KERAS_CASES, ids=[case[0] for case in KERAS_CASES])
def test_keras_case_same_decisions_as_keras(label, arguments, values, monitor, external_stop_at, epochs_run,
                                            weights):
    ours, epochs, marker = _compare_with_keras(arguments, values, monitor, external_stop_at)
    # The numbers Keras' own tests expect, so a change in Keras shows up here, not as a silent drift.
    assert (len(epochs), marker) == (epochs_run, weights)
    stopped_here = ours.stop_reason is not None
    assert stopped_here == (ours.stopped_epoch > 0)


@pytest.mark.parametrize("label, arguments, values, monitor, external_stop_at, epochs_run, weights",
                         KERAS_CASES[:6], ids=[case[0] for case in KERAS_CASES[:6]])
def test_keras_case_with_one_element_array_values(label, arguments, values, monitor, external_stop_at, epochs_run,
                                                  weights):
    # A per-class metric on one class (F1Score(average=None)) is logged as shape (1,).
    arrays = [np.array([value], dtype="float32") for value in values]
    ours, epochs, marker = _compare_with_keras(arguments, arrays, monitor, external_stop_at)
    assert (len(epochs), marker) == (epochs_run, weights)
    assert isinstance(ours.best, float) and isinstance(ours.summary()["best_value"], float)


def test_longer_array_metric_is_a_value_error_naming_it():
    callback = EarlyStopping(monitor="val_f1_score", mode="max")
    with pytest.raises(ValueError, match=r"`val_f1_score` is logged as an array of shape \(3,\).*"
                                         r"Received: monitor='val_f1_score' with shape \(3,\)"):
        run_scripted(callback, [np.array([0.1, 0.2, 0.3])], monitor="val_f1_score")


def test_non_finite_one_element_array_stops_as_a_number_does():
    callback = EarlyStopping(patience=10)
    model, epochs = run_scripted(callback, [np.array([1.0]), np.array([0.8]), np.array([math.nan])])
    assert epochs == [0, 1, 2] and callback.stop_reason == "non_finite" and _marker(model) == 1.0
    assert "val_loss became nan" in callback.summary()["message"]


def test_resume_from_a_checkpoint_written_with_stopped_epoch_none():
    # Checkpoints written before stopped_epoch followed Keras hold None for "did not stop".
    callback = EarlyStopping(patience=3)
    callback.resume_from({"best_value": 0.5, "best_epoch": 1, "wait": 1, "direction": "min", "stop_reason": None,
                          "stopped_epoch": None, "detail": ""})
    callback.set_model(_marked_model())
    callback.on_train_begin()
    assert callback.stopped_epoch == 0 and callback.best == 0.5 and callback.wait == 1


def test_state_round_trips_through_json_mid_run():
    values = [1.0, 0.8, 0.9, 0.95, 0.97, 0.99]
    whole = EarlyStopping(patience=3)
    run_scripted(whole, values)
    # The same run interrupted after epoch 2 and resumed from the saved state and best weights.
    first = EarlyStopping(patience=3)
    model = _marked_model()
    run_scripted(first, values[:3], model=model)
    state, best_weights = json.loads(json.dumps(first.state())), first.best_weights
    assert state["stopped_epoch"] == 0
    second = EarlyStopping(patience=3)
    second.resume_from(state, best_weights)
    second.set_model(model)
    second.on_train_begin()
    for epoch in range(3, len(values)):
        _mark(model, epoch)
        second.on_epoch_end(epoch, {"loss": 1.0, "val_loss": values[epoch]})
        if model.stop_training:
            break
    second.on_train_end()
    assert (second.stop_reason, second.stopped_epoch, second.best_epoch) == ("patience", 4, 1)
    assert (whole.stop_reason, whole.stopped_epoch, whole.best_epoch) == ("patience", 4, 1)
    assert _marker(model) == 1.0


def _binary_data():
    """Noisy binary labels on 4 features: little to learn, so validation values soon turn."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = ((x[:, 0] + rng.normal(size=96)) > 0).astype("float32")[:, None]
    return (x[:64], y[:64]), (x[64:], y[64:])


def _binary_model(metrics=("accuracy",), learning_rate=1.5):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.SGD(learning_rate), "binary_crossentropy", metrics=list(metrics))
    return model


def test_keras_auto_mode_cases_pick_the_direction_keras_picks():
    (x, y), validation = _binary_data()
    # Keras' own case list, plus AUC; F1Score's default average=None logs a shape (1,) array.
    model = _binary_model(["mse", "acc", "accuracy", "hinge", keras.metrics.AUC(name="auc"),
                           keras.metrics.F1Score(threshold=0.5, name="f1_score")])
    history = model.fit(x, y, batch_size=32, epochs=1, validation_data=validation, verbose=0)
    logs = {key: values[0] for key, values in history.history.items()}
    cases = [("max", "val_mse", "max"), ("min", "val_loss", "min"), ("auto", "val_mse", "min"),
             ("auto", "loss", "min"), ("auto", "acc", "max"), ("auto", "val_accuracy", "max"),
             ("auto", "hinge", "min"), ("auto", "f1_score", "max"), ("auto", "val_auc", "max")]
    for mode, monitor, expected in cases:
        ours = EarlyStopping(monitor=monitor, mode=mode, patience=0)
        theirs = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=0)
        for callback in (ours, theirs):
            callback.set_model(model)
            callback.on_train_begin()
            callback.on_epoch_end(0, logs)
        keras_direction = "max" if theirs.monitor_op is keras.ops.greater else "min"
        assert ours.summary()["mode"] == keras_direction == expected, monitor
    # A logged metric without a direction: Keras and ours both ask for a mode.
    for callback in (EarlyStopping(monitor="sharpness"), keras.callbacks.EarlyStopping(monitor="sharpness")):
        callback.set_model(model)
        callback.on_train_begin()
        with pytest.raises(ValueError, match="mode='max'"):
            callback.on_epoch_end(0, {**logs, "sharpness": 1.0})


def test_real_fits_stop_and_restore_as_keras_does():
    """Keras' EarlyStopping and ours, same arguments, same model, data and starting weights."""
    (x, y), validation = _binary_data()
    model = _binary_model(["accuracy", keras.metrics.AUC(name="auc"),
                           keras.metrics.F1Score(threshold=0.5, name="f1_score")])
    start = model.get_weights()
    # (arguments, epochs): a patience stop after the minimum, the one-element F1 array with a
    # warm-up, a baseline never beaten, and a run that runs out after its best epoch.
    cases = [
        ({"monitor": "val_loss", "patience": 2, "restore_best_weights": True}, 10),
        ({"monitor": "val_f1_score", "patience": 1, "start_from_epoch": 2, "restore_best_weights": True}, 10),
        ({"monitor": "val_auc", "patience": 2, "baseline": 0.9, "restore_best_weights": True}, 6),
        ({"monitor": "val_accuracy", "min_delta": 0.01, "patience": 10, "restore_best_weights": True}, 4),
    ]
    outcomes = []
    for arguments, epochs in cases:
        runs = {}
        for name, callback in (("keras", keras.callbacks.EarlyStopping(**arguments)),
                               ("ours", EarlyStopping(**arguments))):
            # Compiled once and only re-weighted: retracing per run would cost more than the runs.
            # Plain SGD has no slots, and fit resets the metrics every epoch.
            model.set_weights(start)
            history = model.fit(x, y, batch_size=32, epochs=epochs, validation_data=validation, shuffle=False,
                                verbose=0, callbacks=[callback])
            runs[name] = (callback, history, model.get_weights())
        (theirs, their_history, their_weights), (ours, our_history, our_weights) = runs["keras"], runs["ours"]
        label = str(arguments)
        # The two runs trained alike (up to float rounding) ...
        common = min(len(their_history.epoch), len(our_history.epoch))
        np.testing.assert_allclose(np.squeeze(their_history.history[arguments["monitor"]])[:common],
                                   np.squeeze(our_history.history[arguments["monitor"]])[:common],
                                   rtol=1e-5, err_msg=label)
        # ... and the two callbacks decided alike: same epochs, stop and restored weights.
        assert our_history.epoch == their_history.epoch, label
        assert ours.stopped_epoch == theirs.stopped_epoch, label
        assert ours.best_epoch == theirs.best_epoch, label
        for our_weight, their_weight in zip(our_weights, their_weights):
            np.testing.assert_allclose(our_weight, their_weight, rtol=1e-5, atol=1e-6, err_msg=label)
        ran_out = len(our_history.epoch) == epochs
        assert (ours.stop_reason is None) == ran_out and (ours.stopped_epoch == 0) == ran_out, label
        outcomes.append((ran_out, ours.best_epoch < our_history.epoch[-1]))
    # The cases exercise what they are meant to: early stops, a run that ran out, and
    # restores from an earlier epoch after both.
    assert {ran_out for ran_out, _ in outcomes} == {True, False}
    assert all(restored_earlier for _, restored_earlier in outcomes)


def test_reuse_across_fits_and_models_starts_from_scratch():
    # Keras' regression test (keras-team/keras#20256): a stale best from the first model would
    # stop the second, worse one after `patience` epochs.
    (x, y), validation = _binary_data()
    stopper = EarlyStopping(monitor="loss", patience=3)
    first = _binary_model(learning_rate=0.5)
    first.fit(x, y, batch_size=64, epochs=10, verbose=0, callbacks=[stopper])
    first_best = stopper.best
    # A slower learner: its loss stays above the first model's best for the whole run.
    second = _binary_model(learning_rate=0.01)
    history = second.fit(x, y, batch_size=64, epochs=6, verbose=0, callbacks=[stopper])
    assert min(history.history["loss"]) > first_best
    assert len(history.epoch) == 6 and stopper.stop_reason is None and stopper.stopped_epoch == 0
    assert stopper.best == min(history.history["loss"])
