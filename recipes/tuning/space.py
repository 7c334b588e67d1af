"""The search space of `headstart tune`, declared once: each dimension, its flag and its default.

Every dimension is set from the command line with one of three forms:

    --lr 1e-4:1e-1          a range (floats only; log or linear, as declared below)
    --unfreeze 'all|stage3' a choice among values, separated by '|'
    --dropout 0.3           one fixed value (still recorded with each trial)

Parsing and checking happen here, before TensorFlow is imported; `declare` turns the
parsed space into keras-tuner hyperparameters, and `finetune_values` turns a trial's
values back into `headstart finetune`'s option values.
"""

import math
from dataclasses import dataclass

from headstart.recipes import options
from headstart.recipes.errors import UsageError

CHOICE_SEPARATOR = "|"
RANGE_SEPARATOR = ":"
NO_HIDDEN_LAYER = "none"


@dataclass(frozen=True)
class Dimension:
    """One searchable option; `name` is both the hyperparameter's and finetune's attribute name."""

    name: str
    flag: str
    kind: str            # "float", "int" or "str"
    sampling: str        # for float ranges: "log" or "linear"
    default: str         # command-line text
    help: str


# ## The search space: defaults chosen on the offline digits demo (few labels, 2 CPU cores).
DIMENSIONS = (
    # With 25 labelled images the head sees one batch per epoch: below 1e-3 it barely moves
    # in a trial's few epochs, and lr-find suggested 0.089 for it (README).
    Dimension("lr", "--lr", "float", "log", "1e-3:3e-1", "head-phase (phase 1) learning rate"),
    # Around finetune's 1e-3, a decade either side: the pretrained weights should move gently.
    Dimension("finetune_lr", "--finetune-lr", "float", "log", "1e-4:1e-2", "fine-tuning (phase 2) learning rate"),
    Dimension("weight_decay", "--weight-decay", "float", "log", "1e-6:1e-2",
              "weight decay: AdamW's decoupled decay, or the L2 factor with --weight-decay-kind l2"),
    Dimension("dropout", "--dropout", "float", "linear", "0:0.6", "dropout before the logits"),
    Dimension("unfreeze", "--unfreeze", "str", None, "all",
              "phase 2: 'all', a number of top backbone layers, or a block/layer name"),
    Dimension("head_units", "--head-units", "str", None, NO_HIDDEN_LAYER,
              f"hidden dense layers of the head: a comma list of widths, or '{NO_HIDDEN_LAYER}'"),
    Dimension("batch_size", "--batch-size", "int", None, "32", "batch size"),
    # finetune's default, unless searched (e.g. --label-smoothing 0:0.2).
    Dimension("label_smoothing", "--label-smoothing", "float", "linear", "0.1",
              "label smoothing of the cross-entropy, in [0, 1)"),
    # Off unless searched (e.g. --mixup '0|0.2|0.4'): a trial with MixUp trains its head
    # through the backbone, since mixed images have no cached features.
    Dimension("mixup", "--mixup", "float", "linear", "0",
              "the alpha of Keras' MixUp on training batches (0: off)"),
)
BY_NAME = {dimension.name: dimension for dimension in DIMENSIONS}


def add_arguments(parser):
    group = parser.add_argument_group(
        "search space", f"each takes a range LOW{RANGE_SEPARATOR}HIGH (floats), choices "
                        f"A{CHOICE_SEPARATOR}B{CHOICE_SEPARATOR}C, or one fixed value")
    for dimension in DIMENSIONS:
        group.add_argument(dimension.flag, dest=dimension.name, default=dimension.default,
                           help=f"{dimension.help}. Default: {dimension.default}"
                                + (f" ({dimension.sampling} scale)" if dimension.sampling else ""))


def parse(args):
    """The space given on the command line: {name: {"type": "range"|"choice"|"fixed", ...}}.

    JSON-plain, so it is saved with the search and compared on `--resume`.
    """
    return {dimension.name: parse_dimension(dimension, getattr(args, dimension.name))
            for dimension in DIMENSIONS}


