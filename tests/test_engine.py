"""The training engine: what each fine-tuning phase may change, recompiles, best weights kept."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from headstart import models
from headstart.recipes import engine
from headstart.recipes.data import DataSplits

NUM_CLASSES = 3


def _splits(seed=0, size=48):
    """Tiny learnable images: the class is which third of the image is brightest."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size).astype("int32")
    images = rng.random((size, 8, 8, 3)).astype("float32") * 0.3
    for index, label in enumerate(labels):
        images[index, :, label * 2:label * 2 + 3, :] += 0.7

    def dataset(part):
        return tf.data.Dataset.from_tensor_slices((images[part], labels[part])).batch(8)

    return DataSplits(train=dataset(slice(0, 32)), val=dataset(slice(32, 48)), test=None,
                      class_names=[str(c) for c in range(NUM_CLASSES)], input_shape=(8, 8, 3),
                      num_examples={"train": 32, "val": 16, "test": 0}, spec=None)


def _model():
    # Non-zero residual gammas so every backbone weight gets a gradient.
    return models.build_resnet((8, 8, 3), NUM_CLASSES, stage_blocks=(1, 1), stage_filters=(4, 8),
                               zero_init_residual=False)


def _snapshot(model):
    return {variable.path: variable.numpy().copy() for variable in model.weights}


def _changed(before, after, part):
    return {path for path in before if part in path and not np.array_equal(before[path], after[path])}


def _fine_tune(model, **overrides):
    arguments = dict(head_epochs=2, finetune_epochs=0, learning_rate=1e-2, finetune_learning_rate=1e-3,
                     options=engine.TrainingOptions(patience=10))
    arguments.update(overrides)
    return engine.fine_tune(lambda: model, _splits(), **arguments)


def test_head_phase_changes_only_head_weights():
    model = _model()
    before = _snapshot(model)
    _fine_tune(model)
    after = _snapshot(model)
    backbone_paths = {v.path for v in model.get_layer("backbone").weights}
    assert all(np.array_equal(before[path], after[path]) for path in backbone_paths)
    head_changed = {v.path for v in model.get_layer("head").weights} & _changed(before, after, "")
    assert head_changed, "the head did not train"


def test_finetune_phase_changes_only_unfrozen_layers_and_frozen_batch_norm_keeps_its_statistics():
    model = _model()
    _fine_tune(model, head_epochs=1)  # phase 1 only, to start phase 2 from a trained head
    before = _snapshot(model)
    result = _fine_tune(model, head_epochs=1, finetune_epochs=2, unfreeze_layers="stage2")
    after = _snapshot(model)
    backbone = model.get_layer("backbone")
    stage1 = [v.path for layer in backbone.layers if layer.name.startswith(("stem", "stage1"))
              for v in layer.weights]
    assert stage1 and all(np.array_equal(before[path], after[path]) for path in stage1)
    assert any("stage2_block1_1_conv" in path for path in _changed(before, after, ""))
    batch_norm = [v.path for layer in backbone.layers if "bn" in layer.name for v in layer.weights]
    assert batch_norm and all(np.array_equal(before[path], after[path]) for path in batch_norm)
    assert result.phases[1]["trainable_weights"] > result.phases[0]["trainable_weights"]


class _EpochEndSnapshots(keras.callbacks.Callback):
    """The whole model's weights at the end of every epoch (before best-weight restoring).

    It keeps its own reference to the model: a head-only phase on cached features fits
    the head alone, so `self.model` is not always the whole model.
    """

    def __init__(self, whole_model):
        super().__init__()
        self.whole_model = whole_model
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(_snapshot(self.whole_model))


@pytest.mark.parametrize("policy, statistics_move", [("frozen", False), ("train", True)])
def test_batch_norm_policy_decides_whether_moving_statistics_update(policy, statistics_move):
    model = _model()
    snapshots = _EpochEndSnapshots(model)
    _fine_tune(model, head_epochs=1, finetune_epochs=1, batch_norm=policy, extra_callbacks=[snapshots])
    after_head, after_finetune = snapshots.snapshots
    assert bool(_changed(after_head, after_finetune, "moving_mean")) == statistics_move


def test_recompile_between_phases_takes_effect_and_epochs_continue():
    model = _model()
    result = _fine_tune(model, head_epochs=2, finetune_epochs=3, finetune_learning_rate=1e-4)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5]
    assert [row["phase"] for row in result.history] == ["head"] * 2 + ["finetune"] * 3
    assert [phase["first_epoch"] for phase in result.phases] == [1, 3]


