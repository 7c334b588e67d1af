"""Double descent: test error peaks where the model can just interpolate, and falls again beyond.

    headstart study double-descent           # about 50 s on 2 busy CPU cores
    headstart study double-descent --quick

A random-features model: each input (20 standard normal coordinates) goes through `p` fixed
random ReLU features, relu(x . w_j) with w_j ~ N(0, I/20), and only the linear readout on
top is fitted, to `N_TRAIN` noisy training targets (a linear teacher plus Gaussian noise of
std `NOISE`). The readout is the minimum-norm least-squares solution, a closed form
(`np.linalg.lstsq`, the pseudo-inverse): the best fit below `p = N_TRAIN`, and among the
many exact fits above it the one with the smallest weights. Test error is measured against
the noise-free teacher on fresh inputs, as the median over `DRAWS` draws of the features
(the mean is dominated by the draws nearest to singular at the threshold).

The lecture's claim (after Boaz Barak): error first follows the classical U; at the
interpolation threshold, where the number of parameters equals the number of training
points, the one exact fit follows the noise and the error peaks; beyond it the minimum-norm
fit gets smoother as `p` grows and the error descends a second time. The lecture adds that
(stochastic) gradient descent started from zero finds that minimum-norm fit by itself: the
study checks it with Keras, training the readout (a `Dense(1)` from zero weights, full-batch
SGD with momentum) at twice the threshold width and comparing it with the closed form.
"""

import numpy as np

from headstart.recipes.studies import StudyResult, markdown_table, pyplot, say, verdict

DESCRIPTION = "random-features regression: test error peaks at the interpolation threshold, then descends again"
CLAIM = ("Test error against model size first falls, then peaks at the interpolation threshold (as many "
         "parameters as training points), and falls again beyond it, where the minimum-norm fit (which gradient "
         "descent from zero finds) gets smoother as the model grows.")

# ## The task: a noisy linear teacher in 20 dimensions
INPUT_DIM = 20
N_TRAIN = 100              # the interpolation threshold is at p = N_TRAIN features
N_TEST = 1000
NOISE = 0.5                # std of the label noise, against a teacher output of std 1

# ## The models: p random ReLU features and a minimum-norm linear readout
WIDTHS = (5, 10, 20, 30, 45, 60, 75, 85, 95, 100, 105, 115, 130, 160, 200, 300, 500, 1000, 2000, 3000)
DRAWS = 10                 # feature draws per width; the figure shows their median and quartiles
QUICK = {"widths": (10, 30, 60, 100, 200, 500, 1000), "draws": 4, "n_test": 300, "sgd_steps": 400}

# ## The gradient-descent check (Keras)
SGD_WIDTH_FACTOR = 2       # at p = 2 * N_TRAIN
SGD_STEPS = 1000           # heavy-ball full-batch steps: 400 end 2e-5 from the closed form, 600 reach float32's ~6e-6
# The check passes when the trained weights are this close to the closed form (relative L2 distance).
SGD_CLOSE = 1e-3

# ## Deciding the claim
# Peak: the highest median test error sits within a factor of this of the threshold width.
PEAK_WINDOW = 1.25
# Second descent: the widest model's error is at most this fraction of the error at the threshold.
SECOND_DESCENT = 0.2


def make_task(seed, n_test):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=INPUT_DIM) / np.sqrt(INPUT_DIM)  # teacher outputs have std ~1
    x_train, x_test = rng.normal(size=(N_TRAIN, INPUT_DIM)), rng.normal(size=(n_test, INPUT_DIM))
    y_train = x_train @ teacher + NOISE * rng.normal(size=N_TRAIN)
    return x_train, y_train, x_test, x_test @ teacher


def random_features(x, weights):
    return np.maximum(x @ weights, 0.0)


def min_norm_fit(features, targets):
    """The minimum-norm least-squares readout (lstsq returns it when the system is underdetermined)."""
    return np.linalg.lstsq(features, targets, rcond=None)[0]


