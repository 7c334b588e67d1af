"""The one data entry point: `load(source)` -> train / val / test `tf.data` pipelines and class names.

    from headstart.recipes import data

    splits = data.load("digits", classes="target", labels_per_class=5, image_size=(32, 32))
    model.fit(splits.train, validation_data=splits.val)

Sources (`list_datasets()` names some):
- `digits` (the default): scikit-learn's bundled handwritten digits; needs no download.
  `classes="source"` (0-4) and `classes="target"` (5-9), relabelled 0..4, are a transfer
  task, and `labels_per_class` keeps k training images per class (few labels).
- `tfds:NAME[:CONFIG]`: a TensorFlow Datasets image classification dataset, read from
  `data_dir` or downloaded once; offline and not prepared, it fails at once with a
  message that says how to get the data.
- a folder path: one sub-folder per class, PNG/JPEG/BMP/GIF of any size, RGB or
  grayscale; files that cannot be decoded are named in a warning and skipped.

Every split is a batched `tf.data.Dataset` of (float32 images (batch, height, width,
channels), int32 labels (batch,)). Images are in [0, 255] until `preprocess` (a backbone's
`preprocess_input`, or scaling to [0, 1]). `pipeline.py` shows the order of the steps and
why. Options are checked by `check_source` before TensorFlow is imported, so recipes can
call it in their `validate()`.
"""

import dataclasses
from typing import Callable, Optional

from headstart.recipes.data import digits, folder, tfds_source
from headstart.recipes.data.digits import DIGITS_SOURCE_CLASSES, DIGITS_TARGET_CLASSES
from headstart.recipes.data.folder import SkippedImageWarning
from headstart.recipes.data.spec import (AUGMENTATIONS, BATCH_SIZE, CHANNELS, DEFAULT_SOURCE, IMAGE_SIZE, SEED,
                               TEST_FRACTION, VALIDATION_FRACTION, DataSpec, check_source, list_datasets,
                               source_class_names)

__all__ = ["AUGMENTATIONS", "DIGITS_SOURCE_CLASSES", "DIGITS_TARGET_CLASSES", "DataSpec", "DataSplits",
           "SkippedImageWarning", "check_source", "class_counts", "list_datasets", "load",
           "source_class_names"]

# Source kind -> the function that reads it into `pipeline.Records`.
_READERS = {"digits": digits.read, "folder": folder.read, "tfds": tfds_source.read}


@dataclasses.dataclass
class DataSplits:
    """What `load` returns.

    Attributes:
        train: batches of (images float32, labels int32); shuffled (a new order every
            epoch) and augmented if asked.
        val: batches in a fixed order, never augmented.
        test: like `val`, or `None` when there is no test split.
        class_names: `class_names[label]` names each label.
        input_shape: (height, width, channels) of each image.
        num_examples: examples per split, e.g. `{"train": 1079, "val": 359, "test": 359}`.
        spec: the checked options the splits were built from.
        train_epochs: `train_epochs(first_epoch, end_epoch, passes=1)` is the training split's epochs
            `first_epoch` to `end_epoch - 1` as one dataset, each in an order fixed by
            (seed, epoch), for `fit(..., steps_per_epoch=...)`: the engine trains on it so
            that a resumed run sees the batches the uninterrupted one saw. `None` for
            hand-made splits.
        train_plain: one pass over the training split in a fixed order, neither augmented
            nor mixed, integer labels: what the baselines fit on. `None` for hand-made splits.
    """

    train: "tf.data.Dataset"  # noqa: F821 (TensorFlow is imported only when data is loaded)
    val: "tf.data.Dataset"  # noqa: F821
    test: Optional["tf.data.Dataset"]  # noqa: F821
    class_names: list
    input_shape: tuple
    num_examples: dict
    spec: DataSpec
    train_epochs: Optional[Callable] = None
    train_plain: Optional["tf.data.Dataset"] = None  # noqa: F821

    @property
    def num_classes(self):
        return len(self.class_names)


