"""Discriminative learning rates: each group's step is exactly its multiplier times the base step."""

import keras
import numpy as np
import pytest
from keras import layers

from headstart.models.heads import assemble, build_head
from headstart.models.layer_rates import (LayerRateOptimizer, group_names, layer_rate_multipliers,
                                with_layer_rates)
from headstart.recipes import layer_rate_options
from headstart.recipes.errors import UsageError

GROUPS = {"stem": 0.125, "block1": 0.25, "block2": 0.5, "head": 1.0}   # decay 0.5

OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
}


@pytest.fixture
def float64():
    """Steps compared in float64, so that `w_after - w_before` is the step to ~1e-16, not ~1e-7."""
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def tiny_classifier(seed=0):
    """inputs -> backbone (stem, block1, block2) -> head: four groups, every layer with a bias."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="image")
    x = layers.Dense(5, activation="tanh", name="stem_dense")(inputs)
    x = layers.Dense(5, activation="tanh", name="block1_dense")(x)
    x = layers.Dense(4, activation="tanh", name="block1_extra")(x)
    x = layers.Dense(4, activation="tanh", name="block2_dense")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    return assemble(backbone, build_head((4,), 3), "tiny")


def one_batch(seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8, 6)).astype(keras.config.floatx()), rng.integers(0, 3, size=8)


def one_step_deltas(make_optimizer, multipliers=None, steps=1, set_live=None):
    """Weight changes {path: delta} after `steps` steps with the same gradient each step."""
    model = tiny_classifier()
    optimizer = make_optimizer()
    if multipliers is not None:
        optimizer = with_layer_rates(optimizer, model, multipliers=multipliers)
    x, y = one_batch()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer.build(model.trainable_variables)
    for group, value in (set_live or {}).items():
        optimizer.set_multiplier(group, value)
    for _ in range(steps):
        optimizer.apply(grads, model.trainable_variables)
    return {v.path: v.numpy() - before[v.path] for v in model.trainable_variables}


def group_of(path):
    return next(name for name in ("stem", "block1", "block2") if path.startswith(name)) if not path.startswith(
        "head") else "head"


def test_groups_and_layer_decay():
    model = tiny_classifier()
    assert group_names(model) == ["stem", "block1", "block2", "head"]
    assert layer_rate_multipliers(model, decay=0.5) == GROUPS
    assert layer_rate_multipliers(model) == {"stem": 1.0, "block1": 1.0, "block2": 1.0, "head": 1.0}
    explicit = layer_rate_multipliers(model, decay=0.5, groups={"backbone": 0.1, "block2": 0.3})
    assert explicit == {"stem": 0.1, "block1": 0.1, "block2": 0.3, "head": 1.0}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_one_step_is_multiplier_times_base_step(name, float64):
    base = one_step_deltas(OPTIMIZERS[name])
    scaled = one_step_deltas(OPTIMIZERS[name], GROUPS)
    for path, delta in base.items():
        assert np.abs(delta).max() > 0, path
        np.testing.assert_allclose(scaled[path], GROUPS[group_of(path)] * delta, rtol=1e-9, atol=1e-15,
                                   err_msg=f"{name} {path}")


def test_multiplier_applies_to_decoupled_weight_decay(float64):
    """AdamW with a zero gradient moves weights by weight decay alone: lr * multiplier * wd * w."""
    model = tiny_classifier()
    optimizer = with_layer_rates(keras.optimizers.AdamW(0.1, weight_decay=0.5), model, multipliers=GROUPS)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer.apply([np.zeros(v.shape, "float64") for v in model.trainable_variables], model.trainable_variables)
    for variable in model.trainable_variables:
        expected = -0.1 * GROUPS[group_of(variable.path)] * 0.5 * before[variable.path]
        np.testing.assert_allclose(variable.numpy() - before[variable.path], expected, rtol=1e-9, atol=1e-15)


def test_excluded_variables_are_not_decayed(float64):
    """The engine's exclusions (biases, batch-norm scales) still hold through the wrapper."""
    model = tiny_classifier()
    optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer = with_layer_rates(optimizer, model, multipliers=GROUPS)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer.apply([np.zeros(v.shape, "float64") for v in model.trainable_variables], model.trainable_variables)
    for variable in model.trainable_variables:
        moved = not np.array_equal(variable.numpy(), before[variable.path])
        assert moved == variable.path.endswith("kernel"), variable.path


def test_zero_multiplier_holds_a_group_still_without_recompiling():
    deltas = one_step_deltas(OPTIMIZERS["adamw"], GROUPS, steps=2, set_live={"stem": 0.0, "block1": 0.0})
    for path, delta in deltas.items():
        if group_of(path) in ("stem", "block1"):
            assert np.all(delta == 0), path
        else:
            assert np.abs(delta).max() > 0, path


