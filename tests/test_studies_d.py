"""Studies ensembles, pooling and weight-decay-vs-l2 in their quick setting, and one through the CLI.

The quick setting is the default code path with fewer steps; its numbers must show the
claim each study's figure is about, checked where possible against an independent
reference (a closed formula, NumPy, Keras' own layers and optimizer). Seeds and data are
fixed, and every assertion has a margin over what the quick runs measure.
"""

import json
import math

import numpy as np
import pytest

from headstart.recipes import studies
from headstart.recipes.cli import main
from test_studies_b import run_quick   # the quick run and the files every study writes


def test_new_studies_are_listed_last_in_order():
    assert list(studies.STUDIES)[-3:] == ["ensembles", "pooling", "weight-decay-vs-l2"]
    for name in ("ensembles", "pooling", "weight-decay-vs-l2"):
        module = studies.load_study(name)
        assert module.DESCRIPTION and module.CLAIM and callable(module.run)


def test_ensembles_quick(tmp_path):
    result = run_quick("ensembles", tmp_path, "ensembles.png")
    findings = result.findings
    # Bootstrap models are independent draws for a fixed training set, so a bag of k has
    # sigma^2 / k variance (measured in the quick run: 1.02 x at k = 2).
    for ratio in findings["variance_over_prediction"].values():
        assert 0.6 < ratio < 1.4, findings["variance_over_prediction"]
    # The bag of 4 errs less than one bootstrap model (measured: 0.058 vs 0.071).
    assert findings["whole_bag_error"] < findings["single_model_error"]
    # One hidden layer: the logits are linear in the dropped units, so the mean of n passes
    # closes in on the deterministic network at sigma / sqrt(n) (measured: 0.98-1.02 x).
    linear = findings["dropout"]["1 hidden layer"]
    for n, ratio in linear["gap_over_rate"].items():
        assert 0.8 < ratio < 1.25, (n, ratio)
    gaps = [linear["gaps"][n] for n in sorted(linear["gaps"], key=int)]
    assert gaps[-1] < gaps[0] / 10
    # Two hidden layers: the gap levels off at the weight-scaling rule's error (measured:
    # 2.7 x sigma / sqrt(n) after 256 passes).
    nonlinear = findings["dropout"]["2 hidden layers"]
    assert nonlinear["gap_over_rate"][str(max(map(int, nonlinear["gap_over_rate"])))] > 1.5
    assert result.supported, result.summary


def test_keras_dropout_is_inverted_dropout():
    """What the ensembles study relies on: training=True keeps units with 1 - rate, scaled by 1 / (1 - rate)."""
    import keras

    keras.utils.set_random_seed(0)
    layer = keras.layers.Dropout(0.5)
    ones = np.ones((2000, 50), dtype="float32")
    dropped = np.asarray(layer(ones, training=True))
    assert set(np.unique(dropped)) == {0.0, 2.0}
    assert abs(dropped.mean() - 1.0) < 0.02  # the expectation is the input: no rescaling at test time
    np.testing.assert_array_equal(np.asarray(layer(ones, training=False)), ones)


def test_pooling_through_the_cli(tmp_path, capsys):
    assert main(["study", "pooling", "--quick", "--runs-dir", str(tmp_path), "--name", "quick"]) == 0
    out = capsys.readouterr().out
    assert "claim supported by this run: yes" in out
    run = tmp_path / "study" / "pooling" / "quick"
    assert (run / "pooling.png").stat().st_size > 10_000
    saved = json.loads((run / "findings.json").read_text())
    assert saved["quick"] is True and saved["supported"] is True
    findings = saved["findings"]
    # Every output shape of Conv2D, MaxPooling2D and AveragePooling2D on the quick grid agrees
    # with the formula (4 sizes x 2 kernels x 2 strides x 2 paddings x 3 layers, less the two
    # "valid" points with k > n that Keras refuses).
    assert findings["grid_points"] == 90 and findings["grid_mismatches"] == []
    # Pooling cuts the change under shifts (measured in the quick run: one pixel 0.74 x
    # the change without pooling for max, 0.59 x for average; two pixels 0.71 x and 0.63 x).
    for variant in ("max pooling", "average pooling"):
        for pixels, ratio in findings["change_over_no_pooling"][variant].items():
            assert ratio < 0.85, (variant, pixels, ratio)
    assert findings["map_shape"] == {"no pooling": [16, 16, 16], "max pooling": [4, 4, 16],
                                     "average pooling": [4, 4, 16]}


