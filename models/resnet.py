"""Residual networks for small images (He et al. 2016), in the CIFAR and ResNet-18/34 shapes.

Stages are named `stage1`, `stage2`, ... and blocks `stageS_blockB`, so a recipe can
unfreeze "from stage3" by name.
"""

import keras
from keras import layers

from headstart.models.activations import activation_layer, check_activation
from headstart.models.blocks import conv_unit, resolve_weights_options
from headstart.models.heads import assemble, build_head
from headstart.models.validation import (check_choice, check_dropout, check_input_shape, check_num_classes,
                               check_positive_int, check_positive_ints)

BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("projection", "identity")
STEMS = ("cifar", "imagenet")
BOTTLENECK_EXPANSION = 4

# Depth presets: (block, blocks per stage, filters per stage). The CIFAR family is
# 6n+2 layers deep with 16/32/64 filters; the 18/34/50 family keeps its usual widths.
PRESETS = {
    "resnet8": ("basic", (1, 1, 1), (16, 32, 64)),
    "resnet14": ("basic", (2, 2, 2), (16, 32, 64)),
    "resnet20": ("basic", (3, 3, 3), (16, 32, 64)),
    "resnet32": ("basic", (5, 5, 5), (16, 32, 64)),
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
}


@keras.saving.register_keras_serializable(package="headstart")
class ZeroPadChannels(layers.Layer):
    """Append `pad` zero channels: the identity shortcut when a stage widens."""

    def __init__(self, pad, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, inputs):
        return keras.ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, self.pad]])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.pad,)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def _residual_block(x, filters, *, block, strides, shortcut, activation, batch_norm,
                    zero_init_residual, initializer, regularizer, name):
    out_filters = filters * BOTTLENECK_EXPANSION if block == "bottleneck" else filters
    # Zero gamma on the branch's last batch norm makes each block start as the identity
    # (Goyal et al. 2017), so a deep residual network starts as a shallow one.
    last_gamma = "zeros" if zero_init_residual else "ones"
    unit = dict(batch_norm=batch_norm, initializer=initializer, regularizer=regularizer)
    if block == "basic":
        y = conv_unit(x, filters, strides=strides, activation=activation, name=f"{name}_1", **unit)
        y = conv_unit(y, filters, activation=None, gamma_initializer=last_gamma, name=f"{name}_2", **unit)
    else:
        y = conv_unit(x, filters, kernel_size=1, activation=activation, name=f"{name}_1", **unit)
        y = conv_unit(y, filters, strides=strides, activation=activation, name=f"{name}_2", **unit)
        y = conv_unit(y, out_filters, kernel_size=1, activation=None, gamma_initializer=last_gamma,
                      name=f"{name}_3", **unit)

    if strides == 1 and x.shape[-1] == out_filters:
        residual = x
    elif shortcut == "projection":
        residual = conv_unit(x, out_filters, kernel_size=1, strides=strides, activation=None,
                             name=f"{name}_shortcut", **unit)
    else:
        # Parameter-free shortcut (option A of the ResNet paper): subsample, pad channels with zeros.
        residual = layers.MaxPooling2D(1, strides=strides, name=f"{name}_shortcut_pool")(x) if strides > 1 else x
        residual = ZeroPadChannels(out_filters - x.shape[-1], name=f"{name}_shortcut_pad")(residual)
    x = layers.Add(name=f"{name}_add")([residual, y])
    return activation_layer(activation, name=f"{name}_out")(x)


