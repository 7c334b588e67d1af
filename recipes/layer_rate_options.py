"""Command-line options for per-group learning rates and gradual unfreezing, and their checks.

    --layer-decay 0.7                  each backbone group below the head at 0.7x the rate above
    --lr-groups stage3=0.3,head=1      explicit multipliers ('backbone' = every backbone group)
    --gradual-unfreeze 2               one more block from the top every 2 epochs of fine-tuning
    --gradual-unfreeze 0,3,5           ... or at these epochs of the phase (0 = at once)

Shared by `finetune` and `lr-find`. Every check raises `UsageError` (one line, exit 2);
names and depth are checked against the backbone built bare at its smallest size, before
any data is read or weights loaded.
"""

import math

from headstart.recipes.errors import UsageError

OPTIONS = ("--layer-decay", "--lr-groups", "--gradual-unfreeze")


def add_arguments(parser):
    """Add the options; a no-op when the parser has them already (a verb reusing another's)."""
    if any(option in parser._option_string_actions for option in OPTIONS):
        return
    group = parser.add_argument_group("per-group learning rates")
    group.add_argument("--layer-decay", type=float, default=None,
                       help="layer-wise learning-rate decay in (0, 1]: the head trains at the rate, each backbone "
                            "block below at this times the block above (timm's layer_decay). Default: none")
    group.add_argument("--lr-groups", default=None,
                       help="comma list GROUP=MULTIPLIER of learning-rate multipliers, e.g. stage3=0.3,head=1; "
                            "groups are the backbone's blocks, 'stem', 'head', and 'backbone' for all blocks; "
                            "overrides --layer-decay. Default: none")
    group.add_argument("--gradual-unfreeze", default=None,
                       help="in the fine-tuning phase, unfreeze the backbone's blocks one by one from the top: "
                            "EPOCHS per block, or a comma list of the phase's epochs (0 = at once) at which each "
                            "next block joins. Default: all at once")


def parse_lr_groups(text):
    """`"stage3=0.3,head=1"` -> `{"stage3": 0.3, "head": 1.0}`; multipliers must be positive."""
    if text is None:
        return None
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in (part.strip() for part in str(text).split(",")):
            name, equals, value = part.partition("=")
            if not part or not equals or not name.strip():
                raise UsageError(f"--lr-groups must be a comma list of GROUP=MULTIPLIER (e.g. stage3=0.3,head=1), "
                                 f"got {text!r}")
            items.append((name.strip(), value.strip()))
    groups = {}
    for name, value in items:
        try:
            multiplier = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--lr-groups {name}={value}: the multiplier must be a number") from None
        if not math.isfinite(multiplier) or multiplier <= 0:
            raise UsageError(f"--lr-groups {name}={value}: the multiplier must be a positive number "
                             "(a group that should not train is left frozen with --unfreeze)")
        if name in groups:
            raise UsageError(f"--lr-groups names {name} twice")
        groups[name] = multiplier
    return groups


def parse_gradual_unfreeze(text):
    """`"2"` -> 2 (epochs per block); `"0,3,5"` -> [0, 3, 5] (the epoch each next block joins)."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        values = text
    elif isinstance(text, (list, tuple)):
        values = list(text)
    else:
        parts = str(text).split(",")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            raise UsageError(f"--gradual-unfreeze must be a number of epochs per block or a comma list of epochs, "
                             f"got {text!r}") from None
        values = numbers if len(parts) > 1 else numbers[0]
    if isinstance(values, int):
        if values < 1:
            raise UsageError(f"--gradual-unfreeze must be 1 or more epochs per block, got {values}")
        return values
    values = list(values)
    if any(value < 0 for value in values) or values != sorted(values):
        raise UsageError(f"--gradual-unfreeze epochs must be 0 or more and non-decreasing, got {text}")
    return values


def check_layer_decay(value):
    if value is not None and (not math.isfinite(value) or not 0 < value <= 1):
        raise UsageError(f"--layer-decay must be in (0, 1] (each block below trains at this times the rate of the "
                         f"block above), got {value}")
    return value


def parse(args):
    """The checks of the three options that need no backbone (so no TensorFlow); resolves them.

    Idempotent: `validate` calls it again. A recipe calls it early, before importing Keras.
    """
    check_layer_decay(args.layer_decay)
    args.lr_groups = parse_lr_groups(args.lr_groups)
    args.gradual_unfreeze = parse_gradual_unfreeze(args.gradual_unfreeze)


def validate(args):
    """Check and resolve `args.layer_decay`, `args.lr_groups` and `args.gradual_unfreeze`.

    Needs `args.backbone` and, for the depth of gradual unfreezing, `args.unfreeze`
    ('all', a number of top layers, or a block/layer name). Replaces `args.lr_groups` by a
    dict and `args.gradual_unfreeze` by an int or a list.
    """
    parse(args)
    if args.lr_groups is None and not isinstance(args.gradual_unfreeze, list):
        return
    names, depth_groups = backbone_groups_for(args.backbone, getattr(args, "unfreeze", "all"))
    if args.lr_groups is not None:
        from headstart.models import layer_rates

        try:
            layer_rates.check_groups(args.lr_groups, names)
        except ValueError as error:
            raise UsageError(f"--lr-groups: {str(error).split(' Received:')[0]}") from None
    if isinstance(args.gradual_unfreeze, list) and len(args.gradual_unfreeze) > len(depth_groups):
        raise UsageError(f"--gradual-unfreeze {','.join(map(str, args.gradual_unfreeze))} unfreezes "
                         f"{len(args.gradual_unfreeze)} blocks but {args.backbone} has {len(depth_groups)} to unfreeze "
                         f"with --unfreeze {getattr(args, 'unfreeze', 'all')} ({', '.join(depth_groups)})")


def backbone_groups_for(backbone_name, unfreeze="all"):
    """(every group name of the classifier, the backbone groups that `unfreeze` makes trainable).

    Group names do not depend on the input size, so the smallest bare backbone will do.
    """
    from headstart.models import backbones, freezing, layer_rates

    backbone = backbones.build_backbone(backbone_name, backbones.get_spec(backbone_name).min_size, weights=None)
    groups = layer_rates.backbone_groups(backbone)
    if isinstance(unfreeze, str) and unfreeze.isdigit():
        unfreeze = int(unfreeze)
    try:
        if unfreeze == "all" or unfreeze is None:
            freezing.unfreeze(backbone)
        elif isinstance(unfreeze, int):
            freezing.unfreeze(backbone, top_layers=unfreeze)
        else:
            freezing.unfreeze(backbone, from_layer=unfreeze)
    except ValueError as error:
        raise UsageError(f"--unfreeze {unfreeze}: {error}") from None
    trainable = [name for name, layers in groups.items()
                 if any(layer.trainable_weights for layer in layers)]
    names = [name for name, layers in groups.items() if any(layer.weights for layer in layers)]
    return names + [layer_rates.HEAD], trainable
