"""Semi-supervised learning with an autoencoder: pretrain on every image without labels,
start a classifier from its encoder, fine-tune on k labels per class, compare with scratch.

    headstart semisupervised                       # digits, k = 1, 3, 10; about 2 minutes on 2 CPU cores
    headstart semisupervised --labels-per-class 2,5,20 --autoencoder-epochs 30

Writes runs/semisupervised/<name>/: autoencoder.keras, reconstructions.png (inputs above,
reconstructions below), accuracy_vs_labels.png, results.md, metrics.json, and the run's
model: the classifier of the largest label budget started from the encoder (best.keras,
model.keras, model.json; see `headstart.recipes.trained`).
"""

import argparse

from headstart.recipes import options, resume
from headstart.recipes.errors import UsageError

# ## Defaults: the lecture material's use of autoencoders for semi-supervised learning.
DATA = "digits"
IMAGE_SIZE = 16              # the 8x8 digits upsampled twice; the conv encoder halves it twice
LATENT_DIM = 32
FILTERS = (16, 32)
AUTOENCODER_EPOCHS = 20      # on every training image, labels ignored
AUTOENCODER_LEARNING_RATE = 3e-3
LABELS_PER_CLASS = "1,3,10"  # the few-label budgets compared
HEAD_EPOCHS = 10
FINETUNE_EPOCHS = 20
LEARNING_RATE = 1e-2
FINETUNE_LEARNING_RATE = 1e-3


def add_arguments(parser):
    group = parser.add_argument_group("semi-supervised")
    group.add_argument("--autoencoder-epochs", type=int, default=AUTOENCODER_EPOCHS,
                       help=f"Default: {AUTOENCODER_EPOCHS}")
    group.add_argument("--latent-dim", type=int, default=LATENT_DIM, help=f"Default: {LATENT_DIM}")
    group.add_argument("--labels-per-class", default=LABELS_PER_CLASS,
                       help=f"comma list of label budgets k to compare. Default: {LABELS_PER_CLASS}")
    group.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS, help=f"Default: {FINETUNE_EPOCHS}")
    group.add_argument("--finetune-lr", type=float, default=FINETUNE_LEARNING_RATE,
                       help=f"Default: {FINETUNE_LEARNING_RATE}")
    group.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                       help="also fit, for each budget on the same images, logistic regression on the pixels and a "
                            "linear probe on the autoencoder's encoder (scikit-learn, seconds). Default: on")
    data_group = parser.add_argument_group("data")
    data_group.add_argument("--data", default=DATA, help=f"as for finetune. Default: {DATA}")
    data_group.add_argument("--data-dir", default=None, help="TFDS data directory")
    data_group.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                            help=f"a multiple of 4. Default: {IMAGE_SIZE}")
    data_group.add_argument("--batch-size", type=int, default=32, help="Default: 32")
    options.add_training_arguments(parser, epochs=HEAD_EPOCHS, learning_rate=LEARNING_RATE)
    options.add_run_arguments(parser)
    resume.add_argument(parser)


def validate(args):
    from headstart.recipes import data

    budgets = [part for part in str(args.labels_per_class).split(",") if part]
    if not budgets or not all(part.isdigit() and int(part) > 0 for part in budgets):
        raise UsageError(f"--labels-per-class must be a comma list of positive integers, got {args.labels_per_class!r}")
    args.label_budgets = sorted({int(part) for part in budgets})
    run_path = options.check_common(args, "semisupervised")
    options.check_positive_int(args.autoencoder_epochs, "--autoencoder-epochs")
    options.check_positive_int(args.latent_dim, "--latent-dim")
    options.check_non_negative_int(args.finetune_epochs, "--finetune-epochs")
    options.check_positive_float(args.finetune_lr, "--finetune-lr")
    stride = 2 ** len(FILTERS)
    if args.image_size % stride:
        raise UsageError(f"--image-size must be a multiple of {stride} for the conv autoencoder, got {args.image_size}")
    for budget in args.label_budgets:
        data.check_source(args.data, data_dir=args.data_dir, image_size=args.image_size, channels=1,
                          batch_size=args.batch_size, labels_per_class=budget, seed=args.seed)
    resume.check(args, "semisupervised", run_path)


