"""The layers that turn a trained network into a model that takes raw images: preprocessing and calibration.

    serving = serving_model(network, preprocess_module="mobilenet_v2")   # raw [0, 255] images -> logits
    probabilities = Calibrated(temperature=1.7)(serving(images))

A network is trained on preprocessed images (the data pipeline scales them, or applies
the backbone's `preprocess_input`, after augmentation: see `headstart.recipes.data.pipeline`),
so on its own it expects what the pipeline made. `serving_model` puts that same step in
front of it, as a layer, so that the model saved with a run, its exports and `predict`
take images as files hold them (values 0-255, any numeric dtype) and nothing outside the
model can be left out or done differently. Both layers are registered, so a `.keras` file
holding them loads with `keras.saving.load_model` once `headstart.models` is imported.
"""

import keras


@keras.saving.register_keras_serializable(package="headstart")
class Preprocess(keras.layers.Layer):
    """Raw images in [0, 255] -> what a backbone expects: `/ 255`, or `keras.applications.<module>.preprocess_input`.

    Args:
        module: the `keras.applications` module whose `preprocess_input` the backbone
            expects (`"mobilenet_v2"`, `"resnet50"`, `"efficientnet"`, ...), or `None`
            for scaling to [0, 1] (the project's own backbones). Defaults to `None`.
    """

    def __init__(self, module=None, **kwargs):
        super().__init__(**kwargs)
        if module is not None and not hasattr(getattr(keras.applications, module, None), "preprocess_input"):
            raise ValueError(f"keras.applications.{module} has no preprocess_input")
        self.module = module

    def call(self, images):
        images = keras.ops.cast(images, "float32")
        if self.module is None:
            return images / 255.0
        return getattr(keras.applications, self.module).preprocess_input(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "module": self.module}


@keras.saving.register_keras_serializable(package="headstart")
class Calibrated(keras.layers.Layer):
    """Logits -> probabilities, `softmax(logits / temperature)` (temperature scaling, Guo et al. 2017).

    A temperature above 1 softens over-confident probabilities; it never changes which
    class is the most probable. Fitted on a run's validation split by
    `headstart.recipes.calibration.fit_temperature`.
    """

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def call(self, logits):
        return keras.ops.softmax(keras.ops.cast(logits, "float32") / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def serving_model(network, preprocess_module=None, name="serving"):
    """`raw images -> Preprocess -> network -> logits`, one Functional model over `network`'s own layers.

    The input takes float32 images with values in [0, 255] of `network`'s input shape
    (uint8 arrays convert on the way in).
    """
    inputs = keras.Input(shape=network.input_shape[1:], name="image")
    return keras.Model(inputs, network(Preprocess(preprocess_module, name="preprocess")(inputs)), name=name)


def probability_model(serving, temperature=1.0, input_dtype="float32", name="probabilities"):
    """`serving`'s logits as calibrated probabilities; its input of `input_dtype` (uint8 for exports)."""
    inputs = keras.Input(shape=serving.input_shape[1:], dtype=input_dtype, name="image")
    images = inputs if input_dtype == "float32" else keras.ops.cast(inputs, "float32")
    return keras.Model(inputs, Calibrated(temperature, name="calibrated")(serving(images)), name=name)
