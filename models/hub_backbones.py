"""KerasHub backbones (`--backbone hub:PRESET`) as headstart backbones.

The preset's backbone is built by KerasHub (`keras_hub.models.Backbone.from_preset`, with or
without its weights) and re-expressed as a flat Functional model named `"backbone"`:

    images in [0, 1] -> hub_rescaling -> the preset's layers -> features

- `hub_rescaling` is the preset's own image converter (pixels * scale + offset on 0-255,
  from `image_converter.json`) as a `Rescaling` layer, so the data pipeline and the serving
  model feed it what every project backbone takes (images scaled to [0, 1]).
- Convolutional families (ResNet, EfficientNet) keep their own layers, one by one, so their
  blocks (`conv1`, `stack2`, `block6a`) are what `--unfreeze`, `--layer-decay` and
  `--lr-groups` name; the output is their feature map, pooled by the head.
- ViT runs as its patch embedding, then each transformer block as its own layer
  (`transformer_block_1` ...), the final layer norm and the class token: the blocks are the
  transformer layers, the output the class token's vector.

The conv families' layers are KerasHub's own objects (weights shared, not copied); ViT's patch
embedding and transformer blocks are copies, with the preset's weights, in subclasses whose
`from_config` takes what KerasHub 0.32's `get_config` writes (see `_loadable`). A `.keras`
file of the model loads wherever KerasHub is installed, once this module is imported
(`headstart.models.register_keras_objects(path)` does it for a file that needs it).

    backbone = build(hub_presets.resolve("hub:/path/to/preset"), image_size=32, weights="preset")
"""

import inspect

import keras
import keras_hub
from keras_hub.src.models.vit import vit_layers

from headstart.models import backbone_specs, hub_presets



@keras.saving.register_keras_serializable(package="headstart")
class ClassToken(keras.layers.Layer):
    """The first token of a sequence `(batch, tokens, dim)`: a ViT's class token, its image feature."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def _loadable(cls):
    """`cls` as a registered subclass whose `from_config` takes what its `get_config` writes:
    KerasHub 0.32's ViT layers write keys their constructors refuse (`num_patches`,
    `num_positions`, `key_dim`), so a `.keras` file holding them would not load."""
    accepted = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable", "dtype"}

    class Loadable(cls):
        @classmethod
        def from_config(klass, config):
            return super().from_config({key: value for key, value in config.items() if key in accepted})

    Loadable.__name__ = Loadable.__qualname__ = cls.__name__
    return keras.saving.register_keras_serializable(package="headstart")(Loadable)


PatchEmbedding = _loadable(vit_layers.ViTPatchingAndEmbedding)
EncoderBlock = _loadable(vit_layers.ViTEncoderBlock)


def _copy(layer, cls, input_shape):
    """A `cls` (loadable) copy of a built KerasHub layer, with its weights."""
    copy = cls.from_config(layer.get_config())
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return copy


def build(preset, image_size, weights=None):
    """The preset's backbone for square RGB images of `image_size`, as described above.

    Args:
        preset: a `headstart.models.hub_presets.HubPreset`.
        image_size: side of the input images (a ViT takes only its preset's size).
        weights: `"preset"` (the preset's weights) or `None` (its architecture, random init).
    """
    hub = _hub_backbone(preset, image_size, load_weights=weights == backbone_specs.PRESET)
    scale, offset = preset.image_scaling()
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    # Our pipeline hands images in [0, 1]; the converter's scale is for 0-255.
    rescaled = keras.layers.Rescaling(_times(scale if scale is not None else 1.0, 255.0),
                                      offset=offset if offset is not None else 0.0, name="hub_rescaling")(inputs)
    if preset.kind == "transformer":
        features = _vit_layers(hub, rescaled)
    else:
        # Each of the hub model's layers called anew on our input (the same layer objects): a
        # flat graph, where calling `hub` itself would nest it as one opaque layer.
        features = hub._run_through_graph(rescaled, operation_fn=lambda layer: layer)
    return keras.Model(inputs, features, name="backbone")


def build_from_config(backbone_class, config, image_size, scale=1 / 255.0, offset=None):
    """The same for a backbone built from constructor arguments (tests: tiny configs, no download)."""
    return build(hub_presets.HubPreset("config", None, None, backbone_class, dict(config), (scale, offset)), image_size)


def _hub_backbone(preset, image_size, load_weights):
    cls = getattr(keras_hub.models, preset.backbone_class)
    shape = {"image_shape" if preset.backbone_class != "EfficientNetBackbone" else "input_shape":
             (image_size, image_size, 3)}
    if preset.folder is None and preset.handle is None:   # from a config (build_from_config)
        return cls(**{**preset.config, **shape})
    source = str(preset.folder) if preset.folder is not None else preset.name
    overrides = {} if preset.kind == "transformer" else shape   # ViT's size is its preset's
    return cls.from_preset(source, load_weights=load_weights, **overrides)


def _vit_layers(hub, x):
    # Copies in the loadable classes (above), with the preset's weights.
    x = _copy(hub.get_layer("vit_patching_and_embedding"), PatchEmbedding, x.shape)(x)
    encoder = hub.get_layer("vit_encoder")
    x = encoder.dropout(x)
    for block in encoder.encoder_layers:
        x = _copy(block, EncoderBlock, x.shape)(x)
    x = encoder.layer_norm(x)
    if hub.use_class_token:
        return ClassToken(name="class_token")(x)
    return keras.layers.GlobalAveragePooling1D(name="token_pool")(x)


def _times(scale, factor):
    return [value * factor for value in scale] if isinstance(scale, (list, tuple)) else scale * factor
