"""Multi-layer perceptron: the network of the training-dynamics studies."""

import keras
from keras import layers

from headstart.models.activations import check_activation
from headstart.models.blocks import dense_unit, resolve_weights_options
from headstart.models.heads import assemble, build_head
from headstart.models.validation import check_dropout, check_input_shape, check_num_classes, check_positive_ints


def build_mlp(input_shape=(64,), num_classes=10, *, hidden_units=(128, 64), activation="relu",
              dropout=0.0, batch_norm=False, residual=False, kernel_initializer="auto",
              kernel_regularizer=None, name="mlp"):
    """Build an MLP: `backbone` (the hidden layers) and `head` (the logits).

    Inputs of any rank are flattened first, so images can be fed directly.

    Args:
        input_shape: shape of one example, without the batch axis. Defaults to `(64,)`
            (the 8x8 digits, flattened).
        num_classes: number of classes; 1 gives a single binary logit. Defaults to `10`.
        hidden_units: width of each hidden layer, input to output. Defaults to `(128, 64)`.
        activation: hidden activation, one of `headstart.models.activations.ACTIVATIONS`.
            Defaults to `"relu"`.
        dropout: dropout rate after each hidden layer. Defaults to `0.0`.
        batch_norm: batch norm between each dense layer and its activation.
            Defaults to `False`.
        residual: add each hidden layer's input to its output where the widths match (the
            fix for vanishing gradients in deep stacks). Defaults to `False`.
        kernel_initializer: initializer name or instance; `"auto"` picks the variance
            scaling that suits `activation` (see `headstart.models.initializers.get`).
            Defaults to `"auto"`.
        kernel_regularizer: regularizer name or instance for every kernel. Defaults to `None`.
        name: the model's name. Defaults to `"mlp"`.

    Example:
        >>> model = build_mlp((64,), 10, hidden_units=(32, 32), activation="tanh")
        >>> [layer.name for layer in model.layers[1:]]
        ['backbone', 'head']
    """
    input_shape = check_input_shape(input_shape)
    check_num_classes(num_classes)
    hidden_units = check_positive_ints(hidden_units, "hidden_units", allow_empty=False)
    check_activation(activation)
    dropout = check_dropout(dropout)
    initializer, regularizer = resolve_weights_options(kernel_initializer, kernel_regularizer, activation)

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for index, units in enumerate(hidden_units, start=1):
        shortcut = x
        x = dense_unit(x, units, activation=activation, batch_norm=batch_norm, dropout=dropout,
                       initializer=initializer, regularizer=regularizer, name=f"layer{index}")
        if residual and shortcut.shape[-1] == units:
            x = layers.Add(name=f"layer{index}_residual")([shortcut, x])
    backbone = keras.Model(inputs, x, name="backbone")
    head = build_head(backbone.output_shape[1:], num_classes, kernel_regularizer=kernel_regularizer)
    return assemble(backbone, head, name)
