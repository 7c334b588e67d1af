import glob
import math
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from headstart.callbacks import GradientLogger
from headstart.callbacks.gradient_log import COLUMNS, plot_gradient_log, read_gradient_log, summarize_layers

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(samples=32, features=8):
    x = np.random.rand(samples, features).astype("float32")
    y = np.random.rand(samples, 1).astype("float32")
    return x, y


def _nested_model(features=8):
    """A Functional model holding Functional "backbone" and "head" sub-models, like ours."""
    inputs = keras.Input((features,))
    backbone = keras.Model(inputs, layers.Dense(6, activation="tanh", name="hidden")(inputs), name="backbone")
    head_inputs = keras.Input((6,))
    head = keras.Model(head_inputs, layers.Dense(1, name="output")(head_inputs), name="head")
    model_inputs = keras.Input((features,))
    return keras.Model(model_inputs, head(backbone(model_inputs)), name="regressor")


def _rows_by_variable(rows, step):
    return {(row["layer"], row["variable"]): row for row in rows if row["step"] == step}


def test_logged_norms_equal_independent_norms_for_one_sgd_step(tmp_path):
    x, y = _data()
    model = _nested_model()
    learning_rate = 0.1
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    variables = model.trainable_variables
    weights_before = [variable.numpy() for variable in variables]
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
    expected_grads = [np.linalg.norm(grad.numpy()) for grad in tape.gradient(loss, variables)]

    logger = GradientLogger(log_dir=tmp_path, every_n_steps=1)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0, callbacks=[logger])

    logged = _rows_by_variable(read_gradient_log(tmp_path / "gradients.csv"), step=0)
    assert list(logged) == [("backbone/hidden", "kernel"), ("backbone/hidden", "bias"),
                            ("head/output", "kernel"), ("head/output", "bias")]
    for row, grad_norm, before in zip(logged.values(), expected_grads, weights_before):
        np.testing.assert_allclose(row["grad_norm"], grad_norm, rtol=1e-5)
        np.testing.assert_allclose(row["weight_norm"], np.linalg.norm(before), rtol=1e-5)
        # Plain SGD moves the weights by exactly learning_rate * gradient.
        np.testing.assert_allclose(row["update_norm"], learning_rate * grad_norm, rtol=1e-4)
        assert row["epoch"] == 0


@pytest.mark.parametrize("optimizer", [
    keras.optimizers.SGD(0.05),
    keras.optimizers.SGD(0.05, momentum=0.9),
    keras.optimizers.Adam(0.01),
    keras.optimizers.AdamW(0.01, weight_decay=0.1),
    keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)),
], ids=["sgd", "momentum", "adam", "adamw", "loss_scale"])
def test_update_norm_is_the_change_the_optimizer_applied(optimizer, tmp_path):
    x, y = _data()
    model = _nested_model()
    model.compile(optimizer, "mse")
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
    expected_grads = [np.linalg.norm(grad.numpy()) for grad in tape.gradient(loss, model.trainable_variables)]
    weights_before = [variable.numpy() for variable in model.trainable_variables]

    logger = GradientLogger(log_dir=tmp_path, every_n_steps=1)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0, callbacks=[logger])

    weights_after = [variable.numpy() for variable in model.trainable_variables]
    logged = list(_rows_by_variable(read_gradient_log(tmp_path / "gradients.csv"), step=0).values())
    for row, grad_norm, before, after in zip(logged, expected_grads, weights_before, weights_after):
        np.testing.assert_allclose(row["grad_norm"], grad_norm, rtol=1e-5)
        np.testing.assert_allclose(row["update_norm"], np.linalg.norm(after - before), rtol=1e-4, atol=1e-8)
        assert row["update_norm"] > 0


class CountingLayer(layers.Layer):
    """Identity that counts its forward passes and the backward passes through it."""

    def build(self, input_shape):
        self.forward_calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int32")
        self.backward_calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int32")

    def call(self, inputs):
        self.forward_calls.assign_add(1)
        backward_calls = self.backward_calls.value

        @tf.custom_gradient
        def counted_identity(x):
            def gradient(upstream):
                backward_calls.assign_add(1)
                return upstream
            return tf.identity(x), gradient

        return counted_identity(inputs)


