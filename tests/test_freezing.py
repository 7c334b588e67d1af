"""Freezing: which layers train after freeze/unfreeze, the batch-norm policy, and what one
training step then changes (and leaves bit-identical)."""

import numpy as np
import pytest

import keras
from keras import layers

from headstart import models
from headstart.models.backbones import build_backbone
from headstart.models.freezing import block_names, freeze, trainable_summary, unfreeze


def _classifier(name="resnet8", **overrides):
    # Without zero-initialised residual gammas every convolution gets a gradient at step one.
    return models.create_model(name, input_shape=(8, 8, 3), num_classes=3, zero_init_residual=False, **overrides)


def _weighted_layers(backbone):
    return [layer for layer in backbone.layers if layer.weights]


def _is_batch_norm(layer):
    return isinstance(layer, layers.BatchNormalization)


def _trainable_names(backbone):
    return {layer.name for layer in backbone.layers if layer.trainable_weights}


def _snapshot(model):
    return {variable.path: keras.ops.convert_to_numpy(variable).copy() for variable in model.weights}


# ## Which layers train

def test_freeze_leaves_no_trainable_weight_in_the_backbone():
    model = _classifier()
    backbone = model.get_layer("backbone")
    summary = freeze(backbone)

    assert backbone.trainable_weights == []
    assert {id(weight) for weight in model.trainable_weights} == {id(w) for w in model.get_layer("head").weights}
    assert (summary.trainable_layers, summary.trainable_weights, summary.trainable_parameters) == (0, 0, 0)
    assert summary.layers == len(backbone.layers) - 1   # the input layer does not count


def test_unfreeze_all_keeps_batch_norm_frozen_by_default():
    backbone = _classifier().get_layer("backbone")
    freeze(backbone)
    summary = unfreeze(backbone)

    assert backbone.trainable
    for layer in _weighted_layers(backbone):
        assert bool(layer.trainable_weights) is not _is_batch_norm(layer), layer.name
    convolutions = [layer for layer in backbone.layers if isinstance(layer, layers.Conv2D)]
    assert summary.trainable_layers == len(convolutions)
    assert summary.trainable_parameters == sum(layer.count_params() for layer in convolutions)
    assert str(summary).startswith(f"{len(convolutions)}/{summary.layers} layers trainable")


def test_unfreeze_all_with_the_train_policy_trains_batch_norm_too():
    backbone = _classifier().get_layer("backbone")
    freeze(backbone)
    unfreeze(backbone, batch_norm="train")
    assert all(layer.trainable_weights for layer in _weighted_layers(backbone))


def test_unfreeze_top_layers_unfreezes_exactly_those():
    backbone = _classifier().get_layer("backbone")
    freeze(backbone)
    unfreeze(backbone, top_layers=5, batch_norm="train")

    top = backbone.layers[-5:]
    assert all(layer.trainable for layer in top)
    assert not any(layer.trainable for layer in backbone.layers[1:-5])
    assert _trainable_names(backbone) == {layer.name for layer in top if layer.weights}


def test_unfreeze_from_a_block_unfreezes_it_and_everything_above():
    backbone = _classifier().get_layer("backbone")
    freeze(backbone)
    unfreeze(backbone, from_layer="stage3")

    expected = {layer.name for layer in _weighted_layers(backbone)
                if layer.name.startswith("stage3_") and not _is_batch_norm(layer)}
    assert expected and _trainable_names(backbone) == expected
    assert all(weight.path.startswith("stage3_") for weight in backbone.trainable_weights)


def test_unfreeze_from_a_sub_block_or_a_layer_name():
    backbone = _classifier("resnet14").get_layer("backbone")
    unfreeze(backbone, from_layer="stage2_block2", batch_norm="train")
    names = _trainable_names(backbone)
    assert "stage2_block2_1_conv" in names and "stage3_block2_2_bn" in names
    assert not any(name.startswith(("stem", "stage1", "stage2_block1")) for name in names)

    unfreeze(backbone, from_layer="stage3_block2_2_conv", batch_norm="train")
    assert _trainable_names(backbone) == {"stage3_block2_2_conv", "stage3_block2_2_bn"}


def test_a_block_number_also_matches_efficientnets_lettered_blocks():
    backbone = build_backbone("efficientnet_b0", 32)
    unfreeze(backbone, from_layer="block6")
    first_trainable = next(layer.name for layer in backbone.layers if layer.trainable_weights)
    assert first_trainable.startswith("block6a_")
    assert not any(name.startswith(("block5", "stem")) for name in _trainable_names(backbone))


def test_unfreeze_overrides_layers_frozen_one_by_one():
    # Under TensorFlow, `model.trainable = True` on a model that already is trainable does
    # nothing, so a batch-norm layer frozen on its own stays frozen unless set explicitly.
    backbone = _classifier().get_layer("backbone")
    backbone.get_layer("stem_bn").trainable = False
    unfreeze(backbone, batch_norm="train")
    assert backbone.get_layer("stem_bn").trainable_weights


def test_freeze_and_unfreeze_the_backbone_of_a_compiled_classifier_change_what_the_model_trains():
    model = _classifier()
    backbone_weights = len(model.get_layer("backbone").trainable_weights)
    head_weights = len(model.get_layer("head").trainable_weights)
    freeze(model.get_layer("backbone"))
    assert len(model.trainable_weights) == head_weights
    unfreeze(model.get_layer("backbone"), batch_norm="train")
    assert len(model.trainable_weights) == head_weights + backbone_weights


