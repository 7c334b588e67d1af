"""From records to batches: the one pipeline every source goes through.

    records (item, label)            item: pixels, a file path or encoded bytes; cheap to hold
      -> shuffle                     train, when not cached: reorders items, not decoded images
      -> decode, channels, resize    bilinear, in float32; kept as uint8 in [0, 255]
      -> cache                       in memory, when every split fits in MEMORY_CACHE_BYTES:
                                     decoding and resizing happen in the first epoch only
      -> shuffle                     train, when cached: a new order every epoch
      -> batch
      -> augment                     train only, if asked: Keras preprocessing layers
      -> mix                         train only, if asked: Keras' MixUp / CutMix (soft labels)
      -> float32, preprocess         the backbone's `preprocess_input`, or / 255
      -> prefetch

Why `preprocess` comes after the cache, although it is deterministic: the augmentation
layers expect [0, 255] (`RandomContrast` clips to its `value_range`), so an augmented
batch can only be preprocessed after augmentation; and a cache of uint8 images takes a
quarter of the memory of float32 ones, while preprocessing a batch is a few elementwise
ops. So every split is preprocessed in the same place.

Why the cache has a size limit: a cache that outgrows memory crashes the run in its first
epoch, while streaming only costs decoding again every epoch. Without the cache nothing
holds more than a few batches of decoded images (the shuffle buffer holds items, the
parallel map and the prefetch a few batches), so a folder or a TFDS dataset larger than
memory streams from disk (`scripts/bench_streaming.py` measures it). Both ways give the
same batches in the same order: the shuffle draws the same permutation (same seed, same
buffer size, same count) whether it reorders items or cached images.
"""

import dataclasses
import functools
from typing import Callable

import keras
import tensorflow as tf

from headstart.recipes.data.spec import AUGMENTATIONS, resolve_classes
from headstart.recipes.data.splitting import select, stratified_split
from headstart.recipes.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
# Largest shuffle buffer, in examples. Before the cache it holds items (paths, encoded
# images); after it, references to cached images.
SHUFFLE_BUFFER = 10_000
# Decoded images (uint8, all splits together) are cached in memory up to this size; larger
# data streams from disk every epoch. 1 GiB holds e.g. tf_flowers at 224 px (3,670 images,
# 0.55 GB) or 13,000 images at 160 px, and is little next to a machine that trains models.
MEMORY_CACHE_BYTES = 1 << 30


@dataclasses.dataclass
class Records:
    """One source's examples before decoding.

    Attributes:
        splits: split name ("train", "val", optionally "test") -> (dataset of
            (item, int32 label), number of examples).
        class_names: `class_names[label]` names each label.
        decode: item -> image (height, width, channels) with values in [0, 255]; it must
            not fail on any item (a folder's pre-scan leaves out the files it would fail on).
    """

    splits: dict
    class_names: tuple
    decode: Callable


def records_from_arrays(items, labels, all_class_names, spec, *, decode):
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
    return Records(splits, class_names, decode)


def build(records, spec, preprocess=None):
    """Split name -> batched `tf.data.Dataset` of (float32 images, int32 labels), and
    `"train_epochs"`: the training split's epoch-numbered stream (see `_pipeline`)."""
    for split, (_, size) in records.splits.items():
        if size == 0 and split != "train":
            raise UsageError(f"The {split} split of {spec.source!r} is empty; use more images or a larger "
                             f"{'validation' if split == 'val' else 'test'}_fraction. "
                             f"Received: {split}_examples=0")
    # Factories of seed -> function: each epoch of `train_epochs` makes its own from (seed,
    # epoch), so a resumed run draws the augmentations the uninterrupted one drew (the
    # layers' seed generators advance with every batch and are not saved).
    augment = functools.partial(_augmenter, spec.augment) if spec.augment else None
    mix = functools.partial(_mixer, spec, len(records.class_names)) if spec.mixes else None
    cache = caches_in_memory([size for _, size in records.splits.values()], spec)
    pipelines = {split: _pipeline(dataset, size, records, spec, cache=cache, training=split == "train",
                                  augment=augment if split == "train" else None, mix=mix if split == "train" else None,
                                  preprocess=preprocess or _scale_to_unit)
                 for split, (dataset, size) in records.splits.items()}
    train, train_epochs, train_plain = pipelines["train"]
    return {**{split: batches for split, (batches, *_) in pipelines.items()},
            "train_epochs": train_epochs, "train_plain": train_plain}


def cached_bytes(split_sizes, spec):
    """Memory the cache takes for splits of `split_sizes` examples (decoded uint8 images at
    `spec`'s size), or None if a size is unknown."""
    split_sizes = list(split_sizes)
    if any(size < 0 for size in split_sizes):  # tf.data's UNKNOWN_CARDINALITY
        return None
    height, width = spec.image_size
    return sum(split_sizes) * height * width * spec.channels


