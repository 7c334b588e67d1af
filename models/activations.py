"""Activation names every builder accepts, and the layer each one becomes."""

from keras import layers

# leaky_relu's negative slope: Keras' own function default. Initializers use the same
# value for their activation-aware gain, so a leaky ReLU network is initialised for
# the slope it actually has.
LEAKY_RELU_SLOPE = 0.2

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "selu", "swish", "linear")


def check_activation(activation):
    """Raise `ValueError` unless `activation` is one of `ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation; expected one of {', '.join(ACTIVATIONS)}. "
            f"Received: activation={activation!r}"
        )
    return activation


def activation_layer(activation, name=None):
    """A layer applying `activation` (a separate layer, so it can be logged and inspected)."""
    check_activation(activation)
    if activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name=name)
    return layers.Activation(activation, name=name)
