"""Backbones by name: the `keras.applications` families and the project's own builders.

A backbone is a Keras model named `"backbone"` that maps images to features: a feature
map (`include_top=False`, no pooling) for the `keras.applications` families and the
project's ResNets and CNN, a feature vector for an autoencoder's encoder. The head comes
from `headstart.models.heads`, so every classifier is `inputs -> backbone -> head`.

    from headstart.models import backbones
    backbones.check_backbone_options("mobilenet_v2", 160, "imagenet")   # cheap: before any build
    model = backbones.build_classifier("mobilenet_v2", num_classes=5, image_size=160, weights="imagenet")
    images = backbones.get_spec("mobilenet_v2").preprocess(images_0_to_255)

Names: `keras.applications` models keep Keras' names in lower case with underscores
(`mobilenet_v2`, `efficientnet_b0`, `efficientnet_v2_s`, `resnet50_v2`, `convnext_tiny`);
the project's own keep their `headstart.models.registry` names (`resnet8`, `resnet20`, `cnn`,
`autoencoder_conv`). Where both have a name, `resnet50`, Keras' ImageNet ResNet-50 wins
and the project's own ResNet-50 preset is not offered as a backbone (it stays available
as `headstart.models.create_model("resnet50")`).

Weights: `None` (random), `"imagenet"` (downloaded once by Keras into
`$KERAS_HOME/models`, `~/.keras/models` by default; offline and not cached, this fails at
once with the command that fetches the file elsewhere), or a file: a `.keras` model (its
`backbone` or `encoder` sub-model, e.g. a `headstart pretrain` run's `best.keras`), or a
`.weights.h5` / `.h5` weights file.
"""

import dataclasses
import difflib
import os
import warnings
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from headstart.models.heads import attach_head
from headstart.models.registry import create_model
from headstart.models.resnet import PRESETS
from headstart.recipes.errors import UsageError

IMAGENET = "imagenet"
MODEL_FILE_SUFFIXES = (".keras",)
WEIGHTS_FILE_SUFFIXES = (".weights.h5", ".h5")
OWN = "own"


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What `build_backbone` needs to know about one backbone, readable without building it.

    Attributes:
        name: the registry name (`"mobilenet_v2"`, `"resnet8"`).
        family: the `keras.applications` family (`"efficientnet"`, `"resnet_v2"`, ...)
            or `"own"` for the project's builders.
        min_size: smallest image side the network accepts.
        default_size: the image side it was designed (and, for Keras, pretrained) for.
        max_size: largest image side, or `None` (all of these are fully convolutional).
        channels: accepted channel counts: `(3,)` for `keras.applications` (RGB), `(1, 3)`
            for the project's own.
        preprocess: maps float32 images in [0, 255] to what the network expects; works on
            NumPy arrays (never in place) and on tensors in a `tf.data` pipeline.
        constructor: the `keras.applications` function (`"MobileNetV2"`), or `None`.
        imagenet_file: the file name Keras caches the no-top ImageNet weights under, with
            `{size}` for families that have weights per input size; `None` if the backbone
            has no ImageNet weights.
        imagenet_sizes: the sizes that have their own ImageNet weights; at any other size
            Keras loads the 224 ones. Empty when there is only one file.
        size_multiple: image sides must be a multiple of this (a conv autoencoder's decoder
            must restore the size). Defaults to `1`.
    """

    name: str
    family: str
    min_size: int
    default_size: int
    max_size: int | None
    channels: tuple[int, ...]
    preprocess: Callable = dataclasses.field(repr=False, compare=False)
    constructor: str | None = None
    imagenet_file: str | None = None
    imagenet_sizes: tuple[int, ...] = ()
    size_multiple: int = 1

    @property
    def has_imagenet_weights(self):
        return self.imagenet_file is not None

    def imagenet_file_for(self, image_size):
        """The cached weights file Keras looks for at `image_size` (see `keras.applications`)."""
        size = image_size if image_size in self.imagenet_sizes else 224
        return self.imagenet_file.format(size=size)


def scale_to_unit_interval(images):
    """The project's own backbones expect images in [0, 1]."""
    return images / 255.0


def _keras_preprocess(module_name):
    preprocess_input = getattr(keras.applications, module_name).preprocess_input

    def preprocess(images):
        # Keras' NumPy path scales float arrays in place: copy, so the caller's data stays put.
        if isinstance(images, np.ndarray):
            images = images.astype("float32", copy=True)
        return preprocess_input(images)

    preprocess.__name__ = f"{module_name}_preprocess_input"
    return preprocess


