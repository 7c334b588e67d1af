"""Softmax cross-entropy on logits that takes integer labels or soft ones, with label smoothing.

Keras' `SparseCategoricalCrossentropy` has no `label_smoothing`, and its
`CategoricalCrossentropy` needs one-hot labels; a run's pipelines give integer labels,
and MixUp / CutMix give soft ones (mixtures of two one-hot rows). This loss one-hots
integer labels and hands both to Keras' own `categorical_crossentropy`, so the
smoothing is Keras': targets `(1 - s) * one_hot + s / num_classes`.
"""

import keras


@keras.saving.register_keras_serializable(package="headstart")
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits, integer or soft labels, with `label_smoothing` in [0, 1).

    Args:
        num_classes: the number of logits (integer labels are one-hot encoded to it).
        label_smoothing: the mass moved from the true class to all classes evenly.
            Defaults to `0.0`.
    """

    def __init__(self, num_classes, label_smoothing=0.0, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes, self.label_smoothing = int(num_classes), float(label_smoothing)

    def call(self, y_true, y_pred):
        if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] != self.num_classes:
            # Integer labels, shaped (batch,) or (batch, 1).
            labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
            y_true = keras.ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(keras.ops.cast(y_true, y_pred.dtype), y_pred, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="headstart")
class Accuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy for integer or soft labels: a soft label counts as its largest class."""

    def __init__(self, num_classes, name="accuracy", dtype=None):
        super().__init__(fn=_accuracy, name=name, dtype=dtype, num_classes=num_classes)
        self.num_classes = int(num_classes)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes}


def _accuracy(y_true, y_pred, num_classes):
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes:
        y_true = keras.ops.argmax(y_true, axis=-1)
    labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
    predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32")
    return keras.ops.cast(keras.ops.equal(labels, predicted), "float32")
