"""Models: what is built (builders, initializers, regularizers, heads, registry).

    from headstart import models
    model = models.create_model("resnet20", input_shape=(32, 32, 3), num_classes=10)
    model.get_layer("backbone"), model.get_layer("head")
"""

# layer_rates registers LayerRateOptimizer, so `.keras` files compiled with it load.
from headstart.models import backbones, freezing, initializers, layer_rates, lsuv, regularizers
from headstart.models.autoencoder import build_autoencoder
from headstart.models.cnn import build_cnn
from headstart.models.heads import attach_head, build_head
from headstart.models.mlp import build_mlp
from headstart.models.registry import create_model, describe_model, list_models
from headstart.models.resnet import build_resnet

__all__ = [
    "attach_head", "backbones", "build_autoencoder", "build_cnn", "build_head", "build_mlp", "build_resnet",
    "create_model", "describe_model", "freezing", "initializers", "layer_rates", "list_models", "lsuv", "regularizers",
]
