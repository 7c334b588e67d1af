"""`check_source`: every data option checked and normalised before TensorFlow is imported.

A mistake (a typo in a dataset name, a missing folder, a fraction above 1) then costs
the user a second, not the minute it takes TensorFlow to start and a dataset to load.
The result, a `DataSpec`, holds plain values only, so a recipe can save it with a run.
"""

import dataclasses
import numbers
import math
import os

import numpy as np

from headstart.recipes.data import digits, folder, splitting, tfds_source
from headstart.recipes.errors import UsageError

# ## Defaults (shared by `check_source` and `load`)
DEFAULT_SOURCE = "digits"
IMAGE_SIZE = (32, 32)  # (height, width) after resizing: the builders' default input.
CHANNELS = 3  # what ImageNet backbones take; grayscale is repeated to 3 channels.
BATCH_SIZE = 32
VALIDATION_FRACTION = 0.2  # of each class, for sources we split ourselves.
TEST_FRACTION = 0.2  # 0 for no test split (a TFDS dataset's own test split is always used).
SEED = 0  # the split, the few-labels sample, the shuffle and the augmentations.

# Augmentation name -> (keras.layers class, its arguments); applied in this order.
AUGMENTATIONS = {
    "flip": ("RandomFlip", {"mode": "horizontal"}),
    "rotation": ("RandomRotation", {"factor": 0.1}),  # up to 10% of a full turn either way
    "zoom": ("RandomZoom", {"height_factor": 0.1}),
    "contrast": ("RandomContrast", {"factor": 0.2}),
}
CHANNEL_CHOICES = (1, 3)
SOURCE_FORMS = "'digits', 'tfds:NAME[:CONFIG]' or a folder of images"


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What `load` reads and how, checked: see `load` for each option's meaning.

    `kind` is "digits", "tfds" or "folder"; `location` is "" for digits, the TFDS
    "name[:config]", or the folder's absolute path. `classes` is the class names to
    keep (a digits preset spelled out), or `None` for all.
    """

    source: str
    kind: str
    location: str
    classes: tuple | None
    image_size: tuple
    channels: int
    batch_size: int
    augment: tuple
    labels_per_class: int | None
    validation_fraction: float
    test_fraction: float
    seed: int
    shuffle: bool
    cache: bool
    data_dir: str | None
    mixup: float = 0.0     # Beta(alpha, alpha) of MixUp on training batches; 0: off
    cutmix: float = 0.0    # the same for CutMix; with both, each batch gets one of them

    @property
    def mixes(self):
        """Whether training batches are mixed (their labels are then soft, one-hot rows mixed)."""
        return bool(self.mixup or self.cutmix)

    @property
    def input_shape(self):
        return (*self.image_size, self.channels)


def check_source(source=DEFAULT_SOURCE, *, image_size=IMAGE_SIZE, channels=CHANNELS,
                 batch_size=BATCH_SIZE, augment=(), classes=None, labels_per_class=None,
                 validation_fraction=VALIDATION_FRACTION, test_fraction=TEST_FRACTION, seed=SEED,
                 shuffle=True, cache=True, data_dir=None, mixup=0.0, cutmix=0.0):
    """Check every data option without loading any data; takes `load`'s arguments but `preprocess`.

    Checks are cheap: folders are listed but no image is opened, TFDS is asked about
    names and whether a dataset is prepared, and only a TFDS dataset that would have to
    be downloaded costs a network check (at most 3 s). What only the data can tell is
    checked by `load`: `classes` and `labels_per_class` of a TFDS dataset that is not
    downloaded yet (some, like cifar10, learn their class names when prepared).

    Returns:
        A `DataSpec` with every option normalised (`image_size` a pair, `augment` and
        `classes` tuples, paths absolute).

    Raises:
        UsageError: with a one-line message naming the problem and the fix.

    Example:
        >>> check_source("digits", labels_per_class=0)
        Traceback (most recent call last):
        recipes.errors.UsageError: `labels_per_class` must be a positive integer. Received: labels_per_class=0
    """
    image_size = _check_image_size(image_size)
    channels = int(_check_choice(channels, CHANNEL_CHOICES, "channels"))
    batch_size = _check_positive_int(batch_size, "batch_size")
    augment = _check_augment(augment)
    mixup, cutmix = _check_alpha(mixup, "mixup"), _check_alpha(cutmix, "cutmix")
    if isinstance(labels_per_class, str) and labels_per_class == "all":   # the command line's spelling of None
        labels_per_class = None
    if labels_per_class is not None:
        labels_per_class = _check_positive_int(labels_per_class, "labels_per_class")
    validation_fraction, test_fraction = _check_fractions(validation_fraction, test_fraction)
    seed = _check_int(seed, "seed", minimum=0)
    shuffle = _check_bool(shuffle, "shuffle")
    cache = _check_bool(cache, "cache")
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(_check_path(data_dir, "data_dir")))
        # A missing folder is fine (TFDS downloads into it); a file there never is.
        if os.path.exists(data_dir) and not os.path.isdir(data_dir):
            raise UsageError(f"--data-dir {data_dir} is a file, not a folder: pass the folder TFDS datasets are "
                             f"(or will be) stored in. Received: data_dir={data_dir!r}")

    source = _check_path(source, "source") if isinstance(source, os.PathLike) else source
    kind, location, all_class_names, class_sizes = _resolve(source, data_dir)
    if isinstance(classes, str) and classes == "all":   # the command line's spelling of None
        classes = None
    if isinstance(classes, str) and classes in digits.PRESETS:
        if kind != "digits":
            raise UsageError(f"classes={classes!r} is a preset of the digits source (0-4 or 5-9); for "
                             f"{source!r}, name the classes to keep. Received: classes={classes!r}")
        classes = digits.PRESETS[classes]
    classes = _check_class_list(classes)
    spec = DataSpec(
        source=source if kind != "folder" else location, kind=kind, location=location, classes=classes,
        image_size=image_size, channels=channels, batch_size=batch_size, augment=augment,
        labels_per_class=labels_per_class, validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed, shuffle=shuffle, cache=cache, data_dir=data_dir,
        mixup=mixup, cutmix=cutmix,
    )
    if all_class_names is not None:
        class_names, source_labels = resolve_classes(spec, all_class_names)
        if labels_per_class is not None and kind != "tfds":
            _check_enough_labels(spec, class_sizes, class_names, source_labels)
    return spec


def resolve_classes(spec, all_class_names):
    """(class_names, source_labels) to keep, in label order: `class_names[i]` is the
    source's class `source_labels[i]`, relabelled `i`.

    `all_class_names` are the source's classes, by label.
    """
    all_class_names = [str(name) for name in all_class_names]
    class_names = spec.classes if spec.classes is not None else tuple(all_class_names)
    unknown = [name for name in class_names if name not in all_class_names]
    if unknown:
        raise UsageError(f"Unknown class(es) {', '.join(map(repr, unknown))} for {spec.source!r}; its classes "
                         f"are {', '.join(all_class_names)}. Received: classes={spec.classes!r}")
    return class_names, tuple(all_class_names.index(name) for name in class_names)


def list_datasets():
    """(name, description) of the data sources to try, for `headstart list datasets`."""
    return [
        ("digits", "scikit-learn's handwritten digits: 1,797 8x8 grayscale images, 10 classes; "
                   "offline (the default)"),
        ("digits --classes source", "digits 0-4, relabelled 0..4: the source task of the offline "
                                    "transfer demo"),
        ("digits --classes target", "digits 5-9, relabelled 0..4: the target task; add "
                                    "--labels-per-class K for few labels"),
        ("tfds:tf_flowers", "TFDS: 3,670 flower photos, 5 classes (download 218 MiB)"),
        ("tfds:cats_vs_dogs", "TFDS: 23,262 photos, 2 classes (download 787 MiB)"),
        ("tfds:beans", "TFDS: 1,295 bean leaf photos, 3 classes, own validation/test splits (171 MiB)"),
        ("tfds:cifar10", "TFDS: 60,000 32x32 images, 10 classes, own test split (162 MiB)"),
        ("tfds:mnist", "TFDS: 70,000 28x28 grayscale digits, 10 classes, own test split (11 MiB)"),
        ("tfds:NAME[:CONFIG]", "any TFDS image classification dataset; needs internet once, "
                               "or a prepared --data-dir"),
        ("PATH", "a folder of images with one sub-folder per class (PNG, JPEG, BMP, GIF)"),
    ]


def source_class_names(source, data_dir=None):
    """The class names of `source`, all of them, in label order (None for a TFDS dataset not yet
    downloaded); checks the source as `check_source` does, without loading it."""
    return _resolve(source, data_dir)[2]


def _resolve(source, data_dir):
    """(kind, location, the source's class names (None until a TFDS download), class sizes (folders))."""
    if not isinstance(source, str) or not source.strip():
        raise UsageError(f"The data source must be {SOURCE_FORMS}. Received: source={source!r}")
    if source == "digits":
        return "digits", "", digits.CLASS_NAMES, None
    kind, _, rest = source.partition(":")
    if kind == "tfds":
        name, _, config = rest.partition(":")
        if not name:
            raise UsageError(f"Name the TFDS dataset, as in 'tfds:tf_flowers'. Received: source={source!r}")
        return "tfds", rest, tfds_source.check(name, config, data_dir, source), None
    return ("folder", *_resolve_folder(source))


def _resolve_folder(source):
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.isdir(path):
        prefix = source.partition(":")[0]
        if ":" in source and prefix.isidentifier() and not os.path.exists(prefix):
            raise UsageError(f"Unknown data source kind {prefix!r}; use {SOURCE_FORMS}. "
                             f"Received: source={source!r}")
        problem = "is a file, not a folder" if os.path.exists(path) else "does not exist"
        raise UsageError(f"Image folder {path} {problem}; pass a folder with one sub-folder per class, "
                         f"or {SOURCE_FORMS.rpartition(' or ')[0]}.{_tfds_hint(source)} "
                         f"Received: source={source!r}")
    class_names, _, labels = folder.list_images(path)
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        raise UsageError(f"Image folder {path} needs one sub-folder per class and at least 2 classes; "
                         f"found {found}. Received: source={source!r}")
    sizes = [int((labels == label).sum()) for label in range(len(class_names))]
    empty = [name for name, size in zip(class_names, sizes) if size == 0]
    if empty:
        raise UsageError(f"Class folder(s) {', '.join(map(repr, empty))} in {path} hold no "
                         f"{'/'.join(folder.IMAGE_EXTENSIONS)} images; add images or remove the folder. "
                         f"Received: source={source!r}")
    return path, tuple(class_names), sizes


def _tfds_hint(source):
    """' Did you mean tfds:NAME?' when `source` is a TFDS dataset's name."""
    if os.sep in source or source.startswith((".", "~")):
        return ""
    import tensorflow_datasets as tfds

    return f" Did you mean 'tfds:{source}'?" if source in tfds.list_builders(with_community_datasets=False) else ""


def _check_class_list(classes):
    """`classes` as a tuple of names (ints become their digits, as digits' names are), or None."""
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [name.strip() for name in classes.split(",")]
    try:
        names = tuple(str(name) for name in classes)
    except TypeError:
        raise UsageError(f"`classes` must be a list of class names. Received: classes={classes!r}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise UsageError(f"`classes` must name at least 2 different classes. Received: classes={classes!r}")
    return names


def _check_enough_labels(spec, class_sizes, class_names, source_labels):
    """Few labels come from the training split; is it big enough in every kept class?"""
    if class_sizes is None:  # digits: scikit-learn is imported only when few labels are asked for.
        class_sizes = np.bincount(digits.load_arrays()[1])
    train_sizes = {name: splitting.split_sizes(int(class_sizes[label]), spec.validation_fraction,
                                               spec.test_fraction)[0]
                   for name, label in zip(class_names, source_labels)}
    smallest = min(train_sizes, key=train_sizes.get)
    if train_sizes[smallest] < spec.labels_per_class:
        raise UsageError(splitting.too_few_labels_message(spec.labels_per_class, train_sizes[smallest], smallest))


def _check_image_size(image_size):
    pair = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < 1
                             for side in pair):
        raise UsageError(f"`image_size` must be a positive integer or a (height, width) pair of them. "
                         f"Received: image_size={image_size!r}")
    return tuple(int(side) for side in pair)


def _check_alpha(alpha, name):
    """MixUp / CutMix's Beta(alpha, alpha): a positive number, or 0 / None for off."""
    if alpha is None or alpha == 0:
        return 0.0
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise UsageError(f"`{name}` is the alpha of a Beta(alpha, alpha), a number above 0 (e.g. 0.2), or 0 for "
                         f"off. Received: {name}={alpha!r}")
    return float(alpha)


def _check_augment(augment):
    names = augment.split(",") if isinstance(augment, str) else augment
    try:
        names = tuple(name.strip() for name in names if name.strip())
    except (TypeError, AttributeError):
        names = None
    if names is None or any(name not in AUGMENTATIONS for name in names):
        raise UsageError(f"`augment` must name augmentations among {', '.join(AUGMENTATIONS)}. "
                         f"Received: augment={augment!r}")
    return tuple(name for name in AUGMENTATIONS if name in names)


def _check_fractions(validation_fraction, test_fraction):
    for name, value, low in (("validation_fraction", validation_fraction, "0 <"),
                             ("test_fraction", test_fraction, "0 <=")):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not number or not (0 < value < 1 if low == "0 <" else 0 <= value < 1):
            raise UsageError(f"`{name}` must be a number with {low} {name} < 1. Received: {name}={value!r}")
    if validation_fraction + test_fraction >= 1:
        raise UsageError(f"validation_fraction + test_fraction must be below 1, to leave training data. "
                         f"Received: validation_fraction={validation_fraction}, test_fraction={test_fraction}")
    return float(validation_fraction), float(test_fraction)


def _check_positive_int(value, name):
    return _check_int(value, name, minimum=1)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise UsageError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return int(value)


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise UsageError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def _check_path(value, name):
    if not isinstance(value, (str, os.PathLike)):
        raise UsageError(f"`{name}` must be a path. Received: {name}={value!r}")
    return os.fspath(value)


def _check_choice(value, choices, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in choices:
        raise UsageError(f"`{name}` must be one of {', '.join(map(str, choices))}. Received: {name}={value!r}")
    return value
