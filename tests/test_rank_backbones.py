"""`headstart rank-backbones`: LogME against its closed form, and a pretrained backbone ranked above random weights."""

import json

import numpy as np
import pytest

from headstart.recipes import transferability
from headstart.recipes.cli import main


def direct_log_evidence(features, target, alpha, beta):
    """log p(y | F, alpha, beta) of Bayesian linear regression written out with the d x d matrix A (no SVD)."""
    n, d = features.shape
    a = alpha * np.eye(d) + beta * features.T @ features
    mean = beta * np.linalg.solve(a, features.T @ target)
    residual = np.sum((features @ mean - target) ** 2)
    _, log_det = np.linalg.slogdet(a)
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * residual
            - alpha / 2 * mean @ mean - log_det / 2), mean, residual, a


@pytest.mark.parametrize("n, d", [(60, 8), (12, 30)])   # more examples than features, and fewer
def test_the_svd_evidence_equals_the_closed_form(n, d):
    rng = np.random.default_rng(0)
    features, target = rng.normal(size=(n, d)), rng.normal(size=n)
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    for alpha, beta in ((1.0, 1.0), (0.05, 20.0), (30.0, 0.3)):
        assert transferability.log_evidence(singular ** 2, u.T @ target, target @ target, n, d, alpha, beta) == \
            pytest.approx(direct_log_evidence(features, target, alpha, beta)[0], rel=1e-9)


def test_logme_is_the_evidence_at_mackays_fixed_point_and_a_maximum():
    # Features that carry the labels (a noisy one-hot code in the first 3 columns): where the features
    # explain a class not at all, the evidence grows without bound as alpha -> infinity (the weights -> 0).
    rng = np.random.default_rng(0)
    n = 60
    labels = rng.integers(0, 3, n)
    features = rng.normal(size=(n, 8))
    features[:, :3] += 2 * np.eye(3)[labels]
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    per_class = []
    for label in range(3):
        target = (labels == label).astype(float)
        alpha, beta = transferability.fit_precisions(singular ** 2, u.T @ target, target @ target, n)
        evidence, mean, residual, a = direct_log_evidence(features, target, alpha, beta)
        # MacKay's fixed point holds: gamma from A's own eigenvalues, alpha = gamma / |m|^2, beta = (n - gamma) / res.
        gamma = np.sum(np.linalg.eigvalsh(beta * features.T @ features) / np.linalg.eigvalsh(a))
        assert alpha == pytest.approx(gamma / (mean @ mean), rel=1e-4)
        assert beta == pytest.approx((n - gamma) / residual, rel=1e-4)
        # And it is a maximum: moving either precision lowers the evidence.
        for factor in (0.8, 1.25):
            assert direct_log_evidence(features, target, alpha * factor, beta)[0] < evidence
            assert direct_log_evidence(features, target, alpha, beta * factor)[0] < evidence
        per_class.append(evidence / n)
    assert transferability.logme(features, labels) == pytest.approx(np.mean(per_class), rel=1e-9)


def test_logme_prefers_features_that_carry_the_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    informative = np.eye(4)[labels] * 3 + rng.normal(size=(200, 4))
    noise = rng.normal(size=(200, 4))
    assert transferability.logme(np.hstack([informative, noise]), labels) > transferability.logme(
        np.hstack([noise, rng.normal(size=(200, 4))]), labels)


def test_a_pretrained_backbone_ranks_above_the_same_network_with_random_weights(tmp_path, capsys):
    runs = tmp_path / "runs"
    status = main(["rank-backbones", "--image-size", "16", "--pretrain-epochs", "4", "--runs-dir", str(runs),
                   "--name", "r", "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    folder = runs / "rank-backbones" / "r"
    result = json.loads((folder / "ranking.json").read_text())
    first, second = result["ranking"]
    # Pretrained on digits 0-4 against random weights, on digits 5-9: the probe and LogME both rank it first.
    assert first["candidate"] == "resnet8:digits-source" and second["candidate"] == "resnet8:none"
    assert first["probe_val_accuracy"] > second["probe_val_accuracy"] and first["logme"] > second["logme"]
    assert first["feature_dim"] == second["feature_dim"] == 64
    # On this task the pixels beat both probes, and the recommendation says so.
    assert result["pixels"]["val_accuracy"] > first["probe_val_accuracy"]
    assert "fine-tune everything" in result["recommendation"]
    assert "| 1 | resnet8:digits-source |" in printed and "logistic regression on the pixels" in printed
    assert (folder / "ranking.png").stat().st_size > 0 and "| 2 | resnet8:none |" in (folder / "ranking.md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--backbones", ""], "at least one backbone"),
    (["--backbones", "resnet8,resnet8"], "twice"),
    (["--backbones", "no_such_net"], "unknown backbone"),
    (["--backbones", "mobilenet_v2:digits-source"], "digits-source"),
    (["--backbones", "resnet8:missing.keras"], "missing.keras"),
    (["--neighbours", "0"], "--neighbours"),
    (["--data", "no_such_folder"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["rank-backbones", *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("headstart: error:") and words in error and len(error.splitlines()) == 1
    assert not any(tmp_path.iterdir())
