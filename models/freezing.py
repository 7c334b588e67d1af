"""Freeze and unfreeze a backbone: all of it, its top layers, or from a block upwards.

    freeze(model.get_layer("backbone"))                       # phase 1: train the head only
    unfreeze(model.get_layer("backbone"), from_layer="stage3")  # phase 2: stage3 and above too
    model.compile(...)                                         # a change of `trainable` needs a recompile

Keras 3 semantics this relies on (tests/test_freezing.py checks them):
- Setting `trainable` on a model sets it on every layer inside it, and a model whose own
  flag is `False` exposes no trainable weights whatever its layers say. So unfreezing part
  of a backbone sets the backbone trainable first, then refreezes the layers below.
- Except that, under the TensorFlow backend, `model.trainable = True` does nothing at all
  when the model is already trainable (its `__setattr__` skips `self.x = self.x`), leaving
  layers inside it frozen. The helpers here therefore set every layer explicitly.
- A `BatchNormalization` layer with `trainable=False` runs in inference mode even during
  `fit`: it normalises with its moving statistics and does not update them. The Keras
  transfer-learning guide's rule is to keep it that way when fine-tuning (the `"frozen"`
  policy): batch statistics of a small target dataset would wreck the pretrained ones.
"""

import dataclasses
import difflib
import re

from keras import layers

BATCH_NORM_POLICIES = ("frozen", "train")

# A block is the name's shortest prefix that ends in a number, at a "_" boundary:
# "conv2_block1_1_conv" -> "conv2", "stage3_block2_out" -> "stage3", "block_13_expand" ->
# "block_13", "mixed7" -> "mixed7". Its sub-block adds one letter ("block6a_expand" ->
# "block6a", EfficientNet) or a "_blockN" part ("conv2_block1", "stage3_block2").
_BLOCK = re.compile(r"^(?P<block>.*?\d+)(?P<sub>[a-z]?(?:_block_?\d+)?)(?=_|$)")


@dataclasses.dataclass(frozen=True)
class TrainableSummary:
    """How much of a model trains: counts of layers, weight tensors and parameters."""

    trainable_layers: int
    layers: int
    trainable_weights: int
    trainable_parameters: int

    def __str__(self):
        return (f"{self.trainable_layers}/{self.layers} layers trainable, "
                f"{self.trainable_weights} weight tensors ({self.trainable_parameters:,} parameters)")


def trainable_summary(model):
    """Count the trainable layers (those with trainable weights), weight tensors and parameters."""
    all_layers = _layers(model)
    weights = model.trainable_weights
    return TrainableSummary(
        trainable_layers=sum(1 for layer in all_layers if _owns_trainable_weights(layer)),
        layers=len(all_layers),
        trainable_weights=len(weights),
        trainable_parameters=int(sum(_size(weight.shape) for weight in weights)),
    )


def freeze(model_or_layer):
    """Make every weight of a model or layer non-trainable; returns a `TrainableSummary`.

    Recompile the model that contains it for the change to take effect in `fit`.
    """
    _set_trainable(model_or_layer, False)
    return trainable_summary(model_or_layer)


def unfreeze(backbone, *, top_layers=None, from_layer=None, batch_norm="frozen"):
    """Make the top of a backbone trainable and keep the layers below it frozen.

    With neither `top_layers` nor `from_layer`, the whole backbone is unfrozen. Layers
    count in `backbone.layers` order (topological, inputs first), input layers excluded,
    as in the Keras guide's `model.layers[-n:]`. Recompile the model that contains the
    backbone for the change to take effect in `fit`.

    Args:
        backbone: a Functional model (or any model with `.layers`).
        top_layers: unfreeze that many layers from the top. Defaults to `None`.
        from_layer: unfreeze from the first layer whose name equals this or starts with
            it at a `_` boundary, up to the top: a layer name (`"conv5_block1_1_conv"`)
            or a block (`"stage3"`, `"conv5_block1"`, `"block5"`; `"block6"` also matches
            EfficientNet's `"block6a_..."`). Defaults to `None`.
        batch_norm: `"frozen"` keeps every batch-norm layer non-trainable, so it stays in
            inference mode with its moving statistics fixed; `"train"` lets the unfrozen
            ones learn and update their statistics. Defaults to `"frozen"`.

    Returns:
        The backbone's `TrainableSummary`.

    Raises:
        ValueError: both `top_layers` and `from_layer` given, `top_layers` not in
            1..number of layers, `from_layer` matching no layer (the message lists the
            backbone's blocks), or an unknown `batch_norm` policy. Nothing is changed then.

    Example:
        >>> backbone = models.create_model("resnet20").get_layer("backbone")
        >>> freeze(backbone).trainable_weights
        0
        >>> unfreeze(backbone, from_layer="stage3").trainable_layers   # its 7 convolutions
        7
    """
    if batch_norm not in BATCH_NORM_POLICIES:
        raise ValueError(f"`batch_norm` must be one of {', '.join(map(repr, BATCH_NORM_POLICIES))}. "
                         f"Received: batch_norm={batch_norm!r}")
    if top_layers is not None and from_layer is not None:
        raise ValueError("Pass `top_layers` or `from_layer`, not both. "
                         f"Received: top_layers={top_layers!r}, from_layer={from_layer!r}")
    candidates = _layers(backbone)
    if top_layers is not None:
        start = len(candidates) - _check_top_layers(top_layers, len(candidates))
    elif from_layer is not None:
        start = _first_match(candidates, from_layer, backbone)
    else:
        start = 0

    _set_trainable(backbone, True)
    for layer in candidates[:start]:
        _set_trainable(layer, False)
    if batch_norm == "frozen":
        for layer in _walk(backbone):
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    return trainable_summary(backbone)


