"""Fine-tune a pretrained backbone: train a new head on the frozen backbone, then unfreeze.

    headstart finetune
        The offline default, a few minutes on 2 CPU cores: pretrain the project's
        resnet8 on digits 0-4 (or reuse it), fine-tune it on digits 5-9 with 10 labels
        per class, train the same network from scratch on the same labels, and print
        transfer vs. scratch.
    headstart finetune --data ./flowers --backbone mobilenet_v2 --weights imagenet --image-size 160
    headstart finetune --weights runs/pretrain/NAME/best.keras --unfreeze stage3

Writes runs/finetune/<name>/: config.json, history.csv, metrics.json, best.keras,
model.keras and model.json (the complete model: see `headstart.recipes.trained`),
history.png, tensorboard/ (and scratch/ when comparing with training from scratch).
"""

import argparse

from headstart.recipes import layer_rate_options, lora_options, options, resume
from headstart.recipes.errors import UsageError

# ## Defaults: the offline transfer demo (digits 0-4 -> digits 5-9, few labels).
BACKBONE = "resnet8"
WEIGHTS = "digits-source"   # the project's own backbone pretrained on digits 0-4 (made if missing)
DATA = "digits"
CLASSES = "target"          # digits 5-9
LABELS_PER_CLASS = 5        # few labels: where transfer matters (at 10 per class, scratch caught up in our runs)
PRETRAIN_EPOCHS = 20        # the one-time pretraining on digits 0-4 (cached)
# Budgets in optimizer steps, so they mean the same on 25 images as on 25,000: with 5 labels
# per class and batch 32 an epoch is one step, and the old 10 + 20 epochs left the head at
# val_loss 1.30 (chance: 1.61) when fine-tuning began.
HEAD_STEPS = 500            # phase 1: head only, backbone frozen (on cached features unless augmented)
FINETUNE_STEPS = 600        # phase 2: unfrozen layers too (600 beat 300 on seeds 1 and 2: 0.905/0.911 vs 0.872/0.883)
LEARNING_RATE = 1e-2
FINETUNE_LEARNING_RATE = 1e-3   # 10x lower: move the pretrained weights gently
SCHEDULE, WARMUP = "cosine", 0.1
LABEL_SMOOTHING = 0.1       # timm's default too
# A phase budgeted in steps has at most 25 epochs (engine.MAX_EPOCHS_PER_STEP_BUDGET): with
# patience 25 early stopping never cuts the cosine schedule short (its last, low-rate steps
# are where val_loss improved most in our runs; with 10, fine-tuning stopped at epoch 15 to
# 19 of 25), and each phase still ends with its best epoch's weights.
PATIENCE = 25
UNFREEZE = "all"
BATCH_NORM = "frozen"       # the Keras guide's rule: batch norm stays in inference mode
# Small rotations and zooms keep a digit what it is (flips do not); with 25 labelled images,
# seed 0, the rest as now but label smoothing: test accuracy 0.911 without, 0.939 with.
AUGMENT = "rotation,zoom"
# CLASSES, LABELS_PER_CLASS and AUGMENT are the digits demo's: applied with --data digits only.
DIGITS_PRESETS = {"classes": CLASSES, "labels_per_class": LABELS_PER_CLASS, "augment": AUGMENT}


