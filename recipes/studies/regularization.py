"""Study: eight ways to regularise an MLP that overfits 100 digits, a fifth of them mislabelled.

    headstart study regularization            # about a minute on 2 busy CPU cores
    headstart study regularization --quick    # the same code path, a third of the epochs (about 30 s)

The training set is 10 images per digit (100 in all) and 20 % of their labels are wrong
(a fixed, seeded choice); the rest of the digits, correctly labelled, are the validation
and test sets. A 64-256-256-10 MLP (`headstart.models.build_mlp`) memorises all 100 labels, wrong
ones included, and its validation loss climbs: the textbook picture of overfitting.
Every variant starts from the same seed and trains with Adam for the same number of steps:

- none; L1, L2 and elastic net on every kernel (`headstart.models.regularizers`); dropout after each
  hidden layer; early stopping on the validation loss, back to the best epoch
  (`headstart.callbacks.EarlyStopping`); data augmentation (small rotations and zooms, the layers
  of `headstart.recipes.data`); batch normalisation.

Why the wrong labels: on 100 clean digits the same MLP barely overfits in validation
loss, and regularisation hardly matters. Measured with these settings and no label noise
(but Adam at 3e-3, 300 passes): the gap was 0.42 without regularisation, 0.35 with L1, 0.38 with L2, 0.34
with elastic net and 0.31 with early stopping, while dropout (0.57), augmentation (0.44)
and batch norm (0.55) widened it; L1 left 96 % of the hidden weights near zero, L2 68 %.

The generalisation gap is the validation cross-entropy minus the training cross-entropy
(on the labels trained on), both measured after training on un-augmented images with
dropout off and without the weight penalty (which Keras adds to `loss`). The table also
gives accuracies and, for each variant, the fraction of hidden-layer weights near zero,
where L1 should stand out.
"""

import numpy as np

from headstart.recipes.studies import StudyResult, markdown_table, pyplot, say
from headstart.recipes.studies.optimizers import dataset_arrays

DESCRIPTION = "No regularisation, L1, L2, elastic net, dropout, early stopping, augmentation, batch norm on 100 digits"
CLAIM = ("Regularisation (L1, L2, elastic net, dropout, early stopping, data augmentation) shrinks the "
         "generalisation gap of a network that overfits a small training set, and L1 drives many weights "
         "to (nearly) zero; batch normalisation, mainly an aid to optimisation, is shown for comparison.")

# ## Data: few labels, some of them wrong, so that the MLP overfits
LABELS_PER_CLASS = 10
LABEL_NOISE = 0.2  # the fraction of training labels replaced by another digit
AUGMENTATIONS = ("rotation", "zoom")  # up to 36 degrees and 10 % zoom; a flip would change digits

# ## Model and training
HIDDEN_UNITS = (256, 256)
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
# Keras' "epoch" here is this many passes over the 100 training images: the curves and
# early stopping look at the model every few passes, which spares most of Keras' per-epoch
# overhead (a pass is only 4 steps).
PASSES_PER_EPOCH = 5
EPOCHS = 60
QUICK_EPOCHS = 20
EARLY_STOPPING_PATIENCE = 10
QUICK_EARLY_STOPPING_PATIENCE = 5

# ## Regularisation strengths. The penalties are summed over ~85,000 kernel weights and
# added to a mean cross-entropy of about 1 at the start, so the factors are small: each
# makes its penalty comparable to the data loss early on.
L1_FACTOR = 3e-4
L2_FACTOR = 3e-3
DROPOUT_RATE = 0.5
NEAR_ZERO = 1e-2  # |w| below this counts as pruned (He initialisation's std is 0.09-0.18 here)

VARIANTS = {
    "none": {},
    "L1": {"regularizer": ("L1", {"l1": L1_FACTOR})},
    "L2": {"regularizer": ("L2", {"l2": L2_FACTOR})},
    "elastic net": {"regularizer": ("ElasticNet", {"l1": L1_FACTOR / 2, "l2": L2_FACTOR / 2})},
    "dropout": {"dropout": DROPOUT_RATE},
    "early stopping": {"early_stopping": True},
    "augmentation": {"augment": True},
    "batch norm": {"batch_norm": True},
}


