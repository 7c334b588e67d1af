"""The backbone registry: every backbone's name, family, input sizes and ImageNet weights file.

Keras-free on purpose: a recipe checks `--backbone`, `--image-size` and `--weights` with it
before anything imports TensorFlow, so a mistake is answered in a fraction of a second.
`headstart.models.backbones` builds from this same table (it re-exports everything here).

    from headstart.models import backbone_specs
    spec = backbone_specs.check_backbone_options("mobilenet_v2", 160, "imagenet")   # no Keras import
    spec.min_size, spec.default_size, spec.imagenet_file_for(160)
    spec.preprocess   # the one attribute that imports Keras (keras.applications backbones only)

Names: `keras.applications` models keep Keras' names in lower case with underscores
(`mobilenet_v2`, `efficientnet_b0`, `efficientnet_v2_s`, `resnet50_v2`, `convnext_tiny`);
the project's own keep their `headstart.models.registry` names (`resnet8`, `resnet20`, `cnn`,
`autoencoder_conv`); KerasHub presets are `hub:PRESET` or `hub:/path/to/preset`
(`headstart.models.hub_presets`, also Keras-free). Where both have a name, `resnet50`, Keras' ImageNet ResNet-50 wins
and the project's own ResNet-50 preset is not offered as a backbone (it stays available
as `headstart.models.create_model("resnet50")`).
"""

import dataclasses
import difflib
import functools
import os
from pathlib import Path

from headstart.recipes.errors import UsageError

IMAGENET = "imagenet"
HUB = "hub"             # the family of `hub:PRESET` backbones (headstart.models.hub_presets)
PRESET = "preset"       # --weights preset: a hub backbone's own weights
MODEL_FILE_SUFFIXES = (".keras",)
WEIGHTS_FILE_SUFFIXES = (".weights.h5", ".h5")
OWN = "own"


def scale_to_unit_interval(images):
    """The project's own backbones expect images in [0, 1]."""
    return images / 255.0


@functools.cache
def _keras_preprocess(module_name):
    """`keras.applications.<module_name>.preprocess_input`, made safe for NumPy input (one per family)."""
    import keras
    import numpy as np

    preprocess_input = getattr(keras.applications, module_name).preprocess_input

    def preprocess(images):
        # Keras' NumPy path scales float arrays in place: copy, so the caller's data stays put.
        if isinstance(images, np.ndarray):
            images = images.astype("float32", copy=True)
        return preprocess_input(images)

    preprocess.__name__ = f"{module_name}_preprocess_input"
    return preprocess


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
        constructor: the `keras.applications` function (`"MobileNetV2"`), or `None`.
        imagenet_file: the file name Keras caches the no-top ImageNet weights under, with
            `{size}` for families that have weights per input size; `None` if the backbone
            has no ImageNet weights.
        imagenet_sizes: the sizes that have their own ImageNet weights; at any other size
            Keras loads the 224 ones. Empty when there is only one file.
        size_multiple: image sides must be a multiple of this (a conv autoencoder's decoder
            must restore the size). Defaults to `1`.
        preprocess_module: the `keras.applications` module whose `preprocess_input` the
            backbone expects, or `None` for scaling to [0, 1]. Defaults to `None`.
    """

    name: str
    family: str
    min_size: int
    default_size: int
    max_size: int | None
    channels: tuple[int, ...]
    constructor: str | None = None
    imagenet_file: str | None = None
    imagenet_sizes: tuple[int, ...] = ()
    size_multiple: int = 1
    preprocess_module: str | None = None
    hub_preset: object = None   # a `hub_presets.HubPreset` for `hub:` backbones

    @property
    def preprocess(self):
        """Maps float32 images in [0, 255] to what the network expects; works on NumPy arrays
        (never in place) and on tensors in a `tf.data` pipeline.

        A property, not a field: a `keras.applications` backbone's function comes from Keras,
        which is imported here, on first access, and not when the registry is read.
        """
        if self.preprocess_module is None:
            return scale_to_unit_interval
        return _keras_preprocess(self.preprocess_module)

    @property
    def has_imagenet_weights(self):
        return self.imagenet_file is not None

    def imagenet_file_for(self, image_size):
        """The cached weights file Keras looks for at `image_size` (see `keras.applications`)."""
        size = image_size if image_size in self.imagenet_sizes else 224
        return self.imagenet_file.format(size=size)


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
# The ResNet presets of `headstart.models.resnet.PRESETS` offered as backbones, with their
# number of stages. Written out because that module imports Keras; tests/test_backbones.py
# checks that these are exactly the presets (less Keras' `resnet50`) and that each builds
# at the minimum size derived here.
_OWN_RESNET_STAGES = {"resnet8": 3, "resnet14": 3, "resnet20": 3, "resnet32": 3, "resnet18": 4, "resnet34": 4}
# name: (min image side, default image side, size multiple). Each stage after the first
# halves the image, so a ResNet with S stages needs 2 ** (S - 1) pixels; the CNN has three
# halving blocks, the conv autoencoder two stride-2 stages that its decoder must undo.
_OWN = {
    **{depth: (2 ** (stages - 1), 32, 1) for depth, stages in _OWN_RESNET_STAGES.items()},
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
            channels=(3,), constructor=constructor, imagenet_file=imagenet_file,
            imagenet_sizes=_IMAGENET_SIZES.get(family, ()), preprocess_module=module_name,
        )
    for name, (min_size, default_size, size_multiple) in _OWN.items():
        specs[name] = BackboneSpec(
            name=name, family=OWN, min_size=min_size, default_size=default_size, max_size=None,
            channels=(1, 3), size_multiple=size_multiple,
        )
    return specs


_SPECS = _make_specs()


def list_backbones():
    """The registered backbone names: `keras.applications` ones first, then the project's own."""
    return list(_SPECS)


