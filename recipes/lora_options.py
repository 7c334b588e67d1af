"""Command-line options for LoRA fine-tuning, and their checks (`headstart.models.lora` does the work).

    --lora-rank 4                      LoRA of rank 4 on the default layers (attention query/value, or every Dense)
    --lora-alpha 8                     the update scaled by alpha / rank (Keras' lora_alpha; default: the rank)
    --lora-layers 'mha/(query|key|value)$'   which dense layers, by a regular expression over their paths

With `--lora-rank` the second phase is `lora` instead of `finetune`: the head trains fully, the
backbone only through the LoRA matrices, at `--finetune-lr` for `--finetune-steps`; the run
also writes `lora.weights.h5`, the adapter alone (`headstart.models.lora.load_adapter` applies
it to the same base backbone).
"""

import math

from headstart.recipes.errors import UsageError


def add_arguments(parser):
    group = parser.add_argument_group("LoRA (low-rank adaptation of the backbone's dense layers)")
    group.add_argument("--lora-rank", type=int, default=None,
                       help="train the backbone only through LoRA matrices of this rank (Keras' enable_lora) in "
                            "phase 2, the head fully. Default: off (phase 2 fine-tunes --unfreeze)")
    group.add_argument("--lora-alpha", type=float, default=None,
                       help="scale of the LoRA update, alpha / rank. Default: the rank (scale 1)")
    group.add_argument("--lora-layers", default=None, metavar="PATTERN",
                       help="regular expression over the backbone's dense-layer paths to adapt. Default: the "
                            "attention query and value projections, or every Dense layer when there are none")


def parse(args, recipe="finetune"):
    """The checks that need no backbone (no TensorFlow). `recipe`: the verb whose options these are
    (`tune` and `lr-find` take finetune's options, but train no LoRA phase)."""
    # Verbs that share finetune's checks without these options (lr-find) have no LoRA.
    rank, alpha, pattern = (getattr(args, key, None) for key in ("lora_rank", "lora_alpha", "lora_layers"))
    if rank is None:
        if alpha is not None or pattern is not None:
            raise UsageError("--lora-alpha and --lora-layers need --lora-rank R (the LoRA rank, e.g. 4)")
        return
    if recipe != "finetune":
        raise UsageError(f"--lora-rank is for headstart finetune: {recipe} does not train a LoRA phase; "
                         "drop --lora-rank (and --lora-alpha, --lora-layers)")
    if rank < 1:
        raise UsageError(f"--lora-rank must be 1 or more (the rank of the LoRA matrices, e.g. 4), got {rank}")
    if alpha is not None and (not math.isfinite(alpha) or alpha <= 0):
        raise UsageError(f"--lora-alpha must be a positive number (the update is scaled by alpha / rank), got {alpha}")
    if alpha is not None and alpha.is_integer():
        args.lora_alpha = int(alpha)
    if args.unfreeze != "all" or args.gradual_unfreeze is not None:
        raise UsageError("--lora-rank trains the backbone through its LoRA matrices only: drop --unfreeze and "
                         "--gradual-unfreeze (they choose which layers fine-tune fully)")
    if not (args.finetune_epochs or args.finetune_steps):
        raise UsageError("--lora-rank needs a phase 2 budget (--finetune-steps or --finetune-epochs above 0): "
                         "the LoRA matrices train there")


def validate(args):
    """Build the bare backbone (its smallest size, no weights: layer paths do not depend on either)
    and check that the pattern selects dense layers. Needs TensorFlow."""
    if getattr(args, "lora_rank", None) is None:
        return
    from headstart.models import backbones, lora

    backbone = backbones.build_backbone(args.backbone, backbones.get_spec(args.backbone).min_size, weights=None)
    try:
        lora.targets(backbone, args.lora_layers)
    except ValueError as error:
        raise UsageError(f"--lora-rank {args.lora_rank} on {args.backbone}: {error}") from None


def adapt(model, args):
    """Enable LoRA on the classifier's backbone as the options say (no-op without --lora-rank)."""
    if getattr(args, "lora_rank", None) is None:
        return None
    from headstart.models import lora

    return lora.adapt(model.get_layer("backbone"), args.lora_rank, args.lora_alpha, args.lora_layers)