def add_arguments(parser):
    group = parser.add_argument_group("model")
    group.add_argument("--backbone", default=BACKBONE, help=f"see `headstart list backbones`. Default: {BACKBONE}")
    group.add_argument("--weights", default=WEIGHTS,
                       help="'imagenet', 'preset' (a --backbone hub:PRESET's own weights), a .keras/.weights.h5/.h5 "
                            "file, 'none', or 'digits-source' (the project's own backbone pretrained on digits 0-4). "
                            f"Default: {WEIGHTS}, and preset for a hub: backbone")
    group.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS,
                       help="with --weights digits-source: epochs of the one-time pretraining. "
                            f"Default: {PRETRAIN_EPOCHS}")
    group.add_argument("--head-units", default="", help="comma list of hidden dense layers in the head. Default: none")
    options.add_data_arguments(parser, data=DATA, digits_classes=CLASSES, digits_labels_per_class=LABELS_PER_CLASS,
                               digits_augment=AUGMENT)
    options.add_training_arguments(parser, epochs=None, learning_rate=LEARNING_RATE, steps=HEAD_STEPS, patience=PATIENCE)
    options.add_tool_arguments(parser, schedule=SCHEDULE, warmup=WARMUP, label_smoothing=LABEL_SMOOTHING)
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--finetune-epochs", type=int, default=None,
                       help="phase 2 budget in epochs, instead of --finetune-steps (0: head only)")
    group.add_argument("--finetune-steps", type=int, default=None,
                       help=f"phase 2 budget in optimizer steps (0: head only). Default: {FINETUNE_STEPS} "
                            "(when --finetune-epochs is not given)")
    group.add_argument("--finetune-lr", type=float, default=FINETUNE_LEARNING_RATE,
                       help=f"phase 2 learning rate. Default: {FINETUNE_LEARNING_RATE}")
    group.add_argument("--unfreeze", default=UNFREEZE,
                       help="phase 2: 'all', a number of top backbone layers, or a block/layer name to "
                            f"unfreeze from (e.g. stage3, block5). Default: {UNFREEZE}")
    group.add_argument("--batch-norm", choices=("frozen", "train"), default=BATCH_NORM,
                       help=f"batch-norm policy when unfrozen. Default: {BATCH_NORM}")
    group.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                       help="phase 1: run the frozen backbone once and train the head on its stored "
                            "features (off automatically with --augment). Default: on")
    group.add_argument("--cache-dir", default=None,
                       help="keep the cached features on disk in this folder instead of in memory")
    group.add_argument("--regularizer", choices=("none", "l2sp"), default="none",
                       help="'l2sp': pull the backbone towards its pretrained weights (--l2sp-alpha) "
                            "and the head towards zero (--l2sp-beta). Default: none")
    group.add_argument("--l2sp-alpha", type=float, default=1e-2, help="Default: 1e-2")
    group.add_argument("--l2sp-beta", type=float, default=1e-4, help="Default: 1e-4")
    group.add_argument("--weight-decay-kind", choices=("decoupled", "l2"), default="decoupled",
                       help="'decoupled': AdamW's weight decay; 'l2': instead, the penalty (wd / 2) * ||w||^2 on "
                            "every kernel, whose gradient adds wd * w (the classic coupled form; under SGD the "
                            "two are the same). Default: decoupled")
    group.add_argument("--from-tuning", metavar="DIR", default=None,
                       help="retrain the best trial of a `headstart tune` run (DIR: runs/tune/NAME): its "
                            "options replace the defaults; options you set to other values win")
    group.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                       help="also fit, on the same images, logistic regression on the pixels and a linear probe "
                            "on the frozen backbone's pooled features (scikit-learn, seconds; skipped when the "
                            "data does not fit in memory). Default: on")
    group.add_argument("--compare-scratch", action=argparse.BooleanOptionalAction, default=None,
                       help="also train the same network from scratch on the same data and print both. "
                            "Default: on with --weights digits-source")
    layer_rate_options.add_arguments(parser)
    lora_options.add_arguments(parser)
    options.add_run_arguments(parser)
    resume.add_argument(parser)


