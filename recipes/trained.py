"""A finished run's model, complete: raw images in, calibrated class probabilities out.

    from headstart.recipes import trained

    run = trained.load("runs/finetune/demo")          # a run folder, or a .keras file in one
    run.class_names, run.image_size, run.channels, run.temperature
    probabilities = run.probabilities(images)          # (n, height, width, channels), values 0-255
    splits = run.splits()                              # the run's own train / val / test images, raw

Every training recipe that ends with a classifier (`finetune`, `pretrain`,
`semisupervised`, and `tune`'s best trial) leaves, beside `best.keras` (the network as
it trained, on preprocessed images; what `--weights` reads):

- `model.keras`: the same network behind a `headstart.models.serving.Preprocess` layer,
  so it takes images as files hold them (0-255) and returns logits. Plain
  `keras.saving.load_model` loads it once `headstart.models` is imported.
- `model.json`: the class names in output order, the input size and channels, the
  preprocessing, the backbone, the data the run read (to find its splits again), and the
  calibration temperature, fitted on the validation split when the run finished.

`evaluate`, `predict` and `export` read these. Runs made before `model.json` existed
(a `best.keras` and a `config.json` naming the class names) load too: their serving model
is assembled on load, uncalibrated (temperature 1).
"""

import json
from pathlib import Path

from headstart.recipes.errors import UsageError

MODEL_FILE = "model.keras"
INFO_FILE = "model.json"
NETWORK_FILE = "best.keras"
FINISHED_FILE = "metrics.json"   # written last by every recipe: the run is complete
FORMAT = 1


def describe(recipe, splits, backbone, preprocess_module):
    """`model.json`'s content for a network trained on `splits` (temperature not yet fitted)."""
    spec = splits.spec
    return {
        "format": FORMAT, "recipe": recipe, "backbone": backbone, "class_names": list(splits.class_names),
        "image_size": list(spec.image_size), "channels": spec.channels, "preprocess": preprocess_module,
        "data": {"source": spec.source, "classes": list(spec.classes) if spec.classes is not None else None,
                 "labels_per_class": spec.labels_per_class, "augment": list(spec.augment), "seed": spec.seed, "data_dir": spec.data_dir,
                 "validation_fraction": spec.validation_fraction, "test_fraction": spec.test_fraction,
                 "batch_size": spec.batch_size},
        "temperature": None,
    }


def write(run_dir, network, info, val):
    """`model.keras` and `model.json` of `network`, its temperature fitted on `val` (preprocessed batches)."""
    import numpy as np

    from headstart.models.serving import serving_model
    from headstart.recipes import calibration

    logits, labels = network_logits(network, val)
    temperature = calibration.fit_temperature(logits, labels) if len(labels) else None
    run_dir.save_model(serving_model(uncompiled_copy(network), info["preprocess"]), MODEL_FILE)
    run_dir.write_json(INFO_FILE, {**info, "temperature": temperature,
                                   "validation": {"examples": int(len(labels)),
                                                  "log_loss": calibration.log_loss(logits, labels),
                                                  "calibrated_log_loss": calibration.log_loss(logits, labels,
                                                                                              temperature),
                                                  "accuracy": float(np.mean(logits.argmax(1) == labels))}})


def uncompiled_copy(network):
    """`network`'s layers and weights without its optimizer: model.keras is for inference, and a
    nested compiled model would save its optimizer state too (which Keras then fails to load
    back under mixed precision, where the optimizer is wrapped in loss scaling)."""
    import keras

    copy = keras.Model.from_config(network.get_config())
    if len(copy.weights) != len(network.weights) and any(getattr(layer, "lora_enabled", False)
                                                         for layer in network._flatten_layers()):
        from headstart.models import lora

        lora.copy_merged(network, copy)   # LoRA inside KerasHub layers: merged into the kernels
    else:
        copy.set_weights(network.get_weights())
    return copy


