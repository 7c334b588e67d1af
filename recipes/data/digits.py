"""scikit-learn's bundled handwritten digits: real data that ships with a package, so it works offline.

1,797 grayscale 8x8 images of the digits 0-9 (about 180 of each), pixel values 0..16.
The class presets `classes="source"` (0-4) and `classes="target"` (5-9), each relabelled
0..4, are two related tasks, so transfer (train on one, fine-tune on the other with few
labels) can be shown without a download.
"""

import numpy as np

DIGITS_SOURCE_CLASSES = (0, 1, 2, 3, 4)
DIGITS_TARGET_CLASSES = (5, 6, 7, 8, 9)
CLASS_NAMES = tuple(str(digit) for digit in range(10))
# `classes` preset -> the class names it keeps, in label order.
PRESETS = {"source": tuple(CLASS_NAMES[digit] for digit in DIGITS_SOURCE_CLASSES),
           "target": tuple(CLASS_NAMES[digit] for digit in DIGITS_TARGET_CLASSES)}
# Digits pixels run 0..16; every source hands images in [0, 255] to `preprocess`.
MAX_PIXEL_VALUE = 16


def load_arrays():
    """(images, labels): float32 (1797, 8, 8) in [0, 255] and the digit of each."""
    # Imported here: scikit-learn's datasets module takes about a second to import.
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * (255.0 / MAX_PIXEL_VALUE)).astype(np.float32), digits.target


def read(spec):
    """The digits of `spec`, split (stratified, seeded) and selected: a `pipeline.Records`."""
    from headstart.recipes.data import pipeline

    images, labels = load_arrays()
    return pipeline.records_from_arrays(images, labels, CLASS_NAMES, spec, decode=_add_channel_axis)


def _add_channel_axis(image):
    return image[..., None]
