"""Layer-sequential unit-variance (LSUV) initialisation.

Mishkin and Matas, 2016, "All you need is a good init": start every kernel orthonormal, then,
layer by layer from the input, rescale each kernel until its layer's output has unit variance
on a batch of real data. Unlike a variance-scaling formula, it measures instead of assuming,
so it works whatever the activations, the data and the architecture.
"""

import contextlib
import math
import numbers
from typing import NamedTuple

import keras
import numpy as np
from keras import ops


class LayerVariance(NamedTuple):
    """What `lsuv` did to one layer.

    Attributes:
        layer: The layer's path through nested models, e.g. `"backbone/layer1_dense"`.
        variance_before: Variance of the layer's output on the batch when LSUV reached it
            (the layers before it already done), before the orthonormal start.
        variance_after: Variance of the layer's output when LSUV left it.
        iterations: How many times the kernel was rescaled.
    """

    layer: str
    variance_before: float
    variance_after: float
    iterations: int


def lsuv(model, batch, tolerance=0.1, max_iterations=10, layers=None, orthonormal=True, seed=None):
    """Initialise `model`'s kernels so every kernel layer's output has unit variance on `batch`.

    Visits every layer with a `kernel` (Dense, the convolutions) in order, including those
    inside nested sub-models (a `backbone` and a `head`, say). For each: makes the kernel
    orthonormal (`orthonormal=True`, as in the paper), then divides it by the standard
    deviation of the layer's output on `batch` until that variance is within `tolerance`
    of 1 or `max_iterations` rescalings were made. A layer whose output variance is 0 (or
    not finite) cannot be rescaled and is left as it is.

    The variance is that of the Dense or convolution layer's own output: before the
    activation, which the builders keep in a separate layer. Every element of the output
    counts (all examples, positions and channels). The model runs in inference mode, so
    dropout is off and batch norm uses its moving statistics. Biases are left as they are
    (zero in a freshly built model).

    The output is captured during an ordinary forward pass of the whole model, because a
    layer inside a nested Functional sub-model is not connected to the outer model's inputs
    (`keras.Model(model.inputs, layer.output)` cannot reach it).

    Args:
        model: A built `keras.Model`.
        batch: Inputs for `model`, e.g. a few hundred training examples; at least one.
        tolerance: How far from 1 the output variance may end. Defaults to `0.1`.
        max_iterations: Most rescalings per layer. Defaults to `10`.
        layers: Only these layers: `keras.layers.Layer` objects, names or paths (as in the
            report). Defaults to `None`, every layer with a kernel.
        orthonormal: Make each kernel orthonormal first. Defaults to `True`.
        seed: Integer seed for the orthonormal kernels. Defaults to `None`.

    Returns:
        A list of `LayerVariance`, one per layer, in the order visited.

    Example:

    >>> model = models.build_mlp((64,), 10, hidden_units=(32,) * 6, activation="tanh")
    >>> for record in lsuv(model, x_train[:256]):
    ...     print(record)
    """
    _check_positive_number(tolerance, "tolerance")
    if (
        not isinstance(max_iterations, numbers.Integral)
        or isinstance(max_iterations, bool)
        or max_iterations < 1
    ):
        raise ValueError(
            "`max_iterations` must be an integer of at least 1. "
            f"Received: max_iterations={max_iterations!r}"
        )
    _check_batch(batch)
    if not model.built:
        raise ValueError(f"The model must be built first. Received: model={model.name!r}")
    targets = _select(_kernel_layers(model), layers)
    seed_generator = keras.random.SeedGenerator(seed)

    report = []
    for path, layer in targets:
        kernel = layer.kernel
        variance_before = variance = _output_variance(model, layer, batch)
        if orthonormal:
            orthogonal = keras.initializers.Orthogonal(seed=seed_generator)
            kernel.assign(orthogonal(kernel.shape, dtype=kernel.dtype))
            variance = _output_variance(model, layer, batch)
        iterations = 0
        while (
            abs(variance - 1.0) > tolerance
            and iterations < max_iterations
            and 0.0 < variance < math.inf
        ):
            kernel.assign(kernel / math.sqrt(variance))
            iterations += 1
            variance = _output_variance(model, layer, batch)
        report.append(LayerVariance(path, variance_before, variance, iterations))
    return report


def _kernel_layers(model, prefix=""):
    """`(path, layer)` for every layer with a kernel, in order, nested models included."""
    found, seen = [], set()
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            found.extend(_kernel_layers(layer, prefix=path + "/"))
        elif isinstance(getattr(layer, "kernel", None), keras.Variable) and id(layer) not in seen:
            # A layer used twice in the graph is one set of weights: initialise it once.
            seen.add(id(layer))
            found.append((path, layer))
    return found


def _select(candidates, layers):
    if not candidates:
        raise ValueError("The model has no layer with a kernel (Dense, convolution) to initialise.")
    if layers is None:
        return candidates
    selected = []
    for wanted in layers:
        matches = [
            (path, layer)
            for path, layer in candidates
            if wanted is layer or wanted == path or wanted == layer.name
        ]
        if not matches:
            known = ", ".join(path for path, _ in candidates)
            raise ValueError(
                f"Unknown layer; expected a layer with a kernel, one of {known}. "
                f"Received: layers entry {wanted!r}"
            )
        selected.extend(match for match in matches if match not in selected)
    # Visit in the model's order, whatever the order asked: each layer's input must be final.
    return [candidate for candidate in candidates if candidate in selected]


@contextlib.contextmanager
def _recording_outputs(layer):
    """Collect what `layer` returns while the model runs, by wrapping its `call`."""
    outputs = []
    original_call = layer.call
    had_own_call = "call" in vars(layer)

    def recording_call(*args, **kwargs):
        output = original_call(*args, **kwargs)
        outputs.append(output)
        return output

    layer.call = recording_call
    try:
        yield outputs
    finally:
        if had_own_call:
            layer.call = original_call
        else:
            del layer.call


def _output_variance(model, layer, batch):
    with _recording_outputs(layer) as outputs:
        model(batch, training=False)
    return float(ops.var(ops.cast(outputs[0], "float32")))


def _check_positive_number(value, name):
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")


def _check_batch(batch):
    leaves = keras.tree.flatten(batch)
    sizes = [np.shape(leaf)[0] if np.ndim(leaf) else 0 for leaf in leaves]
    if not leaves or min(sizes) < 1:
        shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        raise ValueError(
            f"`batch` must hold at least one example. Received: batch with shapes {shapes}"
        )
