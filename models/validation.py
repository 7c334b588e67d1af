"""Argument checks shared by the builders: each raises `ValueError` naming the argument."""

import math


def check_dropout(dropout, name="dropout"):
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={dropout!r}")
    return float(dropout)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


def check_positive_ints(values, name, allow_empty=True):
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"`{name}` must be a sequence of positive integers. Received: {name}={values!r}")
    if not values and not allow_empty:
        raise ValueError(f"`{name}` must not be empty. Received: {name}={values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a sequence of positive integers. Received: {name}={values!r}"
            )
    return values


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}"
        )
    return value


def check_num_classes(num_classes):
    """1 means a single binary logit; 2 or more, one logit per class."""
    return check_positive_int(num_classes, "num_classes")


def check_input_shape(input_shape, rank=None, min_spatial=1):
    """`input_shape` without the batch axis; image shapes are (H, W, C).

    `min_spatial` is the smallest height and width the network's downsampling allows:
    2 ** (number of stride-2 stages).
    """
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"`input_shape` must be a tuple of positive integers. Received: input_shape={input_shape!r}")
    if not input_shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"`input_shape` must be a tuple of positive integers. Received: input_shape={input_shape!r}")
    if rank is not None and len(input_shape) != rank:
        raise ValueError(
            f"`input_shape` must have {rank} dimensions (height, width, channels) for this model. "
            f"Received: input_shape={input_shape!r}"
        )
    if rank == 3 and min(input_shape[:2]) < min_spatial:
        stages = int(math.log2(min_spatial))
        raise ValueError(
            f"`input_shape` is too small: this network halves the image {stages} times, so height "
            f"and width must be at least {min_spatial}. Received: input_shape={input_shape!r}"
        )
    return input_shape