def load_data(seed):
    """Clean train / val / test arrays from `headstart.recipes.data`, with `LABEL_NOISE` of the training labels wrong."""
    from headstart.recipes import data

    # Unshuffled, so the seeded choice of wrong labels always hits the same images.
    splits = data.load("digits", image_size=8, channels=1, labels_per_class=LABELS_PER_CLASS, seed=seed,
                       batch_size=BATCH_SIZE, shuffle=False)
    arrays = {split: dataset_arrays(getattr(splits, split)) for split in ("train", "val", "test")}
    images, labels = arrays["train"]
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) < LABEL_NOISE
    # A wrong label is any other digit: shift by 1-9 places.
    noisy = np.where(wrong, (labels + rng.integers(1, 10, len(labels))) % 10, labels).astype(labels.dtype)
    arrays["train"] = (images, noisy)
    return arrays, int(wrong.sum())


def training_pipeline(images, labels, seed, augment):
    """Shuffled, batched, repeated; augmented with `headstart.recipes.data`'s augmentation layers if asked."""
    import keras
    import tensorflow as tf

    from headstart.recipes.data import AUGMENTATIONS as DATA_AUGMENTATIONS

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(labels), seed=seed)
    dataset = dataset.batch(BATCH_SIZE)
    if augment:
        # The same layers and arguments as `data.load(augment=...)`, applied to the noisy-label batches.
        augmenter = keras.Sequential([getattr(keras.layers, layer)(**arguments, seed=seed + position)
                                      for position, (layer, arguments) in
                                      enumerate(DATA_AUGMENTATIONS[name] for name in AUGMENTATIONS)])
        dataset = dataset.map(lambda batch, batch_labels: (augmenter(batch, training=True), batch_labels))
    return dataset.repeat()


def build_variant(variant, input_shape):
    from headstart.models import build_mlp, regularizers

    regularizer = None
    if "regularizer" in variant:
        class_name, arguments = variant["regularizer"]
        regularizer = getattr(regularizers, class_name)(**arguments)
    return build_mlp(input_shape, 10, hidden_units=HIDDEN_UNITS, dropout=variant.get("dropout", 0.0),
                     batch_norm=variant.get("batch_norm", False), kernel_regularizer=regularizer)


def cross_entropy_and_accuracy(model, images, labels):
    """Cross-entropy (no weight penalty) and accuracy, dropout off; one eager forward pass."""
    import keras

    logits = model(images, training=False)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return float(np.mean(cross_entropy)), float(np.mean(np.argmax(logits, axis=-1) == labels))


def clean_evaluation(train, validation):
    """A callback that adds the clean training and validation cross-entropy to each epoch's logs.

    "Clean" means un-augmented images and dropout off, and without the weight penalty that
    Keras adds to `loss`. In the logs, `EarlyStopping` (listed after this callback) can
    monitor `val_cross_entropy` and the history records them. An eager forward pass over a
    few hundred images costs far less than Keras' validation loop, which sets up a new
    iterator every epoch. (Defined here so that listing the studies does not import Keras.)
    """
    import keras

    class CleanEvaluation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for prefix, (images, labels) in (("train", train), ("val", validation)):
                cross_entropy, accuracy = cross_entropy_and_accuracy(self.model, images, labels)
                logs[f"{prefix}_cross_entropy"] = cross_entropy
                logs[f"{prefix}_accuracy"] = accuracy

    return CleanEvaluation()


def near_zero_fraction(model):
    kernels = [layer.kernel.numpy().ravel() for layer in model.get_layer("backbone").layers
               if hasattr(layer, "kernel")]
    weights = np.concatenate(kernels)
    return float(np.mean(np.abs(weights) < NEAR_ZERO))


