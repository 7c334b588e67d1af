"""Weight penalties: L1, L2, elastic net, and L2-SP for fine-tuning.

All follow Keras' convention: the penalty is the factor times the plain sum (`l2 *
sum(square(x))`, no 1/2), and it is added to the loss once per step.

L2-SP (Li, Grandvalet and Davoine, 2018, "Explicit inductive bias for transfer learning with
convolutional networks") pulls fine-tuned weights towards the pretrained ones instead of
towards zero: plain L2 decay erodes exactly the features that made the pretrained model worth
starting from. The fine-tuning recipe puts `L2SP(alpha)` on the backbone's kernels and
`L2(beta)` on the new head.
"""

import math
import numbers
import weakref

import keras
import tensorflow as tf
from keras import ops

# Factors used when a regularizer is named by string. 1e-4 is the usual weight decay for
# fine-tuning image networks. L2-SP's penalty is on the small distance travelled from the
# pretrained weights, so it needs a larger factor than a decay on the weights themselves.
DEFAULT_L1 = 1e-4
DEFAULT_L2 = 1e-4
DEFAULT_L2SP_ALPHA = 1e-2


@keras.saving.register_keras_serializable(package="headstart")
class L1(keras.regularizers.Regularizer):
    """L1 penalty: `l1 * sum(abs(x))`, which drives small weights to exactly zero.

    Args:
        l1: Non-negative factor. Defaults to `DEFAULT_L1` (1e-4).

    Example:

    >>> layer = keras.layers.Dense(8, kernel_regularizer=L1(1e-4))
    """

    def __init__(self, l1=DEFAULT_L1):
        self.l1 = _check_factor(l1, "l1")

    def __call__(self, x):
        return ops.cast(self.l1, x.dtype) * ops.sum(ops.abs(x))

    def get_config(self):
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="headstart")
class L2(keras.regularizers.Regularizer):
    """L2 penalty (weight decay): `l2 * sum(square(x))`.

    Args:
        l2: Non-negative factor. Defaults to `DEFAULT_L2` (1e-4).

    Example:

    >>> layer = keras.layers.Dense(8, kernel_regularizer=L2(1e-4))
    """

    def __init__(self, l2=DEFAULT_L2):
        self.l2 = _check_factor(l2, "l2")

    def __call__(self, x):
        return ops.cast(self.l2, x.dtype) * ops.sum(ops.square(x))

    def get_config(self):
        return {"l2": self.l2}


@keras.saving.register_keras_serializable(package="headstart")
class ElasticNet(keras.regularizers.Regularizer):
    """L1 and L2 together: `l1 * sum(abs(x)) + l2 * sum(square(x))` (Keras' `L1L2`).

    Args:
        l1: Non-negative L1 factor. Defaults to `DEFAULT_L1` (1e-4).
        l2: Non-negative L2 factor. Defaults to `DEFAULT_L2` (1e-4).

    Example:

    >>> layer = keras.layers.Dense(8, kernel_regularizer=ElasticNet(l1=1e-5, l2=1e-4))
    """

    def __init__(self, l1=DEFAULT_L1, l2=DEFAULT_L2):
        self.l1 = _check_factor(l1, "l1")
        self.l2 = _check_factor(l2, "l2")

    def __call__(self, x):
        return ops.cast(self.l1, x.dtype) * ops.sum(ops.abs(x)) + ops.cast(
            self.l2, x.dtype
        ) * ops.sum(ops.square(x))

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


@keras.saving.register_keras_serializable(package="headstart")
class L2SP(keras.regularizers.Regularizer):
    """L2-SP: `alpha * sum(square(w - w0))`, with `w0` the weights when transfer started.

    Each variable is penalised against its own anchor `w0`, kept in the regularizer and keyed
    by `variable.path`, so one instance can serve every kernel of a backbone. An anchor is
    set in one of two ways:

    - `anchor_l2sp(model)` (or `regularizer.anchor(variable)`) records the current value of
      every variable the regularizer is on. Call it after loading the pretrained weights
      and before fine-tuning; calling it again moves the anchors, also for a training step
      that was already traced.
    - A variable penalised before it was anchored is anchored at its value at that moment:
      for `model.fit` that is the weights when training starts (the value is read eagerly,
      outside the traced training step). So a model loaded from a `.keras` file starts
      anchored at the weights it was saved with.

    The anchors are not part of the config (which is only `alpha`) and are not saved with
    the model: they are the starting point of one fine-tuning run, which the loaded weights
    re-create.

    Keras calls a variable's regularizer with the variable itself (TensorFlow backend), which
    is what lets this one find the right anchor; calling it on a plain tensor is an error.

    The paper writes the penalty as `alpha / 2 * ||w - w0||^2`; this class follows Keras'
    convention without the 1/2, so the paper's alpha is twice this one.

    Args:
        alpha: Non-negative factor. Defaults to `DEFAULT_L2SP_ALPHA` (1e-2).

    Example:

    >>> backbone_penalty = L2SP(alpha=1e-2)
    >>> layer = keras.layers.Dense(8, kernel_regularizer=backbone_penalty)
    >>> # ... build the model, load the pretrained weights ...
    >>> anchor_l2sp(model)
    """

    def __init__(self, alpha=DEFAULT_L2SP_ALPHA):
        self.alpha = _check_factor(alpha, "alpha")
        # path -> [(weak reference to the variable, its anchor)]. A list, because the
        # variables of two sub-models can share a path ("dense/kernel" in both backbone
        # and head); the weak reference tells them apart without keeping them alive.
        self._anchors = {}

    def anchor(self, variable):
        """Record the current value of `variable` as its anchor, replacing any earlier one.

        Args:
            variable: A `keras.Variable`.
        """
        _check_is_variable(variable)
        # Read eagerly even when called while a training step is being traced.
        with tf.init_scope():
            value = ops.convert_to_tensor(variable)
            existing = self._find_anchor(variable)
            if existing is not None:
                existing.assign(value)
                return
            # A TensorFlow variable, not a Keras one: under a distribution strategy Keras
            # first calls regularizers in a stateless scope, where it forbids creating its
            # own variables.
            anchor = tf.Variable(value, trainable=False, name="l2sp_anchor")
        self._anchors.setdefault(variable.path, []).append((weakref.ref(variable), anchor))

    def __call__(self, x):
        _check_is_variable(x)
        anchor = self._find_anchor(x)
        if anchor is None:
            self.anchor(x)
            anchor = self._find_anchor(x)
        return ops.cast(self.alpha, x.dtype) * ops.sum(ops.square(ops.subtract(x, anchor)))

    def get_config(self):
        return {"alpha": self.alpha}

    def _find_anchor(self, variable):
        entries = self._anchors.get(variable.path, [])
        # Drop anchors of variables that no longer exist (e.g. a discarded model).
        entries[:] = [(ref, anchor) for ref, anchor in entries if ref() is not None]
        for ref, anchor in entries:
            if ref() is variable:
                return anchor
        return None