def network_logits(network, batches):
    """(logits, integer labels) of `network` over `batches` of (images, labels), as NumPy."""
    import numpy as np

    logits, labels = [], []
    for images, batch_labels in batches:
        logits.append(np.asarray(network(images, training=False)))
        labels.append(np.asarray(batch_labels))
    if not logits:
        return np.zeros((0, network.output_shape[-1]), np.float32), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(labels).astype(np.int64)


def locate(path):
    """(run folder, model.json's content) of a finished run, or of a `.keras` file in one; no TensorFlow.

    Raises UsageError (one line, saying what to pass instead) for anything else.
    """
    path = Path(path)
    if path.suffix == ".keras":
        if not path.is_file():
            raise UsageError(f"{path} does not exist: pass a run folder (runs/finetune/NAME) or a .keras file in one")
        folder = path.parent
    elif path.is_dir():
        folder = path
    else:
        raise UsageError(f"{path} is not a run folder: pass a finished run's folder, e.g. runs/finetune/NAME")
    if not (folder / FINISHED_FILE).is_file():
        what = ("it was interrupted or is still running (finish it with --resume)" if (folder / "config.json").is_file()
                else "it holds no config.json or metrics.json")
        raise UsageError(f"{folder} is not a finished run: {what}")
    if (folder / INFO_FILE).is_file():
        info = _read_json(folder / INFO_FILE)
        if not (folder / MODEL_FILE).is_file():
            raise UsageError(f"{folder} has {INFO_FILE} but no {MODEL_FILE}: the run's model is missing; re-run it")
        return folder, info
    return folder, _legacy_info(folder)


def _legacy_info(folder):
    """model.json's content for a run made before it existed, from its config.json and best.keras."""
    from headstart.models import backbone_specs

    if not (folder / NETWORK_FILE).is_file():
        raise UsageError(f"{folder} holds no model ({MODEL_FILE} or {NETWORK_FILE}): only runs of finetune, "
                         "pretrain, semisupervised and tune leave one")
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    backbone = config.get("backbone") or config.get("model")
    if not config.get("class_names") or backbone not in backbone_specs.list_backbones():
        raise UsageError(f"{folder} was made by an older headstart and its config.json does not name the class "
                         "names and backbone; re-run it to use it here")
    size = config.get("image_size") or backbone_specs.get_spec(backbone).default_size
    return {"format": 0, "recipe": config.get("recipe"), "backbone": backbone, "class_names": config["class_names"],
            "image_size": [size, size], "channels": 3,
            "preprocess": backbone_specs.get_spec(backbone).preprocess_module,
            "data": {"source": config.get("data"), "classes": config.get("class_names"),
                     "labels_per_class": config.get("labels_per_class"), "seed": config.get("seed", 0),
                     "data_dir": config.get("data_dir"), "batch_size": config.get("batch_size", 32)},
            "temperature": None}


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path} ({error}); the run is damaged: re-run it") from None


