"""How well a frozen backbone's features suit a labelled task, without fine-tuning (NumPy only).

    score = logme(train_features, train_labels)     # higher is better; comparable across backbones

LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021) is the log marginal evidence, per example, of a Bayesian linear
regression from the features to each class's one-hot column, with the prior precision
alpha and the noise precision beta set by maximising that evidence (MacKay's fixed-point
iteration), averaged over the classes. It needs one SVD of the features and no labels
of a validation split, so it ranks backbones in seconds; the paper finds it correlates
with fine-tuned accuracy better than a linear probe's accuracy on small data.
"""

import numpy as np

# Where the features explain a class not at all, the evidence keeps growing as alpha -> infinity
# (the weights -> 0) and the iteration never converges; the cap stops it there, close to that limit.
MAX_ITERATIONS = 1000
TOLERANCE = 1e-6   # relative change of alpha / beta per iteration at which the iteration stops


def logme(features, labels):
    """Mean over the classes of the maximised log evidence per example (You et al. 2021, Algorithm 1)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    n, d = features.shape
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    sigma = singular ** 2   # eigenvalues of F'F (its other d - rank ones are 0)
    evidences = []
    for label in np.unique(labels):
        target = (labels == label).astype(np.float64)
        alpha, beta = fit_precisions(sigma, u.T @ target, target @ target, n)
        evidences.append(log_evidence(sigma, u.T @ target, target @ target, n, d, alpha, beta) / n)
    return float(np.mean(evidences))


def _fit_terms(sigma, z, alpha, beta, norm_squared):
    """(gamma, |m|^2, |F m - y|^2) at (alpha, beta), from the SVD: m = beta A^-1 F'y, A = alpha I + beta F'F."""
    denominators = alpha + beta * sigma
    gamma = float(np.sum(beta * sigma / denominators))
    m_squared = float(np.sum(beta ** 2 * sigma * z ** 2 / denominators ** 2))
    # The part of y in the span of U is fitted up to alpha / (alpha + beta sigma); the rest is not fitted.
    residual = float(np.sum((alpha * z / denominators) ** 2) + max(norm_squared - float(z @ z), 0.0))
    return gamma, m_squared, residual


def fit_precisions(sigma, z, norm_squared, n):
    """MacKay's fixed point: alpha = gamma / |m|^2, beta = (n - gamma) / |F m - y|^2."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        gamma, m_squared, residual = _fit_terms(sigma, z, alpha, beta, norm_squared)
        new_alpha, new_beta = gamma / max(m_squared, 1e-12), (n - gamma) / max(residual, 1e-12)
        converged = abs(new_alpha - alpha) <= TOLERANCE * alpha and abs(new_beta - beta) <= TOLERANCE * beta
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    return alpha, beta


def log_evidence(sigma, z, norm_squared, n, d, alpha, beta):
    """log p(y | F, alpha, beta) of the Bayesian linear regression, from the SVD (not divided by n)."""
    _, m_squared, residual = _fit_terms(sigma, z, alpha, beta, norm_squared)
    # log|A|: A's eigenvalues are alpha + beta sigma_i on the features' span, alpha elsewhere.
    log_det = float(np.sum(np.log(alpha + beta * sigma)) + (d - len(sigma)) * np.log(alpha))
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * residual - alpha / 2 * m_squared - log_det / 2)