def build_resnet(input_shape=(32, 32, 3), num_classes=10, *, depth=None, block="basic",
                 stage_blocks=(1, 1, 1), stage_filters=(16, 32, 64), stem="cifar",
                 shortcut="projection", zero_init_residual=True, activation="relu", dropout=0.0,
                 batch_norm=True, kernel_initializer="auto", kernel_regularizer=None, name=None):
    """Build a residual network: `backbone` = stem and residual stages, `head` = pooling, logits.

    Args:
        input_shape: (height, width, channels). Each stage after the first halves the
            image (the `"imagenet"` stem halves it twice more), and the sides must allow
            it. Defaults to `(32, 32, 3)`.
        num_classes: number of classes; 1 gives a single binary logit. Defaults to `10`.
        depth: a preset name from `PRESETS` (`"resnet8"`, `"resnet20"`, `"resnet18"`, ...)
            that sets `block`, `stage_blocks` and `stage_filters`. Defaults to `None`
            (use those three arguments).
        block: `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1, 3x3, 1x1 with 4x
            expansion). Defaults to `"basic"`.
        stage_blocks: residual blocks per stage. Defaults to `(1, 1, 1)`.
        stage_filters: filters per stage. Defaults to `(16, 32, 64)`.
        stem: `"cifar"` (one 3x3 conv, for small images) or `"imagenet"` (7x7 stride 2
            and a 3x3 stride-2 max pool). Defaults to `"cifar"`.
        shortcut: when a block changes shape, `"projection"` (1x1 conv) or `"identity"`
            (subsample and zero-pad channels, no parameters). Shape-preserving blocks
            always use the identity. Defaults to `"projection"`.
        zero_init_residual: start each residual branch's last batch-norm gamma at zero,
            so every block starts as the identity. Ignored without batch norm.
            Defaults to `True`.
        activation: one of `headstart.models.activations.ACTIVATIONS`. Defaults to `"relu"`.
        dropout: dropout rate in the head, before the logits. Defaults to `0.0`.
        batch_norm: batch norm after each convolution. Defaults to `True`.
        kernel_initializer: initializer name or instance. Defaults to `"auto"`.
        kernel_regularizer: regularizer name or instance for every kernel. Defaults to `None`.
        name: the model's name. Defaults to the preset name, or `"resnet"`.

    Example:
        >>> model = build_resnet((32, 32, 3), 10, depth="resnet20")
        >>> model.get_layer("backbone").get_layer("stage3_block3_out").output.shape
        (None, 8, 8, 64)
    """
    if depth is not None:
        check_choice(depth, tuple(PRESETS), "depth")
        block, stage_blocks, stage_filters = PRESETS[depth]
    check_choice(block, BLOCKS, "block")
    stage_blocks = check_positive_ints(stage_blocks, "stage_blocks", allow_empty=False)
    stage_filters = check_positive_ints(stage_filters, "stage_filters", allow_empty=False)
    if len(stage_blocks) != len(stage_filters):
        raise ValueError(
            "`stage_blocks` and `stage_filters` must have one entry per stage. "
            f"Received: stage_blocks={stage_blocks!r}, stage_filters={stage_filters!r}"
        )
    check_choice(stem, STEMS, "stem")
    check_choice(shortcut, SHORTCUTS, "shortcut")
    halvings = len(stage_blocks) - 1 + (2 if stem == "imagenet" else 0)
    input_shape = check_input_shape(input_shape, rank=3, min_spatial=2 ** halvings)
    check_num_classes(num_classes)
    check_activation(activation)
    dropout = check_dropout(dropout)
    zero_init_residual = bool(zero_init_residual and batch_norm)
    initializer, regularizer = resolve_weights_options(kernel_initializer, kernel_regularizer, activation)
    unit = dict(batch_norm=batch_norm, initializer=initializer, regularizer=regularizer)

    inputs = keras.Input(shape=input_shape, name="image")
    if stem == "cifar":
        x = conv_unit(inputs, stage_filters[0], activation=activation, name="stem", **unit)
    else:
        x = conv_unit(inputs, stage_filters[0], kernel_size=7, strides=2, activation=activation,
                      name="stem", **unit)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (blocks, filters) in enumerate(zip(stage_blocks, stage_filters), start=1):
        for index in range(1, blocks + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = _residual_block(x, filters, block=block, strides=strides, shortcut=shortcut,
                                activation=activation, zero_init_residual=zero_init_residual,
                                name=f"stage{stage}_block{index}", **unit)
    backbone = keras.Model(inputs, x, name="backbone")
    head = build_head(backbone.output_shape[1:], num_classes, dropout=dropout,
                      kernel_regularizer=kernel_regularizer)
    return assemble(backbone, head, name or depth or "resnet")