@pytest.mark.parametrize("every_n_steps", [1, 3])
def test_no_extra_forward_or_backward_pass(every_n_steps):
    x, y = _data(samples=48)
    inputs = keras.Input((8,))
    hidden = layers.Dense(4, activation="relu")(inputs)
    counter = CountingLayer()
    model = keras.Model(inputs, layers.Dense(1)(counter(hidden)))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    logger = GradientLogger(every_n_steps=every_n_steps)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    steps = 2 * len(x) // 8
    assert int(counter.forward_calls.numpy()) == steps
    assert int(counter.backward_calls.numpy()) == steps
    assert logger.latest  # it did measure


def test_works_under_a_single_replica_distribution_strategy(tmp_path):
    # The optimizer synchronises replicas inside apply(); that must not end up inside tf.cond.
    x, y = _data()
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = _nested_model()
        model.compile(keras.optimizers.AdamW(0.01), "mse")
    logger = GradientLogger(log_dir=tmp_path, every_n_steps=3)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    steps = sorted({row["step"] for row in read_gradient_log(tmp_path / "gradients.csv")})
    assert steps == [0, 3, 6]
    assert all(latest["update_norm"] > 0 for latest in logger.latest.values())


def test_steps_per_execution_keeps_every_logged_step(tmp_path):
    # 150 steps per epoch with every step logged is more than the on-device buffer holds,
    # so records must be read back during the epoch, once per few executions.
    x, y = _data(samples=150)
    model = _nested_model()
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=4)
    logger = GradientLogger(log_dir=tmp_path, every_n_steps=1)
    model.fit(x, y, batch_size=1, epochs=2, verbose=0, callbacks=[logger])
    rows = read_gradient_log(tmp_path / "gradients.csv")
    steps = [summary["step"] for summary in summarize_layers(rows) if summary["layer"] == "head/output"]
    assert steps == list(range(300))
    assert {row["epoch"] for row in rows if row["step"] < 150} == {0}
    assert {row["epoch"] for row in rows if row["step"] >= 150} == {1}


def test_every_n_steps_logs_one_step_in_n_from_the_start_of_fit(tmp_path):
    x, y = _data(samples=40)
    model = _nested_model()
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=3)
    logger = GradientLogger(log_dir=tmp_path, every_n_steps=4)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[logger])
    steps = sorted({row["step"] for row in read_gradient_log(tmp_path / "gradients.csv")})
    assert steps == [0, 4, 8, 12, 16]
    assert logger.latest["head/output"]["step"] == 16


def test_steps_continue_across_fits_with_a_new_optimizer(tmp_path):
    x, y = _data()
    model = _nested_model()
    logger = GradientLogger(log_dir=tmp_path, every_n_steps=1)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger])
    model.compile(keras.optimizers.Adam(0.001), "mse")  # a fine-tuning phase: iterations restart at 0
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger])
    rows = read_gradient_log(tmp_path / "gradients.csv")
    assert sorted({row["step"] for row in rows}) == [0, 1, 2, 3]
    assert len(rows) == 4 * 4  # one header only, four variables per step


def test_optimizer_and_train_function_are_restored_after_fit():
    x, y = _data()
    model = _nested_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    logger = GradientLogger(every_n_steps=1)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[logger])
    assert "apply" not in vars(model.optimizer)
    assert model.train_function is None
    latest = dict(logger.latest)
    model.fit(x, y, epochs=1, verbose=0)
    assert logger.latest == latest