def sweep(task, widths, draws, seed):
    """Train and test error and readout norm per width, one row per feature draw."""
    x_train, y_train, x_test, y_test = task
    rng = np.random.default_rng(seed + 1)
    results = {}
    for width in widths:
        train_error, test_error, norm = [], [], []
        for _ in range(draws):
            weights = rng.normal(size=(INPUT_DIM, width)) / np.sqrt(INPUT_DIM)
            features = random_features(x_train, weights)
            readout = min_norm_fit(features, y_train)
            train_error.append(np.mean((features @ readout - y_train) ** 2))
            test_error.append(np.mean((random_features(x_test, weights) @ readout - y_test) ** 2))
            norm.append(np.linalg.norm(readout))
        results[width] = {"train": np.array(train_error), "test": np.array(test_error), "norm": np.array(norm)}
    return results


def gradient_descent_readout(task, width, steps, seed):
    """Train the readout with Keras (zero start, full-batch heavy-ball SGD); compare with the closed form."""
    say(f"training the readout at {width} features with Keras SGD from zero weights ({steps} full-batch steps)")
    import keras
    import tensorflow as tf

    x_train, y_train, _, _ = task
    rng = np.random.default_rng(seed + 2)
    features = random_features(x_train, rng.normal(size=(INPUT_DIM, width)) / np.sqrt(INPUT_DIM))
    closed_form = min_norm_fit(features, y_train)
    # Heavy-ball rate and momentum for the MSE Hessian 2 F^T F / n on the row space of F (the
    # only directions gradient descent from zero ever moves in, which is why it ends at the
    # minimum-norm fit): the textbook optimum for its largest and smallest non-zero eigenvalues.
    eigenvalues = 2 * np.linalg.svd(features, compute_uv=False) ** 2 / len(features)
    largest, smallest = eigenvalues.max(), eigenvalues[eigenvalues > 1e-10 * eigenvalues.max()].min()
    learning_rate = 4 / (np.sqrt(largest) + np.sqrt(smallest)) ** 2
    momentum = ((np.sqrt(largest) - np.sqrt(smallest)) / (np.sqrt(largest) + np.sqrt(smallest))) ** 2

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(float(learning_rate), momentum=float(momentum)), loss="mse")
    batches = tf.data.Dataset.from_tensors((features.astype("float32"), y_train.astype("float32"))).repeat()
    history = model.fit(batches, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    trained = model.get_layer(index=0).kernel.numpy()[:, 0].astype(np.float64)
    return {"width": width, "steps": steps, "learning_rate": float(learning_rate), "momentum": float(momentum),
            "final_train_mse": float(history.history["loss"][-1]),
            "relative_distance_to_min_norm": float(np.linalg.norm(trained - closed_form) / np.linalg.norm(closed_form)),
            "norm_trained": float(np.linalg.norm(trained)), "norm_min_norm": float(np.linalg.norm(closed_form))}


def plot(widths, results, best_small, sgd):
    plt = pyplot()
    figure, (error_axes, norm_axes) = plt.subplots(1, 2, figsize=(12, 4.6), width_ratios=[1.5, 1],
                                                   layout="constrained")
    test = np.array([results[width]["test"] for width in widths])
    train = np.array([results[width]["train"] for width in widths])
    error_axes.fill_between(widths, np.percentile(test, 25, axis=1), np.percentile(test, 75, axis=1),
                            color="tab:red", alpha=0.2)
    error_axes.plot(widths, np.median(test, axis=1), color="tab:red", marker="o", markersize=4,
                    label="test error (median over feature draws; band: quartiles)")
    # Train error past the threshold is 0 up to float rounding, which a log axis cannot show.
    error_axes.plot(widths, np.maximum(np.median(train, axis=1), 1e-4), color="tab:blue", marker=".",
                    label="training error (floored at 1e-4 to show on the log axis)")
    error_axes.axvline(N_TRAIN, color="black", linestyle="--", linewidth=1)
    error_axes.text(N_TRAIN * 1.05, np.median(test, axis=1).max(),
                    f"interpolation threshold\np = n = {N_TRAIN}", fontsize=8, va="top")
    error_axes.axhline(best_small, color="grey", linestyle=":", linewidth=1,
                       label=f"best below the threshold ({best_small:.2f})")
    error_axes.set_xscale("log")
    error_axes.set_yscale("log")
    error_axes.set_xlabel("number of random features p (= parameters of the fitted readout)")
    error_axes.set_ylabel("mean squared error")
    error_axes.set_title(f"Minimum-norm least squares on {N_TRAIN} noisy points (noise std {NOISE})", fontsize=10)
    error_axes.legend(fontsize=8, loc="lower left")
    norm_axes.plot(widths, [np.median(results[width]["norm"]) for width in widths], color="tab:purple", marker="o",
                   markersize=4, label="minimum-norm readout (closed form)")
    norm_axes.plot([sgd["width"]], [sgd["norm_trained"]], color="black", marker="x", markersize=10, linestyle="none",
                   label=f"Keras SGD from zero at p = {sgd['width']}\n(distance to closed form "
                         f"{sgd['relative_distance_to_min_norm']:.1e})")
    norm_axes.axvline(N_TRAIN, color="black", linestyle="--", linewidth=1)
    norm_axes.set_xscale("log")
    norm_axes.set_yscale("log")
    norm_axes.set_xlabel("number of random features p")
    norm_axes.set_ylabel("L2 norm of the readout weights (median)")
    norm_axes.set_title("The fit needs huge weights at the threshold, ever smaller ones beyond", fontsize=10)
    norm_axes.legend(fontsize=8)
    for axis in (error_axes, norm_axes):
        axis.grid(alpha=0.3, which="both")
    figure.suptitle("Double descent with random ReLU features", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    widths = sorted(QUICK["widths"] if quick else WIDTHS)
    draws = QUICK["draws"] if quick else DRAWS
    task = make_task(seed, QUICK["n_test"] if quick else N_TEST)

    say(f"fitting {len(widths)} widths from {widths[0]} to {widths[-1]} features, {draws} feature draws each")
    results = sweep(task, widths, draws, seed)
    sgd = gradient_descent_readout(task, SGD_WIDTH_FACTOR * N_TRAIN, QUICK["sgd_steps"] if quick else SGD_STEPS, seed)

    median_test = {width: float(np.median(results[width]["test"])) for width in widths}
    median_train = {width: float(np.median(results[width]["train"])) for width in widths}
    best_small = min(median_test[width] for width in widths if width < N_TRAIN)  # the classical optimum
    peak_width = max(median_test, key=median_test.get)
    threshold_error = median_test[N_TRAIN]
    widest = widths[-1]

    run_dir.save_figure(plot(widths, results, best_small, sgd), "double_descent.png")

    checks = {
        "peak_at_threshold": N_TRAIN / PEAK_WINDOW <= peak_width <= N_TRAIN * PEAK_WINDOW,
        "second_descent": median_test[widest] <= SECOND_DESCENT * threshold_error,
        "interpolates_beyond_threshold": all(median_train[width] < 1e-12 for width in widths if width > N_TRAIN),
        "sgd_from_zero_finds_min_norm": sgd["relative_distance_to_min_norm"] <= SGD_CLOSE,
    }
    findings = {
        "n_train": N_TRAIN, "input_dim": INPUT_DIM, "noise": NOISE, "draws": draws, "widths": widths,
        "checks": checks,
        "median_test_error": median_test, "median_train_error": median_train,
        "median_readout_norm": {width: float(np.median(results[width]["norm"])) for width in widths},
        "peak_width": peak_width, "test_error_at_threshold": threshold_error,
        "best_test_error_below_threshold": best_small,
        "test_error_widest": median_test[widest],
        # Not part of the claim, but what the lecture's "in practice, let the network get big" rests on.
        "widest_beats_best_small_model": median_test[widest] < best_small,
        "sgd": sgd,
    }
    table = markdown_table(["features p", "p / n", "train error (median)", "test error (median)",
                            "test error (quartiles)", "readout norm (median)"],
                           [(width, width / N_TRAIN, median_train[width], median_test[width],
                             f"{np.percentile(results[width]['test'], 25):.3g}-"
                             f"{np.percentile(results[width]['test'], 75):.3g}",
                             float(np.median(results[width]["norm"]))) for width in widths])
    measured = (f"median test error {best_small:.2f} at best below the threshold, {threshold_error:.3g} at p = n = "
                f"{N_TRAIN} (the peak is at p = {peak_width}), {median_test[widest]:.2f} at p = {widest}; Keras SGD "
                f"from zero at p = {sgd['width']} ended {sgd['relative_distance_to_min_norm']:.1e} (relative) from "
                f"the minimum-norm closed form")
    supported, summary = verdict(checks, measured, "Double descent shown")
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