def validate(args, recipe="finetune"):
    """Every check, before any data is read or anything written; raises UsageError.

    Fills in resolved values (the image size, head units, the scratch comparison).
    """
    from headstart.recipes import data

    if getattr(args, "from_tuning", None):
        take_tuned_options(args)
    options.resolve_digits_presets(args, DIGITS_PRESETS)   # after --from-tuning: its data decides
    args.epochs, args.steps = options.budget(args.epochs, args.steps, HEAD_STEPS)
    args.finetune_epochs, args.finetune_steps = options.budget(args.finetune_epochs, args.finetune_steps, FINETUNE_STEPS,
                                                               "--finetune-epochs", "--finetune-steps")
    run_path = options.check_common(args, recipe)
    if not (args.epochs or args.steps or args.finetune_epochs or args.finetune_steps) and recipe == "finetune":
        # The untrained head's accuracy is no result (lr-find, which only scans, has no phases to run).
        raise UsageError("the head and fine-tuning budgets are both 0: nothing would be trained; give --steps (or "
                         "--epochs) or --finetune-steps (or --finetune-epochs) a budget")
    options.check_tools(args)
    options.check_positive_float(args.finetune_lr, "--finetune-lr")
    options.check_positive_int(args.pretrain_epochs, "--pretrain-epochs")
    for value, option in ((args.l2sp_alpha, "--l2sp-alpha"), (args.l2sp_beta, "--l2sp-beta")):
        options.check_non_negative_float(value, option)
    if args.cache_dir is not None:
        options.check_writable_folder(args.cache_dir, "--cache-dir")
    try:
        args.head_units = tuple(int(units) for units in args.head_units.split(",") if units)
    except ValueError:
        raise UsageError(f"--head-units must be a comma list of positive integers, got {args.head_units!r}")
    if any(units < 1 for units in args.head_units):
        raise UsageError(f"--head-units must be a comma list of positive integers, got {args.head_units}")
    if isinstance(args.unfreeze, str) and args.unfreeze.isdigit():
        args.unfreeze = options.check_positive_int(int(args.unfreeze), "--unfreeze")
    layer_rate_options.parse(args)
    lora_options.parse(args, recipe)
    # The data options first: their checks need no TensorFlow. The size is the backbone's
    # default when not given, known only below; any valid size checks the rest the same.
    data.check_source(args.data, data_dir=args.data_dir, classes=args.classes, batch_size=args.batch_size,
                      labels_per_class=args.labels_per_class, augment=args.augment, mixup=args.mixup,
                      cutmix=args.cutmix, image_size=args.image_size or data.IMAGE_SIZE, seed=args.seed)
    from headstart.models import backbone_specs   # the registry alone: no Keras, so no TensorFlow yet

    spec = backbone_specs.get_spec(args.backbone)
    if spec.family == backbone_specs.HUB and args.weights == WEIGHTS:
        args.weights = backbone_specs.PRESET   # the default weights: for a hub backbone, its preset's own
    args.image_size = args.image_size or spec.default_size
    if args.weights == "digits-source" and spec.family != backbone_specs.OWN:
        raise UsageError(f"--weights digits-source needs one of the project's own backbones, not {args.backbone}: "
                         "use --weights imagenet, a file, or none")
    weights = None if args.weights in ("none", "digits-source") else args.weights
    backbone_specs.check_backbone_options(args.backbone, args.image_size, weights)
    if args.unfreeze != "all":
        check_unfreeze(args)
    layer_rate_options.validate(args)
    lora_options.validate(args)
    if args.compare_scratch is None:
        args.compare_scratch = args.weights == "digits-source"
    if getattr(args, "resume", False):   # lr-find shares these checks but has no --resume
        resume.check(args, recipe, run_path)
    check_precision(args)   # last: it runs TensorFlow