def own_backbones():
    """The names of the project's own backbones (the ones `headstart pretrain` trains)."""
    return [name for name, spec in _SPECS.items() if spec.family == OWN]


def get_spec(name):
    """The `BackboneSpec` of `name`; an unknown name raises `UsageError` with close matches.

    A `hub:PRESET` name is resolved by `headstart.models.hub_presets` (a preset that is
    unknown, of another task, or neither here nor downloadable raises `UsageError`).
    """
    from headstart.models import hub_presets   # no Keras: the preset tables and files

    if hub_presets.is_hub_name(name):
        return _hub_spec(name)
    if name in _SPECS:
        return _SPECS[name]
    close = difflib.get_close_matches(str(name), list(_SPECS), n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}? (`headstart list backbones` lists all)" if close
            else f"known backbones: {', '.join(_SPECS)}")
    raise UsageError(f"Unknown backbone; {hint}. Received: backbone={name!r}")


def _hub_spec(name):
    from headstart.models import hub_presets

    preset = hub_presets.resolve(name)
    fixed = preset.image_size   # a ViT takes only its preset's size (its position embeddings)
    return BackboneSpec(name=name, family=HUB, min_size=fixed or 32, default_size=fixed or 224, max_size=fixed,
                        channels=(3,), hub_preset=preset)


# ## Checks that cost no model building (and no Keras import)

def check_backbone_options(name, image_size, weights=None, channels=None):
    """Validate a backbone choice before TensorFlow builds anything; returns its spec.

    Raises `UsageError` for an unknown backbone, an image size outside the backbone's
    range, channels it cannot take, a weights file that is missing or of an unknown
    kind, `"imagenet"` for a backbone without ImageNet weights, and `"imagenet"` when the
    weights are not cached and the network is unreachable. Whether a weights file fits
    the architecture is only known when it is loaded (`headstart.models.backbones.build_backbone`).

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
    if spec.family == HUB:
        if weights == IMAGENET:
            raise UsageError(f"{name} is a KerasHub preset: its pretrained weights are --weights preset "
                             "(or none, or a file). Received: weights='imagenet'")
    elif weights == PRESET:
        raise UsageError(f"--weights preset is for KerasHub backbones (--backbone hub:PRESET), not {name}")
    if weights == IMAGENET:
        _check_imagenet_available(spec, image_size)
    elif weights is not None and weights != PRESET:
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
        raise UsageError(imagenet_unavailable_message(spec, image_size, "no network"))


def imagenet_unavailable_message(spec, image_size, reason):
    """What to do when `spec`'s ImageNet weights cannot be had here: the command that fetches them elsewhere."""
    file_name = spec.imagenet_file_for(image_size)
    command = (f"python -c \"import keras; keras.applications.{spec.constructor}(include_top=False, "
               f"weights='imagenet', input_shape=({image_size}, {image_size}, 3))\"")
    return (f"ImageNet weights for {spec.name} are not cached and cannot be downloaded ({reason}): "
            f"on a machine with internet run `{command}` and copy ~/.keras/models/{file_name} "
            f"to {weights_cache_dir()}/ here, or pass --weights PATH")
