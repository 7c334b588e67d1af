"""Weight initializers: the variance-scaling family, activation-aware, and the poor baselines.

Keras ships Glorot, He and LeCun as separate classes with the scale baked in. Here one
`VarianceScaling` covers all three and takes its gain from the activation that follows the
layer (PyTorch's `calculate_gain`), so `get("he_normal", activation="leaky_relu")` is
initialised for the leaky slope the network really has. `Zeros`, `Constant` and
`RandomNormal` (the "small_normal" / "large_normal" presets) are the deliberately poor schemes
that lectures compare against.

Seeds: an initializer with an integer seed repeats its values, as in Keras; an unseeded one
draws new values on every call (unlike Keras), so one instance can serve every layer of a
model without giving same-shaped layers identical weights.
"""

import math
import numbers

import keras
# Keras' own fan counting, called rather than copied so the two can never disagree. It is not
# in the public API. Its axes arguments (which EinsumDense passes) are newer than Keras 3.0,
# so compute_fans below passes them only when it is given them.
from keras.src.initializers.random_initializers import compute_fans as _keras_compute_fans

from headstart.models.activations import LEAKY_RELU_SLOPE, check_activation

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# Standard deviation of a unit normal truncated at +-2 standard deviations (the cut
# `keras.random.truncated_normal` makes); dividing by it restores the requested variance.
TRUNCATED_NORMAL_STDDEV = 0.87962566103423978

SMALL_NORMAL_STDDEV = 0.01
LARGE_NORMAL_STDDEV = 1.0
# Not zero, which `Zeros` already covers: any constant makes every unit of a layer
# compute the same thing, which is the point the comparison makes.
CONSTANT_VALUE = 0.1

# Activations whose gain is He's sqrt(2) and whose default scheme is He (fan_in).
_RELU_LIKE = ("relu", "leaky_relu", "elu", "gelu", "swish")


def calculate_gain(activation, negative_slope=LEAKY_RELU_SLOPE):
    """The factor by which to scale a unit-variance init so `activation` keeps the signal size.

    Follows `torch.nn.init.calculate_gain`: `linear` and `sigmoid` 1, `tanh` 5/3, `relu`
    sqrt(2), `leaky_relu` sqrt(2 / (1 + negative_slope**2)), `selu` 3/4. PyTorch has no
    entry for `elu`, `gelu` and `swish`; they pass positive inputs almost unchanged and
    squash negative ones towards a small constant, like ReLU, so they get ReLU's sqrt(2).

    For a self-normalising SELU network use the LeCun scheme (gain 1, `fan_in`), which is
    what `get("auto", activation="selu")` returns: the 3/4 here is PyTorch's value, kept
    for He-style initialisation of SELU layers.

    Args:
        activation: One of `headstart.models.activations.ACTIVATIONS`.
        negative_slope: Slope of `leaky_relu` for negative inputs; ignored by the other
            activations. Defaults to `LEAKY_RELU_SLOPE` (0.2, Keras' own default).

    Returns:
        The gain, a Python float.

    Example:

    >>> calculate_gain("leaky_relu", negative_slope=0.2)
    1.386750490563073
    """
    check_activation(activation)
    _check_negative_slope(negative_slope)
    if activation in ("linear", "sigmoid"):
        return 1.0
    if activation == "tanh":
        return 5.0 / 3.0
    if activation == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + negative_slope**2))
    if activation == "selu":
        return 0.75
    return math.sqrt(2.0)


def compute_fans(shape, input_axes=None, output_axes=None):
    """`(fan_in, fan_out)` of a kernel, exactly as Keras counts them (Keras' own `compute_fans`).

    With `input_axes` and `output_axes` (which `EinsumDense`, and so `MultiHeadAttention`,
    pass to a `VarianceScaling` initializer), the fans are the products of those axes: a
    `(32, 8, 16)` query kernel with input axis 0 and output axes 1 and 2 has fan_in 32 and
    fan_out 128. Without them the shape alone decides: a scalar counts as 1 in and out, a
    vector as its own length, a Dense kernel is `(inputs, units)`, and any higher rank is
    read as a convolution kernel `(*spatial, inputs, filters)`, both fans multiplied by the
    receptive field (the product of the spatial dimensions).

    Args:
        shape: The kernel shape, a tuple of ints.
        input_axes: The axes of the input units, or `None`. Defaults to `None`.
        output_axes: The axes of the output units, or `None`. Defaults to `None`. Both
            axes must be given for either to count, as in Keras.

    Returns:
        A tuple of two Python ints.
    """
    shape = tuple(int(dim) for dim in shape)
    if input_axes is None and output_axes is None:
        return _keras_compute_fans(shape)
    return _keras_compute_fans(shape, input_axes=input_axes, output_axes=output_axes)


