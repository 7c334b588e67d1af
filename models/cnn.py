"""A plain convolutional network: conv blocks, each halving the image, then the head."""

import keras

from keras import layers

from headstart.models.activations import check_activation
from headstart.models.blocks import conv_unit, resolve_weights_options
from headstart.models.heads import POOLINGS, assemble, build_head
from headstart.models.validation import (check_choice, check_dropout, check_input_shape, check_num_classes,
                               check_positive_int, check_positive_ints)

BLOCK_POOLINGS = ("max", "avg")


def build_cnn(input_shape=(32, 32, 3), num_classes=10, *, filters=(32, 64, 128), convs_per_block=1,
              kernel_size=3, activation="relu", dropout=0.0, batch_norm=True, pooling="max",
              global_pooling="avg", head_units=(), kernel_initializer="auto",
              kernel_regularizer=None, name="cnn"):
    """Build a CNN: `backbone` = conv blocks, `head` = global pooling, dropout, logits.

    Each block is `convs_per_block` times (Conv2D -> BatchNorm -> activation), then a
    2x2 pooling that halves height and width.

    Args:
        input_shape: (height, width, channels). Both sides must be at least
            `2 ** len(filters)`. Defaults to `(32, 32, 3)`.
        num_classes: number of classes; 1 gives a single binary logit. Defaults to `10`.
        filters: output channels of each block. Defaults to `(32, 64, 128)`.
        convs_per_block: convolutions before each pooling. Defaults to `1`.
        kernel_size: convolution kernel size. Defaults to `3`.
        activation: one of `headstart.models.activations.ACTIVATIONS`. Defaults to `"relu"`.
        dropout: dropout rate in the head, before the logits. Defaults to `0.0`.
        batch_norm: batch norm after each convolution. Defaults to `True`.
        pooling: pooling inside the backbone, `"max"` or `"avg"`. Defaults to `"max"`.
        global_pooling: pooling of the head, `"avg"`, `"max"` or `"flatten"`.
            Defaults to `"avg"`.
        head_units: hidden dense layers in the head. Defaults to `()`.
        kernel_initializer: initializer name or instance. Defaults to `"auto"`.
        kernel_regularizer: regularizer name or instance for every kernel. Defaults to `None`.
        name: the model's name. Defaults to `"cnn"`.

    Example:
        >>> model = build_cnn((16, 16, 1), 10, filters=(8, 16))
        >>> model.get_layer("backbone").output_shape
        (None, 4, 4, 16)
    """
    filters = check_positive_ints(filters, "filters", allow_empty=False)
    input_shape = check_input_shape(input_shape, rank=3, min_spatial=2 ** len(filters))
    check_num_classes(num_classes)
    check_positive_int(convs_per_block, "convs_per_block")
    check_positive_int(kernel_size, "kernel_size")
    check_activation(activation)
    dropout = check_dropout(dropout)
    check_choice(pooling, BLOCK_POOLINGS, "pooling")
    check_choice(global_pooling, POOLINGS, "global_pooling")
    initializer, regularizer = resolve_weights_options(kernel_initializer, kernel_regularizer, activation)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    pool_layer = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
    for block, block_filters in enumerate(filters, start=1):
        for conv in range(1, convs_per_block + 1):
            x = conv_unit(x, block_filters, kernel_size=kernel_size, activation=activation,
                          batch_norm=batch_norm, initializer=initializer, regularizer=regularizer,
                          name=f"block{block}_{conv}")
        x = pool_layer(2, name=f"block{block}_pool")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    head = build_head(backbone.output_shape[1:], num_classes, pooling=global_pooling,
                      hidden_units=head_units, dropout=dropout, activation=activation,
                      kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer)
    return assemble(backbone, head, name)
