"""Models: what is built (builders, initializers, regularizers, heads, registry).

    from headstart import models
    model = models.create_model("resnet20", input_shape=(32, 32, 3), num_classes=10)
    model.get_layer("backbone"), model.get_layer("head")

Names are imported on first use, so `headstart.models.backbone_specs` (the backbone
registry the recipes check options with) can be imported without Keras, hence without
TensorFlow's start-up.

Loading `.keras` files needs the project's Keras objects registered (its layers,
initializers, regularizers, `LayerRateOptimizer`, the one-cycle schedule and the
smoothed cross-entropy, the serving layers). They are registered by importing
this package when Keras is already imported, by the first use of any builder here
(`models.create_model`, `models.build_resnet`, ...), by importing
`headstart.models.backbones`, or explicitly with `models.register_keras_objects()`
(`register_keras_objects(path)` also registers the KerasHub backbone layers when the file has them).
"""

import importlib
import sys

_SUBMODULES = ("backbone_specs", "backbones", "freezing", "initializers", "layer_rates", "losses", "lsuv",
               "one_cycle", "regularizers", "schedules", "serving")
_EXPORTS = {
    "attach_head": "headstart.models.heads",
    "build_autoencoder": "headstart.models.autoencoder",
    "build_cnn": "headstart.models.cnn",
    "build_head": "headstart.models.heads",
    "build_mlp": "headstart.models.mlp",
    "build_resnet": "headstart.models.resnet",
    "create_model": "headstart.models.registry",
    "describe_model": "headstart.models.registry",
    "list_models": "headstart.models.registry",
}
# Importing these registers the classes `.keras` files name ("headstart>L2SP", ...).
_REGISTERING = ("headstart.models.initializers", "headstart.models.regularizers",
                "headstart.models.layer_rates", "headstart.models.losses", "headstart.models.one_cycle",
                "headstart.models.resnet", "headstart.models.serving")

__all__ = sorted([*_SUBMODULES, *_EXPORTS, "register_keras_objects"])


def register_keras_objects(path=None):
    """Register the project's Keras objects, so `keras.saving.load_model` can rebuild any model saved
    with them (imports Keras).

    With `path`, a `.keras` file about to be loaded: when it holds a KerasHub backbone
    (`headstart.models.hub_backbones`), that module too. It imports KerasHub (a second more), so
    only for files that need it.
    """
    for module_name in _REGISTERING:
        importlib.import_module(module_name)
    if path is not None:
        from headstart.models import hub_presets

        if hub_presets.saved_with_hub(path):
            importlib.import_module("headstart.models.hub_backbones")


def __getattr__(name):
    if name in _SUBMODULES:
        # A submodule is fetched this way by our own modules while they import (blocks.py's
        # `from headstart.models import initializers`), so nothing else is imported here: that
        # could reach the importing module half-made.
        return importlib.import_module(f"headstart.models.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'headstart.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    register_keras_objects()   # a builder used: Keras is loaded, so registering costs nothing
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)


# With Keras already loaded, registering costs nothing, and code that imports this package
# to load `.keras` files (`import keras; from headstart import models`) keeps working.
if "keras" in sys.modules:
    register_keras_objects()
