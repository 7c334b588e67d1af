"""Backbones by name: the `keras.applications` families and the project's own builders.

A backbone is a Keras model named `"backbone"` that maps images to features: a feature
map (`include_top=False`, no pooling) for the `keras.applications` families and the
project's ResNets and CNN, a feature vector for an autoencoder's encoder. The head comes
from `headstart.models.heads`, so every classifier is `inputs -> backbone -> head`.

    from headstart.models import backbones
    backbones.check_backbone_options("mobilenet_v2", 160, "imagenet")   # cheap: before any build
    model = backbones.build_classifier("mobilenet_v2", num_classes=5, image_size=160, weights="imagenet")
    images = backbones.get_spec("mobilenet_v2").preprocess(images_0_to_255)

The registry itself (names, sizes, weights files, `get_spec`, `check_backbone_options`) is
`headstart.models.backbone_specs`, which imports no Keras, so recipes validate options with it
before TensorFlow starts; this module re-exports it and builds from the same table.

Names: see `headstart.models.backbone_specs`.

Weights: `None` (random), `"imagenet"` (downloaded once by Keras into
`$KERAS_HOME/models`, `~/.keras/models` by default; offline and not cached, this fails at
once with the command that fetches the file elsewhere), or a file: a `.keras` model (its
`backbone` or `encoder` sub-model, e.g. a `headstart pretrain` run's `best.keras`), or a
`.weights.h5` / `.h5` weights file.
"""

import warnings
from pathlib import Path

import keras

# Importing these registers the project's layers, initializers, regularizers and
# LayerRateOptimizer with Keras, so the `.keras` files `--weights` names can be loaded.
from headstart.models import initializers, layer_rates, regularizers, resnet  # noqa: F401
from headstart.models.backbone_specs import (HUB, IMAGENET, MODEL_FILE_SUFFIXES, OWN, PRESET, WEIGHTS_FILE_SUFFIXES,  # noqa: F401
                                             BackboneSpec, check_backbone_options, get_spec,
                                             imagenet_unavailable_message, list_backbones, own_backbones,
                                             scale_to_unit_interval, weights_cache_dir)
from headstart.models.heads import attach_head
from headstart.models.registry import create_model
from headstart.recipes.errors import UsageError

# ## Building

def build_backbone(name, image_size, weights=None, channels=3):
    """Build the backbone `name` for square images, named `"backbone"`.

    The options are checked first (`check_backbone_options`), so mistakes raise
    `UsageError` before anything is built.

    Args:
        name: a name from `list_backbones()`.
        image_size: side of the square input images, in pixels.
        weights: `None` (random initialisation), `"imagenet"` (Keras downloads the
            no-top weights once and caches them), a `.keras` model file (the weights of
            its `backbone` or `encoder` sub-model, or of the whole model if it has
            neither, copied into a fresh build, so a backbone trained at one image size
            can start another), or a `.weights.h5` / `.h5` weights file saved from this
            backbone (or from a model whose first sub-model is this backbone).
            Defaults to `None`.
        channels: image channels; `keras.applications` need 3. Defaults to `3`.

    Returns:
        A Functional model named `"backbone"`: images of shape
        `(image_size, image_size, channels)` to a feature map (H, W, C), or, for an
        autoencoder's encoder, a feature vector.

    Example:
        >>> backbone = build_backbone("resnet8", 16)
        >>> backbone.output_shape
        (None, 4, 4, 64)
    """
    spec = check_backbone_options(name, image_size, weights, channels)
    input_shape = (image_size, image_size, channels)
    if spec.family == OWN:
        backbone = _build_own(spec, input_shape)
    elif spec.family == HUB:
        from headstart.models import hub_backbones   # imports KerasHub: only for hub backbones

        backbone = hub_backbones.build(spec.hub_preset, image_size, weights if weights == PRESET else None)
    else:
        backbone = _build_application(spec, input_shape, weights if weights == IMAGENET else None)
    if weights is not None and weights not in (IMAGENET, PRESET):
        _load_weights_file(backbone, Path(weights), spec, input_shape)
    return backbone


