"""Baselines: the same examples as the run, the scikit-learn pipeline they claim to be, C chosen on val."""

import collections
import dataclasses
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from headstart.models.backbones import build_classifier
from headstart.recipes import baselines, data
from headstart.recipes.data import DataSplits

IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def splits():
    # The demo's task (digits 5-9, 5 labels per class), smaller images.
    return data.load("digits", classes="target", labels_per_class=5, image_size=IMAGE_SIZE, seed=0)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)   # module fixtures are built before the per-test seeding
    return build_classifier("resnet8", 5, IMAGE_SIZE)


@pytest.fixture(scope="module")
def results_and_warnings(splits, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = baselines.run(splits, model)
    return results, caught


@pytest.fixture(scope="module")
def hand_inputs(splits, model):
    """Each baseline's inputs computed here: flattened pixels, and the backbone's output averaged by NumPy."""
    split_arrays = baselines.arrays(splits)
    backbone = model.get_layer("backbone")
    return {
        "pixels": {split: (images.reshape(len(images), -1), labels) for split, (images, labels) in split_arrays.items()},
        "linear_probe": {split: (np.mean(np.asarray(backbone(images, training=False)), axis=(1, 2)), labels)
                         for split, (images, labels) in split_arrays.items()},
    }


def _pipeline(c):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=baselines.MAX_ITER))


def _examples(images, labels):
    return collections.Counter((image.tobytes(), int(label)) for image, label in zip(images, labels))


def _one_pass(dataset):
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def test_arrays_hold_exactly_the_examples_of_the_run(splits):
    split_arrays = baselines.arrays(splits)
    assert set(split_arrays) == {"train", "val", "test"}
    for split, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        images, labels = split_arrays[split]
        assert images.dtype == np.float32 and images.shape == (splits.num_examples[split], *splits.input_shape)
        assert len(labels) == splits.num_examples[split]
        assert _examples(images, labels) == _examples(*_one_pass(dataset))


def test_a_split_that_never_ends_is_refused_instead_of_read_forever(splits):
    forever = dataclasses.replace(splits, train=splits.val.repeat(), train_epochs=None, train_plain=None)
    with pytest.raises(ValueError, match="repeats forever"):
        baselines.arrays(forever)


def test_fits_in_memory_is_the_size_of_the_float32_arrays(splits):
    size = sum(images.nbytes for images, _ in baselines.arrays(splits).values())
    assert baselines.fits_in_memory(splits, size)
    assert not baselines.fits_in_memory(splits, size - 1)
    unknown = dataclasses.replace(splits, num_examples={**splits.num_examples, "train": -2})
    assert not baselines.fits_in_memory(unknown, 1 << 40)


@pytest.mark.parametrize("name", ["pixels", "linear_probe"])
def test_accuracy_is_a_plain_scikit_learn_pipeline_at_the_chosen_c(name, results_and_warnings, hand_inputs):
    result = results_and_warnings[0][name]
    parts = hand_inputs[name]
    pipeline = _pipeline(result["C"]).fit(*parts["train"])
    assert result["split"] == "test"
    assert result["accuracy"] == np.mean(pipeline.predict(parts["test"][0]) == parts["test"][1])
    assert result["val_accuracy"] == np.mean(pipeline.predict(parts["val"][0]) == parts["val"][1])


@pytest.mark.parametrize("name", ["pixels", "linear_probe"])
def test_c_is_the_grid_value_best_on_validation(name, results_and_warnings, hand_inputs):
    parts = hand_inputs[name]
    val_accuracies = [np.mean(_pipeline(c).fit(*parts["train"]).predict(parts["val"][0]) == parts["val"][1])
                      for c in baselines.C_GRID]
    assert len(set(val_accuracies)) > 1, "every C scores the same: this data cannot show the choice"
    best = int(np.argmax(val_accuracies))   # the first maximum: ties go to the smaller C
    assert results_and_warnings[0][name]["C"] == baselines.C_GRID[best]
    assert results_and_warnings[0][name]["val_accuracy"] == val_accuracies[best]


def test_every_fit_converges(results_and_warnings):
    assert not [w for w in results_and_warnings[1] if issubclass(w.category, ConvergenceWarning)]


def test_probe_features_are_the_inference_mode_backbone_output_averaged_over_space(splits):
    model = build_classifier("resnet8", 5, IMAGE_SIZE)   # its own: training mode below moves batch norm's statistics
    images = baselines.arrays(splits)["val"][0]   # 179 images: several batches, the last one partial
    backbone = model.get_layer("backbone")
    expected = np.mean(np.asarray(backbone(images, training=False)), axis=(1, 2))
    from_classifier = baselines.feature_extractor(model).predict(images, batch_size=64, verbose=0)
    from_backbone = baselines.feature_extractor(backbone).predict(images, batch_size=64, verbose=0)
    np.testing.assert_allclose(from_classifier, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_backbone, expected, rtol=1e-5, atol=1e-6)
    # Batch norm in training mode (batch statistics) gives other features: the checks above tell them apart.
    assert not np.allclose(np.mean(np.asarray(backbone(images, training=True)), axis=(1, 2)), expected, atol=1e-3)


def test_without_a_test_split_the_accuracy_is_on_validation():
    splits = data.load("digits", classes="target", labels_per_class=5, image_size=8, test_fraction=0)
    results = baselines.run(splits)
    assert set(results) == {"pixels"}   # no backbone: no probe
    assert results["pixels"]["split"] == "val"
    assert results["pixels"]["accuracy"] == results["pixels"]["val_accuracy"]


def test_a_backbone_for_other_image_sizes_is_refused_before_any_work(splits):
    with pytest.raises(ValueError, match=r"inputs of shape \(8, 8, 3\)"):
        baselines.run(splits, build_classifier("resnet8", 5, 8))


def test_table_rows_fit_the_finetune_results_table():
    rows = baselines.table_rows({
        "pixels": {"accuracy": 0.9244, "split": "test", "val_accuracy": 0.9, "C": 0.01, "seconds": 1.234},
        "linear_probe": {"accuracy": 0.5, "split": "test", "val_accuracy": 0.55, "C": 1000.0, "seconds": 12.0},
    })
    assert rows == [
        "| logistic regression on the pixels (C=0.01) | 0.924 | fit on train, C chosen on val "
        "(val accuracy 0.900), 1.2 s |",
        "| linear probe on the frozen backbone's pooled features (C=1000) | 0.500 | fit on train, C chosen on val "
        "(val accuracy 0.550), 12.0 s |",
    ]


def test_hand_made_splits_without_train_epochs_are_read_from_train():
    images = np.arange(6 * 2 * 2 * 1, dtype="float32").reshape(6, 2, 2, 1)
    labels = np.array([0, 1, 0, 1, 0, 1], dtype="int32")

    def dataset(part):
        return tf.data.Dataset.from_tensor_slices((images[part], labels[part])).batch(2)

    splits = DataSplits(train=dataset(slice(0, 4)), val=dataset(slice(4, 6)), test=None, class_names=["a", "b"],
                        input_shape=(2, 2, 1), num_examples={"train": 4, "val": 2, "test": 0}, spec=None)
    split_arrays = baselines.arrays(splits)
    assert set(split_arrays) == {"train", "val"}
    np.testing.assert_array_equal(split_arrays["train"][0], images[:4])
    np.testing.assert_array_equal(split_arrays["val"][1], labels[4:])
