"""Baselines to try before fine-tuning, on exactly the train / val / test images of a run.

    from headstart.recipes import baselines, data

    splits = data.load("digits", classes="target", labels_per_class=5, image_size=(32, 32))
    if baselines.fits_in_memory(splits, 1 << 30):
        results = baselines.run(splits, model)     # model: a classifier, or its backbone
        print("\\n".join(baselines.table_rows(results)))

- `pixels`: logistic regression on the raw pixels, i.e. the images as the `DataSplits`
  give them (after `preprocess`), flattened.
- `linear_probe`: logistic regression on the frozen backbone's features: the backbone
  in inference mode, its feature map global-average-pooled (the head's default pooling,
  whatever the model's own head does).

Both standardize the inputs with a `StandardScaler` fit on the training split, then fit
an L2 `LogisticRegression` (lbfgs) on the training split for every C in `C_GRID`, and keep
the one with the best validation accuracy (a tie keeps the smaller C: the simpler model).
That model is not refit on train + val: it saw exactly the images the fine-tuned model
trains on, and the validation split only chose C, as it only chooses the epoch of a run.
The accuracy is on the test split; without one, on the validation split, which then
flatters the baseline a little (it also chose C), as it does the run's early stopping.

Only for data that fits in memory: `run` reads every split into memory as float32 (four
times the size of the pipeline's uint8 cache), and fitting copies the training split
again (the scaler; lbfgs works in float64). `fits_in_memory` tells callers when to skip.
"""

import math
import time

import keras
from keras import layers
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

# ## Defaults
C_GRID = tuple(10.0 ** exponent for exponent in range(-3, 4))   # 1e-3 .. 1e3: inverse L2 strength
MAX_ITER = 1000             # lbfgs iterations; the demo needs under 100, scikit-learn's default is 100
FEATURE_BATCH_SIZE = 64     # images per backbone call when computing the probe's features
NAMES = {"pixels": "logistic regression on the pixels",
         "linear_probe": "linear probe on the frozen backbone's pooled features"}


def arrays(splits):
    """Every split of `splits` as NumPy arrays, each example exactly once.

    The training split is `splits.train_plain` (one pass, not augmented nor mixed) when
    there is one, else epoch 0 of `splits.train_epochs` (a fixed order), else one pass of
    `splits.train`. Validation and test are read as they are.

    Args:
        splits: a `headstart.recipes.data.DataSplits`.

    Returns:
        Split name ("train", "val" and, when there is a test split, "test") ->
        (images float32 (n, height, width, channels), labels int64 (n,)).

    Raises:
        ValueError: a split never ends (e.g. a repeated hand-made dataset), or holds a
            number of examples other than `splits.num_examples` says.
    """
    # `train_plain`: neither augmented nor mixed (MixUp's soft labels are no labels for a baseline).
    train = splits.train_plain if getattr(splits, "train_plain", None) is not None else (
        splits.train_epochs(0, 1) if splits.train_epochs is not None else splits.train)
    datasets = {"train": train, "val": splits.val}
    if splits.test is not None:
        datasets["test"] = splits.test
    result = {}
    for split, dataset in datasets.items():
        if dataset.cardinality().numpy() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(f"The {split} split repeats forever; a baseline needs each example once. "
                             f"Received: {split} cardinality=infinite")
        batches = list(dataset.as_numpy_iterator())
        images = np.concatenate([images for images, _ in batches]).astype(np.float32)
        labels = np.concatenate([labels for _, labels in batches]).astype(np.int64)
        expected = splits.num_examples.get(split, -1)
        if expected >= 0 and len(labels) != expected:   # < 0: tf.data's unknown count
            raise ValueError(f"The {split} split holds {len(labels)} examples, num_examples says {expected}. "
                             f"Received: num_examples[{split!r}]={expected}")
        result[split] = (images, labels)
    return result


def fits_in_memory(splits, limit_bytes):
    """Whether the arrays `arrays(splits)` returns (float32 images) take at most `limit_bytes`.

    Fitting needs more than that (see the module's docstring): leave room. False when a
    split's size is unknown.
    """
    sizes = [size for size in splits.num_examples.values()]
    if any(size < 0 for size in sizes):
        return False
    return sum(sizes) * math.prod(splits.input_shape) * np.dtype(np.float32).itemsize <= limit_bytes