class _SeededInitializer(keras.initializers.Initializer):
    """Seed handling for the random initializers.

    An integer seed gives the same values on every call, as in Keras. Without a seed the
    initializer draws new values on every call (from a `keras.random.SeedGenerator` seeded
    from Python's `random`, so `keras.utils.set_random_seed` still makes it reproducible).
    Keras' unseeded initializers repeat their values instead, which gives identical kernels
    to same-shaped layers that share one instance; the builders share one per model.
    """

    def __init__(self, seed=None):
        self._init_seed = seed
        if seed is None:
            seed = keras.random.SeedGenerator()
        elif isinstance(seed, dict):
            seed = keras.saving.deserialize_keras_object(seed)
        elif isinstance(seed, bool) or not isinstance(seed, (int, keras.random.SeedGenerator)):
            raise ValueError(
                "`seed` must be an integer or a `keras.random.SeedGenerator`. "
                f"Received: seed={seed!r}"
            )
        self.seed = seed

    def get_config(self):
        return {"seed": keras.saving.serialize_keras_object(self._init_seed)}


@keras.saving.register_keras_serializable(package="headstart")
class VarianceScaling(_SeededInitializer, keras.initializers.VarianceScaling):
    """Zero-mean weights with variance `gain**2 / fan`: Glorot, He and LeCun in one class.

    `fan` is the number of input units (`mode="fan_in"`), output units (`"fan_out"`) or
    their mean (`"fan_avg"`), counted exactly as Keras counts them (see `compute_fans`).
    The class is a `keras.initializers.VarianceScaling` (with `scale = gain**2`), so
    `EinsumDense` and `MultiHeadAttention` hand it their kernels' input and output axes as
    they do Keras' own: a `(32, 8, 16)` attention kernel gets fan_in 32, not the 256 a
    convolution of that shape would have. The gain is given directly or derived from the
    activation that follows the layer (`calculate_gain`):

    - Glorot / Xavier: `mode="fan_avg"`, gain 1.
    - He / Kaiming: `mode="fan_in"`, `activation="relu"` (gain sqrt(2)); other activations
      get their own gain, e.g. the leaky ReLU's sqrt(2 / (1 + slope**2)).
    - LeCun: `mode="fan_in"`, gain 1.

    `distribution="normal"` draws from a plain normal; `"truncated_normal"` cuts at two
    standard deviations and widens the distribution first so the drawn variance is still
    `gain**2 / fan`; `"uniform"` draws from `[-limit, limit]` with
    `limit = sqrt(3 * gain**2 / fan)`. Unlike Keras' `VarianceScaling`, `"normal"` here
    is not an alias of `"truncated_normal"`.

    Args:
        gain: Positive factor on the standard deviation. Give either `gain` or
            `activation`, not both. Defaults to `None`: `calculate_gain(activation)`, or 1
            when there is no activation.
        mode: One of `"fan_in"`, `"fan_out"`, `"fan_avg"`. Defaults to `"fan_in"`.
        distribution: One of `"normal"`, `"truncated_normal"`, `"uniform"`. Defaults to
            `"truncated_normal"`.
        activation: The activation after the layer, one of
            `headstart.models.activations.ACTIVATIONS`, or `None`. Defaults to `None`.
        negative_slope: The leaky ReLU slope used for its gain. Defaults to
            `LEAKY_RELU_SLOPE`.
        seed: An integer or a `keras.random.SeedGenerator`. Defaults to `None`.
        input_axes: The kernel axes of the input units, as in Keras (`EinsumDense` sets
            them); `None` counts from the shape alone. Defaults to `None`.
        output_axes: The kernel axes of the output units, as in Keras. Defaults to `None`.

    Example:

    >>> he_leaky = VarianceScaling(activation="leaky_relu", mode="fan_in")
    >>> layer = keras.layers.Dense(64, kernel_initializer=he_leaky)
    """

    def __init__(
        self,
        gain=None,
        mode="fan_in",
        distribution="truncated_normal",
        activation=None,
        negative_slope=LEAKY_RELU_SLOPE,
        seed=None,
        input_axes=None,
        output_axes=None,
    ):
        if mode not in MODES:
            raise ValueError(
                f"Unknown mode; expected one of {', '.join(MODES)}. Received: mode={mode!r}"
            )
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"Unknown distribution; expected one of {', '.join(DISTRIBUTIONS)}. "
                f"Received: distribution={distribution!r}"
            )
        _check_negative_slope(negative_slope)
        if activation is not None:
            check_activation(activation)
        if gain is not None:
            if activation is not None:
                raise ValueError(
                    "Give either `gain` or `activation` (which sets the gain), not both. "
                    f"Received: gain={gain!r}, activation={activation!r}"
                )
            if not _is_finite_number(gain) or gain <= 0:
                raise ValueError(f"`gain` must be a positive number. Received: gain={gain!r}")
        self.mode = mode
        self.distribution = distribution
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self._gain_argument = None if gain is None else float(gain)
        self.input_axes = _check_axes(input_axes, "input_axes")
        self.output_axes = _check_axes(output_axes, "output_axes")
        # Keras' VarianceScaling.__init__ is not called: everything it sets is set here
        # (`scale` is a property), and its seed handling is replaced by _SeededInitializer's.
        super().__init__(seed=seed)

    @property
    def gain(self):
        """The gain in effect: the one given, or the activation's, or 1."""
        if self._gain_argument is not None:
            return self._gain_argument
        if self.activation is None:
            return 1.0
        return calculate_gain(self.activation, self.negative_slope)

    @property
    def scale(self):
        """Keras' name for `gain**2`, the numerator of the variance."""
        return self.gain**2

    def variance(self, shape):
        """The variance the draws for a kernel of `shape` have: `gain**2 / fan`."""
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.gain**2 / max(1.0, fan)

    def __call__(self, shape, dtype=None):
        stddev = math.sqrt(self.variance(shape))
        if self.distribution == "normal":
            return keras.random.normal(shape, mean=0.0, stddev=stddev, dtype=dtype, seed=self.seed)
        if self.distribution == "truncated_normal":
            # Widened so that after the cut at two standard deviations the variance is right.
            stddev /= TRUNCATED_NORMAL_STDDEV
            return keras.random.truncated_normal(
                shape, mean=0.0, stddev=stddev, dtype=dtype, seed=self.seed
            )
        limit = math.sqrt(3.0) * stddev
        return keras.random.uniform(shape, minval=-limit, maxval=limit, dtype=dtype, seed=self.seed)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "gain": self._gain_argument,
            "mode": self.mode,
            "distribution": self.distribution,
            "activation": self.activation,
            "negative_slope": self.negative_slope,
            "input_axes": self.input_axes,
            "output_axes": self.output_axes,
        }
        return {**base_config, **config}