def semisupervised(args):
    """Run on validated `args`; returns (run_dir, results, table), results = {k: {"autoencoder": acc, "scratch": acc}}."""
    import dataclasses
    import shutil

    import keras

    from headstart import models
    from headstart.recipes import data, engine, trained
    from headstart.recipes.plots import plot_accuracy_vs_labels, plot_reconstructions
    from headstart.recipes.rundir import RunDir, run_config

    strategy = engine.make_strategy(args.strategy)   # first: multi-worker needs it before any TensorFlow op
    engine.seed_everything(args.seed, args.deterministic)
    load = dict(image_size=args.image_size, channels=1, batch_size=args.batch_size, seed=args.seed,
                data_dir=args.data_dir)
    everything = data.load(args.data, **load)
    run_dir = RunDir.create("semisupervised", args.name, args.runs_dir, args.overwrite, resume=args.resume)
    resume.start(run_dir, args, "semisupervised")
    checkpoints = run_dir.file("checkpoints")   # one per training; each resumes where it stopped
    training = engine.TrainingOptions(weight_decay=args.weight_decay, patience=args.patience,
                                      verbose=int(args.verbose), progress=options.progress(args))
    autoencoder_options = dict(kind="conv", latent_dim=args.latent_dim, filters=FILTERS)
    input_shape = (args.image_size, args.image_size, 1)

    # ## 1. The autoencoder learns from every training image; labels are dropped.
    def images_as_targets(dataset):
        return dataset.map(lambda images, labels: (images, images))

    unlabelled = dataclasses.replace(everything, train=images_as_targets(everything.train),
                                     train_epochs=lambda *epochs: images_as_targets(
                                         everything.train_epochs(*epochs)),
                                     val=images_as_targets(everything.val),
                                     test=images_as_targets(everything.test) if everything.test is not None else None)
    options.say(args, f"autoencoder: learning to reconstruct every training image, labels unused "
                      f"({args.autoencoder_epochs} epochs)")
    with resume.keeping_best_on_divergence(run_dir):
        autoencoding = engine.train(lambda: models.build_autoencoder(input_shape, **autoencoder_options),
                                    unlabelled, epochs=args.autoencoder_epochs,
                                    learning_rate=AUTOENCODER_LEARNING_RATE,
                                    options=dataclasses.replace(training, task="reconstruction"), strategy=strategy,
                                    checkpoint_dir=checkpoints / "autoencoder")
    autoencoder = autoencoding.model
    run_dir.save_model(autoencoder, "autoencoder.keras")
    samples = next(iter(everything.val))[0].numpy()[:10]
    run_dir.save_figure(plot_reconstructions(samples, autoencoder.predict(samples, verbose=0)), "reconstructions.png")
    pretrained_encoder_weights = autoencoder.get_layer("encoder").get_weights()

    # ## 2. For each label budget: the encoder's classifier vs. the same classifier from scratch.
    def classifier(pretrained, num_classes):
        encoder = models.build_autoencoder(input_shape, **autoencoder_options).get_layer("encoder")
        if pretrained:
            encoder.set_weights(pretrained_encoder_weights)
        return models.attach_head(encoder, num_classes, dropout=args.dropout)

    results = {}
    for budget in args.label_budgets:
        few = data.load(args.data, labels_per_class=budget, **load)
        results[budget] = {}
        for start in ("autoencoder", "scratch"):
            options.say(args, f"{budget} labels per class: classifier "
                              + ("from the autoencoder's encoder" if start == "autoencoder" else "from scratch"))
            keras.utils.set_random_seed(args.seed)
            with resume.keeping_best_on_divergence(run_dir):
                result = engine.fine_tune(
                    lambda: classifier(start == "autoencoder", few.num_classes), few,
                    head_epochs=args.epochs if start == "autoencoder" else 0,
                    finetune_epochs=args.finetune_epochs + (0 if start == "autoencoder" else args.epochs),
                    learning_rate=args.lr,
                    finetune_learning_rate=args.finetune_lr if start == "autoencoder" else args.lr,
                    batch_norm="train", options=training, strategy=strategy,
                    checkpoint_dir=checkpoints / f"{budget}-labels-{start}")
            results[budget][start] = result.accuracy
            if start == "autoencoder" and budget == max(args.label_budgets):
                # The run's model: the classifier with the most labels, from the autoencoder's encoder.
                kept = (result.model, few)
        if args.baselines:
            from headstart.recipes import baselines

            # The probe reads the autoencoder's encoder, frozen: what the classifier starts from.
            options.say(args, f"{budget} labels per class: baselines (logistic regression on the pixels, linear probe "
                              "on the encoder)")
            for name, baseline in baselines.run(few, classifier(True, few.num_classes), seed=args.seed).items():
                results[budget][name] = baseline["accuracy"]

    table = results_table(results, everything)
    run_dir.write_text("results.md", table + "\n")
    model, few = kept
    run_dir.save_model(model, "best.keras")
    trained.write(run_dir, model, trained.describe("semisupervised", few, "autoencoder_conv", None), few.val)
    run_dir.write_json("config.json", run_config(args, recipe="semisupervised", class_names=few.class_names))
    budgets = sorted(results)
    run_dir.save_figure(plot_accuracy_vs_labels(
        budgets, {start: [results[k][start] for k in budgets] for start in results[budgets[0]]}),
        "accuracy_vs_labels.png")
    run_dir.write_json("metrics.json", {"autoencoder": {**autoencoding.metrics, "phases": autoencoding.phases,
                                                        "history": autoencoding.history},
                                        "accuracy": {str(k): v for k, v in results.items()}})   # last: marks the run complete
    shutil.rmtree(checkpoints, ignore_errors=True)
    return run_dir, results, table


COLUMNS = {"autoencoder": "encoder from the autoencoder", "scratch": "scratch",
           "pixels": "logistic regression on the pixels", "linear_probe": "linear probe on the encoder"}


def results_table(results, splits):
    split = "test" if splits.test is not None else "validation"
    methods = [method for method in COLUMNS if method in results[min(results)]]
    lines = ["| labels per class | " + " | ".join(f"{COLUMNS[method]} ({split} accuracy)" for method in methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for budget in sorted(results):
        lines.append(f"| {budget} | " + " | ".join(f"{results[budget][method]:.3f}" for method in methods) + " |")
    return "\n".join(lines)


def run(args):
    validate(args)
    run_dir, _, table = semisupervised(args)
    options.say(args, "")   # the result stands apart from the lines of the run
    print(table)
    print(f"\nrun directory: {run_dir.path}")
    return 0
