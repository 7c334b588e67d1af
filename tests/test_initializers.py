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


# (shape, input_axes, output_axes, (fan_in, fan_out)), worked out by hand from Keras' rules.
EXPECTED_FANS = [
    ((), None, None, (1, 1)),
    ((7,), None, None, (7, 7)),
    ((3, 5), None, None, (3, 5)),
    ((4, 3, 5), None, None, (12, 20)),                # a 1-D convolution, width 4
    ((3, 3, 16, 32), None, None, (144, 288)),         # a 2-D convolution
    ((2, 3, 4, 5, 6), None, None, (120, 144)),        # a 3-D convolution
    (CONV_SHAPE, None, None, FANS[CONV_SHAPE]),
    # EinsumDense / MultiHeadAttention kernels, with the axes the layer passes.
    ((32, 8, 16), [0], [1, 2], (32, 128)),            # query/key/value: dim -> (heads, key_dim)
    ((8, 16, 32), [0, 1], [2], (128, 32)),            # attention output: (heads, key_dim) -> dim
    ((64, 4, 16), [0], [1, 2], (64, 64)),
    ((5, 6, 7, 8), [1, 2], [3], (42, 8)),
    # Keras counts the axes only when both are given.
    ((32, 8, 16), [0], None, (256, 512)),
]


def test_fans_are_keras_own():
    from keras.src.initializers.random_initializers import compute_fans as keras_compute_fans

    for shape, input_axes, output_axes, expected in EXPECTED_FANS:
        label = f"shape={shape}, input_axes={input_axes}, output_axes={output_axes}"
        ours = initializers.compute_fans(shape, input_axes, output_axes)
        assert ours == keras_compute_fans(shape, input_axes=input_axes, output_axes=output_axes), label
        assert ours == expected, label
        assert all(type(fan) is int for fan in ours), label


# Our distribution -> Keras' name for the same draws (Keras' "normal" means truncated).
KERAS_DISTRIBUTION = {"normal": "untruncated_normal", "truncated_normal": "truncated_normal", "uniform": "uniform"}
# Kernels of rank 1 to 5: vector, Dense, 1-D conv or einsum, 2-D conv, 3-D conv.
RANK_SHAPES = ((7,), (3, 5), (32, 8, 16), (3, 3, 16, 32), (2, 3, 4, 5, 6))


