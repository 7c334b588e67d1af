"""Initializers: draws match their variance formulas, names resolve, configs round-trip."""

import itertools
import math

import keras
import numpy as np
import pytest

from headstart.models import initializers
from headstart.models.activations import ACTIVATIONS

# A Dense kernel (fan_in 400, fan_out 500) and a conv kernel (fan_in 5*5*16 = 400,
# fan_out 5*5*64 = 1600), big enough for sample statistics within a few per cent.
DENSE_SHAPE = (400, 500)
CONV_SHAPE = (5, 5, 16, 64)
FANS = {DENSE_SHAPE: (400, 500), CONV_SHAPE: (400, 1600)}
# Relative tolerance on the sample variance: about 5 standard errors for the conv kernel.
VARIANCE_RTOL = 0.05

# Closed-form gains (PyTorch's table; ReLU's sqrt(2) for elu, gelu, swish).
GAINS = {
    "linear": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1.0 + 0.2**2)),
    "elu": math.sqrt(2.0),
    "gelu": math.sqrt(2.0),
    "swish": math.sqrt(2.0),
    "selu": 0.75,
}


def _expected_variance(shape, mode, gain):
    fan_in, fan_out = FANS[shape]
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return gain**2 / fan


def _draw(initializer, shape):
    return keras.ops.convert_to_numpy(initializer(shape, dtype="float32")).astype(np.float64)


def _check_moments(values, variance, label=""):
    # Mean within ~6 standard errors of zero, variance within VARIANCE_RTOL.
    assert abs(values.mean()) < 6 * math.sqrt(variance / values.size), label
    np.testing.assert_allclose(values.var(), variance, rtol=VARIANCE_RTOL, err_msg=label)


# The conftest fixture costs a garbage collection per test, so the cheap checks loop
# inside a few tests rather than being parametrized one case per test.


def test_calculate_gain_matches_closed_formulas():
    for activation in ACTIVATIONS:
        gain = initializers.calculate_gain(activation)
        assert gain == pytest.approx(GAINS[activation]), activation
    for slope in (0.0, 0.01, 0.2, 1.0):
        expected = math.sqrt(2.0 / (1.0 + slope**2))
        assert initializers.calculate_gain("leaky_relu", slope) == pytest.approx(expected), slope


def test_fans_follow_keras_convention():
    expected_fans = {
        (): (1, 1),
        (7,): (7, 7),
        (3, 5): (3, 5),
        (4, 3, 5): (12, 20),
        (2, 3, 4, 5, 6): (120, 144),
        CONV_SHAPE: FANS[CONV_SHAPE],
    }
    for shape, expected in expected_fans.items():
        assert initializers.compute_fans(shape) == expected, shape


@pytest.mark.parametrize("distribution", initializers.DISTRIBUTIONS)
def test_variance_scaling_draws_have_gain_squared_over_fan(distribution):
    for shape, mode, activation in itertools.product(
        (DENSE_SHAPE, CONV_SHAPE), initializers.MODES, (None, "relu", "leaky_relu", "tanh", "selu")
    ):
        label = f"shape={shape}, mode={mode}, activation={activation}"
        init = initializers.VarianceScaling(
            mode=mode, distribution=distribution, activation=activation, seed=1
        )
        variance = _expected_variance(shape, mode, GAINS[activation or "linear"])
        values = _draw(init, shape)

        assert values.shape == shape, label
        _check_moments(values, variance, label)
        assert init.variance(shape) == pytest.approx(variance), label
        # The draws stay inside the distribution's support.
        if distribution == "uniform":
            assert np.abs(values).max() <= math.sqrt(3 * variance) * (1 + 1e-6), label
        if distribution == "truncated_normal":
            cut = 2 * math.sqrt(variance) / 0.87962566103423978
            assert np.abs(values).max() <= cut * (1 + 1e-6), label


def test_leaky_relu_variance_uses_the_given_slope():
    for slope, distribution in itertools.product((0.01, 0.5), initializers.DISTRIBUTIONS):
        init = initializers.VarianceScaling(
            activation="leaky_relu", negative_slope=slope, distribution=distribution, seed=2
        )
        label = f"slope={slope}, distribution={distribution}"
        _check_moments(_draw(init, DENSE_SHAPE), 2.0 / (1.0 + slope**2) / 400, label)


def test_explicit_gain_sets_the_scale():
    init = initializers.VarianceScaling(gain=3.0, mode="fan_out", distribution="normal", seed=3)
    assert init.gain == 3.0
    _check_moments(_draw(init, CONV_SHAPE), 9.0 / 1600)


def test_random_normal_ignores_the_fan():
    stddevs = (initializers.SMALL_NORMAL_STDDEV, initializers.LARGE_NORMAL_STDDEV, 0.3)
    for stddev, shape in itertools.product(stddevs, (DENSE_SHAPE, CONV_SHAPE)):
        values = _draw(initializers.RandomNormal(stddev=stddev, seed=4), shape)
        _check_moments(values, stddev**2, f"stddev={stddev}, shape={shape}")