def block_names(backbone, sub_blocks=False):
    """The backbone's blocks in order: `["stage1", "stage2", "stage3"]`, `["conv2", ..., "conv5"]`.

    A block is a layer-name prefix ending in a number (see `_BLOCK`); layers named
    automatically by Keras (`conv2d_3`, `activation_7`) belong to none. Every name
    returned is a valid `unfreeze(from_layer=...)`.

    Args:
        backbone: a model with `.layers`.
        sub_blocks: also list sub-blocks after their block (`"stage3_block1"`,
            `"conv5_block2"`, EfficientNet's `"block6a"`). Defaults to `False`.
    """
    names = []
    for layer in _layers(backbone):
        match = _BLOCK.match(layer.name)
        if match is None or _is_automatic_name(layer):
            continue
        names.append(match["block"])
        if sub_blocks and match["sub"]:
            names.append(match["block"] + match["sub"])
    return list(dict.fromkeys(names))


def _layers(model):
    """The layers that count: `model.layers` without input layers."""
    return [layer for layer in getattr(model, "layers", [model]) if not isinstance(layer, layers.InputLayer)]


def _set_trainable(layer, value):
    """Set `trainable` on `layer` and, explicitly, on every layer inside it (see the module notes)."""
    for inner in _walk(layer):
        inner.trainable = value


def _walk(layer):
    """`layer` and every layer nested in it, depth first."""
    yield layer
    for inner in getattr(layer, "layers", []):
        yield from _walk(inner)


def _owns_trainable_weights(layer):
    return bool(layer.trainable_weights)


def _size(shape):
    size = 1
    for dimension in shape:
        size *= int(dimension)
    return size


def _check_top_layers(top_layers, count):
    if isinstance(top_layers, bool) or not isinstance(top_layers, int) or not 1 <= top_layers <= count:
        raise ValueError(f"`top_layers` must be an integer from 1 to {count} (the backbone's layers). "
                         f"Received: top_layers={top_layers!r}")
    return top_layers


def _name_matches(name, prefix):
    if name == prefix or name.startswith(prefix + "_"):
        return True
    # EfficientNet numbers blocks "block6a", "block6b": "block6" takes them all.
    rest = name[len(prefix):]
    return name.startswith(prefix) and prefix[-1:].isdigit() and rest[:1].islower() and rest[1:2] in ("", "_")


def _first_match(candidates, from_layer, backbone):
    for index, layer in enumerate(candidates):
        if _name_matches(layer.name, from_layer):
            return index
    blocks = block_names(backbone)
    close = difflib.get_close_matches(str(from_layer), blocks + [layer.name for layer in candidates], n=3)
    known = ", ".join(blocks[:12]) + (", ..." if len(blocks) > 12 else "") if blocks else "none"
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"No layer is named or starts with {from_layer!r}. {hint}"
                     f"Its blocks: {known} (or any layer name). Received: from_layer={from_layer!r}")


def _is_automatic_name(layer):
    """Whether Keras named the layer after its class (`Conv2D` -> `conv2d`, `conv2d_3`)."""
    class_name = type(layer).__name__
    snake = re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)).lower()
    return re.fullmatch(rf"{re.escape(snake)}(_\d+)?", layer.name) is not None