def test_flags_a_vanishing_deep_sigmoid_network_once_per_layer():
    x, y = _data(samples=64, features=16)
    model = keras.Sequential([keras.Input((16,))] + [layers.Dense(16, activation="sigmoid") for _ in range(20)]
                             + [layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    logger = GradientLogger(every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[logger])
    vanishing = [flag["layer"] for flag in logger.flags if flag["problem"] == "vanishing"]
    # Each sigmoid divides the gradient by about 4: the first layers are far below 1e-7.
    assert "dense" in vanishing and "dense_20" not in vanishing
    # Clear of the threshold on both sides; layers near 1e-7 may go either way.
    assert {layer for layer, latest in logger.latest.items() if latest["grad_norm"] < 1e-8} <= set(vanishing)
    assert not {layer for layer, latest in logger.latest.items() if latest["grad_norm"] > 1e-6} & set(vanishing)
    assert all(flag["step"] >= 1 for flag in logger.flags)  # two logged steps in a row
    messages = [str(warning.message) for warning in caught if "GradientLogger" in str(warning.message)]
    assert len(messages) == len(vanishing)  # 8 steps, one warning per layer
    assert "vanishing gradients in layer 'dense'" in messages[0]


def test_flags_an_exploding_network():
    x, y = _data(samples=64, features=16)
    large = keras.initializers.RandomNormal(stddev=2.0)
    model = keras.Sequential([keras.Input((16,))] + [layers.Dense(16, activation="relu", kernel_initializer=large)
                                                     for _ in range(8)] + [layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    logger = GradientLogger(every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[logger])
    exploding = [flag for flag in logger.flags if flag["problem"] == "exploding"]
    assert {flag["layer"] for flag in exploding} == set(logger.latest)
    assert all(flag["step"] == 0 and flag["grad_norm"] > 1e3 for flag in exploding)
    messages = [str(warning.message) for warning in caught if "exploding gradients" in str(warning.message)]
    assert len(messages) == len(exploding)


def test_a_single_zero_gradient_is_not_vanishing():
    # A zero-initialised last layer passes no gradient back on the first step only, like a
    # residual branch whose last batch-norm scale starts at zero.
    x, y = _data()
    model = keras.Sequential([keras.Input((8,)), layers.Dense(8, activation="tanh"),
                              layers.Dense(1, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    logger = GradientLogger(every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[logger])
    assert logger.flags == []
    assert not [warning for warning in caught if "GradientLogger" in str(warning.message)]


def test_writes_tensorboard_scalars_per_layer(tmp_path):
    x, y = _data()
    model = _nested_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    logger = GradientLogger(every_n_steps=1, tensorboard_dir=tmp_path / "tensorboard")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger])
    tags = set()
    for path in glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"grad_norm/backbone/hidden", "update_ratio/head/output", "weight_norm/head/output"} <= tags


def test_log_survives_a_line_cut_short_and_a_later_fit_continues_it(tmp_path):
    x, y = _data()
    model = _nested_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    logger = GradientLogger(log_dir=tmp_path, every_n_steps=1)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger])
    path = tmp_path / "gradients.csv"
    with open(path, "a") as handle:
        handle.write("2,0,head/out")  # the run was killed while appending
    assert len(read_gradient_log(path)) == 8
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger])
    rows = read_gradient_log(path)
    assert len(rows) == 16
    assert sorted({row["step"] for row in rows}) == [0, 1, 2, 3]


def test_refuses_to_append_to_a_file_that_is_not_a_gradient_log(tmp_path):
    (tmp_path / "gradients.csv").write_text("epoch,loss\n0,1.5\n")
    model = _nested_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x, y = _data()
    with pytest.raises(ValueError, match="is not a gradient log"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[GradientLogger(log_dir=tmp_path)])


@pytest.mark.parametrize("arguments, name", [
    ({"every_n_steps": 0}, "every_n_steps"),
    ({"every_n_steps": 2.5}, "every_n_steps"),
    ({"vanishing_threshold": 0}, "vanishing_threshold"),
    ({"exploding_threshold": -1.0}, "exploding_threshold"),
    ({"exploding_threshold": math.inf}, "exploding_threshold"),
    ({"vanishing_threshold": 10.0, "exploding_threshold": 1.0}, "vanishing_threshold"),
    ({"filename": "logs/gradients.csv"}, "filename"),
])
def test_bad_arguments_raise_value_error_naming_them(arguments, name):
    with pytest.raises(ValueError, match=f"Received: .*{name}="):
        GradientLogger(**arguments)


def _write_log(tmp_path):
    x, y = _data()
    model = _nested_model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[GradientLogger(log_dir=tmp_path, every_n_steps=2)])
    return tmp_path / "gradients.csv"


def test_plot_gradient_log_writes_a_png(tmp_path):
    log_path = _write_log(tmp_path)
    out_path = plot_gradient_log(log_path, tmp_path / "gradients.png")
    with open(out_path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_script_writes_a_png_and_fails_in_one_line_on_bad_logs(tmp_path):
    log_path = _write_log(tmp_path)
    script = os.path.join(REPOSITORY, "scripts", "plot_gradients.py")
    done = subprocess.run([sys.executable, script, str(log_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.path.isfile(tmp_path / "gradients.png")

    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(COLUMNS) + "\n")
    for path, message in ((tmp_path / "missing.csv", "No gradient log at"), (empty, "has no records")):
        done = subprocess.run([sys.executable, script, str(path)], capture_output=True, text=True)
        assert done.returncode == 2
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