def take_tuned_options(args):
    """`--from-tuning DIR`: the best trial's options (tune's `best_hyperparameters.json`) replace
    the options still at their defaults; records them in `args.tuned` for the run's config."""
    import json
    from pathlib import Path

    from headstart.recipes.cli import options_for

    path = Path(args.from_tuning) / "best_hyperparameters.json"
    if not path.is_file():
        raise UsageError(f"--from-tuning {args.from_tuning}: no best_hyperparameters.json there; pass the folder "
                         "of a finished `headstart tune` run (runs/tune/NAME)")
    try:
        tuned = json.loads(path.read_text())["finetune_options"]
        assert isinstance(tuned, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise UsageError(f"--from-tuning: {path} is not a `headstart tune` result (no finetune_options in it); "
                         "pass the folder of a finished `headstart tune` run")
    defaults = vars(options_for("finetune"))
    unknown = sorted(set(tuned) - set(defaults))
    if unknown:
        raise UsageError(f"--from-tuning: {path} sets options finetune does not have ({', '.join(unknown)}); "
                         "was it written by another version of headstart?")
    # A search saves its resolved options: on digits the demo's presets (target, 5 labels)
    # are defaults, not choices, so they are not taken (nor printed); the data finetune
    # runs on resolves its own.
    presets = DIGITS_PRESETS if tuned.get("data", defaults["data"]) == "digits" else {}
    args.tuned = {}
    # A budget the user gave in steps wins over the search's budget in epochs (the same budget).
    own_budget = {"epochs": args.steps, "finetune_epochs": args.finetune_steps}
    for key, value in tuned.items():
        if own_budget.get(key) is not None:
            continue
        if getattr(args, key) == defaults[key] and value != presets.get(key, defaults[key]):
            setattr(args, key, value)
            args.tuned[key] = value


def check_unfreeze(args):
    """An unknown block name, or more top layers than the backbone has, must fail before any pretraining
    or writing (not after the whole head phase): build the bare backbone to look.

    Layer names and counts do not depend on the input size, so the smallest build will do.
    """
    from headstart.models import backbones, freezing
    from headstart.recipes import engine

    engine.make_strategy(args.strategy)  # before building anything: multi-worker must come first
    backbone = backbones.build_backbone(args.backbone, backbones.get_spec(args.backbone).min_size, weights=None)
    try:
        if isinstance(args.unfreeze, int):
            freezing.unfreeze(backbone, top_layers=args.unfreeze)
        else:
            freezing.unfreeze(backbone, from_layer=args.unfreeze)
    except ValueError as error:
        raise UsageError(f"--unfreeze {args.unfreeze}: {error}")


def pretrained_digits_backbone(args):
    """The cached `headstart pretrain` run for this backbone and size, made first if missing."""
    from headstart.recipes import pretrain
    from headstart.recipes.cli import options_for
    from headstart.recipes.rundir import run_path

    name = f"{args.backbone}-digits-source-{args.image_size}px-{args.pretrain_epochs}ep-seed{args.seed}"
    path = run_path("pretrain", name, args.runs_dir) / "best.keras"
    if path.exists():
        options.say(args, f"reusing the pretrained backbone {path}")
        return path
    # A pretraining killed part-way (it has its options but no metrics yet) is continued.
    interrupted = (path.parent / "config.json").exists() and not (path.parent / "metrics.json").exists()
    options.say(args, f"{'continuing the interrupted ' if interrupted else ''}pretraining {args.backbone} on "
                      f"digits 0-4 (once; cached as {path}) ...")
    pretrain_args = options_for("pretrain", model=args.backbone, image_size=args.image_size, name=name,
                                epochs=args.pretrain_epochs, runs_dir=args.runs_dir, seed=args.seed,
                                deterministic=args.deterministic, overwrite=not interrupted, resume=interrupted,
                                verbose=args.verbose, quiet=getattr(args, "quiet", False))
    pretrain.validate(pretrain_args)
    # Its own run's file: on a non-chief worker that is its private copy, since the
    # chief's may not be written yet (or be on another machine).
    run_dir, _ = pretrain.pretrain(pretrain_args)
    return run_dir.file("best.keras")


def model_and_data(args, strategy=None):
    """The recipe's data and model for validated `args`: (model, splits, resolved weights).

    Reads the data, pretrains the digits backbone first if it must, builds the classifier
    (inside `strategy`'s scope when given) and puts L2-SP on it when asked. `lr-find`
    uses the same, so it scans exactly the model `finetune` would train.
    """
    import contextlib

    from headstart.models import backbones
    from headstart.models.regularizers import regularize_towards_pretrained
    from headstart.recipes import data, engine

    weights = {"none": None, "digits-source": None}.get(args.weights, args.weights)
    if args.weights == "digits-source":
        weights = str(pretrained_digits_backbone(args))
    engine.seed_everything(args.seed, args.deterministic)
    spec = backbones.get_spec(args.backbone)
    splits = data.load(args.data, image_size=(args.image_size,) * 2, channels=3, batch_size=args.batch_size,
                       preprocess=spec.preprocess, augment=args.augment, mixup=args.mixup, cutmix=args.cutmix,
                       classes=args.classes, labels_per_class=args.labels_per_class, seed=args.seed,
                       data_dir=args.data_dir)
    with strategy.scope() if strategy is not None else contextlib.nullcontext(), precision_of(args):
        model = backbones.build_classifier(args.backbone, splits.num_classes, args.image_size, weights=weights,
                                           dropout=args.dropout, hidden_units=args.head_units)
        lora_options.adapt(model, args)   # before L2-SP: its anchors are the base weights either way
        if args.regularizer == "l2sp":
            regularize_towards_pretrained(model, args.l2sp_alpha, args.l2sp_beta)
        weight_decay_as_l2(model, args)
    return model, splits, weights


def precision_of(args):
    """`--precision`: the dtype policy every model of the run is built under (layers keep the
    policy they were built with, so training, saving and loading follow it)."""
    from headstart.models import precision

    return precision.policy(getattr(args, "precision", "float32"))


def check_precision(args):
    """`--precision`: refused when this machine cannot train in its half type; a note when it
    can but a CPU does the work (slower than float32 there). Needs TensorFlow: checked last."""
    from headstart.models import precision

    if getattr(args, "precision", "float32") == "float32":
        return
    reason = precision.unsupported_reason(args.precision)
    if reason:
        raise UsageError(f"--precision {args.precision}: this machine cannot train in it ({reason}); "
                         "use --precision float32")
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU") and not tf.config.list_physical_devices("TPU"):
        options.say(args, f"note: --precision {args.precision} on a CPU is slower than float32 (it pays on GPUs "
                          "and TPUs with half-precision units)")


def weight_decay_as_l2(model, args):
    """`--weight-decay-kind l2`: the decay as an L2 penalty on every kernel (AdamW then gets none).

    Keras' `L2(l)` is `l * ||w||^2`, whose gradient is `2 l w`: `L2(wd / 2)` adds `wd * w` to the
    gradient, the step decoupled decay takes (`headstart study weight-decay-vs-l2` shows the two
    give the same weights under SGD, and not under Adam)."""
    import keras

    from headstart.models.regularizers import regularize_kernels

    if args.weight_decay_kind == "l2" and args.weight_decay > 0:
        regularize_kernels(model, keras.regularizers.L2(args.weight_decay / 2))


def finetune(args):
    """Run the recipe on validated `args`; returns (run_dir, results) with results by method."""
    import keras

    from headstart.models import backbones
    from headstart.recipes import engine, trained
    from headstart.recipes.checkpoint import TrainingCheckpoint
    from headstart.recipes.rundir import RunDir, run_config, write_training_outputs

    strategy = engine.make_strategy(args.strategy)
    model, splits, weights = model_and_data(args, strategy)
    num_classes = splits.num_classes
    head_options = dict(dropout=args.dropout, hidden_units=args.head_units)

    run_dir = RunDir.create("finetune", args.name, args.runs_dir, args.overwrite, resume=args.resume)
    resume.start(run_dir, args, "finetune")
    # Before training: the probe reads the pretrained backbone, as it is before fine-tuning moves it.
    baseline_results = baselines_of(args, splits, model)
    decoupled_decay = args.weight_decay if args.weight_decay_kind == "decoupled" else 0.0
    training = engine.TrainingOptions(weight_decay=decoupled_decay, patience=args.patience,
                                      log_gradients=args.log_gradients, verbose=int(args.verbose),
                                      progress=options.progress(args),
                                      feature_cache=args.feature_cache, cache_dir=args.cache_dir,
                                      **options.training_tools(args, splits))
    tuned_finetune = bool(args.finetune_epochs or args.finetune_steps)
    second = (f"phase lora ({budget_words(args.finetune_epochs, args.finetune_steps)}, LoRA rank {args.lora_rank} "
              "on the backbone, the head fully)" if args.lora_rank is not None else
              f"phase finetune ({budget_words(args.finetune_epochs, args.finetune_steps)}, --unfreeze {args.unfreeze})")
    options.say(args, f"fine-tuning {args.backbone}: phase head ({budget_words(args.epochs, args.steps)}, backbone "
                      "frozen)" + (f", then {second}" if tuned_finetune else "")
                      + (f"; {args.schedule} schedule" if args.schedule != "constant" else ""))
    shape = dict(schedule=args.schedule, warmup=args.warmup)
    with resume.keeping_best_on_divergence(run_dir):
        results = {"transfer": engine.fine_tune(
            lambda: model, splits, head_epochs=args.epochs or 0, finetune_epochs=args.finetune_epochs or 0,
            head_steps=args.steps, finetune_steps=args.finetune_steps,
            learning_rate=args.lr, finetune_learning_rate=args.finetune_lr, unfreeze_layers=args.unfreeze,
            batch_norm=args.batch_norm, layer_decay=args.layer_decay, lr_groups=args.lr_groups,
            gradual_unfreeze=args.gradual_unfreeze, lora=args.lora_rank is not None, options=training,
            strategy=strategy, run_dir=run_dir, checkpoint_dir=run_dir.file("checkpoint"), **shape)}
    if args.lora_rank is not None:
        from headstart.models import lora

        lora.save_adapter(results["transfer"].model.get_layer("backbone"), run_dir.file(lora.ADAPTER_FILE))
    config = run_config(args, recipe="finetune", weights_resolved=weights, class_names=splits.class_names)
    model_info = trained.describe("finetune", splits, args.backbone, backbones.get_spec(args.backbone).preprocess_module)

    if args.compare_scratch:
        scratch_dir = RunDir(run_dir.path / "scratch")
        scratch_dir.path.mkdir(exist_ok=args.resume)

        def build_scratch():
            with precision_of(args):
                scratch = backbones.build_classifier(args.backbone, num_classes, args.image_size, weights=None,
                                                     **head_options)
            weight_decay_as_l2(scratch, args)
            return scratch

        # The same budget in all and the same tools: the two phases' budgets added up.
        if args.steps is None and args.finetune_steps is None:
            scratch_epochs, scratch_steps = args.epochs + args.finetune_epochs, None
        else:
            batches = engine.train_batches(splits)
            scratch_epochs, scratch_steps = 0, sum(steps if steps is not None else epochs * batches for epochs, steps in
                                                   ((args.epochs, args.steps), (args.finetune_epochs, args.finetune_steps)))
        keras.utils.set_random_seed(args.seed)
        options.say(args, f"training the same {args.backbone} from scratch, for comparison "
                          f"({budget_words(scratch_epochs, scratch_steps)}, random init)")
        with resume.keeping_best_on_divergence(scratch_dir):
            results["scratch"] = engine.train(build_scratch, splits, epochs=scratch_epochs, steps=scratch_steps,
                                              learning_rate=args.lr, options=training, strategy=strategy,
                                              run_dir=scratch_dir, checkpoint_dir=scratch_dir.file("checkpoint"),
                                              **shape)
        write_training_outputs(scratch_dir, {**config, "weights_resolved": None}, results["scratch"],
                               model_info=model_info, val=splits.val)
    for note in results["transfer"].notes:
        options.say(args, f"note: {note}")
    table = results_table(results, args, baseline_results)
    run_dir.write_text("results.md", table + "\n")
    extra = {"baselines": baseline_results} if baseline_results is not None else None
    write_training_outputs(run_dir, config, results["transfer"], extra, model_info=model_info, val=splits.val)
    for checkpoint in (run_dir.file("checkpoint"), run_dir.file("scratch/checkpoint")):
        TrainingCheckpoint(checkpoint).remove()
    return run_dir, results


# The baselines read every split into memory as float32; above this, they are skipped.
BASELINE_MEMORY_BYTES = 2 << 30


def baselines_of(args, splits, model):
    """`--baselines`: `headstart.recipes.baselines.run` on the run's own splits and backbone
    (None when off, or when the data does not fit in memory, which it says)."""
    from headstart.recipes import baselines

    if not args.baselines:
        return None
    if not baselines.fits_in_memory(splits, BASELINE_MEMORY_BYTES):
        options.say(args, "note: baselines skipped: the data does not fit in memory as float32 "
                          f"({BASELINE_MEMORY_BYTES >> 30} GiB); --no-baselines says so without this note")
        return None
    options.say(args, "fitting the baselines: logistic regression on the pixels, and a linear probe on the frozen "
                      "backbone's features (scikit-learn)")
    return baselines.run(splits, model.get_layer("backbone") if args.weights != "none" else None, seed=args.seed)


def results_table(results, args, baseline_results=None):
    second = f"head then LoRA rank {args.lora_rank}" if getattr(args, "lora_rank", None) else "two-phase"
    labels = {"transfer": f"transfer ({args.backbone}, weights {args.weights}, {second})",
              "scratch": f"scratch (same {args.backbone}, random init)"}
    lines = ["| model | accuracy | phases (epochs run, steps, time) |", "|---|---|---|"]
    for method, result in results.items():
        phases = ", ".join(f"{phase['name']} {phase['epochs']} ep" + (f" {phase['steps']} steps" if phase.get("steps")
                                                                       else "") + f" {phase['seconds']:.1f} s"
                           for phase in result.phases)
        lines.append(f"| {labels[method]} | {result.accuracy:.3f} | {phases} |")
    if baseline_results:
        from headstart.recipes import baselines

        lines += baselines.table_rows(baseline_results)
    return "\n".join(lines)


def budget_words(epochs, steps):
    """`500 steps` or `10 epochs`: a phase budget as the user gave it."""
    return f"{steps} steps" if steps is not None else f"{epochs} epochs"


def run(args):
    validate(args)
    if getattr(args, "tuned", None):
        options.say(args, f"from {args.from_tuning}: " + ", ".join(f"--{key.replace('_', '-')} {value}"
                                                                    for key, value in args.tuned.items()))
    run_dir, results = finetune(args)
    split = "test" if any(key.startswith("test_") for key in results["transfer"].metrics) else "validation"
    labelled = "all labels" if args.labels_per_class in (None, "all") else f"{args.labels_per_class} labels per class"
    classes = "" if args.classes in (None, "all") else f" {args.classes}"
    options.say(args, "")   # the result stands apart from the lines of the run (with --quiet, it is all there is)
    print(f"{args.data}{classes} ({labelled}), {split} accuracy:\n")
    print(run_dir.file("results.md").read_text(), end="")
    print(f"\nrun directory: {run_dir.path}")
    return 0