def parse_dimension(dimension, text):
    text = str(text).strip()
    if RANGE_SEPARATOR in text:
        if dimension.kind != "float":
            raise UsageError(f"{dimension.flag} {text}: a range needs a number, use choices "
                             f"(e.g. {dimension.flag} 'A{CHOICE_SEPARATOR}B') instead")
        low, high = (convert(dimension, part) for part in text.split(RANGE_SEPARATOR, 1))
        if not low < high:
            raise UsageError(f"{dimension.flag} {text}: the range is {'empty' if low == high else 'inverted'}; "
                             f"write LOW{RANGE_SEPARATOR}HIGH with LOW below HIGH")
        if dimension.sampling == "log" and low <= 0:
            raise UsageError(f"{dimension.flag} {text}: a log-scale range must be above 0 "
                             f"(e.g. {dimension.flag} 1e-6{RANGE_SEPARATOR}{high:g})")
        for value in (low, high):
            check_value(dimension, value)
        return {"type": "range", "low": low, "high": high, "sampling": dimension.sampling}
    values = [convert(dimension, part) for part in text.split(CHOICE_SEPARATOR)]
    for value in values:
        check_value(dimension, value)
    if len(values) == 1:
        return {"type": "fixed", "value": values[0]}
    if len(set(values)) != len(values):
        raise UsageError(f"{dimension.flag} {text}: a choice lists the same value twice")
    return {"type": "choice", "values": values}


def convert(dimension, text):
    text = text.strip()
    try:
        if dimension.kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if dimension.kind == "int":
            return int(text)
    except ValueError:
        raise UsageError(f"{dimension.flag}: {text!r} is not a{'n integer' if dimension.kind == 'int' else ' number'}") \
            from None
    if not text:
        raise UsageError(f"{dimension.flag}: an empty value; give a value, a range or choices")
    return text


def check_value(dimension, value):
    """The same rules as `headstart finetune` for one value (block names are checked by the caller)."""
    name, flag = dimension.name, dimension.flag
    if name in ("lr", "finetune_lr"):
        options.check_positive_float(value, flag)
    elif name in ("weight_decay", "mixup"):
        options.check_non_negative_float(value, flag)
    elif name == "dropout":
        options.check_fraction(value, flag)
    elif name == "batch_size":
        options.check_positive_int(value, flag)
    elif name == "head_units":
        head_units(value)
    elif name == "unfreeze" and value.isdigit():
        options.check_positive_int(int(value), flag)


def head_units(text):
    """`"128,64"` -> (128, 64); `"none"` -> ()."""
    if text == NO_HIDDEN_LAYER:
        return ()
    try:
        units = tuple(int(part) for part in text.split(","))
    except ValueError:
        units = ()
    if not units or any(width < 1 for width in units):
        raise UsageError(f"--head-units {text!r}: give a comma list of positive widths (e.g. 128,64) or "
                         f"'{NO_HIDDEN_LAYER}', several separated by '{CHOICE_SEPARATOR}'")
    return units


def values_of(space, name):
    """Every value a dimension can take that must be checked: the fixed value, the choices, or a range's ends."""
    spec = space[name]
    return {"fixed": lambda: [spec["value"]], "choice": lambda: spec["values"],
            "range": lambda: [spec["low"], spec["high"]]}[spec["type"]]()


def declare(hp, space):
    """Declare the space on a keras-tuner `HyperParameters`; returns this trial's values by name."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "range":
            values[name] = hp.Float(name, spec["low"], spec["high"], sampling=spec["sampling"])
        elif spec["type"] == "choice":
            values[name] = hp.Choice(name, spec["values"])
        else:
            values[name] = hp.Fixed(name, spec["value"])
    return values


def finetune_values(values):
    """A trial's values as `headstart finetune` option values (JSON-plain, as the CLI would parse them)."""
    converted = dict(values)
    if "head_units" in converted:
        converted["head_units"] = ",".join(str(width) for width in head_units(converted["head_units"]))
    return converted


def describe(spec):
    """A parsed dimension as its command-line text, for messages."""
    if spec["type"] == "range":
        return f"{spec['low']:g}{RANGE_SEPARATOR}{spec['high']:g}"
    if spec["type"] == "choice":
        return CHOICE_SEPARATOR.join(str(value) for value in spec["values"])
    return str(spec["value"])