def test_zeros_and_constant_fill_every_weight():
    np.testing.assert_array_equal(_draw(initializers.Zeros(), CONV_SHAPE), np.zeros(CONV_SHAPE))
    np.testing.assert_array_equal(_draw(initializers.Constant(-0.5), (3, 4)), np.full((3, 4), -0.5))
    np.testing.assert_allclose(
        _draw(initializers.get("constant"), (2, 2)), np.full((2, 2), initializers.CONSTANT_VALUE),
        rtol=1e-7,
    )


# name -> (mode, distribution, gain without activation, gain with activation="leaky_relu").
LEAKY_GAIN = GAINS["leaky_relu"]
NAMED_SETTINGS = {
    "he_normal": ("fan_in", "truncated_normal", math.sqrt(2.0), LEAKY_GAIN),
    "he_uniform": ("fan_in", "uniform", math.sqrt(2.0), LEAKY_GAIN),
    "kaiming_normal": ("fan_in", "truncated_normal", math.sqrt(2.0), LEAKY_GAIN),
    "kaiming_uniform": ("fan_in", "uniform", math.sqrt(2.0), LEAKY_GAIN),
    "glorot_normal": ("fan_avg", "truncated_normal", 1.0, 1.0),
    "glorot_uniform": ("fan_avg", "uniform", 1.0, 1.0),
    "xavier_normal": ("fan_avg", "truncated_normal", 1.0, 1.0),
    "xavier_uniform": ("fan_avg", "uniform", 1.0, 1.0),
    "lecun_normal": ("fan_in", "truncated_normal", 1.0, 1.0),
    "lecun_uniform": ("fan_in", "uniform", 1.0, 1.0),
}


def test_named_variance_scaling_schemes():
    for name, (mode, distribution, gain, leaky_gain) in NAMED_SETTINGS.items():
        plain = initializers.get(name)
        leaky = initializers.get(name, activation="leaky_relu")

        assert isinstance(plain, initializers.VarianceScaling), name
        assert (plain.mode, plain.distribution) == (mode, distribution), name
        assert (leaky.mode, leaky.distribution) == (mode, distribution), name
        assert plain.gain == pytest.approx(gain), name
        assert leaky.gain == pytest.approx(leaky_gain), name
        variance = _expected_variance(DENSE_SHAPE, mode, leaky_gain)
        _check_moments(_draw(leaky, DENSE_SHAPE), variance, name)


def test_named_poor_schemes():
    assert isinstance(initializers.get("zeros"), initializers.Zeros)
    assert initializers.get("constant").value == initializers.CONSTANT_VALUE
    assert initializers.get("small_normal").stddev == 0.01
    assert initializers.get("large_normal").stddev == 1.0


# activation -> (mode, distribution, gain) that "auto" must pick.
AUTO_SETTINGS = {
    None: ("fan_avg", "uniform", 1.0),
    "linear": ("fan_avg", "uniform", 1.0),
    "sigmoid": ("fan_avg", "uniform", 1.0),
    "tanh": ("fan_avg", "uniform", 5.0 / 3.0),
    "relu": ("fan_in", "truncated_normal", math.sqrt(2.0)),
    "leaky_relu": ("fan_in", "truncated_normal", LEAKY_GAIN),
    "elu": ("fan_in", "truncated_normal", math.sqrt(2.0)),
    "gelu": ("fan_in", "truncated_normal", math.sqrt(2.0)),
    "swish": ("fan_in", "truncated_normal", math.sqrt(2.0)),
    "selu": ("fan_in", "truncated_normal", 1.0),
}


def test_auto_picks_the_scheme_for_every_activation():
    assert set(AUTO_SETTINGS) == {None, *ACTIVATIONS}
    for identifier, activation in itertools.product((None, "auto"), AUTO_SETTINGS):
        init = initializers.get(identifier, activation=activation)
        label = f"identifier={identifier}, activation={activation}"
        assert (init.mode, init.distribution) == AUTO_SETTINGS[activation][:2], label
        assert init.gain == pytest.approx(AUTO_SETTINGS[activation][2]), label


def test_auto_without_activation_is_keras_glorot_uniform():
    ours = _draw(initializers.get("auto"), DENSE_SHAPE)
    keras_values = _draw(keras.initializers.GlorotUniform(seed=5), DENSE_SHAPE)
    np.testing.assert_allclose(ours.var(), keras_values.var(), rtol=VARIANCE_RTOL)
    np.testing.assert_allclose(np.abs(ours).max(), np.abs(keras_values).max(), rtol=0.01)


