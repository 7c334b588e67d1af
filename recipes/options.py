"""Command-line options several recipes share, and their checks (one line each, exit 2).

Checks here run before TensorFlow is imported, so a mistake costs a second, not a minute.
"""

import argparse
import math
import os
import tempfile
from pathlib import Path

from headstart.recipes.errors import UsageError
from headstart.recipes.rundir import DEFAULT_ROOT, check_run_name


def add_data_arguments(parser, *, data="digits", digits_classes=None, digits_labels_per_class=None,
                       digits_augment=None, image_size=None):
    """The data options. `digits_classes` / `digits_labels_per_class` / `digits_augment`: the
    verb's digits demo presets, which `resolve_digits_presets` applies with `--data digits`
    only (the argparse defaults stay None, so a folder or a TFDS data set keeps all its
    classes and labels, and is not augmented unless asked)."""
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
    group.add_argument("--augment", default=None,
                       help="comma list of flip,rotation,zoom,contrast (training split only), or 'none'. Default: none"
                            + (f" (with --data digits: {digits_augment})" if digits_augment else ""))
    group.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                       help="Keras' MixUp on training batches, Beta(ALPHA, ALPHA) (e.g. 0.2). Default: 0 (off)")
    group.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                       help="Keras' CutMix on training batches (e.g. 1.0); with --mixup, one of the two per batch. "
                            "Default: 0 (off)")


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
    if args.data == "digits":
        for option, value in presets.items():
            if getattr(args, option) is None:
                setattr(args, option, value)
    if getattr(args, "augment", "") in (None, "none"):   # no preset: no augmentation
        args.augment = ""


def add_training_arguments(parser, *, epochs, learning_rate, steps=None, patience=10):
    """The training options; with `steps`, the verb's budget is in optimizer steps by default
    (`--steps`), and `--epochs` replaces it when given (see `budget`)."""
    group = parser.add_argument_group("training")
    if steps is None:
        group.add_argument("--epochs", type=int, default=epochs, help=f"Default: {epochs}")
    else:
        group.add_argument("--epochs", type=int, default=None,
                           help="budget in passes over the training split, instead of --steps")
        group.add_argument("--steps", type=int, default=None,
                           help=f"budget in optimizer steps, the same on any data size. Default: {steps} "
                                "(when --epochs is not given)")
    group.add_argument("--lr", type=float, default=learning_rate, help=f"learning rate. Default: {learning_rate}")
    group.add_argument("--weight-decay", type=float, default=1e-4,
                       help="decoupled (AdamW) weight decay. Default: 1e-4")
    group.add_argument("--dropout", type=float, default=0.2, help="dropout before the logits. Default: 0.2")
    # 10, not 5 (epoch budgets): training from scratch on a few labels often has a rising
    # validation loss for its first epochs; with 5, the scratch baseline of the default demo
    # stopped at epoch 6 (0.196 accuracy) where 10 let it reach 0.609.
    group.add_argument("--patience", type=int, default=patience,
                       help=f"early-stopping patience on val_loss (best weights are restored). Default: {patience}")
    group.add_argument("--log-gradients", action="store_true",
                       help="log per-layer gradient norms and update/weight ratios (GradientLogger)")
    group.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                       help="tf.distribute strategy ('multiworker' reads TF_CONFIG). Default: default")
    group.add_argument("--seed", type=int, default=0, help="Default: 0")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic TensorFlow ops: two runs with the same --seed give bit-identical "
                            "weights and metrics (slower: see the README)")
    add_output_arguments(group)


def budget(epochs, steps, default_steps, epochs_option="--epochs", steps_option="--steps"):
    """(epochs, steps) of a phase from its two options: one of them, or `default_steps` steps
    when neither is given. Both given is a usage error."""
    if epochs is not None and steps is not None:
        raise UsageError(f"give {epochs_option} or {steps_option}, not both: they are the same budget "
                         "in two units")
    if epochs is not None:
        return check_non_negative_int(epochs, epochs_option), None
    return None, check_non_negative_int(default_steps if steps is None else steps, steps_option)


def add_tool_arguments(parser, *, schedule="constant", warmup=None, label_smoothing=0.0):
    """The fine-tuning tools timm and fastai users expect, each Keras' own where Keras has it."""
    from headstart.models.precision import POLICIES   # no Keras import either
    from headstart.models.schedules import SCHEDULES   # no Keras import: checked by name here

    group = parser.add_argument_group("training tools")
    group.add_argument("--schedule", default=schedule,
                       help=f"each phase's learning rate over its steps: {', '.join(SCHEDULES)} (warmup then "
                            f"cosine decay to 0; fastai's one-cycle). Default: {schedule}")
    group.add_argument("--warmup", type=float, default=warmup,
                       help="fraction of each phase's steps that warms the rate up, in [0, 1). Default: "
                            + (f"{warmup}" if warmup is not None else "0 (one-cycle: 0.25)"))
    group.add_argument("--label-smoothing", type=float, default=label_smoothing, metavar="S",
                       help=f"move this much of each target to all classes evenly, in [0, 1). Default: {label_smoothing:g}")
    group.add_argument("--class-weight", choices=("none", "balanced"), default="none",
                       help="'balanced': weight each class's loss by n / (classes * its count) (scikit-learn's "
                            "rule). Default: none")
    group.add_argument("--ema", type=float, default=None, metavar="DECAY",
                       help="keep an exponential moving average of the weights (e.g. 0.999); validation, early "
                            "stopping, best.keras and the test use it. Default: off")
    group.add_argument("--grad-accum", type=int, default=1, metavar="N",
                       help="one optimizer step per N batches, on their mean gradient (Keras' "
                            "gradient_accumulation_steps). Default: 1")
    group.add_argument("--precision", choices=POLICIES, default="float32",
                       help="mixed_float16 / mixed_bfloat16: the backbone computes in the half type, variables, "
                            "head and loss stay float32 (loss scaling for float16); pays on GPUs and TPUs, "
                            "slower on CPUs. Default: float32")