# ## keras.applications
# family: (keras.applications module with the family's preprocess_input, min image side).
# The minimum sides are the ones Keras enforces (`obtain_input_shape(min_size=...)`).
_FAMILIES = {
    "mobilenet": ("mobilenet", 32),
    "mobilenet_v2": ("mobilenet_v2", 32),
    "mobilenet_v3": ("mobilenet_v3", 32),
    "efficientnet": ("efficientnet", 32),
    "efficientnet_v2": ("efficientnet_v2", 32),
    "resnet": ("resnet", 32),
    "resnet_v2": ("resnet_v2", 32),
    "densenet": ("densenet", 32),
    "convnext": ("convnext", 32),
    "xception": ("xception", 71),
    "inception_v3": ("inception_v3", 75),
    "inception_resnet_v2": ("inception_resnet_v2", 75),
    "vgg": ("vgg16", 32),
}
# MobileNet V1 and V2 have ImageNet weights for several input sizes.
_IMAGENET_SIZES = {"mobilenet": (128, 160, 192, 224), "mobilenet_v2": (96, 128, 160, 192, 224)}

# name: (keras.applications constructor, family, default size, no-top ImageNet weights file).
# The file names are the ones each family's source passes to `keras.utils.get_file`.
_APPLICATIONS = {
    "mobilenet": ("MobileNet", "mobilenet", 224, "mobilenet_1_0_{size}_tf_no_top.h5"),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", 224,
                     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5"),
    "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3", 224,
                           "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "mobilenet_v3_large": ("MobileNetV3Large", "mobilenet_v3", 224,
                           "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    **{f"efficientnet_b{index}": (f"EfficientNetB{index}", "efficientnet", size, f"efficientnetb{index}_notop.h5")
       for index, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    **{f"efficientnet_v2_{variant}": (f"EfficientNetV2{variant.upper()}", "efficientnet_v2", size,
                                      f"efficientnetv2-{variant}_notop.h5")
       for variant, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384), ("m", 480), ("l", 480))},
    **{f"resnet{depth}": (f"ResNet{depth}", "resnet", 224, f"resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")
       for depth in (50, 101, 152)},
    **{f"resnet{depth}_v2": (f"ResNet{depth}V2", "resnet_v2", 224,
                             f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5")
       for depth in (50, 101, 152)},
    **{f"densenet{depth}": (f"DenseNet{depth}", "densenet", 224,
                            f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")
       for depth in (121, 169, 201)},
    **{f"convnext_{size}": (f"ConvNeXt{title}", "convnext", 224, f"convnext_{size}_notop.h5")
       for size, title in (("tiny", "Tiny"), ("small", "Small"), ("base", "Base"), ("large", "Large"),
                           ("xlarge", "XLarge"))},
    "xception": ("Xception", "xception", 299, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_v3": ("InceptionV3", "inception_v3", 299, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_resnet_v2": ("InceptionResNetV2", "inception_resnet_v2", 299,
                            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg16": ("VGG16", "vgg", 224, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "vgg19": ("VGG19", "vgg", 224, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}

# ## The project's own builders
# name: (min image side, default image side, size multiple). Each stage after the first
# halves the image, so a ResNet with S stages needs 2 ** (S - 1) pixels; the CNN has three
# halving blocks, the conv autoencoder two stride-2 stages that its decoder must undo.
_OWN = {
    **{depth: (2 ** (len(stage_blocks) - 1), 32, 1)
       for depth, (_, stage_blocks, _) in PRESETS.items() if depth not in _APPLICATIONS},
    "cnn": (8, 32, 1),
    "autoencoder_conv": (4, 32, 4),
    "autoencoder_dense": (1, 8, 1),   # the 8x8 digits it is made for
}


def _make_specs():
    specs = {}
    for name, (constructor, family, default_size, imagenet_file) in _APPLICATIONS.items():
        module_name, min_size = _FAMILIES[family]
        specs[name] = BackboneSpec(
            name=name, family=family, min_size=min_size, default_size=default_size, max_size=None,
            channels=(3,), preprocess=_keras_preprocess(module_name), constructor=constructor,
            imagenet_file=imagenet_file, imagenet_sizes=_IMAGENET_SIZES.get(family, ()),
        )
    for name, (min_size, default_size, size_multiple) in _OWN.items():
        specs[name] = BackboneSpec(
            name=name, family=OWN, min_size=min_size, default_size=default_size, max_size=None,
            channels=(1, 3), preprocess=scale_to_unit_interval, size_multiple=size_multiple,
        )
    return specs


_SPECS = _make_specs()


def list_backbones():
    """The registered backbone names: `keras.applications` ones first, then the project's own."""
    return list(_SPECS)


def get_spec(name):
    """The `BackboneSpec` of `name`; an unknown name raises `UsageError` with close matches."""
    if name in _SPECS:
        return _SPECS[name]
    close = difflib.get_close_matches(str(name), list(_SPECS), n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}? (`headstart list backbones` lists all)" if close
            else f"known backbones: {', '.join(_SPECS)}")
    raise UsageError(f"Unknown backbone; {hint}. Received: backbone={name!r}")


# ## Checks that cost no model building

def check_backbone_options(name, image_size, weights=None, channels=None):
    """Validate a backbone choice before TensorFlow builds anything; returns its spec.

    Raises `UsageError` for an unknown backbone, an image size outside the backbone's
    range, channels it cannot take, a weights file that is missing or of an unknown
    kind, `"imagenet"` for a backbone without ImageNet weights, and `"imagenet"` when the
    weights are not cached and the network is unreachable. Whether a weights file fits
    the architecture is only known when it is loaded (`build_backbone`).

    Args:
        name: a name from `list_backbones()`.
        image_size: side of the square input images, in pixels.
        weights: `None`, `"imagenet"`, or a path to a `.keras`, `.weights.h5` or `.h5` file.
            Defaults to `None`.
        channels: image channels, or `None` to skip that check. Defaults to `None`.
    """
    spec = get_spec(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"The image size must be a positive integer. Received: image_size={image_size!r}")
    if image_size < spec.min_size:
        raise UsageError(f"{name} needs images of at least {spec.min_size}x{spec.min_size} pixels "
                         f"(its default is {spec.default_size}). Received: image_size={image_size}")
    if spec.max_size is not None and image_size > spec.max_size:
        raise UsageError(f"{name} takes images of at most {spec.max_size}x{spec.max_size} pixels. "
                         f"Received: image_size={image_size}")
    if image_size % spec.size_multiple:
        raise UsageError(f"{name} needs an image size that is a multiple of {spec.size_multiple}. "
                         f"Received: image_size={image_size}")
    if channels is not None and channels not in spec.channels:
        raise UsageError(f"{name} takes images with {' or '.join(map(str, spec.channels))} channels "
                         f"(keras.applications need RGB). Received: channels={channels!r}")
    if weights == IMAGENET:
        _check_imagenet_available(spec, image_size)
    elif weights is not None:
        _check_weights_file(weights)
    return spec


def _check_weights_file(weights):
    path = Path(weights)
    if not str(path).endswith(MODEL_FILE_SUFFIXES + WEIGHTS_FILE_SUFFIXES):
        raise UsageError(f"Weights must be 'imagenet', none, or a file ending in .keras, .weights.h5 or .h5. "
                         f"Received: weights={str(weights)!r}")
    if not path.is_file():
        raise UsageError(f"The weights file does not exist: {path}. Received: weights={str(weights)!r}")


def weights_cache_dir():
    """Where Keras caches downloaded weights: `$KERAS_HOME/models`, else `~/.keras/models`.

    This mirrors `keras.utils.get_file`, which falls back to `/tmp/.keras` when the home
    directory is not writable.
    """
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]) / "models"
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras" / "models"


def _check_imagenet_available(spec, image_size):
    if not spec.has_imagenet_weights:
        raise UsageError(f"{spec.name} is one of the project's own backbones and has no ImageNet weights: "
                         f"pass --weights PATH (e.g. a `headstart pretrain` model) or none. "
                         f"Received: weights='imagenet'")
    file_name = spec.imagenet_file_for(image_size)
    if (weights_cache_dir() / file_name).is_file():
        return
    from headstart.recipes import network   # looked up at call time, so tests can fake the answer

    if not network.is_online():
        raise UsageError(_imagenet_unavailable_message(spec, image_size, "no network"))


def _imagenet_unavailable_message(spec, image_size, reason):
    file_name = spec.imagenet_file_for(image_size)
    command = (f"python -c \"import keras; keras.applications.{spec.constructor}(include_top=False, "
               f"weights='imagenet', input_shape=({image_size}, {image_size}, 3))\"")
    return (f"ImageNet weights for {spec.name} are not cached and cannot be downloaded ({reason}): "
            f"on a machine with internet run `{command}` and copy ~/.keras/models/{file_name} "
            f"to {weights_cache_dir()}/ here, or pass --weights PATH")


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
    else:
        backbone = _build_application(spec, input_shape, weights if weights == IMAGENET else None)
    if weights is not None and weights != IMAGENET:
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
    return attach_head(backbone, num_classes, name=name, **head_options)


def _build_application(spec, input_shape, weights):
    constructor = getattr(keras.applications, spec.constructor)
    try:
        # Keras' own model name is kept: EfficientNet and ConvNeXt derive the weights file from it.
        application = constructor(include_top=False, weights=weights, input_shape=input_shape, pooling=None)
    except Exception as error:
        # `keras.utils.get_file` raises a bare Exception when a download fails.
        if weights == IMAGENET and "URL fetch failure" in str(error):
            raise UsageError(_imagenet_unavailable_message(spec, input_shape[0], "the download failed")) from error
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
    from headstart import models   # noqa: F401  registers the project's layers, initializers and regularizers

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