# ## Bad arguments change nothing

def test_unknown_block_lists_the_blocks_that_exist():
    backbone = _classifier().get_layer("backbone")
    freeze(backbone)
    with pytest.raises(ValueError, match="Its blocks: stage1, stage2, stage3") as error:
        unfreeze(backbone, from_layer="stage9")
    assert "from_layer='stage9'" in str(error.value)
    with pytest.raises(ValueError, match="Did you mean stage3"):
        unfreeze(backbone, from_layer="stag3")
    assert backbone.trainable_weights == []


@pytest.mark.parametrize("top_layers", [0, -1, 1000, True, 2.0])
def test_top_layers_must_be_a_count_within_the_backbone(top_layers):
    backbone = _classifier().get_layer("backbone")
    with pytest.raises(ValueError, match="top_layers"):
        unfreeze(backbone, top_layers=top_layers)


def test_top_layers_and_from_layer_exclude_each_other_and_the_policy_is_checked():
    backbone = _classifier().get_layer("backbone")
    with pytest.raises(ValueError, match="not both"):
        unfreeze(backbone, top_layers=2, from_layer="stage3")
    with pytest.raises(ValueError, match="batch_norm='learn'"):
        unfreeze(backbone, batch_norm="learn")


# ## Block names

@pytest.mark.parametrize("name, image_size, expected", [
    ("resnet20", 8, ["stage1", "stage2", "stage3"]),
    ("cnn", 8, ["block1", "block2", "block3"]),
    ("vgg16", 32, ["block1", "block2", "block3", "block4", "block5"]),
    ("resnet50", 32, ["conv1", "pool1", "conv2", "conv3", "conv4", "conv5"]),
    ("efficientnet_b0", 32, ["block1", "block2", "block3", "block4", "block5", "block6", "block7"]),
])
def test_block_names_in_order(name, image_size, expected):
    backbone = build_backbone(name, image_size)
    assert block_names(backbone) == expected
    for block in expected:   # each is a valid starting point
        unfreeze(backbone, from_layer=block)


def test_block_names_with_sub_blocks():
    backbone = build_backbone("resnet14", 8)
    assert block_names(backbone, sub_blocks=True) == [
        "stage1", "stage1_block1", "stage1_block2", "stage2", "stage2_block1", "stage2_block2",
        "stage3", "stage3_block1", "stage3_block2"]
    mobilenet_v2 = block_names(build_backbone("mobilenet_v2", 32))
    assert [f"block_{index}" for index in range(1, 17)] == [name for name in mobilenet_v2 if name.startswith("block")]


# ## Keras semantics the helpers rely on, and one training step

def test_a_non_trainable_batch_norm_layer_runs_in_inference_mode_during_training():
    batch_norm = layers.BatchNormalization()
    inputs = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype("float32")
    batch_norm(inputs, training=False)   # build
    batch_norm.trainable = False
    moving_mean = keras.ops.convert_to_numpy(batch_norm.moving_mean).copy()

    in_training = keras.ops.convert_to_numpy(batch_norm(inputs, training=True))
    np.testing.assert_allclose(in_training, keras.ops.convert_to_numpy(batch_norm(inputs, training=False)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(batch_norm.moving_mean), moving_mean)


def test_a_model_flag_hides_the_trainable_weights_of_its_layers():
    backbone = _classifier().get_layer("backbone")
    backbone.trainable = False
    assert all(not layer.trainable for layer in backbone.layers)
    backbone.get_layer("stem_conv").trainable = True
    assert backbone.trainable_weights == []


def _train_one_step(model):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(8,))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)


def test_one_step_with_frozen_batch_norm_changes_only_the_unfrozen_weights():
    model = _classifier()
    backbone = model.get_layer("backbone")
    unfreeze(backbone, from_layer="stage3", batch_norm="frozen")
    before = _snapshot(backbone)
    head_before = _snapshot(model.get_layer("head"))
    _train_one_step(model)
    after = _snapshot(backbone)

    trainable = {weight.path for weight in backbone.trainable_weights}
    for path, value in before.items():
        if path in trainable:
            assert not np.array_equal(after[path], value), f"{path} should have changed"
        else:
            np.testing.assert_array_equal(after[path], value, err_msg=f"{path} should be bit-identical")
    assert any("moving_mean" in path for path in before) and trainable
    assert all(path.startswith("stage3_") and "_conv/" in path for path in trainable)
    assert any(not np.array_equal(value, head_before[path])
               for path, value in _snapshot(model.get_layer("head")).items())


def test_one_step_with_the_train_policy_updates_unfrozen_batch_norm_statistics_only():
    model = _classifier()
    backbone = model.get_layer("backbone")
    unfreeze(backbone, from_layer="stage3", batch_norm="train")
    before = _snapshot(backbone)
    _train_one_step(model)
    after = _snapshot(backbone)

    statistics = [path for path in before if "moving_" in path]
    changed = {path for path in statistics if not np.array_equal(after[path], before[path])}
    assert changed == {path for path in statistics if path.startswith("stage3_")}
    assert changed


def test_trainable_summary_of_a_whole_model():
    model = _classifier()
    summary = trainable_summary(model)
    assert summary.layers == 2 and summary.trainable_layers == 2
    assert summary.trainable_parameters == sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
