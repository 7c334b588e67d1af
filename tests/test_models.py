"""Model builders and the registry: every model builds, runs, saves and loads; bad arguments fail clearly."""

import numpy as np
import pytest

import keras

from headstart import models
from headstart.models.heads import attach_head, build_head

# Small inputs keep the big presets quick; each registered model gets the smallest
# shape its downsampling allows, plus its default.
SMALL_SHAPES = {
    "mlp": (12,),
    "autoencoder_dense": (12,),
    "autoencoder_conv": (8, 8, 1),
    "cnn": (8, 8, 3),
    "resnet50": (8, 8, 3),
    "resnet18": (8, 8, 3),
    "resnet34": (8, 8, 3),
}


def _random_batch(model, size=3, seed=0):
    return np.random.default_rng(seed).random((size, *model.input_shape[1:]), dtype=np.float32)


@pytest.mark.parametrize("name", models.list_models())
def test_registered_model_builds_runs_and_round_trips_through_keras_file(name, tmp_path):
    overrides = {"input_shape": SMALL_SHAPES.get(name, (8, 8, 3))}
    if not name.startswith("autoencoder"):
        overrides["num_classes"] = 4
    model = models.create_model(name, **overrides)
    batch = _random_batch(model)
    outputs = model.predict(batch, verbose=0)

    assert np.all(np.isfinite(outputs))
    if name.startswith("autoencoder"):
        assert outputs.shape == batch.shape
        assert [layer.name for layer in model.layers[1:]] == ["encoder", "decoder"]
    else:
        assert outputs.shape == (3, 4)
        assert [layer.name for layer in model.layers[1:]] == ["backbone", "head"]

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(batch, verbose=0), outputs)


def test_create_model_rejects_unknown_names_listing_the_known_ones():
    with pytest.raises(ValueError, match="resnet20") as error:
        models.create_model("resnet21")
    assert "resnet21" in str(error.value)


def test_create_model_drops_none_overrides():
    model = models.create_model("mlp", dropout=None, hidden_units=(8,))
    assert model.get_layer("backbone").get_layer("layer1_dense").units == 8


def test_model_with_custom_initializer_and_l2sp_regularizer_saves_and_loads(tmp_path):
    model = models.build_cnn((8, 8, 1), 3, filters=(4, 8), kernel_initializer="he_uniform",
                             kernel_regularizer=models.regularizers.L2SP(1e-3))
    batch = _random_batch(model)
    model.save(tmp_path / "cnn.keras")
    reloaded = keras.saving.load_model(tmp_path / "cnn.keras")
    np.testing.assert_array_equal(reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0))
    kernel = reloaded.get_layer("backbone").get_layer("block1_1_conv").kernel
    assert type(kernel.regularizer).__name__ == "L2SP"


@pytest.mark.parametrize("activation", models.activations.ACTIVATIONS)
def test_every_activation_builds_a_finite_mlp(activation):
    model = models.build_mlp((6,), 2, hidden_units=(5, 5), activation=activation)
    assert np.all(np.isfinite(model.predict(np.ones((2, 6), "float32"), verbose=0)))


def test_backbone_and_head_compose_to_the_whole_model():
    model = models.build_resnet((16, 16, 3), 5, depth="resnet8")
    batch = _random_batch(model)
    features = model.get_layer("backbone").predict(batch, verbose=0)
    np.testing.assert_allclose(model.get_layer("head").predict(features, verbose=0),
                               model.predict(batch, verbose=0), rtol=1e-5, atol=1e-5)


def test_resnet_stages_halve_the_image_and_widen():
    backbone = models.build_resnet((32, 32, 3), 10, depth="resnet20").get_layer("backbone")
    assert backbone.get_layer("stage1_block3_out").output.shape == (None, 32, 32, 16)
    assert backbone.get_layer("stage2_block1_out").output.shape == (None, 16, 16, 32)
    assert backbone.get_layer("stage3_block3_out").output.shape == (None, 8, 8, 64)
    # resnet20 = 1 stem conv + 3 stages x 3 blocks x 2 convs (+ 2 projection shortcuts) + logits
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 18 + 2


