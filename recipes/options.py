"""Command-line options several recipes share, and their checks (one line each, exit 2).

Checks here run before TensorFlow is imported, so a mistake costs a second, not a minute.
"""

import argparse
import math
import os
from pathlib import Path

from headstart.recipes.errors import UsageError
from headstart.recipes.rundir import DEFAULT_ROOT, check_run_name


def add_data_arguments(parser, *, data="digits", digits_classes=None, digits_labels_per_class=None,
                       image_size=None):
    """The data options. `digits_classes` / `digits_labels_per_class`: the verb's digits demo
    presets, which `resolve_digits_presets` applies with `--data digits` only (the argparse
    defaults stay None, so a folder or a TFDS data set keeps all its classes and labels)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=data,
                       help="'digits' (bundled, offline), 'tfds:NAME[:CONFIG]', or a folder with one "
                            f"sub-folder per class. Default: {data}")
    group.add_argument("--data-dir", default=None, help="TFDS data directory")
    group.add_argument("--classes", default=None,
                       help="keep these classes, relabelled in this order: a comma list of class names (e.g. 1,7 or "
                            "roses,tulips), 'all', or for digits 'source' (0-4) / 'target' (5-9). Default: all"
                            + (f" (with --data digits: {digits_classes})" if digits_classes else ""))
    group.add_argument("--labels-per-class", type=labels_per_class_value, default=None,
                       help="keep only K labelled training images per class, or 'all'. Default: all"
                            + (f" (with --data digits: {digits_labels_per_class})" if digits_labels_per_class else ""))
    group.add_argument("--image-size", type=int, default=image_size,
                       help="side of the square input images. Default: the backbone's default size")
    group.add_argument("--batch-size", type=int, default=32, help="Default: 32")
    group.add_argument("--augment", default="",
                       help="comma list of flip,rotation,zoom,contrast (training split only). Default: none")


def labels_per_class_value(text):
    """`--labels-per-class`: an int (checked by the data source) or 'all'."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a positive integer or 'all', got {text!r}")


def resolve_digits_presets(args, presets):
    """`--classes` / `--labels-per-class` left unset take the digits demo's `presets` (a dict of
    option -> value), with `--data digits` only: the presets name digits' classes, and a
    user's own data trains on all its classes and labels unless asked. Run in `validate`,
    so config.json saves (and `--resume` compares) the resolved values; idempotent, since
    an explicit 'all' stays 'all' (the data source reads it as no selection)."""
    if args.data != "digits":
        return
    for option, value in presets.items():
        if getattr(args, option) is None:
            setattr(args, option, value)


def add_training_arguments(parser, *, epochs, learning_rate):
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs, help=f"Default: {epochs}")
    group.add_argument("--lr", type=float, default=learning_rate, help=f"learning rate. Default: {learning_rate}")
    group.add_argument("--weight-decay", type=float, default=1e-4,
                       help="decoupled (AdamW) weight decay. Default: 1e-4")
    group.add_argument("--dropout", type=float, default=0.2, help="dropout before the logits. Default: 0.2")
    # 10, not 5: training from scratch on a few labels often has a rising validation loss
    # for its first epochs; with 5, the scratch baseline of the default demo stopped at
    # epoch 6 (0.196 accuracy) where 10 let it reach 0.609.
    group.add_argument("--patience", type=int, default=10,
                       help="early-stopping patience on val_loss (best weights are restored). Default: 10")
    group.add_argument("--log-gradients", action="store_true",
                       help="log per-layer gradient norms and update/weight ratios (GradientLogger)")
    group.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                       help="tf.distribute strategy ('multiworker' reads TF_CONFIG). Default: default")
    group.add_argument("--seed", type=int, default=0, help="Default: 0")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic TensorFlow ops: two runs with the same --seed give bit-identical "
                            "weights and metrics (slower: see the README)")
    add_output_arguments(group)


def add_output_arguments(group):
    """`--quiet` and `--verbose`, which exclude each other (argparse says so in one line, exit 2)."""
    output = group.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true",
                        help="print only the final result (no line per epoch, no notes)")
    output.add_argument("--verbose", action="store_true",
                        help="show Keras' progress bars (instead of our line per epoch) and TensorFlow's "
                             "start-up messages")


def progress(args):
    """`engine.TrainingOptions.progress` for the parsed --quiet / --verbose."""
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    if quiet and verbose:   # options_for(...) from Python skips argparse's check
        raise UsageError("--quiet and --verbose exclude each other: choose one")
    return "quiet" if quiet else "keras" if verbose else "lines"


def say(args, message):
    """A line about what the recipe is doing, unless --quiet."""
    if not getattr(args, "quiet", False):
        print(message, flush=True)


def add_run_arguments(parser):
    group = parser.add_argument_group("run directory")
    group.add_argument("--name", default=None, help="run name. Default: a timestamp")
    group.add_argument("--runs-dir", default=DEFAULT_ROOT, help=f"Default: {DEFAULT_ROOT}")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")


def check_non_negative_int(value, option):
    if value is None or value < 0:
        raise UsageError(f"{option} must be 0 or more, got {value}")
    return value


def check_positive_int(value, option):
    if value is None or value < 1:
        raise UsageError(f"{option} must be 1 or more, got {value}")
    return value


def check_positive_float(value, option):
    if value is None or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{option} must be a positive number, got {value}")
    return value


def check_non_negative_float(value, option):
    if value is None or not math.isfinite(value) or value < 0:
        raise UsageError(f"{option} must be 0 or more, got {value}")
    return value


def check_writable_folder(path, option):
    """An existing folder we can write to, or one we could create."""
    folder = Path(path)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UsageError(f"{option} {path}: cannot write there; choose a writable folder")
    return folder


def check_fraction(value, option):
    if value is None or not 0 <= value < 1:
        raise UsageError(f"{option} must be in [0, 1), got {value}")
    return value


def check_common(args, recipe):
    """Checks for the shared training and run options; returns the run path it will write.

    The data options are checked by `headstart.recipes.data.check_source`, which knows the sources.
    """
    check_positive_int(args.batch_size, "--batch-size")
    if args.image_size is not None:
        check_positive_int(args.image_size, "--image-size")
    check_non_negative_int(args.epochs, "--epochs")
    check_positive_float(args.lr, "--lr")
    if args.weight_decay is None or args.weight_decay < 0 or not math.isfinite(args.weight_decay):
        raise UsageError(f"--weight-decay must be 0 or more, got {args.weight_decay}")
    check_fraction(args.dropout, "--dropout")
    check_non_negative_int(args.patience, "--patience")
    return check_run_name(recipe, args.name, args.runs_dir, args.overwrite, resume=getattr(args, "resume", False))