def feature_extractor(backbone):
    """The linear probe's features: a model of images -> `backbone`'s output, averaged over space.

    Args:
        backbone: a backbone (a Keras model named "backbone"), or a classifier holding one
            (`model.get_layer("backbone")` is used).

    Returns:
        A Keras model, to call with `predict` (inference mode): a 4-D backbone output is
        global-average-pooled, any other flattened (as `headstart.models.heads.build_head`
        treats them).
    """
    backbone = backbone if backbone.name == "backbone" else backbone.get_layer("backbone")
    inputs = keras.Input(shape=backbone.input_shape[1:])
    outputs = backbone(inputs)
    pooling = layers.GlobalAveragePooling2D() if len(outputs.shape) == 4 else layers.Flatten()
    # Pooling inside the model: predict() keeps only pooled batches, never whole feature maps.
    return keras.Model(inputs, pooling(outputs), name="pooled_backbone")


def run(splits, backbone=None, *, seed=0):
    """The baselines on `splits`: `pixels`, and `linear_probe` when a backbone is given.

    Reads every split into memory (see `fits_in_memory`).

    Args:
        splits: a `headstart.recipes.data.DataSplits`; the probe feeds its images to the
            backbone as they are, so they must be preprocessed as the backbone expects.
        backbone: a Keras backbone, or a classifier holding one (see `feature_extractor`).
            Defaults to `None`: the pixel baseline only.
        seed: `LogisticRegression`'s `random_state`. lbfgs draws nothing, so today both
            baselines are deterministic and this changes nothing. Defaults to `0`.

    Returns:
        Baseline name -> {"accuracy": on `split`, "split": "test" (or "val" when there is
        no test split), "val_accuracy": of the chosen C, "C": the chosen C, "seconds":
        computing the features (the backbone pass, for the probe) and the search over C;
        reading the splits, shared by both, is not counted}.

    Example:
        >>> from headstart.recipes import data
        >>> results = run(data.load("digits", image_size=8, labels_per_class=5))
        >>> sorted(results["pixels"])
        ['C', 'accuracy', 'seconds', 'split', 'val_accuracy']
    """
    if backbone is not None and tuple(backbone.input_shape[1:]) != tuple(splits.input_shape):
        raise ValueError(f"The backbone takes inputs of shape {tuple(backbone.input_shape[1:])}, the splits "
                         f"hold images of shape {tuple(splits.input_shape)}. "
                         f"Received: input_shape={tuple(splits.input_shape)}")
    split_arrays = arrays(splits)
    started = time.perf_counter()
    pixels = {split: (images.reshape(len(images), -1), labels) for split, (images, labels) in split_arrays.items()}
    results = {"pixels": _best_logistic_regression(pixels, seed, started)}
    if backbone is not None:
        started = time.perf_counter()
        extractor = feature_extractor(backbone)   # one model for every split: predict() traces once
        # predict() runs in inference mode (training=False, passed on to the nested backbone):
        # batch norm uses its moving statistics, dropout is off, as for a frozen backbone.
        features = {split: (extractor.predict(images, batch_size=FEATURE_BATCH_SIZE, verbose=0), labels)
                    for split, (images, labels) in split_arrays.items()}
        results["linear_probe"] = _best_logistic_regression(features, seed, started)
    return results


def run_probe(features, seed=0):
    """The linear probe on features already computed: split -> (features (n, d), labels), as `run` fits it."""
    return _best_logistic_regression(features, seed, time.perf_counter())


def table_rows(baselines):
    """Markdown rows for `run`'s results, in the columns of `headstart.recipes.finetune.results_table`."""
    return [f"| {NAMES[name]} (C={result['C']:g}) | {result['accuracy']:.3f} | "
            f"fit on train, C chosen on val (val accuracy {result['val_accuracy']:.3f}), {result['seconds']:.1f} s |"
            for name, result in baselines.items()]


def _best_logistic_regression(parts, seed, started):
    """Standardize, fit one LogisticRegression per C on train, keep the best on val, score it."""
    scaler = StandardScaler().fit(parts["train"][0])
    scaled = {split: (scaler.transform(inputs), labels) for split, (inputs, labels) in parts.items()}
    best = None
    # One BLAS thread: these are small matrices, and on a busy machine (a run training
    # beside it) OpenBLAS's threads made a 30 ms fit take 2-8 s.
    with threadpool_limits(limits=1, user_api="blas"):
        for c in C_GRID:
            classifier = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed).fit(*scaled["train"])
            val_accuracy = classifier.score(*scaled["val"])
            if best is None or val_accuracy > best[0]:   # strictly better: a tie keeps the smaller C
                best = (val_accuracy, c, classifier)
        val_accuracy, c, classifier = best
        split = "test" if "test" in scaled else "val"
        accuracy = classifier.score(*scaled[split])
    return {"accuracy": float(accuracy), "split": split, "val_accuracy": float(val_accuracy), "C": c,
            "seconds": round(time.perf_counter() - started, 2)}
