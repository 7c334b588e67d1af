"""TensorFlow Datasets image classification sets: `tfds:NAME` or `tfds:NAME:CONFIG`.

    tfds:tf_flowers   tfds:cats_vs_dogs   tfds:cifar10   tfds:imagenet2012_subset:1pct

A dataset's own `validation` and `test` splits are used where it has them; what is
missing is cut from `train` by TFDS percent slicing (`train[:60%]`, `train[60%:80%]`,
...), which is deterministic and whole-percent. Data lives in `data_dir` (default: TFDS's
own, `~/tensorflow_datasets` or `$TFDS_DATA_DIR`).

Offline: a dataset that is not prepared in `data_dir` has to be downloaded, which TFDS
would retry for minutes before failing deep in a stack trace. `check` asks
`network.is_online()` first and, when the download host cannot be reached, stops at once
with a message that says how to get the data onto this machine.
"""

import contextlib
import difflib
import logging

import numpy as np

from headstart.recipes import network
from headstart.recipes.errors import UsageError

# TFDS slices in whole percents; a fraction that rounds to 0% still gets 1%.
MIN_SLICE_PERCENT = 1
# Labels are read in large batches when classes or few labels have to be selected.
LABEL_PASS_BATCH = 4096


def check(name, config, data_dir, source):
    """The dataset's class names, or None if it is not prepared yet; raises `UsageError` if
    it cannot be loaded from here.

    Cheap: reads TFDS's registry and the builder's metadata, imports no TensorFlow, and
    only when the dataset is not prepared asks whether the download host is reachable.
    Before preparing, some datasets only know placeholder class names ("0", "1", ...
    for cifar10), hence None.
    """
    import tensorflow_datasets as tfds

    known = tfds.list_builders(with_community_datasets=False)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join('tfds:' + match for match in close)}? " if close else ""
        raise UsageError(f"Unknown TFDS dataset {name!r}; {hint}`headstart list datasets` shows some, "
                         f"https://www.tensorflow.org/datasets/catalog lists all. Received: source={source!r}")
    configs = list(tfds.builder_cls(name).builder_configs)
    if config and config not in configs:
        available = f"its configs are {', '.join(configs)}" if configs else "it has no configs"
        raise UsageError(f"Unknown config {config!r} for TFDS dataset {name!r}; {available}. "
                         f"Received: source={source!r}")
    builder = _builder(name, config, data_dir)
    _, label_key = _supervised_keys(builder, source)
    if not _is_prepared(builder):
        _check_can_download(builder, data_dir, source)
        return None
    return list(builder.info.features[label_key].names)


def _check_can_download(builder, data_dir, source):
    import tensorflow_datasets as tfds

    where = data_dir or tfds.core.constants.DATA_DIR
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        raise UsageError(
            f"TFDS dataset {builder.name!r} is not prepared in {where} and needs a manual download; "
            f"follow https://www.tensorflow.org/datasets/catalog/{builder.name}, run `tfds build "
            f"{builder.name} --data_dir DIR`, then pass --data-dir DIR. Received: source={source!r}"
        )
    if not network.is_online():
        raise UsageError(
            f"TFDS dataset {builder.name!r} is not prepared in {where} and cannot be downloaded here "
            f"({network.DOWNLOAD_HOST} is unreachable); run the same command on a machine with internet "
            f"(or `tfds build {builder.name} --data_dir DIR` there), copy DIR to this machine and pass "
            f"it as --data-dir, or use 'digits', which needs no download. Received: source={source!r}"
        )


