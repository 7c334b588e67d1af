"""Models by name: `create_model(name, **overrides)` and `list_models()`.

Each entry only sets arguments for one shared builder (timm's registry pattern), so a
name is a documented starting point and any argument can be overridden.
"""

from headstart.models.autoencoder import build_autoencoder
from headstart.models.cnn import build_cnn
from headstart.models.mlp import build_mlp
from headstart.models.resnet import PRESETS, build_resnet

# name -> (builder, default arguments, one-line description)
_REGISTRY = {
    "mlp": (build_mlp, {}, "MLP on flattened inputs, hidden (128, 64); digits-sized input (64,)"),
    "cnn": (build_cnn, {}, "3 conv blocks (32, 64, 128) with batch norm and max pooling, 32x32x3"),
    "autoencoder_dense": (build_autoencoder, {"kind": "dense", "input_shape": (64,)},
                          "dense autoencoder (128 -> 32 -> 128) on flattened 8x8 digits"),
    "autoencoder_conv": (build_autoencoder, {"kind": "conv"},
                         "conv autoencoder, 2 stride-2 stages (16, 32), latent 32, 32x32x1"),
}
for _depth, (_block, _blocks, _filters) in PRESETS.items():
    _REGISTRY[_depth] = (
        build_resnet, {"depth": _depth},
        f"ResNet, {_block} blocks {'-'.join(map(str, _blocks))}, filters {'-'.join(map(str, _filters))}, 32x32x3",
    )


def list_models():
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def describe_model(name):
    """One line on what `name` builds."""
    return _lookup(name)[2]


def create_model(name, **overrides):
    """Build the registered model `name`, with any builder argument overridden.

    Overrides that are `None` are dropped, so callers can pass optional settings
    blindly (`create_model("resnet8", dropout=args.dropout)`).

    Example:
        >>> model = create_model("resnet8", input_shape=(16, 16, 1), num_classes=5)
    """
    builder, defaults, _ = _lookup(name)
    arguments = {**defaults, **{key: value for key, value in overrides.items() if value is not None}}
    return builder(**arguments)


def _lookup(name):
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model; known models: {', '.join(list_models())}. Received: name={name!r}")
    return _REGISTRY[name]