def test_get_passes_instances_and_config_dicts_through():
    init = initializers.VarianceScaling(gain=2.0, seed=6)
    assert initializers.get(init) is init
    keras_init = keras.initializers.HeNormal()
    assert initializers.get(keras_init) is keras_init
    restored = initializers.get(keras.initializers.serialize(init))
    assert isinstance(restored, initializers.VarianceScaling)
    assert restored.get_config() == init.get_config()


def test_get_rejects_unknown_identifiers_listing_the_known_names():
    for identifier in ("he", "HeNormal", "orthogonal", 3, ["zeros"]):
        with pytest.raises(ValueError, match="identifier=") as error:
            initializers.get(identifier)
        for name in initializers.NAMES:
            assert name in str(error.value)


def test_get_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation='mish'"):
        initializers.get("he_normal", activation="mish")


ALL_INITIALIZERS = [
    lambda: initializers.VarianceScaling(seed=7),
    lambda: initializers.VarianceScaling(gain=1.5, mode="fan_out", distribution="uniform", seed=7),
    lambda: initializers.VarianceScaling(
        mode="fan_avg", distribution="normal", activation="leaky_relu", negative_slope=0.1, seed=7
    ),
    lambda: initializers.RandomNormal(stddev=0.3, seed=7),
    lambda: initializers.Zeros(),
    lambda: initializers.Constant(2.5),
]


def test_config_round_trip_gives_equal_config_and_equal_draws():
    for make in ALL_INITIALIZERS:
        init = make()
        config = init.get_config()
        from_config = type(init).from_config(config)
        deserialized = keras.initializers.deserialize(keras.initializers.serialize(init))

        for restored in (from_config, deserialized):
            assert type(restored) is type(init), config
            assert restored.get_config() == config
            np.testing.assert_array_equal(_draw(restored, (6, 5)), _draw(init, (6, 5)))


def test_config_holds_plain_python_values():
    init = initializers.VarianceScaling(gain=2, activation=None, negative_slope=0, seed=1)
    config = init.get_config()
    assert config == {
        "seed": 1,
        "gain": 2.0,
        "mode": "fan_in",
        "distribution": "truncated_normal",
        "activation": None,
        "negative_slope": 0.0,
    }
    assert all(type(value) in (int, float, str, type(None)) for value in config.values())


def test_seeded_initializer_repeats_and_unseeded_draws_afresh():
    seeded = initializers.VarianceScaling(activation="relu", seed=8)
    np.testing.assert_array_equal(_draw(seeded, (4, 4)), _draw(seeded, (4, 4)))
    unseeded = initializers.get("he_normal")
    assert not np.array_equal(_draw(unseeded, (4, 4)), _draw(unseeded, (4, 4)))


def test_unseeded_initializer_is_reproducible_under_set_random_seed():
    keras.utils.set_random_seed(11)
    first = _draw(initializers.get("small_normal"), (4, 4))
    keras.utils.set_random_seed(11)
    np.testing.assert_array_equal(_draw(initializers.get("small_normal"), (4, 4)), first)


def test_one_instance_shared_by_layers_gives_each_its_own_kernel():
    # The builders resolve one initializer per model and hand it to every layer.
    init = initializers.get("auto", activation="relu")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, kernel_initializer=init),
            keras.layers.Dense(8, kernel_initializer=init),
        ]
    )
    first, second = (layer.kernel.numpy() for layer in model.layers)
    assert not np.array_equal(first, second)


BAD_VARIANCE_SCALING_ARGUMENTS = (
        ({"mode": "fan_mean"}, "mode='fan_mean'"),
        ({"distribution": "gaussian"}, "distribution='gaussian'"),
        ({"activation": "mish"}, "activation='mish'"),
        ({"gain": 0.0}, "gain=0.0"),
        ({"gain": -1.0}, "gain=-1.0"),
        ({"gain": float("nan")}, "gain=nan"),
        ({"gain": "2"}, "gain='2'"),
        ({"negative_slope": -0.1}, "negative_slope=-0.1"),
        ({"gain": 2.0, "activation": "relu"}, "gain=2.0, activation='relu'"),
        ({"seed": 1.5}, "seed=1.5"),
)


def test_variance_scaling_rejects_bad_arguments_naming_them():
    for kwargs, argument in BAD_VARIANCE_SCALING_ARGUMENTS:
        with pytest.raises(ValueError, match=argument):
            initializers.VarianceScaling(**kwargs)


def test_random_normal_rejects_non_positive_stddev():
    for stddev in (0.0, -0.01, float("inf")):
        with pytest.raises(ValueError, match=f"stddev={stddev}"):
            initializers.RandomNormal(stddev=stddev)


def test_calculate_gain_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation='softmax'"):
        initializers.calculate_gain("softmax")
    with pytest.raises(ValueError, match="negative_slope=-1"):
        initializers.calculate_gain("leaky_relu", negative_slope=-1)


def test_constant_rejects_non_finite_value():
    with pytest.raises(ValueError, match="value=nan"):
        initializers.Constant(float("nan"))