def check_tools(args):
    """The `add_tool_arguments` checks (no TensorFlow)."""
    from headstart.models.schedules import check

    message = check(args.schedule, args.warmup)
    if message:
        raise UsageError(f"--schedule/--warmup: {message}")
    if not math.isfinite(args.label_smoothing) or not 0 <= args.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.ema is not None and (not math.isfinite(args.ema) or not 0 < args.ema < 1):
        raise UsageError(f"--ema is the average's decay, in (0, 1) (e.g. 0.999), got {args.ema}")
    check_positive_int(args.grad_accum, "--grad-accum")


def training_tools(args, splits):
    """The `engine.TrainingOptions` fields of `add_tool_arguments`' options, for loaded `splits`.

    `--class-weight balanced` weighs class c by n / (classes * n_c), scikit-learn's
    'balanced'; left off on imbalanced training data (largest class over 1.5x the
    smallest), it says so in one line.
    """
    from headstart.recipes import data

    counts = data.class_counts(splits)
    weights = None
    if args.class_weight == "balanced":
        total = sum(counts)
        weights = {label: total / (len(counts) * count) for label, count in enumerate(counts) if count}
    elif min(counts) and max(counts) > 1.5 * min(counts):
        say(args, f"note: the training classes are imbalanced ({min(counts)} to {max(counts)} images); "
                  "--class-weight balanced weighs them evenly")
    return dict(label_smoothing=args.label_smoothing, ema=args.ema,
                grad_accum=args.grad_accum if args.grad_accum > 1 else None, class_weight=weights)


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
    """An existing folder we can write to, or one we could create (in its nearest existing parent).

    Checked by creating and removing a probe file there: `os.access` answers yes to root on a
    read-only mount or a special file system (/proc), and knows nothing of a full disk's quota.
    """
    folder = Path(path)
    probe = folder
    try:
        while not probe.exists():
            probe = probe.parent
    except OSError as error:   # a name too long, a loop of links
        raise UsageError(f"{option} {path}: cannot write there ({error.strerror}); choose a writable folder")
    if not probe.is_dir():
        raise UsageError(f"{option} {path}: cannot write there ({probe} is a file); choose a writable folder")
    try:
        descriptor, name = tempfile.mkstemp(prefix=".headstart-probe-", dir=probe)
        os.close(descriptor)
        os.unlink(name)
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write there ({error.strerror}); choose a writable folder")
    return folder


def check_fraction(value, option):
    if value is None or not 0 <= value < 1:
        raise UsageError(f"{option} must be in [0, 1), got {value}")
    return value


def check_batch_fits_in_memory(batch_size, image_size, channels=3):
    """Refuse an input size whose one batch of float32 images alone exceeds this machine's memory:
    it would fail with an out-of-memory error after the data was read (or take the machine down)."""
    import psutil

    needed = batch_size * image_size * image_size * channels * 4
    total = psutil.virtual_memory().total
    if needed > total:
        raise UsageError(f"--image-size {image_size}: one batch of {batch_size} images takes {needed / 2**30:,.0f} GiB "
                         f"as float32, more than this machine's {total / 2**30:.0f} GiB of memory; "
                         "choose a smaller --image-size or --batch-size")


def check_common(args, recipe):
    """Checks for the shared training and run options; returns the run path it will write.

    The data options are checked by `headstart.recipes.data.check_source`, which knows the sources.
    """
    check_positive_int(args.batch_size, "--batch-size")
    if args.image_size is not None:
        check_positive_int(args.image_size, "--image-size")
        check_batch_fits_in_memory(args.batch_size, args.image_size)
    if not hasattr(args, "steps"):   # else checked by `budget`: --epochs or --steps
        check_non_negative_int(args.epochs, "--epochs")
    check_positive_float(args.lr, "--lr")
    if args.weight_decay is None or args.weight_decay < 0 or not math.isfinite(args.weight_decay):
        raise UsageError(f"--weight-decay must be 0 or more, got {args.weight_decay}")
    check_fraction(args.dropout, "--dropout")
    check_non_negative_int(args.patience, "--patience")
    return check_run_name(recipe, args.name, args.runs_dir, args.overwrite, resume=getattr(args, "resume", False))
