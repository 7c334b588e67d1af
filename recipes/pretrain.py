"""Pretrain one of the project's own backbones on a source dataset, for `finetune --weights PATH`.

    headstart pretrain                                   # resnet8 on digits 0-4, ~40 s on 2 CPU cores
    headstart pretrain --model resnet20 --data ./images --epochs 30

The run directory's `best.keras` is the whole classifier; `finetune --weights` takes
its `backbone` and puts a new head on it.
"""

from headstart.recipes import options, resume
from headstart.recipes.errors import UsageError

# ## Defaults: the source half of the offline transfer demo.
MODEL = "resnet8"          # a small CIFAR-style ResNet: 78k parameters
DATA = "digits"
CLASSES = "source"         # digits 0-4 (with --data digits only); the fine-tuning demo transfers to 5-9
EPOCHS = 20
LEARNING_RATE = 3e-3


def add_arguments(parser):
    parser.add_argument("--model", default=MODEL, help=f"one of the project's own backbones. Default: {MODEL}")
    options.add_data_arguments(parser, data=DATA, digits_classes=CLASSES)
    options.add_training_arguments(parser, epochs=EPOCHS, learning_rate=LEARNING_RATE)
    options.add_run_arguments(parser)
    resume.add_argument(parser)


def validate(args):
    """Every check that needs no TensorFlow work; raises UsageError."""
    from headstart.recipes import data

    options.resolve_digits_presets(args, {"classes": CLASSES})
    run_path = options.check_common(args, "pretrain")
    if args.epochs == 0:   # the untrained network's accuracy is no result
        raise UsageError("--epochs 0 trains nothing: give pretraining at least one epoch")
    data.check_source(args.data, data_dir=args.data_dir, classes=args.classes, batch_size=args.batch_size,
                      labels_per_class=args.labels_per_class, augment=args.augment, mixup=args.mixup,
                      cutmix=args.cutmix, image_size=args.image_size or data.IMAGE_SIZE, seed=args.seed)
    from headstart.models import backbone_specs   # the registry alone: no Keras, so no TensorFlow yet

    spec = backbone_specs.get_spec(args.model)
    if spec.family != backbone_specs.OWN:
        raise UsageError(f"--model {args.model} is a keras.applications backbone; pretrain trains the "
                         f"project's own: {', '.join(backbone_specs.own_backbones())}")
    args.image_size = args.image_size or spec.default_size
    backbone_specs.check_backbone_options(args.model, args.image_size, None)
    resume.check(args, "pretrain", run_path)


def pretrain(args):
    """Train `args.model` from scratch on `args.data`; returns (run_dir, result)."""
    from headstart.models import backbones
    from headstart.recipes import data, engine, trained
    from headstart.recipes.checkpoint import TrainingCheckpoint
    from headstart.recipes.rundir import RunDir, run_config, write_training_outputs

    strategy = engine.make_strategy(args.strategy)  # first: multi-worker needs it before any TensorFlow op
    engine.seed_everything(args.seed, args.deterministic)
    spec = backbones.get_spec(args.model)
    splits = data.load(args.data, image_size=(args.image_size,) * 2, channels=3, batch_size=args.batch_size,
                       preprocess=spec.preprocess, augment=args.augment, mixup=args.mixup, cutmix=args.cutmix,
                       classes=args.classes, labels_per_class=args.labels_per_class, seed=args.seed,
                       data_dir=args.data_dir)
    run_dir = RunDir.create("pretrain", args.name, args.runs_dir, args.overwrite, resume=args.resume)
    resume.start(run_dir, args, "pretrain")

    def build_model():
        return backbones.build_classifier(args.model, len(splits.class_names), args.image_size,
                                          weights=None, dropout=args.dropout)

    training = engine.TrainingOptions(weight_decay=args.weight_decay, patience=args.patience,
                                      log_gradients=args.log_gradients, verbose=int(args.verbose),
                                      progress=options.progress(args))
    checkpoint = TrainingCheckpoint(run_dir.file("checkpoint"))
    with resume.keeping_best_on_divergence(run_dir):
        result = engine.train(build_model, splits, epochs=args.epochs, learning_rate=args.lr,
                              options=training, strategy=strategy, run_dir=run_dir,
                              checkpoint_dir=checkpoint.folder)
    write_training_outputs(run_dir, run_config(args, recipe="pretrain", class_names=splits.class_names), result,
                           model_info=trained.describe("pretrain", splits, args.model, spec.preprocess_module),
                           val=splits.val)
    checkpoint.remove()   # the run is complete (metrics.json is written)
    return run_dir, result


def run(args):
    validate(args)
    run_dir, result = pretrain(args)
    print(f"pretrained {args.model} on {args.data} ({'all classes' if args.classes in (None, 'all') else args.classes}): "
          f"accuracy {result.accuracy:.3f}; model: {run_dir.file('best.keras')}")
    return 0