def anchor_l2sp(model):
    """Anchor every `L2SP`-regularised variable of `model` at its current value.

    Covers nested sub-models and frozen (non-trainable) variables, so a backbone that is
    unfrozen later is still pulled towards its pretrained weights.

    Args:
        model: A built `keras.Model` (or layer).

    Returns:
        The number of variables anchored.

    Example:

    >>> model.load_weights("pretrained.weights.h5")
    >>> anchor_l2sp(model)
    12
    """
    count = 0
    for variable in model.weights:
        regularizer = getattr(variable, "regularizer", None)
        if isinstance(regularizer, L2SP):
            regularizer.anchor(variable)
            count += 1
    return count


def regularize_towards_pretrained(model, alpha, beta):
    """L2-SP for transfer (Li et al. 2018): the backbone towards its current weights, the head towards 0.

    Every kernel of the `backbone` sub-model gets `L2SP(alpha)`, anchored at its current
    (pretrained) value; every kernel of the `head` gets `L2(beta)`. Biases and
    batch-norm parameters are left alone, as in the paper. The regularizers are set on
    the variables, so recompile (the engine does it between phases) for them to count.

    Args:
        model: a classifier with `backbone` and `head` sub-models, with its pretrained
            weights loaded.
        alpha: strength of the pull towards the pretrained backbone weights.
        beta: strength of the plain L2 penalty on the new head.

    Returns:
        The number of backbone kernels anchored.
    """
    alpha = _check_factor(alpha, "alpha")
    beta = _check_factor(beta, "beta")
    regularize_kernels(model.get_layer("backbone"), L2SP(alpha))
    regularize_kernels(model.get_layer("head"), L2(beta))
    return anchor_l2sp(model.get_layer("backbone"))


def regularize_kernels(model, regularizer):
    """Put `regularizer` on every kernel of `model`, nested sub-models included (biases and
    batch-norm parameters are left alone). Recompile for the penalty to count.

    With `L2(factor)` this is the classic coupled weight decay, the alternative to AdamW's
    decoupled one (`--weight-decay-kind l2`).
    """
    for layer in _walk_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and hasattr(kernel, "regularizer"):
            kernel.regularizer = regularizer


def _walk_layers(layer):
    yield layer
    for inner in getattr(layer, "layers", []):
        yield from _walk_layers(inner)


_NAMED = {
    "l1": L1,
    "l2": L2,
    "elastic_net": ElasticNet,
    "l1_l2": ElasticNet,
    "l2sp": L2SP,
}
NAMES = tuple(_NAMED)


def get(identifier):
    """Resolve a regularizer from a name, a config dict, an instance or `None`.

    Names give the class with its default factors: `"l1"` `L1(1e-4)`, `"l2"` `L2(1e-4)`,
    `"elastic_net"` (or Keras' name `"l1_l2"`) `ElasticNet(1e-4, 1e-4)`, `"l2sp"`
    `L2SP(1e-2)`.

    Args:
        identifier: `None` (no penalty, returned as is), a name in `NAMES`, a dict from
            `keras.regularizers.serialize`, or a `keras.regularizers.Regularizer`, returned
            as is.

    Returns:
        A `keras.regularizers.Regularizer`, or `None`.

    Example:

    >>> layer = keras.layers.Dense(8, kernel_regularizer=get("l2"))
    """
    if identifier is None or isinstance(identifier, keras.regularizers.Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return keras.regularizers.deserialize(identifier)
    if isinstance(identifier, str) and identifier in _NAMED:
        return _NAMED[identifier]()
    raise ValueError(
        f"Unknown regularizer; expected one of {', '.join(NAMES)}, a config dict, a "
        f"Regularizer or None. Received: identifier={identifier!r}"
    )


def _check_factor(value, name):
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a finite, non-negative number. Received: {name}={value!r}"
        )
    return float(value)


def _check_is_variable(x):
    if not isinstance(x, keras.Variable):
        raise ValueError(
            "L2SP needs the variable itself, to find its anchor (Keras passes the variable "
            f"to `kernel_regularizer`). Received: x={x!r}"
        )