def test_pooling_output_sizes_match_keras_layers():
    """The study's grid function against Keras and an independent closed form, on sizes the quick run skips."""
    from headstart.recipes.studies import pooling

    points = pooling.size_grid((3, 6, 9, 13), (2, 4), (3,))
    assert len(points) == 3 * (4 * 2 * 2 - 1)  # "valid" with k = 4 > n = 3 is skipped
    for point in points:
        n, k, s = point["n"], point["kernel"], point["stride"]
        expected = [(size - k) // s + 1 if point["padding"] == "valid" else math.ceil(size / s) for size in (n, n + 1)]
        assert point["keras"] == expected == point["formula"], point


def test_weight_decay_vs_l2_quick(tmp_path):
    result = run_quick("weight-decay-vs-l2", tmp_path, "weight_decay_vs_l2.png")
    findings = result.findings
    # SGD: the same weights up to float32 rounding (measured: 8e-7 of the largest weight);
    # Adam + L2 and AdamW end far apart (measured: 0.33 of the largest weight).
    assert findings["sgd_max_relative_difference"] < 1e-4
    assert findings["adam_max_relative_difference"] > 0.1
    # Zero-gradient weights (blank pixels): AdamW shrinks them by exactly (1 - lr wd)^steps,
    # recomputed here; Adam without decay leaves them alone; Adam + L2 decays them far more
    # (measured: 0.39 against AdamW's 0.991 after 90 steps).
    from headstart.recipes.studies import weight_decay_vs_l2 as study

    assert findings["blank_pixel_weights"] > 0
    factor = (1 - study.ADAM_LEARNING_RATE * study.ADAM_WEIGHT_DECAY) ** findings["steps"]
    assert findings["blank_shrink"]["AdamW"] == pytest.approx(factor, rel=1e-4)
    # Exact by construction: a zero gradient keeps Adam's moments at 0, so its update is 0 / (0 + eps) = 0.
    assert findings["blank_shrink"]["Adam (no decay)"] == 1.0
    assert findings["blank_shrink"]["Adam + L2 penalty"] < 0.7 * factor
    # The penalty's decay depends on the gradient scale, AdamW's does not: the slope of log
    # shrinkage against log gradient scale (measured: 0.21 for Adam + L2, -0.0002 for AdamW).
    slopes = findings["shrinkage_slope_vs_gradient_scale"]
    assert abs(slopes["AdamW"]) < 0.05
    assert slopes["Adam + L2 penalty"] > 0.12
    assert result.supported, result.summary


def test_keras_weight_decay_is_an_sgd_l2_step():
    """One SGD step, checked in NumPy: Keras' weight_decay is w -= lr * (wd * w) before w -= lr * g,
    and headstart's L2(wd / 2) adds exactly wd * w to the gradient."""
    import keras
    import tensorflow as tf

    from headstart.models.regularizers import L2

    learning_rate, weight_decay = 0.1, 0.3
    w0 = np.array([[0.5, -2.0], [1.5, 0.25]], dtype="float32")
    gradient = np.array([[0.1, 0.2], [-0.3, 0.4]], dtype="float32")
    decayed = keras.Variable(w0)
    keras.optimizers.SGD(learning_rate, weight_decay=weight_decay).apply([gradient], [decayed])
    np.testing.assert_allclose(decayed.numpy(), w0 - learning_rate * weight_decay * w0 - learning_rate * gradient,
                               rtol=1e-6)
    penalised = keras.Variable(w0)
    with tf.GradientTape() as tape:
        penalty = L2(weight_decay / 2)(penalised)
    penalty_gradient = tape.gradient(penalty, penalised).numpy()
    np.testing.assert_allclose(penalty_gradient, weight_decay * w0, rtol=1e-6)
    keras.optimizers.SGD(learning_rate).apply([gradient + penalty_gradient], [penalised])
    np.testing.assert_allclose(penalised.numpy(), decayed.numpy(), rtol=1e-6)
