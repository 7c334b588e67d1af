"""Studies double-descent, dead-relu and gradient-clipping in their quick setting.

The quick setting is the default code path with fewer steps; its numbers must show the
claim each study's figure is about. Seeds and data are fixed, and every assertion has a
margin over what the quick runs measured (noted next to it).
"""

import json

import numpy as np

from headstart.recipes import studies
from headstart.recipes.cli import main
from test_studies_b import run_quick   # the quick run and the files every study writes
from headstart.recipes.studies import double_descent, gradient_clipping


def test_registered_after_the_first_eight_in_the_issue_order():
    names = list(studies.STUDIES)
    assert names.index("double-descent") < names.index("dead-relu") < names.index("gradient-clipping")
    assert names.index("double-descent") > names.index("learning-rate")


def test_min_norm_fit_is_the_pseudo_inverse_solution():
    # The closed form the study relies on: below the threshold it is the least-squares fit
    # (normal equations), above it the exact fit of smallest norm (the pseudo-inverse's).
    rng = np.random.default_rng(0)
    targets = rng.normal(size=30)
    tall = rng.normal(size=(30, 10))
    np.testing.assert_allclose(double_descent.min_norm_fit(tall, targets),
                               np.linalg.solve(tall.T @ tall, tall.T @ targets), rtol=1e-8)
    wide = rng.normal(size=(30, 80))
    readout = double_descent.min_norm_fit(wide, targets)
    np.testing.assert_allclose(readout, np.linalg.pinv(wide) @ targets, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(wide @ readout, targets, atol=1e-9)
    # Any other exact fit (plus a null-space direction) is longer.
    null_direction = np.linalg.svd(wide)[2][-1]
    np.testing.assert_allclose(wide @ null_direction, 0, atol=1e-9)
    assert np.linalg.norm(readout + 0.5 * null_direction) > np.linalg.norm(readout)


def test_double_descent_quick_through_the_cli(tmp_path, capsys):
    assert main(["study", "double-descent", "--quick", "--runs-dir", str(tmp_path), "--name", "t"]) == 0
    run = tmp_path / "study" / "double-descent" / "t"
    assert (run / "double_descent.png").stat().st_size > 10_000
    assert "**Supported by this run:** yes" in (run / "results.md").read_text()
    out = capsys.readouterr().out
    assert "claim supported by this run: yes" in out
    findings = json.loads((run / "findings.json").read_text())["findings"]
    error = {int(width): value for width, value in findings["median_test_error"].items()}
    n = findings["n_train"]
    # The peak is at p = n, ten times above the best model below it and the widest beyond it
    # (measured: 84 against 0.33 and 0.21 at p = 1000).
    assert max(error, key=error.get) == n
    assert error[n] > 10 * findings["best_test_error_below_threshold"]
    assert error[max(error)] < 0.1 * error[n]
    # Beyond the threshold every fit interpolates, and the readout shrinks as p grows.
    train = {int(width): value for width, value in findings["median_train_error"].items()}
    assert all(train[width] < 1e-12 for width in train if width > n)
    norm = {int(width): value for width, value in findings["median_readout_norm"].items()}
    wider = sorted(width for width in norm if width >= n)
    assert all(norm[a] > norm[b] for a, b in zip(wider, wider[1:]))
    # Keras SGD from zero weights ends at the closed-form minimum-norm fit (measured 2e-5 relative).
    assert findings["sgd"]["relative_distance_to_min_norm"] < 1e-3
    assert abs(findings["sgd"]["norm_trained"] / findings["sgd"]["norm_min_norm"] - 1) < 1e-3


def test_dead_relu_quick(tmp_path):
    result = run_quick("dead-relu", tmp_path, "dead_relu.png")
    findings = result.findings
    dead = findings["final_dead_fraction"]
    relu_large, relu_moderate = "relu, lr 0.1 (too large)", "relu, lr 0.001 (moderate)"
    leaky_large, leaky_moderate = "leaky_relu, lr 0.1 (too large)", "leaky_relu, lr 0.001 (moderate)"
    # At the too-large rate a third of the ReLU units die within an epoch (measured 0.34, the
    # second layer 0.67); at the moderate rate none do.
    assert dead[relu_large] > 0.2
    assert dead[relu_moderate] == 0.0   # a count of units over a total: 0 exactly, not a rounded float
    # A dead unit gets exactly zero gradient over the whole training set (the ReLU's slope
    # is exactly 0 there); every leaky unit keeps a gradient (measured smallest: 0.04).
    gradients = findings["gradients"]
    assert gradients[relu_large]["units_negative_everywhere"] > 10
    assert gradients[relu_large]["largest_gradient_of_negative_units"] == 0.0
    assert gradients[relu_large]["units_with_zero_gradient"] >= gradients[relu_large]["units_negative_everywhere"]
    # Any other unit with exactly zero gradient is active only on inputs whose softmax has
    # rounded to the one-hot label (no gradient from them at all).
    assert gradients[relu_large]["zero_gradient_of_active_units_explained"], gradients[relu_large]
    for name in (leaky_large, leaky_moderate):
        assert gradients[name]["smallest_gradient"] > 1e-4, gradients[name]
        assert gradients[name]["units_with_zero_gradient"] == 0
    # The leaky network learns better at the rate that kills the ReLUs (measured after one
    # epoch: 0.89 against 0.79; the default run's 10 epochs: 0.93 against 0.27).
    accuracy = findings["val_accuracy"]
    assert accuracy[leaky_large] > accuracy[relu_large] + 0.03
    assert result.supported, result.summary


def test_gradient_clipping_quick(tmp_path):
    result = run_quick("gradient-clipping", tmp_path, "gradient_clipping.png")
    findings = result.findings
    unclipped, clipped = "no clipping", f"global_clipnorm {gradient_clipping.CLIP:g}"
    # Without clipping the loss becomes NaN within the first epoch (measured: step 19 of
    # 23) and the study stops the run there; with global_clipnorm every step is finite and
    # the loss falls well below chance (measured: 0.78 against ln 10 = 2.30 after 2 epochs).
    assert findings["nan_step"][unclipped] is not None
    assert findings["steps_run"][unclipped] < findings["steps_run"][clipped]
    assert findings["largest_finite_gradient_norm"][unclipped] > 1e6  # measured 9e15
    assert findings["nan_step"][clipped] is None
    assert findings["epoch_losses"][clipped][-1] < 0.5 * gradient_clipping.CHANCE_LOSS
    assert findings["val_accuracy"][clipped] > 0.6  # measured 0.88
    # Keras' clipping, against its closed form: the first step (no momentum yet) moves the
    # weights by lr * min(|g|, clip) with global_clipnorm and by lr * |g| without clipping;
    # with momentum m no step can exceed lr * clip / (1 - m).
    rate, clip = gradient_clipping.LEARNING_RATE, gradient_clipping.CLIP
    first = findings["first_step"]
    assert first[clipped]["grad_norm"] > clip  # clipping acted from the first step
    np.testing.assert_allclose(first[clipped]["update_norm"], rate * clip, rtol=1e-3)
    np.testing.assert_allclose(first[unclipped]["update_norm"], rate * first[unclipped]["grad_norm"], rtol=1e-3)
    assert findings["largest_update_norm"][clipped] <= rate * clip / (1 - gradient_clipping.MOMENTUM) * (1 + 1e-4)
    assert result.supported, result.summary
    # The GradientLogger CSV logs stay in the run directory, one per condition.
    assert len(list((tmp_path / "gradients").glob("*.csv"))) == len(gradient_clipping.CONDITIONS)