def caches_in_memory(split_sizes, spec):
    """Whether `build` caches the decoded images of splits of `split_sizes` examples in
    memory: when `spec.cache` asks for it and they fit in `MEMORY_CACHE_BYTES`."""
    size = cached_bytes(split_sizes, spec)
    return spec.cache and size is not None and size <= MEMORY_CACHE_BYTES


def _pipeline(dataset, size, records, spec, *, cache, training, augment, mix, preprocess):
    """The split's batches, and for the training split also `epochs(first_epoch, end_epoch)` and one
    plain pass (fixed order, not augmented nor mixed); else None, None."""
    shuffle = training and spec.shuffle
    shuffle_buffer = max(1, min(size, SHUFFLE_BUFFER))
    to_image = functools.partial(_to_image, decode=records.decode, image_size=spec.image_size,
                                 channels=spec.channels)

    def decoded(items):
        # A plain map, never `ignore_errors()`: dropping elements makes the split's length
        # unknown to tf.data, and Keras then finds the end of every validation and test pass
        # by running out of data, warning "Your input ran out of data" each time (and a
        # dropped file would shift every later epoch of `epochs` by an example). Files the
        # decoder would fail on are left out before, by the source (`folder._scan`).
        return items.map(lambda item, label: (to_image(item), label), num_parallel_calls=AUTOTUNE)

    # What each epoch's order is drawn from: items (paths, bytes), or the cached images.
    source = decoded(dataset).cache() if cache else dataset

    def finisher(seed, plain=False):
        augmenting = augment(seed) if augment is not None and not plain else None
        mixing = mix(seed) if mix is not None and not plain else None

        def finish(images, labels, seeds=None):
            images = tf.cast(images, tf.float32)
            if augmenting is not None:
                images = augmenting(images, seeds)
            if mixing is not None:
                images, labels = mixing(images, labels, seeds)
            return preprocess(images), labels

        return finish

    def ordered(order, plain=False):
        items = order(source) if shuffle and not plain else source
        if not cache:
            items = decoded(items)
        return items.batch(spec.batch_size)

    def one_pass(order, plain=False):
        return ordered(order, plain).map(finisher(spec.seed, plain), num_parallel_calls=AUTOTUNE)

    batches = one_pass(lambda items: items.shuffle(shuffle_buffer, seed=spec.seed,
                                                   reshuffle_each_iteration=True)).prefetch(AUTOTUNE)
    if not training:
        return batches, None, None

    def epochs(first_epoch, end_epoch, passes=1):
        """Epochs `first_epoch` to `end_epoch - 1`, back to back, in one dataset; each epoch
        `passes` passes over the split (a budget in steps on few images: see the engine).

        Epoch e's order and augmentations depend on (seed, e, passes) only, not on how many
        epochs this process has run: a run resumed at epoch e sees the batches the
        uninterrupted run saw. (`batches` reshuffles with tf.data's seed generator, which
        advances with every iterator made, and Keras makes more than one per epoch.) Pass
        `steps_per_epoch=passes * ceil(examples / batch_size)` to `fit`. Shuffle seeds are
        Python ints (tf.data refuses a traced seed once a global seed is set), so each epoch's
        order is its own small pipeline, concatenated; its passes are one pipeline repeated,
        reshuffling from the epoch's seed, so 500 passes are 25 pipelines, not 500. The
        augmentation and mixing come after the concatenation, in one map, drawing from
        stateless seeds made of the epoch's seed and the batch's number in the epoch
        (`_BatchSeeds`): tracing that map costs a noticeable fraction of a second, once per
        dataset rather than once per epoch.
        """
        finish = finisher(spec.seed)

        def epoch(number):
            batches = ordered(lambda items: items.shuffle(shuffle_buffer, seed=epoch_seed(spec.seed, number),
                                                          reshuffle_each_iteration=passes > 1))
            if passes > 1:
                batches = batches.repeat(passes)
            seeds = tf.data.Dataset.from_tensors(tf.constant(epoch_seed(spec.seed, number), tf.int64)).repeat()
            return tf.data.Dataset.zip(seeds, batches.enumerate())

        def finish_numbered(seed, numbered):
            number, (images, labels) = numbered
            return finish(images, labels, _BatchSeeds(seed, number))

        return concatenated(epoch(number) for number in range(first_epoch, end_epoch)).map(
            finish_numbered, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    return batches, epochs, one_pass(None, plain=True)


def concatenated(datasets):
    datasets = iter(datasets)
    result = next(datasets)
    for dataset in datasets:
        result = result.concatenate(dataset)
    return result


def epoch_seed(seed, epoch):
    """The shuffle seed of epoch `epoch` of a run seeded `seed`."""
    return seed * 1_000_003 + epoch


def _to_image(item, *, decode, image_size, channels):
    image = _to_channels(tf.cast(decode(item), tf.float32), channels)
    image = tf.image.resize(image, image_size, method="bilinear")
    return tf.saturate_cast(tf.round(image), tf.uint8)


def image_from_bytes(encoded, image_size, channels):
    """An encoded PNG / JPEG / BMP / GIF (a scalar string tensor) as the pipeline makes every training
    image: uint8 (height, width, channels) at `image_size`, bilinear. `predict` and the exported
    SavedModel's bytes signature use it, so a file is seen as in training."""
    return _to_image(encoded, decode=lambda data: tf.io.decode_image(data, channels=3, expand_animations=False),
                     image_size=tuple(image_size), channels=channels)


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


class _BatchSeeds:
    """The stateless seeds of one batch of `epochs`: `for_slot(s)` stands in for the seed
    generator of the batch's s-th random layer (`SEED_SLOTS`), its k-th draw seeded
    [epoch seed, (batch * SEED_SLOTS + s) * DRAWS_PER_SLOT + k], so no two draws of a run
    share a seed and none depends on what ran before."""

    DRAWS_PER_SLOT = 64

    def __init__(self, epoch_seed_value, batch_number):
        self.epoch_seed = epoch_seed_value
        self.batch_number = batch_number

    def for_slot(self, slot):
        return _StatelessSeed(tf.stack([self.epoch_seed, (self.batch_number * SEED_SLOTS + slot)
                                        * self.DRAWS_PER_SLOT]))


class _StatelessSeed(keras.random.SeedGenerator):
    """What a Keras layer's `generator` returns draws from, made from one seed tensor instead of
    a state variable: Keras' random ops take a `SeedGenerator` or an int, not a seed tensor.
    The k-th draw is seeded `seed + [0, k]` (a layer draws a few times per batch)."""

    def __init__(self, seed):   # no super().__init__(): it would make the state variable
        self.seed = seed
        self.draws = 0

    def next(self, ordered=True):
        self.draws += 1
        return self.seed + tf.constant([0, self.draws - 1], tf.int64)


# Which seed slot each random layer (augmentations, then the mixers and the choice between
# them) takes in a batch's `_BatchSeeds`.
MIX_SLOTS = {"choice": len(AUGMENTATIONS), "MixUp": len(AUGMENTATIONS) + 1, "CutMix": len(AUGMENTATIONS) + 2}
SEED_SLOTS = len(AUGMENTATIONS) + len(MIX_SLOTS)


def _seeded(layer, seeds, slot):
    """`layer`, drawing from `seeds`' slot `slot` if given, else from its own seed generator."""
    if seeds is not None:
        # The layer asks `_get_seed_generator()`, which returns this attribute; bypass Keras'
        # attribute tracking (a stand-in is no state to save).
        object.__setattr__(layer, "generator", seeds.for_slot(slot))
    return layer


def _augmenter(names, seed):
    """A function applying the named augmentation layers, in `AUGMENTATIONS` order, to a batch;
    given `_BatchSeeds`, each layer draws from its slot of them."""
    augmentation_layers = [
        (position, getattr(keras.layers, layer_name)(**arguments, seed=seed + position))
        for position, (name, (layer_name, arguments)) in enumerate(AUGMENTATIONS.items())
        if name in names
    ]

    def augment(images, seeds=None):
        for position, layer in augmentation_layers:
            images = _seeded(layer, seeds, position)(images, training=True)
        return images

    return augment


def _mixer(spec, num_classes, seed):
    """A function mixing a batch with Keras' `MixUp` / `CutMix` layers: (images in [0, 255], int
    labels, optional `_BatchSeeds`) -> (mixed images, soft labels). With both, each batch gets
    one, at random (timm's Mixup picks between them per batch the same way)."""
    # CutMix calls its Beta(alpha, alpha) parameter `factor`.
    layers = [layer(**{argument: alpha}, seed=seed + offset)
              for offset, (layer, argument, alpha) in enumerate(((keras.layers.MixUp, "alpha", spec.mixup),
                                                                 (keras.layers.CutMix, "factor", spec.cutmix)),
                                                                start=100) if alpha]

    def apply(layer, images, labels, seeds):
        mixed = _seeded(layer, seeds, MIX_SLOTS[type(layer).__name__])(
            {"images": images, "labels": labels}, training=True)
        return mixed["images"], mixed["labels"]

    def mix(images, labels, seeds=None):
        labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if len(layers) == 1:
            return apply(layers[0], images, labels, seeds)
        if seeds is None:
            choice = tf.random.uniform((), seed=seed)
        else:
            choice = keras.random.uniform((), seed=seeds.for_slot(MIX_SLOTS["choice"]))
        return tf.cond(choice < 0.5, lambda: apply(layers[0], images, labels, seeds),
                       lambda: apply(layers[1], images, labels, seeds))

    return mix


def _scale_to_unit(images):
    return images / 255.0