def train_variant(variant, arrays, epochs, patience, seed):
    say(f"training with {variant} (up to {epochs} epochs)")
    import keras

    from headstart.callbacks import EarlyStopping

    keras.utils.set_random_seed(seed)
    model = build_variant(variant, arrays["train"][0].shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [clean_evaluation(arrays["train"], arrays["val"])]
    if variant.get("early_stopping"):
        callbacks.append(EarlyStopping(monitor="val_cross_entropy", mode="min", patience=patience))
    # One repeated pipeline with a fixed number of steps per epoch: Keras then keeps one
    # iterator for the whole fit instead of building one per epoch (several times faster here).
    steps_per_epoch = -(-len(arrays["train"][1]) // BATCH_SIZE) * PASSES_PER_EPOCH
    dataset = training_pipeline(*arrays["train"], seed, augment=variant.get("augment", False))
    history = model.fit(dataset, steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=callbacks,
                        shuffle=False, verbose=0)  # the pipeline shuffles
    early_stopping = callbacks[1] if len(callbacks) > 1 else None
    result = {"train_cross_entropy_curve": history.history["train_cross_entropy"],
              "val_cross_entropy_curve": history.history["val_cross_entropy"],
              "best_epoch": early_stopping.best_epoch if early_stopping else None,
              "stop_reason": early_stopping.stop_reason if early_stopping else None,
              "near_zero_fraction": near_zero_fraction(model)}
    # Measured on the final weights (for early stopping: the restored best epoch's).
    for split, (images, labels) in arrays.items():
        result[f"{split}_cross_entropy"], result[f"{split}_accuracy"] = cross_entropy_and_accuracy(
            model, images, labels)
    result["gap"] = result["val_cross_entropy"] - result["train_cross_entropy"]
    result["accuracy_gap"] = result["train_accuracy"] - result["val_accuracy"]
    return result


def plot(results, epochs):
    plt = pyplot()
    figure = plt.figure(figsize=(14, 9), layout="constrained")
    grid = figure.add_gridspec(3, 4, height_ratios=[1, 1, 1.1])
    curve_axes = [figure.add_subplot(grid[row, column]) for row in range(2) for column in range(4)]
    for axes, (name, result) in zip(curve_axes, results.items()):
        passes = PASSES_PER_EPOCH * np.arange(1, len(result["train_cross_entropy_curve"]) + 1)
        axes.plot(passes, result["train_cross_entropy_curve"], color="tab:blue", label="train")
        axes.plot(passes, result["val_cross_entropy_curve"], color="tab:red", label="validation")
        if result["best_epoch"] is not None:
            axes.axvline(PASSES_PER_EPOCH * (result["best_epoch"] + 1), color="black", linestyle=":", linewidth=1,
                         label="best (restored)")
        axes.set_yscale("log")
        axes.set_xlim(0, PASSES_PER_EPOCH * epochs)
        if name in ("dropout", "early stopping", "augmentation", "batch norm"):
            axes.set_xlabel("passes over the training set", fontsize=9)
        axes.set_ylim(1e-4, 5)
        axes.set_title(f"{name}: gap {result['gap']:.2f}, val acc {result['val_accuracy']:.2f}", fontsize=10)
        axes.tick_params(labelsize=8)
        if name in ("none", "dropout"):
            axes.set_ylabel("cross-entropy")
        if name == "early stopping":
            axes.legend(fontsize=8)
    curve_axes[0].legend(fontsize=8)
    names = list(results)
    positions = np.arange(len(names))
    gap_axes = figure.add_subplot(grid[2, :2])
    gap_axes.bar(positions - 0.2, [results[name]["gap"] for name in names], 0.4,
                 label="gap (val - train cross-entropy)", color="tab:gray")
    gap_axes.bar(positions + 0.2, [results[name]["val_accuracy"] for name in names], 0.4, label="validation accuracy",
                 color="tab:green")
    gap_axes.axhline(results["none"]["gap"], color="black", linestyle="--", linewidth=1)
    gap_axes.set_xticks(positions, names, rotation=20, fontsize=9)
    gap_axes.legend(fontsize=8, loc="upper right")
    gap_axes.set_title("Generalisation gap (dashed: no regularisation) and validation accuracy")
    sparsity_axes = figure.add_subplot(grid[2, 2:])
    sparsity_axes.bar(positions, [results[name]["near_zero_fraction"] for name in names],
                      color=["tab:orange" if name in ("L1", "elastic net") else "tab:gray" for name in names])
    sparsity_axes.set_xticks(positions, names, rotation=20, fontsize=9)
    sparsity_axes.set_ylim(0, 1)
    sparsity_axes.set_title(f"Fraction of hidden-layer weights with |w| < {NEAR_ZERO:g}")
    figure.suptitle(f"Regularising an MLP trained on {LABELS_PER_CLASS * 10} digits ({LABEL_NOISE:.0%} mislabelled): "
                    "training (blue) and validation (red) cross-entropy", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    epochs = QUICK_EPOCHS if quick else EPOCHS
    patience = QUICK_EARLY_STOPPING_PATIENCE if quick else EARLY_STOPPING_PATIENCE

    # ## Data
    arrays, wrong_labels = load_data(seed)

    # ## Train every variant
    results = {name: train_variant(variant, arrays, epochs, patience, seed) for name, variant in VARIANTS.items()}

    figure = plot(results, epochs)
    run_dir.save_figure(figure, "regularization.png")

    none_gap = results["none"]["gap"]
    smaller_gap = {name: result["gap"] < none_gap for name, result in results.items() if name != "none"}
    sparsity = {name: result["near_zero_fraction"] for name, result in results.items()}
    l1_sparsest = sparsity["L1"] > max(sparsity["L2"], sparsity["none"])
    supported = all(smaller for name, smaller in smaller_gap.items() if name != "batch norm") and l1_sparsest
    findings = {
        "epochs": epochs,
        "train_examples": len(arrays["train"][1]),
        "wrong_training_labels": wrong_labels,
        "gap": {name: result["gap"] for name, result in results.items()},
        "accuracy_gap": {name: result["accuracy_gap"] for name, result in results.items()},
        "train_accuracy": {name: result["train_accuracy"] for name, result in results.items()},
        "val_accuracy": {name: result["val_accuracy"] for name, result in results.items()},
        "test_accuracy": {name: result["test_accuracy"] for name, result in results.items()},
        "smaller_gap_than_none": smaller_gap,
        "near_zero_fraction": sparsity,
        "early_stopping": {"best_epoch": results["early stopping"]["best_epoch"],
                           "stop_reason": results["early stopping"]["stop_reason"],
                           "epochs_run": len(results["early stopping"]["train_cross_entropy_curve"])},
    }
    rows = [(name, result["train_cross_entropy"], result["val_cross_entropy"], result["gap"],
             result["train_accuracy"], result["val_accuracy"], result["accuracy_gap"], result["test_accuracy"],
             result["near_zero_fraction"]) for name, result in results.items()]
    table = markdown_table(["variant", "train CE", "val CE", "gap (val - train CE)", "train accuracy",
                            "val accuracy", "accuracy gap", "test accuracy", f"weights with abs < {NEAR_ZERO:g}"], rows)
    narrower = [name for name, smaller in smaller_gap.items() if smaller]
    wider = [name for name, smaller in smaller_gap.items() if not smaller]
    summary = (f"Without regularisation the gap (validation minus training cross-entropy) is {none_gap:.3f} "
               f"(val accuracy {results['none']['val_accuracy']:.3f}); {len(narrower)} of {len(smaller_gap)} "
               "variants narrow it"
               + (f", but not {', '.join(wider)}" if wider else "")
               + f". L1 leaves {sparsity['L1']:.0%} of the hidden weights below {NEAR_ZERO:g} "
               f"(L2 {sparsity['L2']:.0%}, none {sparsity['none']:.0%}).")
    if not supported:
        summary = "Only partly shown by this run: " + summary
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