def build_classifier(name, num_classes, image_size, weights=None, channels=3, **head_options):
    """`inputs -> backbone -> head`: `build_backbone` plus a new `headstart.models.heads.build_head` head.

    Args:
        name: a name from `list_backbones()`; also the classifier's name.
        num_classes: number of classes; 1 gives a single binary logit.
        image_size: side of the square input images, in pixels.
        weights: see `build_backbone`. Defaults to `None`.
        channels: image channels. Defaults to `3`.
        **head_options: passed to `build_head` (`pooling`, `hidden_units`, `dropout`, ...).

    Example:
        >>> model = build_classifier("resnet8", num_classes=5, image_size=16, dropout=0.2)
        >>> [layer.name for layer in model.layers[1:]]
        ['backbone', 'head']
    """
    backbone = build_backbone(name, image_size, weights, channels)
    # A Keras name has no "/" (a `hub:/path/to/preset` backbone): the folder's name stands for it.
    model_name = name if "/" not in name else "hub_" + Path(name.rstrip("/")).name
    return attach_head(backbone, num_classes, name=model_name, **head_options)


def _build_application(spec, input_shape, weights):
    constructor = getattr(keras.applications, spec.constructor)
    try:
        # Keras' own model name is kept: EfficientNet and ConvNeXt derive the weights file from it.
        application = constructor(include_top=False, weights=weights, input_shape=input_shape, pooling=None)
    except Exception as error:
        # `keras.utils.get_file` raises a bare Exception when a download fails.
        if weights == IMAGENET and "URL fetch failure" in str(error):
            raise UsageError(imagenet_unavailable_message(spec, input_shape[0], "the download failed")) from error
        raise
    # A new Functional over the same layers and weights, under the name every recipe looks for.
    return keras.Model(application.input, application.output, name="backbone")


def _build_own(spec, input_shape):
    model = create_model(spec.name, input_shape=input_shape,
                         **({} if spec.name.startswith("autoencoder") else {"num_classes": 2}))
    part = _feature_part(model)
    return part if part.name == "backbone" else keras.Model(part.input, part.output, name="backbone")


def _feature_part(model):
    """A model's `backbone` (classifiers) or `encoder` (autoencoders) sub-model, else `None`."""
    parts = {layer.name: layer for layer in model.layers if layer.name in ("backbone", "encoder")}
    return parts.get("backbone", parts.get("encoder"))


# ## Weights files

def _load_weights_file(backbone, path, spec, input_shape):
    if str(path).endswith(MODEL_FILE_SUFFIXES) or _is_legacy_model_file(path):
        model = _load_model(path)
        part = _feature_part(model)
        _copy_weights(model if part is None else part, backbone, path, spec, input_shape)
        return
    # A backbone's own weights; failing that, a classifier's or autoencoder's, whose first
    # sub-model is the backbone (Keras keys `.weights.h5` entries by position and class).
    try:
        _load_weights_quietly(backbone, path)
        return
    except OSError as error:
        raise UsageError(f"{path} is not a readable weights file ({_first_line(error)})") from error
    except (ValueError, KeyError) as error:
        mismatch = error
    inputs = keras.Input(shape=input_shape)
    try:
        _load_weights_quietly(keras.Model(inputs, backbone(inputs)), path)
    except (ValueError, KeyError):
        raise UsageError(f"{path} does not match backbone {spec.name} with inputs {_shape_text(input_shape)} "
                         f"({_first_line(mismatch)}); save the backbone's weights with "
                         f"`model.get_layer('backbone').save_weights(...)` or pass the .keras model") from mismatch


def _load_weights_quietly(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Keras warns about every layer it skips before it raises
        model.load_weights(path)


def _is_legacy_model_file(path):
    """An `.h5` file saved with `model.save`, as opposed to `save_weights`."""
    if not str(path).endswith(".h5") or str(path).endswith(".weights.h5"):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as file:
            return "model_config" in file.attrs
    except OSError as error:
        raise UsageError(f"{path} is not a readable HDF5 file ({_first_line(error)})") from error


def _load_model(path):
    from headstart import models

    models.register_keras_objects(path)   # a KerasHub backbone's layers, if the file has them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.saving.load_model(path, compile=False)
    except Exception as error:   # a user's file: any failure to read it is a usage error
        raise UsageError(f"Could not load the model in {path}: {_first_line(error)}") from error


def _copy_weights(source, backbone, path, spec, input_shape):
    """Copy `source`'s weights into `backbone` if the two are the same architecture."""
    values = source.get_weights()
    targets = backbone.weights
    if len(values) != len(targets):
        detail = f"it has {len(values)} weight tensors, the backbone {len(targets)}"
    else:
        detail = next((f"{variable.path} has shape {tuple(value.shape)} there, {tuple(variable.shape)} here"
                       for value, variable in zip(values, targets) if tuple(value.shape) != tuple(variable.shape)),
                      None)
    if detail:
        raise UsageError(f"The model in {path} does not match backbone {spec.name} with inputs "
                         f"{_shape_text(input_shape)}: {detail}")
    backbone.set_weights(values)


def _shape_text(input_shape):
    return "x".join(map(str, input_shape))


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
