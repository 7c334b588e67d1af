"""Autoencoders, dense and convolutional, whose encoder can start a classifier.

The autoencoder is `inputs -> encoder -> decoder -> reconstruction`, with the two
parts nested by name: `autoencoder.get_layer("encoder")` is the feature extractor that
`headstart.models.attach_head(encoder, num_classes)` turns into a classifier (semi-supervised
learning: pretrain on all images without labels, then fine-tune on a few labels).
"""

import math

import keras
from keras import layers

from headstart.models.activations import activation_layer, check_activation
from headstart.models.blocks import conv_unit, dense_unit, fresh, resolve_weights_options
from headstart.models.validation import (check_choice, check_dropout, check_input_shape, check_positive_int,
                               check_positive_ints)

KINDS = ("dense", "conv")
OUTPUT_ACTIVATIONS = ("sigmoid", "linear")


def build_autoencoder(input_shape=(32, 32, 1), *, kind="conv", latent_dim=32, hidden_units=(128,),
                      filters=(16, 32), activation="relu", dropout=0.0, batch_norm=False,
                      output_activation="sigmoid", kernel_initializer="auto", kernel_regularizer=None,
                      name=None):
    """Build an autoencoder with a nested `encoder` and `decoder`.

    Args:
        input_shape: shape of one example. `"conv"` needs (H, W, C) with H and W
            divisible by `2 ** len(filters)`. Defaults to `(32, 32, 1)`.
        kind: `"dense"` (flatten, dense layers) or `"conv"` (stride-2 convolutions,
            transposed convolutions back). Defaults to `"conv"`.
        latent_dim: size of the code, the encoder's output vector. Defaults to `32`.
        hidden_units: dense layer widths of a `"dense"` encoder (mirrored in the
            decoder). Defaults to `(128,)`.
        filters: channels of each stride-2 stage of a `"conv"` encoder (mirrored in the
            decoder). Defaults to `(16, 32)`.
        activation: one of `headstart.models.activations.ACTIVATIONS`. Defaults to `"relu"`.
        dropout: dropout rate after each hidden dense layer. Defaults to `0.0`.
        batch_norm: batch norm after each hidden layer. Defaults to `False`.
        output_activation: `"sigmoid"` for inputs scaled to [0, 1], `"linear"` otherwise.
            Defaults to `"sigmoid"`.
        kernel_initializer: initializer name or instance. Defaults to `"auto"`.
        kernel_regularizer: regularizer name or instance for every kernel. Defaults to `None`.
        name: the model's name. Defaults to `"autoencoder_<kind>"`.

    Returns:
        The uncompiled autoencoder; its parts are `model.get_layer("encoder")` and
        `model.get_layer("decoder")`.

    Example:
        >>> autoencoder = build_autoencoder((16, 16, 1), kind="conv", latent_dim=8)
        >>> autoencoder.get_layer("encoder").output_shape
        (None, 8)
    """
    check_choice(kind, KINDS, "kind")
    check_positive_int(latent_dim, "latent_dim")
    check_activation(activation)
    check_choice(output_activation, OUTPUT_ACTIVATIONS, "output_activation")
    dropout = check_dropout(dropout)
    initializer, regularizer = resolve_weights_options(kernel_initializer, kernel_regularizer, activation)
    unit = dict(activation=activation, batch_norm=batch_norm, initializer=initializer, regularizer=regularizer)

    if kind == "dense":
        input_shape = check_input_shape(input_shape)
        hidden_units = check_positive_ints(hidden_units, "hidden_units")
        encoder_in = keras.Input(shape=input_shape, name="inputs")
        x = layers.Flatten(name="flatten")(encoder_in)
        for index, units in enumerate(hidden_units, start=1):
            x = dense_unit(x, units, dropout=dropout, name=f"encoder{index}", **unit)
        code = layers.Dense(latent_dim, kernel_initializer=fresh(initializer), kernel_regularizer=regularizer,
                            name="code")(x)
        decoder_in = keras.Input(shape=(latent_dim,), name="code_in")
        y = decoder_in
        for index, units in enumerate(reversed(hidden_units), start=1):
            y = dense_unit(y, units, dropout=dropout, name=f"decoder{index}", **unit)
        y = layers.Dense(math.prod(input_shape), name="reconstruction_dense")(y)
        y = layers.Reshape(input_shape, name="reconstruction_reshape")(y)
    else:
        filters = check_positive_ints(filters, "filters", allow_empty=False)
        factor = 2 ** len(filters)
        input_shape = check_input_shape(input_shape, rank=3, min_spatial=factor)
        if input_shape[0] % factor or input_shape[1] % factor:
            raise ValueError(
                f"A conv autoencoder with {len(filters)} stages needs height and width divisible "
                f"by {factor} so the decoder can restore them. Received: input_shape={input_shape!r}"
            )
        encoder_in = keras.Input(shape=input_shape, name="image")
        x = encoder_in
        for index, stage_filters in enumerate(filters, start=1):
            x = conv_unit(x, stage_filters, strides=2, name=f"encoder{index}", **unit)
        feature_map_shape = tuple(x.shape[1:])
        x = layers.Flatten(name="flatten")(x)
        code = layers.Dense(latent_dim, kernel_initializer=fresh(initializer), kernel_regularizer=regularizer,
                            name="code")(x)
        decoder_in = keras.Input(shape=(latent_dim,), name="code_in")
        y = layers.Dense(math.prod(feature_map_shape), kernel_initializer=fresh(initializer),
                         kernel_regularizer=regularizer, name="decoder_dense")(decoder_in)
        y = activation_layer(activation, name="decoder_dense_act")(y)
        y = layers.Reshape(feature_map_shape, name="decoder_reshape")(y)
        for index, stage_filters in enumerate(reversed(filters), start=1):
            y = layers.Conv2DTranspose(stage_filters, 3, strides=2, padding="same",
                                       kernel_initializer=fresh(initializer), kernel_regularizer=regularizer,
                                       name=f"decoder{index}_deconv")(y)
            y = activation_layer(activation, name=f"decoder{index}_act")(y)
        y = layers.Conv2D(input_shape[-1], 3, padding="same", name="reconstruction_conv")(y)
    reconstruction = layers.Activation(output_activation, name="reconstruction")(y)

    encoder = keras.Model(encoder_in, code, name="encoder")
    decoder = keras.Model(decoder_in, reconstruction, name="decoder")
    inputs = keras.Input(shape=input_shape, name=encoder_in.name)
    return keras.Model(inputs, decoder(encoder(inputs)), name=name or f"autoencoder_{kind}")