def test_best_weights_over_both_phases_are_kept_when_fine_tuning_makes_things_worse():
    model = _model()
    result = _fine_tune(model, head_epochs=3, finetune_epochs=2, finetune_learning_rate=50.0)
    assert result.best["phase"] == "head"
    val_loss = model.evaluate(_splits().val, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(result.best["value"], rel=1e-4)


def test_fine_tune_runs_under_a_mirrored_strategy_with_the_model_built_in_its_scope():
    import tensorflow as tf

    built_in = []

    def build():
        built_in.append(type(tf.distribute.get_strategy()).__name__)
        return _model()

    result = engine.fine_tune(build, _splits(), head_epochs=1, finetune_epochs=1, learning_rate=1e-2,
                              finetune_learning_rate=1e-3, strategy="mirrored")
    assert built_in == ["MirroredStrategy"]
    assert [row["epoch"] for row in result.history] == [1, 2]


def _head_weights(model):
    return [w.numpy() for w in model.get_layer("head").weights]


def _head_only_run(feature_cache, splits=None, cache_dir=None):
    keras.utils.set_random_seed(1)
    model = _model()
    options = engine.TrainingOptions(patience=10, feature_cache=feature_cache, cache_dir=cache_dir)
    result = engine.fine_tune(lambda: model, splits or _splits(), head_epochs=3, finetune_epochs=0,
                              learning_rate=1e-2, finetune_learning_rate=1e-3, options=options)
    return model, result


def test_head_trained_on_cached_features_reaches_the_same_weights_as_through_the_frozen_backbone():
    through_backbone, plain = _head_only_run(feature_cache=False)
    on_features, cached = _head_only_run(feature_cache=True)
    assert plain.phases[0]["feature_cache"] is False and cached.phases[0]["feature_cache"] is True
    for expected, actual in zip(_head_weights(through_backbone), _head_weights(on_features)):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([row["val_loss"] for row in cached.history],
                               [row["val_loss"] for row in plain.history], rtol=1e-4)


def test_feature_cache_on_disk_writes_tf_data_cache_files(tmp_path):
    _, result = _head_only_run(feature_cache=True, cache_dir=str(tmp_path))
    assert result.phases[0]["feature_cache"] is True
    assert any(path.name.startswith("features-train") for path in tmp_path.iterdir())


def test_feature_cache_is_refused_with_a_note_when_augmentation_is_on():
    import types

    splits = _splits()
    splits.spec = types.SimpleNamespace(augment=("flip",), shuffle=False, batch_size=8, seed=0)
    _, result = _head_only_run(feature_cache=True, splits=splits)
    assert result.phases[0]["feature_cache"] is False
    assert any("augmentation" in note for note in result.notes)


def test_gradual_unfreezing_in_phase_two_holds_lower_blocks_until_their_turn():
    model = _model()  # groups bottom to top: stem, stage1, stage2, head
    _fine_tune(model, head_epochs=1)
    before = _snapshot(model)
    result = _fine_tune(model, head_epochs=1, finetune_epochs=2, gradual_unfreeze=[0])  # only stage2 joins
    after = _snapshot(model)
    changed = _changed(before, after, "")
    assert any("stage2_block1_1_conv" in path for path in changed)
    assert not any("stage1_" in path or "stem_" in path for path in changed)
    assert type(model.optimizer).__name__ == "LayerRateOptimizer"
    assert [phase["name"] for phase in result.phases] == ["head", "finetune"]


def test_layer_decay_moves_lower_blocks_less_than_upper_ones():
    model = _model()
    _fine_tune(model, head_epochs=1)
    before = _snapshot(model)
    _fine_tune(model, head_epochs=0, finetune_epochs=1, finetune_learning_rate=1e-2, layer_decay=0.01,
               batch_norm="frozen")
    after = _snapshot(model)

    def relative_change(part):
        paths = [path for path in before if part in path and path.endswith("kernel")]
        return max(np.linalg.norm(after[p] - before[p]) / np.linalg.norm(before[p]) for p in paths)

    # stage1 trains at 0.01x the rate of stage2 (and stage2 at 0.01x the head's).
    assert relative_change("stage1_") < 0.2 * relative_change("stage2_")