@keras.saving.register_keras_serializable(package="headstart")
class Zeros(keras.initializers.Initializer):
    """All zeros: every unit computes the same thing and gets the same gradient.

    A poor scheme on purpose, for comparisons. (Zero is the right start for biases.)

    Example:

    >>> layer = keras.layers.Dense(8, kernel_initializer=Zeros())
    """

    def __call__(self, shape, dtype=None):
        return keras.ops.zeros(shape, dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="headstart")
class Constant(keras.initializers.Initializer):
    """Every weight equal to `value`: a poor scheme on purpose, for comparisons.

    All units of a layer start identical and stay identical under gradient descent
    (the symmetry is never broken), whatever the value.

    Args:
        value: The value of every weight. Defaults to `CONSTANT_VALUE` (0.1).

    Example:

    >>> layer = keras.layers.Dense(8, kernel_initializer=Constant(0.5))
    """

    def __init__(self, value=CONSTANT_VALUE):
        if not _is_finite_number(value):
            raise ValueError(f"`value` must be a finite number. Received: value={value!r}")
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return keras.ops.full(shape, self.value, dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="headstart")
class RandomNormal(_SeededInitializer):
    """Zero-mean normal weights with a fixed standard deviation, whatever the layer's size.

    A poor scheme on purpose, for comparisons: because the scale ignores the fan, the signal
    shrinks layer after layer when `stddev` is small (`"small_normal"`, 0.01) and explodes
    or saturates the activations when it is large (`"large_normal"`, 1.0).

    Args:
        stddev: Positive standard deviation. Defaults to `SMALL_NORMAL_STDDEV` (0.01).
        seed: An integer or a `keras.random.SeedGenerator`. Defaults to `None`.

    Example:

    >>> layer = keras.layers.Dense(8, kernel_initializer=RandomNormal(stddev=1.0))
    """

    def __init__(self, stddev=SMALL_NORMAL_STDDEV, seed=None):
        if not _is_finite_number(stddev) or stddev <= 0:
            raise ValueError(f"`stddev` must be a positive number. Received: stddev={stddev!r}")
        self.stddev = float(stddev)
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return keras.random.normal(shape, mean=0.0, stddev=self.stddev, dtype=dtype, seed=self.seed)

    def get_config(self):
        base_config = super().get_config()
        return {**base_config, "stddev": self.stddev}


def _he(distribution):
    # He's derivation carries over to any activation through its gain (PyTorch's
    # `nonlinearity` argument), so the named He schemes follow the layer's activation.
    return lambda activation: VarianceScaling(
        mode="fan_in", distribution=distribution, activation=activation or "relu"
    )


def _fixed(mode, distribution):
    # Glorot and LeCun are fixed published schemes (gain 1); they ignore the activation.
    return lambda activation: VarianceScaling(mode=mode, distribution=distribution)