def read(spec):
    """The splits of `spec`'s dataset, downloaded and prepared if needed: a `pipeline.Records`."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from headstart.recipes.data import pipeline
    from headstart.recipes.data.spec import resolve_classes
    from headstart.recipes.data.splitting import select

    name, _, config = spec.location.partition(":")
    builder = _builder(name, config, spec.data_dir)
    if not _is_prepared(builder):
        builder.download_and_prepare()  # `check` made sure this can work from here.
    image_key, label_key = _supervised_keys(builder, spec.source)
    class_names, source_labels = resolve_classes(spec, builder.info.features[label_key].names)
    num_classes = builder.info.features[label_key].num_classes
    selecting = spec.labels_per_class is not None or source_labels != tuple(range(num_classes))

    splits = {}
    for split, tfds_split in split_plan(builder.info.splits, spec.validation_fraction,
                                        spec.test_fraction, spec.source).items():
        # Images stay encoded until the pipeline decodes them: the shuffle buffer then holds
        # small records, and examples dropped by the selection are never decoded.
        records = builder.as_dataset(
            split=tfds_split, as_supervised=True, shuffle_files=False,
            decoders={image_key: tfds.decode.SkipDecoding()},
            # The pipeline caches decoded images itself; a second cache of records would double memory.
            read_config=tfds.ReadConfig(try_autocache=False),
        ).map(lambda image, label: (image, tf.cast(label, tf.int32)))
        if not selecting:
            splits[split] = (records, int(records.cardinality()))
            continue
        labels = _read_labels(records)
        kept, _ = select(np.arange(len(labels)), labels, source_labels,
                         spec.labels_per_class if split == "train" else None,
                         class_names=class_names, seed=spec.seed)
        splits[split] = (_keep(records, kept, len(labels), source_labels, num_classes), len(kept))
    return pipeline.Records(splits, class_names, decode=builder.info.features[image_key].decode_example)


def split_plan(available, validation_fraction, test_fraction, source):
    """TFDS split strings for "train", "val" and (if any) "test".

    `available` is the dataset's own split names; empty when TFDS does not know them yet
    (as under `tfds.testing.mock_data`), which is treated as "train" only.
    """
    available = set(available) or {"train"}
    if "train" not in available:
        raise UsageError(f"TFDS dataset has no 'train' split (its splits: {', '.join(sorted(available))}); "
                         f"pick another dataset. Received: source={source!r}")
    val_percent = 0 if "validation" in available else _percent(validation_fraction)
    test_percent = 0 if "test" in available or not test_fraction else _percent(test_fraction)
    train_end = 100 - val_percent - test_percent
    plan = {"train": f"train[:{train_end}%]" if train_end < 100 else "train",
            "val": "validation" if "validation" in available else f"train[{train_end}%:{train_end + val_percent}%]"}
    if "test" in available:
        plan["test"] = "test"
    elif test_percent:
        plan["test"] = f"train[{100 - test_percent}%:]"
    return plan


def _percent(fraction):
    return max(MIN_SLICE_PERCENT, round(100 * fraction))


def _builder(name, config, data_dir):
    import tensorflow_datasets as tfds

    with _quiet_absl():
        return tfds.builder(f"{name}/{config}" if config else name, data_dir=data_dir)


def _is_prepared(builder):
    with _quiet_absl():
        return builder.is_prepared()


@contextlib.contextmanager
def _quiet_absl():
    """Silence TFDS's "Variant folder ... has no dataset_info.json" warnings.

    TFDS logs one whenever it looks for a dataset that is not prepared yet: expected
    here, and noise in front of our one-line error.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _supervised_keys(builder, source):
    """(image feature, label feature) of an image classification dataset."""
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    if (not keys or len(keys) != 2 or not all(isinstance(key, str) for key in keys)
            or not isinstance(features[keys[0]], tfds.features.Image)
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise UsageError(f"TFDS dataset {builder.name!r} is not an image classification dataset "
                         f"(no (image, label) supervised keys); pick one such as tfds:tf_flowers. "
                         f"Received: source={source!r}")
    return keys


def _read_labels(records):
    """Every label of a split, in order: one pass that decodes no image."""
    batches = list(records.map(lambda image, label: label).batch(LABEL_PASS_BATCH).as_numpy_iterator())
    return np.concatenate(batches) if batches else np.zeros(0, np.int32)


def _keep(records, kept, count, source_labels, num_classes):
    """The records at positions `kept`, relabelled so `source_labels[i]` becomes `i`."""
    import tensorflow as tf

    keep = np.zeros(count, dtype=bool)
    keep[kept] = True
    new_label = np.full(num_classes, -1, dtype=np.int32)
    new_label[list(source_labels)] = np.arange(len(source_labels), dtype=np.int32)
    keep, new_label = tf.constant(keep), tf.constant(new_label)
    return (records.enumerate()
            .filter(lambda position, record: keep[position])
            .map(lambda position, record: (record[0], tf.gather(new_label, record[1]))))