def test_learning_rate_schedule(float64):
    """With a schedule, every step is the scheduled rate times the group's multiplier."""
    def make():
        return keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5))

    base = one_step_deltas(make, steps=3)
    scaled = one_step_deltas(make, GROUPS, steps=3)
    single = one_step_deltas(make, steps=1)
    for path, delta in base.items():
        np.testing.assert_allclose(delta, single[path] * (1 + 0.5 + 0.25), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(scaled[path], GROUPS[group_of(path)] * delta, rtol=1e-9, atol=1e-15)


def test_fit_applies_multipliers_in_the_compiled_step(float64):
    x, y = one_batch()
    models = []
    for multipliers in (None, GROUPS):
        model = tiny_classifier()
        optimizer = keras.optimizers.Adam(0.01)
        if multipliers:
            optimizer = with_layer_rates(optimizer, model, multipliers=multipliers)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = [v.numpy().copy() for v in model.trainable_variables]
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        models.append({v.path: v.numpy() - b for v, b in zip(model.trainable_variables, before)})
    for path, delta in models[0].items():
        np.testing.assert_allclose(models[1][path], GROUPS[group_of(path)] * delta, rtol=1e-9, atol=1e-15)


def test_keras_save_and_load_with_compiled_optimizer(tmp_path):
    model = tiny_classifier()
    optimizer = with_layer_rates(keras.optimizers.AdamW(1e-2, weight_decay=1e-3), model, decay=0.5)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = one_batch()
    model.fit(x, y, epochs=1, verbose=0)
    optimizer.set_multiplier("stem", 0.0)      # live state, e.g. a block not yet unfrozen
    model.save(tmp_path / "model.keras")

    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, LayerRateOptimizer)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.AdamW)
    assert loaded.optimizer.multipliers == GROUPS
    assert loaded.optimizer.current_multipliers() == {**GROUPS, "stem": 0.0}
    assert int(loaded.optimizer.iterations) == 1
    for saved, restored in zip(optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    loaded.fit(x, y, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 2

    config = optimizer.get_config()
    again = LayerRateOptimizer.from_config(config)
    assert again.get_config() == config


def test_bad_arguments_raise_value_error():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="Unknown layer group 'block9'. Did you mean block2 or block1"):
        layer_rate_multipliers(model, groups={"block9": 0.1})
    for value in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="must be a positive number"):
            layer_rate_multipliers(model, groups={"head": value})
    for decay in (0, 1.5, -0.5):
        with pytest.raises(ValueError, match="`decay` must be a number in"):
            layer_rate_multipliers(model, decay=decay)
    with pytest.raises(ValueError, match="not proportional"):
        with_layer_rates(keras.optimizers.Ftrl(0.1), model)
    built = keras.optimizers.SGD(0.1)
    built.build(model.trainable_variables)
    with pytest.raises(ValueError, match="before it is built"):
        with_layer_rates(built, model)
    with pytest.raises(ValueError, match="`backbone` and `head`"):
        with_layer_rates(keras.optimizers.SGD(0.1), keras.Sequential([keras.Input((2,)), layers.Dense(1)]))


# ## Command-line options (checked before anything is built)

def test_parse_options():
    assert layer_rate_options.parse_lr_groups("stage3=0.3, head=1") == {"stage3": 0.3, "head": 1.0}
    assert layer_rate_options.parse_gradual_unfreeze("2") == 2
    assert layer_rate_options.parse_gradual_unfreeze("0,2,5") == [0, 2, 5]


@pytest.mark.parametrize("text, message", [
    ("stage3", "GROUP=MULTIPLIER"),
    ("stage3=abc", "must be a number"),
    ("stage3=0", "must be a positive number"),
    ("stage3=-0.1", "must be a positive number"),
    ("head=1,head=2", "twice"),
])
def test_bad_lr_groups_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        layer_rate_options.parse_lr_groups(text)


def lr_group_cli_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--unfreeze", default="all")
    layer_rate_options.add_arguments(parser)
    layer_rate_options.add_arguments(parser)   # idempotent: a second verb's call adds nothing
    return parser.parse_args(argv)


def test_validate_resolves_and_rejects():
    args = lr_group_cli_args(["--lr-groups", "stage3=0.3,backbone=0.1", "--layer-decay", "0.7",
                              "--gradual-unfreeze", "0,1,2,3"])
    layer_rate_options.validate(args)
    assert args.lr_groups == {"stage3": 0.3, "backbone": 0.1} and args.gradual_unfreeze == [0, 1, 2, 3]

    with pytest.raises(UsageError, match="Unknown layer group 'stage9'. Did you mean"):
        layer_rate_options.validate(lr_group_cli_args(["--lr-groups", "stage9=0.1"]))
    with pytest.raises(UsageError, match="--layer-decay must be in"):
        layer_rate_options.validate(lr_group_cli_args(["--layer-decay", "0"]))
    with pytest.raises(UsageError, match="unfreezes 5 blocks but resnet8 has 4 to unfreeze"):
        layer_rate_options.validate(lr_group_cli_args(["--gradual-unfreeze", "0,1,2,3,4"]))
    with pytest.raises(UsageError, match="unfreezes 2 blocks but resnet8 has 1 to unfreeze with --unfreeze stage3"):
        layer_rate_options.validate(lr_group_cli_args(["--gradual-unfreeze", "0,1", "--unfreeze", "stage3"]))
    with pytest.raises(UsageError, match="1 or more epochs per block"):
        layer_rate_options.validate(lr_group_cli_args(["--gradual-unfreeze", "0"]))
