"""The classification head, and assembling a backbone and a head into one model.

Every classifier headstart builds is `inputs -> backbone -> head -> logits`, where
`backbone` and `head` are nested Keras models reachable by name
(`model.get_layer("backbone")`, `model.get_layer("head")`). Recipes freeze, swap or
reuse either part by that name, and the head can be trained alone on cached backbone
features because it is a model of its own.
"""

import keras
from keras import layers

from headstart.models import precision
from headstart.models.activations import check_activation
from headstart.models.blocks import dense_unit, resolve_weights_options
from headstart.models.validation import check_choice, check_dropout, check_num_classes, check_positive_ints

POOLINGS = ("avg", "max", "flatten")


def build_head(feature_shape, num_classes, *, pooling="avg", hidden_units=(), dropout=0.0,
               activation="relu", batch_norm=False, kernel_initializer="auto",
               kernel_regularizer=None, name="head"):
    """Build a classification head: pooling, optional dense layers and dropout, logits.

    Args:
        feature_shape: shape of one backbone output, without the batch axis: a feature
            map (H, W, C), pooled first, or a feature vector (D,), used as is.
        num_classes: number of classes; 1 gives a single logit for binary problems.
        pooling: how a feature map becomes a vector: `"avg"` (global average),
            `"max"` (global max) or `"flatten"`. Defaults to `"avg"`.
        hidden_units: sizes of dense layers before the logits. Defaults to `()`.
        dropout: dropout rate before each dense layer, logits included. Defaults to `0.0`.
        activation: activation of the hidden dense layers. Defaults to `"relu"`.
        batch_norm: batch norm after each hidden dense layer. Defaults to `False`.
        kernel_initializer: initializer name or instance (see `headstart.models.initializers.get`);
            the logits layer is always Glorot-uniform (Keras' default, linear output).
            Defaults to `"auto"`.
        kernel_regularizer: regularizer name or instance for every kernel of the head.
            Defaults to `None`.
        name: the head model's name. Defaults to `"head"`.

    Returns:
        An uncompiled Functional model mapping features to logits.

    Example:
        >>> head = build_head((4, 4, 64), num_classes=5, dropout=0.2)
        >>> head.output_shape
        (None, 5)
    """
    feature_shape = tuple(feature_shape)
    check_num_classes(num_classes)
    check_choice(pooling, POOLINGS, "pooling")
    hidden_units = check_positive_ints(hidden_units, "hidden_units")
    dropout = check_dropout(dropout)
    check_activation(activation)
    initializer, regularizer = resolve_weights_options(kernel_initializer, kernel_regularizer, activation)
    # In the variables' dtype (float32) under a mixed policy: the logits, and so the loss,
    # keep float32's range (headstart.models.precision); under any other policy, as it is.
    with precision.head_layers():
        return _head_layers(feature_shape, num_classes, pooling, hidden_units, dropout, activation, batch_norm,
                            initializer, regularizer, name)


def _head_layers(feature_shape, num_classes, pooling, hidden_units, dropout, activation, batch_norm,
                 initializer, regularizer, name):
    inputs = keras.Input(shape=feature_shape, name=f"{name}_features")
    x = inputs
    if len(feature_shape) == 3:
        x = {
            "avg": layers.GlobalAveragePooling2D(name=f"{name}_avg_pool"),
            "max": layers.GlobalMaxPooling2D(name=f"{name}_max_pool"),
            "flatten": layers.Flatten(name=f"{name}_flatten"),
        }[pooling](x)
    elif len(feature_shape) != 1:
        x = layers.Flatten(name=f"{name}_flatten")(x)
    for index, units in enumerate(hidden_units, start=1):
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_dropout{index}")(x)
        x = dense_unit(x, units, activation=activation, batch_norm=batch_norm, dropout=0.0,
                       initializer=initializer, regularizer=regularizer, name=f"{name}_hidden{index}")
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    logits = layers.Dense(num_classes, kernel_regularizer=regularizer, name=f"{name}_logits")(x)
    return keras.Model(inputs, logits, name=name)


def assemble(backbone, head, name):
    """`inputs -> backbone -> head` as one Functional model with both parts nested by name."""
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image" if len(backbone.input_shape) == 4 else "inputs")
    return keras.Model(inputs, head(backbone(inputs)), name=name)


def attach_head(backbone, num_classes, *, name=None, **head_options):
    """Put a new head on an existing backbone (a pretrained one, or an autoencoder's encoder).

    The backbone's layers and weights are shared, not copied. If it is not named
    `"backbone"` (an encoder is named `"encoder"`), it is re-wrapped under that name so
    every classifier has the same `backbone`/`head` split.

    Args:
        backbone: a Keras model mapping inputs to features.
        num_classes: number of classes of the new head.
        name: the classifier's name. Defaults to `"<backbone name>_classifier"`.
        **head_options: passed to `build_head`.
    """
    classifier_name = name or f"{backbone.name}_classifier"
    if backbone.name != "backbone":
        backbone = keras.Model(backbone.input, backbone.output, name="backbone")
    head = build_head(backbone.output_shape[1:], num_classes, **head_options)
    return assemble(backbone, head, classifier_name)
