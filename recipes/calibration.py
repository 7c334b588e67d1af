"""How far to trust a model's probabilities: temperature scaling and expected calibration error (NumPy only).

    temperature = fit_temperature(val_logits, val_labels)
    probabilities = softmax(test_logits, temperature)
    expected_calibration_error(probabilities, test_labels)

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017) divides
the logits by one number fitted to minimise the validation log loss; it keeps every
prediction's class and only makes its probability say more truthfully how often such a
prediction is right. Label smoothing, which the fine-tuning recipe uses, tends to make
a model under-confident (a temperature below 1 then).
"""

import numpy as np

# Equal-width confidence bins of the expected calibration error (Guo et al. use 15).
ECE_BINS = 15
# The fitted temperature stays within [1/100, 100]: beyond, the probabilities are one-hot or
# uniform to float precision, and the optimum is a bound anyway.
LOG_TEMPERATURE_BOUND = np.log(100.0)


def softmax(logits, temperature=1.0):
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def log_loss(logits, labels, temperature=1.0):
    """Mean negative log-likelihood of the true labels under `softmax(logits / temperature)`."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_normaliser = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_normaliser - scaled[np.arange(len(labels)), np.asarray(labels)]))


def fit_temperature(logits, labels):
    """The temperature that minimises `log_loss(logits, labels, temperature)`.

    The loss is convex in 1/temperature, so a bounded scalar search over log(temperature)
    finds the one minimum.
    """
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one example")
    found = minimize_scalar(lambda log_t: log_loss(logits, labels, np.exp(log_t)),
                            bounds=(-LOG_TEMPERATURE_BOUND, LOG_TEMPERATURE_BOUND), method="bounded",
                            options={"xatol": 1e-6})
    return float(np.exp(found.x))


def reliability(probabilities, labels, bins=ECE_BINS):
    """Per confidence bin (equal width over [0, 1]): (count, mean confidence, accuracy), and the ECE.

    The confidence of a prediction is its largest probability; the ECE is the mean over
    examples of |accuracy - confidence| of their bin (Guo et al.'s definition). A bin
    holds confidences in (low, high]; the first also holds 0.
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_confidence[filled])) / len(labels))
    return {"counts": counts, "confidence": mean_confidence, "accuracy": accuracy, "ece": ece}


def expected_calibration_error(probabilities, labels, bins=ECE_BINS):
    return reliability(probabilities, labels, bins)["ece"]