class TrainedModel:
    """A finished run's model and what it needs (see the module docstring); made by `load`."""

    def __init__(self, folder, info, serving):
        self.folder, self.info, self.serving = Path(folder), info, serving

    @property
    def class_names(self):
        return list(self.info["class_names"])

    @property
    def image_size(self):
        return tuple(self.info["image_size"])

    @property
    def channels(self):
        return int(self.info["channels"])

    @property
    def input_shape(self):
        return (*self.image_size, self.channels)

    @property
    def temperature(self):
        """The fitted calibration temperature, or 1.0 for a run that has none (uncalibrated)."""
        return float(self.info.get("temperature") or 1.0)

    @property
    def trained_with_flips(self):
        return "flip" in (self.info["data"].get("augment") or ())

    @property
    def calibrated(self):
        return bool(self.info.get("temperature"))

    def logits(self, images, batch_size=64):
        """Logits of raw images (n, height, width, channels) with values 0-255 (NumPy or tensors)."""
        import numpy as np

        images = np.asarray(images)
        if images.shape[1:] != self.input_shape:
            raise UsageError(f"images of shape {images.shape[1:]} given; the model takes {self.input_shape} "
                             "(resize them, e.g. with headstart.recipes.predict.read_images)")
        if not len(images):
            return np.zeros((0, len(self.class_names)), np.float32)
        # predict_on_batch runs Keras' compiled predict step (5x faster here than calling the model
        # eagerly per batch) without building a tf.data pipeline per call, as `predict` would.
        return np.concatenate([np.asarray(self.serving.predict_on_batch(images[start:start + batch_size]))
                               for start in range(0, len(images), batch_size)])

    def probabilities(self, images, batch_size=64, temperature=None, tta=False):
        """Calibrated class probabilities of raw images; columns in `class_names` order.

        `tta`: the mean of the probabilities of the `tta_views` of each image (test-time augmentation),
        mirrored too when the run trained with flips.
        """
        import numpy as np

        from headstart.recipes import calibration

        temperature = self.temperature if temperature is None else temperature
        if not tta:
            return calibration.softmax(self.logits(images, batch_size), temperature)
        return np.mean([calibration.softmax(self.logits(view, batch_size), temperature)
                        for view in tta_views(images, flip=self.trained_with_flips)], axis=0)

    def splits(self, source=None, classes=None, batch_size=None):
        """The run's own splits again (same source, classes, seed), or `source`'s, with raw images (0-255).

        `classes` (default: the run's) keeps and orders the source's classes as the
        model's outputs are ordered, so label i is `class_names[i]`.
        """
        from headstart.recipes import data

        recorded = self.info["data"]
        own = source is None
        return data.load(recorded["source"] if own else source, image_size=self.image_size, channels=self.channels,
                         batch_size=batch_size or recorded.get("batch_size") or 32, preprocess=_raw,
                         classes=classes or self.class_names,
                         labels_per_class=recorded.get("labels_per_class") if own else None,
                         validation_fraction=recorded.get("validation_fraction", data.VALIDATION_FRACTION)
                         if own else data.VALIDATION_FRACTION,
                         test_fraction=recorded.get("test_fraction", data.TEST_FRACTION) if own else data.TEST_FRACTION,
                         seed=recorded.get("seed", 0) if own else 0, data_dir=recorded.get("data_dir"),
                         shuffle=False)


# Test-time augmentation, as fastai does it: views made with the run's own training
# augmentations, so a view is an image the model learned to read. Each image and its central
# crop (TTA_CROP of each side) enlarged back to the input size, a mild zoom; and the mirror
# images of both when the run trained with flips (a mirrored digit is no digit: on the digits
# demo, which trains without flips, the mirror views cut test accuracy from 0.939 to 0.821).
TTA_CROP = 0.875


def tta_views(images, flip=False):
    """The TTA views of a batch of raw images (n, height, width, channels), as float32 NumPy arrays:
    the images, their central crops, and with `flip` the mirror images of both."""
    import numpy as np
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    size = images.shape[1:3]
    views = [images, tf.image.resize(tf.image.central_crop(images, TTA_CROP), size, method="bilinear")]
    if flip:
        views += [tf.image.flip_left_right(view) for view in views]
    return [np.asarray(view) for view in views]


def _raw(images):
    """The data pipeline's preprocess step, skipped: the serving model preprocesses itself."""
    return images


def load(path):
    """The `TrainedModel` of a finished run folder (or a `.keras` file in one)."""
    folder, info = locate(path)
    import keras

    from headstart import models
    from headstart.models.serving import serving_model

    models.register_keras_objects(folder / (MODEL_FILE if (folder / MODEL_FILE).is_file() else NETWORK_FILE))
    if (folder / MODEL_FILE).is_file():
        serving = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    else:   # a run made before model.keras: assemble it
        serving = serving_model(keras.saving.load_model(folder / NETWORK_FILE, compile=False), info["preprocess"])
    return TrainedModel(folder, info, serving)
