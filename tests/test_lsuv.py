"""LSUV: every kernel layer ends with unit output variance, measured independently of `lsuv`."""

import keras
import numpy as np
import pytest
from keras import layers

from headstart.models.lsuv import LayerVariance, lsuv

RNG = np.random.default_rng(0)
MLP_BATCH = RNG.normal(size=(128, 16)).astype("float32")
CONV_BATCH = RNG.normal(size=(16, 8, 8, 3)).astype("float32")
NUMPY_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


def _nested_mlp(activation, depth=6, width=32):
    """A backbone of `depth - 1` Dense layers and a one-Dense head, nested as the builders do."""
    inputs = keras.Input((16,))
    x = inputs
    for index in range(depth - 1):
        tiny = keras.initializers.RandomNormal(stddev=0.01)
        x = layers.Dense(width, kernel_initializer=tiny, name=f"dense{index}")(x)
        x = layers.Activation(activation, name=f"act{index}")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    head_inputs = keras.Input((width,))
    head = keras.Model(head_inputs, layers.Dense(width, name="logits")(head_inputs), name="head")
    outer_inputs = keras.Input((16,))
    return keras.Model(outer_inputs, head(backbone(outer_inputs)), name="mlp")


def _numpy_pre_activation_variances(model, activation, batch):
    """Variance of each Dense output, by a NumPy forward pass through the weights."""
    backbone = model.get_layer("backbone")
    dense_layers = [layer for layer in backbone.layers if isinstance(layer, layers.Dense)]
    dense_layers.append(model.get_layer("head").get_layer("logits"))
    x, variances = batch.astype(np.float64), []
    for index, layer in enumerate(dense_layers):
        kernel, bias = (weight.astype(np.float64) for weight in layer.get_weights())
        z = x @ kernel + bias
        variances.append(z.var())
        if index < len(dense_layers) - 1:
            x = NUMPY_ACTIVATIONS[activation](z)
    return variances


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_deep_nested_mlp_ends_with_unit_variance_at_every_layer(activation):
    model = _nested_mlp(activation)
    before = _numpy_pre_activation_variances(model, activation, MLP_BATCH)
    # The tiny init makes the signal vanish with depth: that is what LSUV repairs.
    assert before[-1] < 1e-6

    report = lsuv(model, MLP_BATCH, tolerance=0.1)

    expected_paths = [f"backbone/dense{index}" for index in range(5)] + ["head/logits"]
    assert [record.layer for record in report] == expected_paths
    assert all(isinstance(record, LayerVariance) for record in report)
    after = _numpy_pre_activation_variances(model, activation, MLP_BATCH)
    np.testing.assert_allclose(after, 1.0, atol=0.1)
    np.testing.assert_allclose([record.variance_after for record in report], after, rtol=1e-3)
    np.testing.assert_allclose(report[0].variance_before, before[0], rtol=1e-3)
    assert all(0 <= record.iterations <= 10 for record in report)
    assert sum(record.iterations for record in report) > 0


def _conv_net():
    inputs = keras.Input((8, 8, 3))
    # A non-zero bias means rescaling the kernel does not rescale the output exactly,
    # so LSUV has to iterate.
    bias = keras.initializers.RandomNormal(stddev=0.3)
    x = layers.Conv2D(8, 3, padding="same", bias_initializer=bias, name="conv1")(inputs)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(8, 3, padding="same", bias_initializer=bias, name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _probe_variances(model, names, batch):
    """Variance of each named layer's output, through a probe on the (flat) graph."""
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    return [float(np.var(output.astype(np.float64))) for output in probe.predict(batch, verbose=0)]


def test_conv_net_ends_with_unit_variance_at_every_layer():
    model = _conv_net()
    names = ["conv1", "conv2", "logits"]

    report = lsuv(model, CONV_BATCH, tolerance=0.05, max_iterations=20)

    assert [record.layer for record in report] == names
    assert [record.iterations for record in report] != [0, 0, 0]
    np.testing.assert_allclose(_probe_variances(model, names, CONV_BATCH), 1.0, atol=0.05)


def test_without_orthonormal_start_only_the_scale_of_each_kernel_changes():
    model = _conv_net()
    kernels_before = [model.get_layer(name).kernel.numpy() for name in ("conv1", "conv2", "logits")]

    lsuv(model, CONV_BATCH, orthonormal=False)

    for before, layer_name in zip(kernels_before, ("conv1", "conv2", "logits")):
        after = model.get_layer(layer_name).kernel.numpy()
        ratio = after.ravel() / before.ravel()
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4, err_msg=layer_name)


def test_orthonormal_start_gives_orthonormal_directions():
    model = _nested_mlp("tanh", depth=3)
    lsuv(model, MLP_BATCH)
    kernel = model.get_layer("backbone").get_layer("dense1").kernel.numpy()
    gram = kernel.T @ kernel
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(32), atol=1e-4 * gram[0, 0])


def test_layers_restricts_which_kernels_change():
    model = _conv_net()
    untouched = [model.get_layer(name).kernel.numpy() for name in ("conv1", "logits")]

    report = lsuv(model, CONV_BATCH, layers=["conv2"])

    assert [record.layer for record in report] == ["conv2"]
    for name, kernel in zip(("conv1", "logits"), untouched):
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), kernel)
    # The layer's call is restored: nothing of the measurement is left on it.
    assert "call" not in vars(model.get_layer("conv2"))


def test_bad_arguments_raise_naming_them():
    model = _conv_net()
    with pytest.raises(ValueError, match="batch"):
        lsuv(model, CONV_BATCH[:0])
    for tolerance in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=f"tolerance={tolerance}"):
            lsuv(model, CONV_BATCH, tolerance=tolerance)
    for max_iterations in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"max_iterations={max_iterations}"):
            lsuv(model, CONV_BATCH, max_iterations=max_iterations)
    with pytest.raises(ValueError, match="conv9") as error:
        lsuv(model, CONV_BATCH, layers=["conv9"])
    assert "conv1, conv2, logits" in str(error.value)
    no_kernels = keras.Sequential([keras.Input((4,)), layers.Activation("relu")])
    with pytest.raises(ValueError, match="no layer with a kernel"):
        lsuv(no_kernels, MLP_BATCH[:, :4])