def test_identity_shortcut_has_no_parameters_and_projection_does():
    projection = models.build_resnet((16, 16, 3), 4, depth="resnet8", shortcut="projection")
    identity = models.build_resnet((16, 16, 3), 4, depth="resnet8", shortcut="identity")
    assert projection.count_params() > identity.count_params()
    names = [layer.name for layer in identity.get_layer("backbone").layers]
    assert "stage2_block1_shortcut_conv" not in names and "stage2_block1_shortcut_pad" in names


def test_zero_initialised_residual_blocks_start_as_the_identity():
    model = models.build_resnet((8, 8, 4), 3, stage_blocks=(2,), stage_filters=(4,), activation="relu")
    backbone = model.get_layer("backbone")
    probe = keras.Model(backbone.input, [backbone.get_layer("stage1_block1_add").input[0],
                                         backbone.get_layer("stage1_block1_add").output])
    shortcut, added = probe.predict(_random_batch(model), verbose=0)
    np.testing.assert_array_equal(added, shortcut)


def test_bottleneck_blocks_expand_channels_four_times():
    model = models.build_resnet((8, 8, 3), 2, block="bottleneck", stage_blocks=(1, 1), stage_filters=(4, 8))
    assert model.get_layer("backbone").output_shape == (None, 4, 4, 32)


def test_autoencoder_encoder_initialises_a_classifier_sharing_its_weights():
    autoencoder = models.build_autoencoder((8, 8, 1), kind="conv", latent_dim=6, filters=(4, 8))
    encoder = autoencoder.get_layer("encoder")
    classifier = attach_head(encoder, 3, dropout=0.1)
    batch = _random_batch(autoencoder)
    assert classifier.predict(batch, verbose=0).shape == (3, 3)
    np.testing.assert_allclose(classifier.get_layer("backbone").predict(batch, verbose=0),
                               encoder.predict(batch, verbose=0), rtol=1e-6)
    assert classifier.get_layer("backbone").get_layer("code").kernel is encoder.get_layer("code").kernel


def test_head_pools_feature_maps_and_passes_vectors():
    assert build_head((4, 4, 8), 5, pooling="max").output_shape == (None, 5)
    assert build_head((7,), 1).output_shape == (None, 1)
    hidden = build_head((4, 4, 8), 5, hidden_units=(6,), dropout=0.5)
    assert hidden.get_layer("head_hidden1_dense").units == 6


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: models.build_mlp((8,), 2, dropout=-0.1), "dropout"),
        (lambda: models.build_mlp((8,), 2, dropout=1.0), "dropout"),
        (lambda: models.build_mlp((8,), 2, activation="relu6"), "activation"),
        (lambda: models.build_mlp((8,), 0), "num_classes"),
        (lambda: models.build_mlp((8,), 2, hidden_units=()), "hidden_units"),
        (lambda: models.build_mlp((8,), 2, kernel_initializer="he_norml"), "he_norml"),
        (lambda: models.build_cnn((8, 8, 3), 2, filters=(4, 4, 4, 4)), "input_shape"),
        (lambda: models.build_cnn((8, 8), 2), "input_shape"),
        (lambda: models.build_cnn((8, 8, 3), 2, pooling="median"), "pooling"),
        (lambda: models.build_resnet((8, 8, 3), 2, depth="resnet7"), "depth"),
        (lambda: models.build_resnet((4, 4, 3), 2, stem="imagenet"), "input_shape"),
        (lambda: models.build_resnet((8, 8, 3), 2, stage_blocks=(1, 1), stage_filters=(4,)), "stage_filters"),
        (lambda: models.build_resnet((8, 8, 3), 2, shortcut="dense"), "shortcut"),
        (lambda: models.build_autoencoder((10, 10, 1), filters=(4, 8)), "input_shape"),
        (lambda: models.build_autoencoder((8, 8, 1), kind="vae"), "kind"),
        (lambda: models.build_autoencoder((8, 8, 1), latent_dim=0), "latent_dim"),
    ],
)
def test_bad_builder_arguments_raise_value_error_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_same_shaped_layers_get_different_kernels_even_from_one_keras_initializer_instance():
    model = models.build_mlp((8,), 2, hidden_units=(8, 8, 8), kernel_initializer=keras.initializers.HeNormal())
    backbone = model.get_layer("backbone")
    second = backbone.get_layer("layer2_dense").kernel.numpy()
    third = backbone.get_layer("layer3_dense").kernel.numpy()
    assert not np.allclose(second, third)
