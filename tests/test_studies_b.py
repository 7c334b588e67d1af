"""Studies 5-8 (optimizers, regularisation, MC dropout, learning rate) in their quick setting.

The quick setting is the default code path with fewer steps; its numbers must show the
claim each study's figure is about. Seeds and data are fixed, and every assertion has a
wide margin over what the quick runs measure.
"""

import json

from headstart.recipes import studies
from headstart.recipes.rundir import RunDir


def run_quick(name, tmp_path, figure):
    _, result = studies.run_study(name, RunDir(tmp_path), quick=True, seed=0)
    assert (tmp_path / figure).stat().st_size > 10_000
    assert (tmp_path / "results.md").read_text().startswith(f"# Study: {name}")
    assert json.loads((tmp_path / "findings.json").read_text())["findings"] == result.findings
    return result


def test_optimizers_quick(tmp_path):
    result = run_quick("optimizers", tmp_path, "optimizers.png")
    ravine = result.findings["ravine_final_loss"]
    # Same start, same number of steps on the Rosenbrock ravine: momentum, Nesterov and
    # Adam end far below plain gradient descent (measured: 5.3 vs. 0.14, 0.03, 1.9).
    for name in ("Momentum", "Nesterov", "Adam"):
        assert ravine[name] < 0.5 * ravine["GD"], (name, ravine)
    assert result.supported, result.summary
    # On the MLP every optimizer descends from the same start, full-batch GD the least per epoch.
    mlp = result.findings["mlp_final_loss"]
    assert max(mlp, key=mlp.get) == "GD"
    assert all(loss < result.findings["mlp_initial_loss"] for loss in mlp.values()), mlp


def test_dropout_uncertainty_quick(tmp_path):
    result = run_quick("dropout-uncertainty", tmp_path, "dropout_uncertainty.png")
    findings = result.findings
    # Far outside the training range the MC-dropout spread is well above the spread at the
    # training inputs (measured: 2.4x).
    assert findings["std_outside"] > 1.5 * findings["std_near_data"]
    assert result.supported, result.summary


def test_learning_rate_quick(tmp_path):
    result = run_quick("learning-rate", tmp_path, "learning_rate.png")
    ratios = result.findings["median_update_ratio"]
    small, right, large = (ratios[name] for name in ("too small", "about right", "too large"))
    # The update-to-weight ratio grows with the rate by orders of magnitude (measured:
    # 1.3e-5, 2.6e-3, 4.7e-2), and the middle rate sits near the lecture's 1e-3.
    assert 10 * small < right < large / 3
    assert 1e-4 <= right <= 1e-2
    accuracy = result.findings["val_accuracy"]
    assert accuracy["about right"] > max(accuracy["too small"], accuracy["too large"]) + 0.1
    assert result.supported, result.summary
    # The GradientLogger CSV logs stay in the run directory, one per rate.
    assert len(list(tmp_path.glob("gradients_lr_*/gradients.csv"))) == 3


def test_regularization_quick(tmp_path):
    result = run_quick("regularization", tmp_path, "regularization.png")
    gap = result.findings["gap"]
    # 100 digits, a fifth mislabelled: the unregularised MLP memorises them. The
    # regularisers narrow the validation-minus-training cross-entropy gap (measured: none
    # 0.80; L1 0.71, L2 0.61, elastic net 0.65, dropout 0.49, early stopping 0.19,
    # augmentation 0.50). Batch norm is shown for comparison only (measured: 0.79).
    for name in ("L1", "L2", "elastic net"):
        assert gap[name] < gap["none"], (name, gap)
    for name in ("dropout", "early stopping", "augmentation"):
        assert gap[name] < 0.8 * gap["none"], (name, gap)
    assert result.findings["train_accuracy"]["none"] == 1.0  # it memorised the wrong labels too
    # L1 leaves far more weights near zero than L2, which leaves more than no penalty
    # (measured: 54 %, 36 %, 7 %).
    sparsity = result.findings["near_zero_fraction"]
    assert sparsity["L1"] > sparsity["L2"] + 0.1
    assert sparsity["L2"] > sparsity["none"] + 0.1
    assert result.supported, result.summary
    early_stopping = result.findings["early_stopping"]
    assert early_stopping["stop_reason"] == "patience"
    assert early_stopping["epochs_run"] < result.findings["epochs"]
