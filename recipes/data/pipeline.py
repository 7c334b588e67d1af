"""From records to batches: the one pipeline every source goes through.

    records (item, label)            item: pixels, a file path or encoded bytes; cheap to hold
      -> shuffle                     train, when not cached: reorders items, not decoded images
      -> decode, channels, resize    bilinear, in float32; kept as uint8 in [0, 255]
      -> cache                       in memory: decoding and resizing happen in the first epoch only
      -> shuffle                     train, when cached: a new order every epoch
      -> batch
      -> augment                     train only, if asked: Keras preprocessing layers
      -> float32, preprocess         the backbone's `preprocess_input`, or / 255
      -> prefetch

Why `preprocess` comes after the cache, although it is deterministic: the augmentation
layers expect [0, 255] (`RandomContrast` clips to its `value_range`), so an augmented
batch can only be preprocessed after augmentation; and a cache of uint8 images takes a
quarter of the memory of float32 ones, while preprocessing a batch is a few elementwise
ops. So every split is preprocessed in the same place.
"""

import dataclasses
import functools
from typing import Callable

import keras
import tensorflow as tf

from recipes.data.spec import AUGMENTATIONS, resolve_classes
from recipes.data.splitting import select, stratified_split
from recipes.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
# Largest shuffle buffer, in examples. Before the cache it holds items (paths, encoded
# images); after it, references to cached images.
SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass
class Records:
    """One source's examples before decoding.

    Attributes:
        splits: split name ("train", "val", optionally "test") -> (dataset of
            (item, int32 label), number of examples).
        class_names: `class_names[label]` names each label.
        decode: item -> image (height, width, channels) with values in [0, 255].
        decode_may_fail: the items are files from disk; decode errors that the source's
            pre-scan missed are skipped rather than ending the epoch.
    """

    splits: dict
    class_names: tuple
    decode: Callable
    decode_may_fail: bool = False


def records_from_arrays(items, labels, all_class_names, spec, *, decode, decode_may_fail=False):
    """Split (stratified, seeded) and select examples whose labels are known up front.

    `labels` index `all_class_names`, the source's classes.
    """
    class_names, source_labels = resolve_classes(spec, all_class_names)
    splits = {}
    for split, indices in stratified_split(labels, spec.validation_fraction, spec.test_fraction,
                                           spec.seed).items():
        if split == "test" and not spec.test_fraction:
            continue
        kept, new_labels = select(indices, labels, source_labels,
                                  spec.labels_per_class if split == "train" else None,
                                  class_names=class_names, seed=spec.seed)
        splits[split] = (tf.data.Dataset.from_tensor_slices((items[kept], new_labels)), len(kept))
    return Records(splits, class_names, decode, decode_may_fail)


def build(records, spec, preprocess=None):
    """Split name -> batched `tf.data.Dataset` of (float32 images, int32 labels)."""
    for split, (_, size) in records.splits.items():
        if size == 0 and split != "train":
            raise UsageError(f"The {split} split of {spec.source!r} is empty; use more images or a larger "
                             f"{'validation' if split == 'val' else 'test'}_fraction. "
                             f"Received: {split}_examples=0")
    augment = _augmenter(spec.augment, spec.seed) if spec.augment else None
    return {split: _pipeline(dataset, size, records, spec, training=split == "train",
                             augment=augment if split == "train" else None,
                             preprocess=preprocess or _scale_to_unit)
            for split, (dataset, size) in records.splits.items()}


def _pipeline(dataset, size, records, spec, *, training, augment, preprocess):
    shuffle = training and spec.shuffle
    shuffle_buffer = max(1, min(size, SHUFFLE_BUFFER))
    if shuffle and not spec.cache:
        dataset = dataset.shuffle(shuffle_buffer, seed=spec.seed, reshuffle_each_iteration=True)
    to_image = functools.partial(_to_image, decode=records.decode, image_size=spec.image_size,
                                 channels=spec.channels)
    dataset = dataset.map(lambda item, label: (to_image(item), label), num_parallel_calls=AUTOTUNE)
    if records.decode_may_fail:
        dataset = dataset.ignore_errors(log_warning=True)
    if spec.cache:
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(shuffle_buffer, seed=spec.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(spec.batch_size)

    def finish(images, labels):
        images = tf.cast(images, tf.float32)
        if augment is not None:
            images = augment(images)
        return preprocess(images), labels

    return dataset.map(finish, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _to_image(item, *, decode, image_size, channels):
    image = _to_channels(tf.cast(decode(item), tf.float32), channels)
    image = tf.image.resize(image, image_size, method="bilinear")
    return tf.saturate_cast(tf.round(image), tf.uint8)


def _to_channels(image, channels):
    """Grayscale -> RGB by repeating; RGB -> grayscale by luminance; RGBA loses its alpha."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have in (3, 4) and channels == 1:
        return tf.image.rgb_to_grayscale(image[..., :3])
    if have == 4 and channels == 3:
        return image[..., :3]
    raise UsageError(f"Cannot turn images with {have} channels into {channels}; the source's images "
                     f"need a fixed 1, 3 or 4 channels. Received: channels={channels}")


def _augmenter(names, seed):
    """A function applying the named augmentation layers, in `AUGMENTATIONS` order, to a batch."""
    augmentation_layers = [
        getattr(keras.layers, layer_name)(**arguments, seed=seed + position)
        for position, (name, (layer_name, arguments)) in enumerate(AUGMENTATIONS.items())
        if name in names
    ]

    def augment(images):
        for layer in augmentation_layers:
            images = layer(images, training=True)
        return images

    return augment


def _scale_to_unit(images):
    return images / 255.0
