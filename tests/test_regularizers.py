"""Regularizers: penalties match NumPy, configs round-trip, L2-SP anchors per variable and saves."""

import math

import keras
import numpy as np
import pytest

from headstart.models import regularizers
from headstart.models.regularizers import L1, L2, L2SP, ElasticNet, anchor_l2sp

RNG = np.random.default_rng(0)
ARRAYS = [RNG.normal(size=(7, 5)), RNG.normal(size=(3, 3, 4, 6)), RNG.normal(size=(9,))]


def _numpy_penalty(regularizer, array):
    config = regularizer.get_config()
    l1, l2 = config.get("l1", 0.0), config.get("l2", 0.0)
    return l1 * np.abs(array).sum() + l2 * np.square(array).sum()


def _value(penalty):
    return float(keras.ops.convert_to_numpy(penalty))


def _mlp(regularizer, name="mlp", units=(6, 3)):
    inputs = keras.Input((4,))
    x = inputs
    for index, width in enumerate(units):
        x = keras.layers.Dense(width, kernel_regularizer=regularizer, name=f"{name}_{index}")(x)
    return keras.Model(inputs, x, name=name)


def _kernels(model):
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


def test_l1_l2_elastic_net_match_numpy_on_tensors_and_variables():
    for regularizer in (L1(0.3), L2(0.05), ElasticNet(l1=0.02, l2=0.7), ElasticNet(l1=0.0, l2=0.1)):
        for array in ARRAYS:
            expected = _numpy_penalty(regularizer, array)
            tensor = keras.ops.convert_to_tensor(array, dtype="float32")
            variable = keras.Variable(array, dtype="float32")
            for x in (tensor, variable):
                assert _value(regularizer(x)) == pytest.approx(expected, rel=1e-5), regularizer


def test_string_names_resolve_with_documented_default_factors():
    expected = {
        "l1": (L1, {"l1": 1e-4}),
        "l2": (L2, {"l2": 1e-4}),
        "elastic_net": (ElasticNet, {"l1": 1e-4, "l2": 1e-4}),
        "l1_l2": (ElasticNet, {"l1": 1e-4, "l2": 1e-4}),
        "l2sp": (L2SP, {"alpha": 1e-2}),
    }
    assert set(expected) == set(regularizers.NAMES)
    for name, (cls, config) in expected.items():
        regularizer = regularizers.get(name)
        assert type(regularizer) is cls, name
        assert regularizer.get_config() == config, name


def test_get_passes_none_instances_and_config_dicts_through():
    assert regularizers.get(None) is None
    ours, keras_own = L2(0.5), keras.regularizers.L2(0.5)
    assert regularizers.get(ours) is ours
    assert regularizers.get(keras_own) is keras_own
    restored = regularizers.get(keras.regularizers.serialize(L2SP(0.25)))
    assert type(restored) is L2SP and restored.alpha == 0.25


def test_get_rejects_unknown_identifiers_listing_the_known_names():
    for identifier in ("l3", "L2", "weight_decay", 0.01):
        with pytest.raises(ValueError, match="identifier=") as error:
            regularizers.get(identifier)
        for name in regularizers.NAMES:
            assert name in str(error.value)


def test_config_round_trip_for_every_regularizer():
    for regularizer in (L1(0.3), L2(0.05), ElasticNet(l1=0.02, l2=0.7), L2SP(0.4)):
        config = regularizer.get_config()
        assert all(type(value) is float for value in config.values())
        from_config = type(regularizer).from_config(config)
        deserialized = keras.regularizers.deserialize(keras.regularizers.serialize(regularizer))
        for restored in (from_config, deserialized):
            assert type(restored) is type(regularizer)
            assert restored.get_config() == config
            # L2-SP's value depends on the variable's anchor, tested below.
            if not isinstance(regularizer, L2SP):
                array = ARRAYS[0].astype("float32")
                assert _value(restored(array)) == pytest.approx(_value(regularizer(array)))


def test_bad_factors_raise_naming_the_argument():
    arguments = ((L1, "l1"), (L2, "l2"), (ElasticNet, "l1"), (ElasticNet, "l2"), (L2SP, "alpha"))
    for cls, argument in arguments:
        for bad in (-0.1, float("nan"), float("inf"), "0.1", True, None):
            with pytest.raises(ValueError, match=f"{argument}={bad!r}"):
                cls(**{argument: bad})


def test_l2sp_is_zero_at_the_start_and_grows_quadratically_with_distance():
    alpha = 0.3
    start = RNG.normal(size=(5, 4))
    direction = RNG.normal(size=(5, 4))
    variable = keras.Variable(start, dtype="float32")
    regularizer = L2SP(alpha)

    assert _value(regularizer(variable)) == 0.0  # anchors lazily, here
    for step in (0.5, 1.0, 2.0, 3.0):
        variable.assign(start + step * direction)
        expected = alpha * step**2 * np.square(direction).sum()
        assert _value(regularizer(variable)) == pytest.approx(expected, rel=1e-4), step