def load(source=DEFAULT_SOURCE, *, image_size=IMAGE_SIZE, channels=CHANNELS, batch_size=BATCH_SIZE,
         preprocess=None, augment=(), classes=None, labels_per_class=None,
         validation_fraction=VALIDATION_FRACTION, test_fraction=TEST_FRACTION, seed=SEED, shuffle=True,
         cache=True, data_dir=None, mixup=0.0, cutmix=0.0):
    """Load `source` as train / val (/ test) pipelines, ready for `model.fit`.

    Args:
        source: `"digits"`, `"tfds:NAME[:CONFIG]"` or a folder of images with one
            sub-folder per class. Defaults to `"digits"`.
        image_size: (height, width) every image is resized to (bilinear), or one int for
            a square. Defaults to `(32, 32)`.
        channels: 1 or 3. Grayscale is repeated to 3 channels; RGB becomes grayscale by
            luminance. Defaults to `3`.
        batch_size: examples per batch (the last batch may be smaller). Defaults to `32`.
        preprocess: called on float32 batches with values in [0, 255], e.g.
            `keras.applications.resnet50.preprocess_input`. Defaults to `None`: scale to [0, 1].
        augment: names from `AUGMENTATIONS` ("flip", "rotation", "zoom", "contrast"), or
            a comma-separated string of them; Keras preprocessing layers, applied to the
            training split only. Defaults to `()`.
        classes: class names to keep, relabelled 0..n-1 in the given order (ints are
            fine for digits, whose names are "0".."9"), or a comma-separated string of
            them; for digits also the presets `"source"` (`DIGITS_SOURCE_CLASSES`, 0-4)
            and `"target"` (`DIGITS_TARGET_CLASSES`, 5-9). `None` or `"all"`: all classes.
            Defaults to `None`.
        labels_per_class: keep only this many training images per class, sampled with
            `seed` (few labels); val and test stay whole. `None` or `"all"`: all of them.
            Defaults to `None`.
        validation_fraction: share of each class held out for validation. A TFDS
            dataset's own `validation` split is used instead when it has one; TFDS slices
            round to whole percents. Defaults to `0.2`.
        test_fraction: share of each class held out for testing; `0` for no test split.
            A TFDS dataset's own `test` split is used instead when it has one.
            Defaults to `0.2`.
        seed: fixes the split, the few-labels sample, the shuffle order and the
            augmentations. Defaults to `0`.
        shuffle: shuffle the training split. Defaults to `True`.
        cache: keep decoded, resized images in memory after the first epoch (as uint8).
            Turn off for data larger than memory: each epoch then reads and decodes from
            disk again. Defaults to `True`.
        data_dir: where TFDS datasets are stored and downloaded to. Defaults to `None`
            (TFDS's own default, `~/tensorflow_datasets`).
        mixup, cutmix: the alpha of Keras' `MixUp` / `CutMix` on training batches (after
            `augment`): the training labels become soft (float32 rows over the classes).
            With both, each batch gets one of the two, at random. Defaults to `0.0` (off).

    Returns:
        A `DataSplits`.

    Raises:
        UsageError: for any bad option or unusable source, before TensorFlow is imported;
            for a TFDS dataset that was not downloaded yet, unknown `classes` and too few
            images for `labels_per_class` are only found once it is.

    Example:
        >>> splits = load("digits", image_size=16, test_fraction=0)
        >>> splits.class_names[:3], splits.input_shape, splits.test
        (['0', '1', '2'], (16, 16, 3), None)
    """
    spec = check_source(source, image_size=image_size, channels=channels, batch_size=batch_size,
                        augment=augment, classes=classes, labels_per_class=labels_per_class,
                        validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed,
                        shuffle=shuffle, cache=cache, data_dir=data_dir, mixup=mixup, cutmix=cutmix)
    # Imported only now that every check has passed: it imports TensorFlow.
    from headstart.recipes.data import pipeline

    records = _READERS[spec.kind](spec)
    datasets = pipeline.build(records, spec, preprocess)
    return DataSplits(
        train=datasets["train"], val=datasets["val"], test=datasets.get("test"),
        class_names=list(records.class_names), input_shape=spec.input_shape,
        num_examples={split: records.splits[split][1] if split in records.splits else 0
                      for split in ("train", "val", "test")},
        spec=spec, train_epochs=datasets["train_epochs"], train_plain=datasets["train_plain"],
    )


def class_counts(splits):
    """Training examples per label, `counts[label]` (one pass over the labels of the training split)."""
    import numpy as np

    train = splits.train_plain if splits.train_plain is not None else splits.train
    labels = np.concatenate([labels for labels in train.map(lambda images, labels: labels).as_numpy_iterator()])
    return np.bincount(labels.astype(int), minlength=splits.num_classes).tolist()
