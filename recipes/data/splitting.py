"""Which examples go where: stratified splits, class selection and few labels (NumPy only).

Every source that knows its labels up front (digits, an image folder) and TFDS after one
pass over its labels use these same functions, so a seed means the same thing everywhere.
"""

import numpy as np

from headstart.recipes.errors import UsageError

SPLITS = ("train", "val", "test")


def split_sizes(count, validation_fraction, test_fraction):
    """(train, val, test) sizes for one class of `count` examples.

    Rounded per class so every class is split in the same proportions; a class always
    keeps at least one training example, since a class the model never trains on cannot
    be learned.
    """
    test = round(test_fraction * count)
    val = round(validation_fraction * count)
    while count and val + test >= count:
        if test >= val and test:
            test -= 1
        else:
            val -= 1
    return count - val - test, val, test


def stratified_split(labels, validation_fraction, test_fraction, seed):
    """Indices of the train, val and test examples, each class split in the same proportions.

    Within each split the indices come in a seeded random order, so even an unshuffled
    split mixes its classes.

    Returns:
        `{"train": indices, "val": indices, "test": indices}`; `test` is empty when
        `test_fraction` is 0.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        train, val, _ = split_sizes(len(members), validation_fraction, test_fraction)
        parts["train"].append(members[:train])
        parts["val"].append(members[train:train + val])
        parts["test"].append(members[train + val:])
    return {split: rng.permutation(np.concatenate(chunks)).astype(np.int64) if chunks else
            np.zeros(0, np.int64) for split, chunks in parts.items()}


def select(indices, labels, source_labels, labels_per_class=None, *, class_names, seed):
    """Keep the examples of `source_labels`, relabelled 0..n-1 in that order; optionally only k per class.

    Args:
        indices: the examples of one split, as indices into `labels`.
        labels: every example's label in the source.
        source_labels: the classes to keep; class `source_labels[i]` becomes label `i`.
        labels_per_class: keep only this many examples of each class, sampled with
            `seed` (the few-labels setting). Defaults to `None` (keep all).
        class_names: the kept classes' names, for the error message.
        seed: seed of the few-labels sample.

    Returns:
        (indices, new_labels): the kept examples, in their original order, and their
        labels in 0..n-1 (int32).

    Raises:
        UsageError: a class has fewer than `labels_per_class` examples.
    """
    indices = np.asarray(indices, dtype=np.int64)
    old_labels = np.asarray(labels)[indices]
    new_label_of = {old: new for new, old in enumerate(source_labels)}
    keep = np.isin(old_labels, list(source_labels))
    if labels_per_class is not None:
        keep = _few_labels(old_labels, keep, source_labels, labels_per_class, class_names, seed)
    new_labels = np.array([new_label_of[old] for old in old_labels[keep]], dtype=np.int32)
    return indices[keep], new_labels


def _few_labels(old_labels, keep, source_labels, labels_per_class, class_names, seed):
    members = {name: np.flatnonzero(keep & (old_labels == old)) for name, old in zip(class_names, source_labels)}
    smallest = min(members, key=lambda name: len(members[name]))
    if len(members[smallest]) < labels_per_class:
        raise UsageError(too_few_labels_message(labels_per_class, len(members[smallest]), smallest))
    rng = np.random.default_rng(seed)
    few = np.zeros_like(keep)
    for name in class_names:
        few[rng.choice(members[name], size=labels_per_class, replace=False)] = True
    return few


def too_few_labels_message(labels_per_class, available, class_name):
    return (f"labels_per_class={labels_per_class} is more than the {available} training images of class "
            f"{class_name!r}; ask for at most {available}, or lower the validation/test fractions. "
            f"Received: labels_per_class={labels_per_class}")