def test_l2sp_shared_by_several_kernels_keeps_one_anchor_per_variable():
    regularizer = L2SP(0.5)
    # Two sub-models with the same layer names: their kernels share a variable path.
    first, second = _mlp(regularizer, name="net"), _mlp(regularizer, name="net")
    kernels = _kernels(first) + _kernels(second)
    assert kernels[0].path == kernels[2].path
    starts = [kernel.numpy() for kernel in kernels]
    assert [_value(regularizer(kernel)) for kernel in kernels] == [0.0] * 4

    for index, kernel in enumerate(kernels):
        kernel.assign(kernel.numpy() + 0.1 * (index + 1))
    for index, (kernel, start) in enumerate(zip(kernels, starts)):
        expected = 0.5 * np.square(kernel.numpy() - start).sum()
        assert _value(regularizer(kernel)) == pytest.approx(expected, rel=1e-5), index


def test_anchor_l2sp_anchors_every_l2sp_variable_at_its_current_value():
    inputs = keras.Input((4,))
    backbone = _mlp(L2SP(0.5), name="backbone")
    head = keras.layers.Dense(2, kernel_regularizer=L2(0.1), name="head")
    model = keras.Model(inputs, head(backbone(inputs)))
    backbone.layers[1].trainable = False  # frozen now, to be unfrozen later

    assert anchor_l2sp(model) == 2
    kernel = backbone.layers[1].kernel
    kernel.assign(kernel.numpy() + 1.0)
    assert _value(kernel.regularizer(kernel)) == pytest.approx(0.5 * kernel.numpy().size, rel=1e-5)
    assert anchor_l2sp(model) == 2
    assert _value(kernel.regularizer(kernel)) == 0.0
    assert kernel.regularizer.get_config() == {"alpha": 0.5}


def test_l2sp_needs_the_variable_itself():
    with pytest.raises(ValueError, match="x="):
        L2SP(0.1)(keras.ops.ones((2, 2)))


def test_model_with_l2sp_saves_and_loads_and_starts_anchored_at_loaded_weights(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, kernel_regularizer=L2SP(0.5)),
            keras.layers.Dense(3, kernel_regularizer=L2SP(0.5)),
        ]
    )
    features = RNG.normal(size=(32, 4)).astype("float32")
    targets = RNG.normal(size=(32, 3)).astype("float32")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(features, targets, epochs=2, batch_size=8, verbose=0)
    assert sum(_value(loss) for loss in model.losses) > 0  # moved away from its anchors

    model.save(tmp_path / "l2sp.keras")
    loaded = keras.saving.load_model(tmp_path / "l2sp.keras")

    np.testing.assert_array_equal(
        loaded.predict(features, verbose=0), model.predict(features, verbose=0)
    )
    assert [type(kernel.regularizer) for kernel in _kernels(loaded)] == [L2SP, L2SP]
    assert [_value(loss) for loss in loaded.losses] == [0.0, 0.0]
    loaded.fit(features, targets, epochs=1, batch_size=8, verbose=0)
    assert all(_value(loss) > 0 for loss in loaded.losses)


def _train(model, features, targets, steps):
    model.compile(keras.optimizers.SGD(0.05), "mse")
    for _ in range(steps):
        model.train_on_batch(features, targets)


def test_training_with_large_alpha_stays_near_the_anchor():
    features = RNG.normal(size=(16, 4)).astype("float32")
    targets = RNG.normal(size=(16, 3)).astype("float32")
    anchored, free = _mlp(L2SP(5.0), name="anchored"), _mlp(None, name="free")
    free.set_weights(anchored.get_weights())
    starts = [kernel.numpy() for kernel in _kernels(anchored)]

    for model in (anchored, free):
        _train(model, features, targets, steps=10)

    def squared_distance(model):
        return sum(np.square(k.numpy() - s).sum() for k, s in zip(_kernels(model), starts))

    assert squared_distance(free) > 0
    assert math.sqrt(squared_distance(anchored)) < 0.5 * math.sqrt(squared_distance(free))
    # Anchored lazily when training started: the penalty is measured from `starts`.
    penalty = sum(_value(loss) for loss in anchored.losses)
    assert penalty == pytest.approx(5.0 * squared_distance(anchored), rel=1e-4)


def test_l2sp_anchors_lazily_under_a_distribution_strategy():
    # With a strategy, Keras builds the loss symbolically (in a stateless scope) first.
    import tensorflow as tf

    features = RNG.normal(size=(16, 4)).astype("float32")
    targets = RNG.normal(size=(16, 3)).astype("float32")
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = _mlp(L2SP(1.0))
        starts = [kernel.numpy() for kernel in _kernels(model)]
        model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(features, targets, epochs=2, batch_size=8, verbose=0)

    expected = sum(np.square(k.numpy() - s).sum() for k, s in zip(_kernels(model), starts))
    assert expected > 0
    assert sum(_value(loss) for loss in model.losses) == pytest.approx(expected, rel=1e-4)


def test_re_anchoring_reaches_an_already_traced_step():
    features = RNG.normal(size=(16, 4)).astype("float32")
    targets = RNG.normal(size=(16, 3)).astype("float32")
    model = _mlp(L2SP(1.0))
    _train(model, features, targets, steps=5)  # anchored at the start of training
    mse = np.square(model.predict(features, verbose=0) - targets).mean()
    assert model.test_on_batch(features, targets) > mse * (1 + 1e-3)  # traces the step

    anchor_l2sp(model)
    # The anchors are now the current weights: the same traced step sees no penalty.
    assert model.test_on_batch(features, targets) == pytest.approx(mse, rel=1e-5)