def _scale_of_draw(monkeypatch, initializer, shape):
    """Call `initializer` and return the (function, stddev or limit) it asked the backend for.

    Keras' VarianceScaling and ours both draw through `keras.src.backend.random`, so its
    arguments are the scale each computed, compared here without sampling error.
    """
    from keras.src.backend import random as backend_random

    calls = []
    for name, argument in (("normal", "stddev"), ("truncated_normal", "stddev"), ("uniform", "maxval")):
        original = getattr(backend_random, name)

        def spy(*args, _original=original, _name=name, _argument=argument, **kwargs):
            calls.append((_name, kwargs[_argument]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(backend_random, name, spy)
    initializer(shape, dtype="float32")
    monkeypatch.undo()
    assert len(calls) == 1, calls
    return calls[0]


def test_variance_scaling_scale_matches_keras_for_every_rank_mode_and_distribution(monkeypatch):
    cases = [(shape, None, None) for shape in RANK_SHAPES] + [((32, 8, 16), [0], [1, 2]), ((8, 16, 32), [0, 1], [2])]
    for (shape, input_axes, output_axes), mode, distribution in itertools.product(
        cases, initializers.MODES, initializers.DISTRIBUTIONS
    ):
        label = f"shape={shape}, axes={input_axes}/{output_axes}, mode={mode}, distribution={distribution}"
        ours = initializers.VarianceScaling(gain=1.0, mode=mode, distribution=distribution, seed=1,
                                            input_axes=input_axes, output_axes=output_axes)
        theirs = keras.initializers.VarianceScaling(scale=1.0, mode=mode, seed=1,
                                                    distribution=KERAS_DISTRIBUTION[distribution],
                                                    input_axes=input_axes, output_axes=output_axes)
        our_function, our_scale = _scale_of_draw(monkeypatch, ours, shape)
        their_function, their_scale = _scale_of_draw(monkeypatch, theirs, shape)
        assert our_function == their_function, label
        assert our_scale == pytest.approx(their_scale, rel=1e-12), label
        # variance() reports the same number the draw used.
        stddev = math.sqrt(ours.variance(shape))
        expected = {"normal": stddev, "truncated_normal": stddev / initializers.TRUNCATED_NORMAL_STDDEV,
                    "uniform": math.sqrt(3) * stddev}[distribution]
        assert our_scale == pytest.approx(expected, rel=1e-12), label


def test_variance_scaling_draws_match_keras_draws():
    # The sample statistics too, for a conv kernel and an einsum kernel with its axes.
    for (shape, input_axes, output_axes), mode in itertools.product(
        (((3, 3, 16, 32), None, None), ((32, 8, 16), [0], [1, 2])), initializers.MODES
    ):
        label = f"shape={shape}, mode={mode}"
        ours = _draw(initializers.VarianceScaling(mode=mode, seed=2, input_axes=input_axes,
                                                  output_axes=output_axes), shape)
        theirs = _draw(keras.initializers.VarianceScaling(mode=mode, seed=3, input_axes=input_axes,
                                                          output_axes=output_axes), shape)
        # 4096-4608 draws each: the std is known to about 1.1% per sample.
        np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.08, err_msg=label)


def _attention_kernel_stds(kernel_initializer):
    inputs = keras.Input((10, 32))
    attention = keras.layers.MultiHeadAttention(num_heads=8, key_dim=16, kernel_initializer=kernel_initializer)
    attention(inputs, inputs)
    einsum = keras.layers.EinsumDense("ab,bcd->acd", output_shape=(4, 16), kernel_initializer=kernel_initializer)
    einsum(keras.Input((64,)))
    kernels = [weight for weight in attention.weights if weight.path.endswith("kernel")] + [einsum.kernel]
    return {weight.path.split("/", 1)[1]: (tuple(weight.shape), float(np.std(weight.numpy()))) for weight in kernels}


def test_einsum_and_attention_kernels_get_keras_std():
    for distribution, mode in itertools.product(("truncated_normal", "uniform"), initializers.MODES):
        ours = _attention_kernel_stds(initializers.VarianceScaling(mode=mode, distribution=distribution))
        theirs = _attention_kernel_stds(keras.initializers.VarianceScaling(mode=mode, distribution=distribution))
        assert set(ours) == {"query/kernel", "key/kernel", "value/kernel", "attention_output/kernel", "kernel"}
        for name, (shape, std) in ours.items():
            label = f"{name} {shape}, mode={mode}, distribution={distribution}"
            assert shape == theirs[name][0], label
            # 4096 weights per kernel: about 1.1% standard error on each std. Counting the
            # kernel as a convolution would be off by a factor of 2 to 2.8.
            np.testing.assert_allclose(std, theirs[name][1], rtol=0.08, err_msg=label)
        # The independent check of Keras' rule: query kernel (32, 8, 16) has fan_in 32, fan_out 128.
        fan = {"fan_in": 32, "fan_out": 128, "fan_avg": 80}[mode]
        np.testing.assert_allclose(ours["query/kernel"][1], 1 / math.sqrt(fan), rtol=0.06)


def test_is_a_keras_variance_scaling_with_keras_scale():
    init = initializers.VarianceScaling(activation="relu")
    assert isinstance(init, keras.initializers.VarianceScaling)
    assert init.scale == pytest.approx(2.0)
    assert (init.input_axes, init.output_axes) == (None, None)


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
    lambda: initializers.VarianceScaling(mode="fan_avg", seed=7, input_axes=[1], output_axes=[0]),
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
        "input_axes": None,
        "output_axes": None,
    }
    assert all(type(value) in (int, float, str, type(None)) for value in config.values())
    axes = initializers.VarianceScaling(input_axes=(0,), output_axes=np.array([1, 2])).get_config()
    assert (axes["input_axes"], axes["output_axes"]) == ([0], [1, 2])
    assert all(type(axis) is int for axis in axes["input_axes"] + axes["output_axes"])


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
        ({"input_axes": "0"}, "input_axes='0'"),
        ({"output_axes": [1.5]}, r"output_axes=\[1.5\]"),
        ({"output_axes": 2}, "output_axes=2"),
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