# Named schemes. "normal" means truncated normal as in Keras' HeNormal, GlorotNormal and
# LeCunNormal; the truncation is corrected, so the variance is the formula's.
_NAMED = {
    "he_normal": _he("truncated_normal"),
    "he_uniform": _he("uniform"),
    "kaiming_normal": _he("truncated_normal"),
    "kaiming_uniform": _he("uniform"),
    "glorot_normal": _fixed("fan_avg", "truncated_normal"),
    "glorot_uniform": _fixed("fan_avg", "uniform"),
    "xavier_normal": _fixed("fan_avg", "truncated_normal"),
    "xavier_uniform": _fixed("fan_avg", "uniform"),
    "lecun_normal": _fixed("fan_in", "truncated_normal"),
    "lecun_uniform": _fixed("fan_in", "uniform"),
    "zeros": lambda activation: Zeros(),
    "constant": lambda activation: Constant(),
    "small_normal": lambda activation: RandomNormal(stddev=SMALL_NORMAL_STDDEV),
    "large_normal": lambda activation: RandomNormal(stddev=LARGE_NORMAL_STDDEV),
}
NAMES = ("auto", *_NAMED)


def auto(activation=None):
    """The initializer that suits a layer followed by `activation`.

    - ReLU family (`relu`, `leaky_relu`, `elu`, `gelu`, `swish`): He, `fan_in`, truncated
      normal, with the activation's gain. He et al. derived it for ReLU networks, where
      Glorot's variance halves at every layer.
    - `selu`: LeCun normal (`fan_in`, gain 1), which self-normalising networks require.
    - `tanh`, `sigmoid`, `linear` or `None`: Glorot uniform (`fan_avg`, Keras' default
      kernel initializer) scaled by the activation's gain. With no activation this is
      exactly Keras' `glorot_uniform`; for tanh the 5/3 gain makes up for tanh shrinking
      its inputs, which Glorot's derivation (a unit-slope activation) leaves out.

    Args:
        activation: One of `headstart.models.activations.ACTIVATIONS`, or `None`. Defaults to `None`.

    Returns:
        A new `VarianceScaling`.
    """
    if activation is None:
        return VarianceScaling(mode="fan_avg", distribution="uniform")
    check_activation(activation)
    if activation in _RELU_LIKE:
        return VarianceScaling(
            mode="fan_in", distribution="truncated_normal", activation=activation
        )
    if activation == "selu":
        return VarianceScaling(mode="fan_in", distribution="truncated_normal")
    return VarianceScaling(mode="fan_avg", distribution="uniform", activation=activation)


def get(identifier, activation=None):
    """Resolve an initializer from a name, a config dict, an instance or `None`.

    `None` and `"auto"` give `auto(activation)`. The He / Kaiming names take their gain from
    `activation` (ReLU's when it is `None`); the Glorot / Xavier and LeCun names are the
    fixed schemes. The `*_normal` names draw from a truncated normal, as Keras does.
    Known names: `NAMES`.

    Args:
        identifier: `None`, a name in `NAMES`, a dict from `keras.initializers.serialize`,
            or a `keras.initializers.Initializer`, returned as is.
        activation: The activation after the layer, one of
            `headstart.models.activations.ACTIVATIONS`, or `None`. Defaults to `None`.

    Returns:
        A `keras.initializers.Initializer`.

    Example:

    >>> init = get("he_normal", activation="leaky_relu")
    >>> layer = keras.layers.Dense(64, kernel_initializer=init)
    """
    if activation is not None:
        check_activation(activation)
    if identifier is None or (isinstance(identifier, str) and identifier == "auto"):
        return auto(activation)
    if isinstance(identifier, keras.initializers.Initializer):
        return identifier
    if isinstance(identifier, dict):
        return keras.initializers.deserialize(identifier)
    if isinstance(identifier, str) and identifier in _NAMED:
        return _NAMED[identifier](activation)
    raise ValueError(
        f"Unknown initializer; expected one of {', '.join(NAMES)}, a config dict or an "
        f"Initializer. Received: identifier={identifier!r}"
    )


def _is_finite_number(value):
    return (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    )


def _check_negative_slope(negative_slope):
    if not _is_finite_number(negative_slope) or negative_slope < 0:
        raise ValueError(
            "`negative_slope` must be a non-negative number. "
            f"Received: negative_slope={negative_slope!r}"
        )


def _check_axes(axes, name):
    """`None`, or the axes as a list of ints (JSON-ready for the config)."""
    if axes is None:
        return None
    if isinstance(axes, (str, bytes)) or not hasattr(axes, "__iter__") or not all(
        isinstance(axis, numbers.Integral) and not isinstance(axis, bool) for axis in axes
    ):
        raise ValueError(f"`{name}` must be a list of integer axes or None. Received: {name}={axes!r}")
    return [int(axis) for axis in axes]
