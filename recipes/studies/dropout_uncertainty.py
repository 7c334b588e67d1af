"""Study: Monte Carlo dropout, dropout kept on at test time as a measure of uncertainty.

    headstart study dropout-uncertainty            # about 15 s on 2 busy CPU cores
    headstart study dropout-uncertainty --quick    # the same code path, fewer steps

An MLP with dropout (`headstart.models.build_mlp`, one linear output) learns y = sin(x) from noisy
samples in two bands, x in [-4, -2] and [2, 4]: there is a gap in the middle and nothing
beyond |x| = 4. At test time the network is run many times with dropout on, each time
with a different mask; the spread of those predictions is the uncertainty estimate
(Gal and Ghahramani, 2016). Where the masks agree the network is confident; the lecture's
claim is that they disagree away from the training data.

The spread is compared in three places: at the training inputs, in the middle of the gap
(|x| < 1.5) and outside the training range (6 <= |x| <= 8). The claim counts as shown when
the spread outside the range is clearly (1.2x) larger than at the data; the gap is
reported too, where MC dropout is known to be weaker (Foong et al., 2019, "'In-Between'
Uncertainty in Bayesian Neural Networks").
"""

import numpy as np

from headstart.recipes.studies import StudyResult, markdown_table, pyplot

DESCRIPTION = "MC dropout on 1-D regression with a gap: predictive mean and spread, near and away from the data"
CLAIM = ("Keeping dropout on at test time and averaging many passes gives a predictive mean and a "
         "spread; the spread is small near the training data and grows away from it.")

# ## Data: y = sin(x) + noise, in two bands
TRAIN_BANDS = ((-4.0, -2.0), (2.0, 4.0))
POINTS_PER_BAND = 80
NOISE_STD = 0.1
GRID = (-8.0, 8.0, 321)  # where predictions are drawn and measured
GAP = 1.5  # |x| < GAP is the gap between the bands
OUTSIDE = 6.0  # |x| >= OUTSIDE is "outside the training range"

# ## Model and training
HIDDEN_UNITS = (128, 128)
DROPOUT_RATE = 0.2
LEARNING_RATE = 3e-3
BATCH_SIZE = 32
STEPS = 3000
QUICK_STEPS = 600
STEPS_PER_EPOCH = 100  # Keras epochs of many steps: little per-epoch overhead

# ## Monte Carlo dropout
OUTSIDE_FACTOR = 1.2  # the spread outside the range must be this much larger than at the data
SAMPLES = 200
QUICK_SAMPLES = 50


def make_data(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(low, high, POINTS_PER_BAND) for low, high in TRAIN_BANDS])
    y = np.sin(x) + rng.normal(scale=NOISE_STD, size=x.shape)
    return x.astype("float32")[:, None], y.astype("float32")[:, None]


def train(x, y, steps, seed):
    import keras
    import tensorflow as tf

    from headstart.models import build_mlp

    keras.utils.set_random_seed(seed)
    model = build_mlp((1,), 1, hidden_units=HIDDEN_UNITS, dropout=DROPOUT_RATE)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(BATCH_SIZE).repeat()
    history = model.fit(dataset, steps_per_epoch=STEPS_PER_EPOCH, epochs=max(1, steps // STEPS_PER_EPOCH),
                        shuffle=False, verbose=0)  # the pipeline shuffles
    return model, history.history["loss"][-1]


def mc_dropout(model, x, samples):
    """`samples` predictions for each row of `x`, dropout on: shape (samples, len(x)).

    All passes go through the network as one batch: each row of a batch gets its own
    dropout mask, so row copies are independent samples.
    """
    tiled = np.tile(x, (samples, 1))
    predictions = np.asarray(model(tiled, training=True)).reshape(samples, len(x))
    return predictions


def plot(x_train, y_train, grid, mean, std, deterministic, findings):
    plt = pyplot()
    figure, (prediction_axes, spread_axes) = plt.subplots(2, 1, figsize=(10, 7.5), height_ratios=[2, 1],
                                                          sharex=True, layout="constrained")
    for axes in (prediction_axes, spread_axes):
        for low, high in TRAIN_BANDS:
            axes.axvspan(low, high, color="tab:green", alpha=0.08)
    prediction_axes.fill_between(grid, mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.25,
                                 label="MC-dropout mean ± 2 std")
    prediction_axes.plot(grid, mean, color="tab:blue", label="MC-dropout mean")
    prediction_axes.plot(grid, deterministic, color="tab:orange", linestyle="--", linewidth=1,
                         label="dropout off (usual inference)")
    prediction_axes.plot(grid, np.sin(grid), color="black", linewidth=1, linestyle=":", label="sin(x) (truth)")
    prediction_axes.plot(x_train[:, 0], y_train[:, 0], ".", color="tab:green", markersize=4, label="training data")
    prediction_axes.set_ylim(-4, 4)
    prediction_axes.set_ylabel("y")
    prediction_axes.legend(fontsize=8, loc="upper left", ncol=2)
    prediction_axes.set_title(f"MC dropout (rate {DROPOUT_RATE:g}, {findings['samples']} passes): "
                              "predictions with dropout on at test time (green bands: training inputs)")
    spread_axes.plot(grid, std, color="tab:blue")
    for key, label, color in (("std_near_data", "at the training inputs", "tab:green"),
                              ("std_in_gap", f"in the gap |x| < {GAP:g}", "tab:purple"),
                              ("std_outside", f"outside |x| >= {OUTSIDE:g}", "tab:red")):
        spread_axes.axhline(findings[key], color=color, linestyle="--", linewidth=1,
                            label=f"mean spread {label}: {findings[key]:.3f}")
    spread_axes.set_xlabel("x")
    spread_axes.set_ylabel("predictive std")
    spread_axes.legend(fontsize=8, loc="upper center")
    return figure


def run(run_dir, *, quick=False, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    steps = QUICK_STEPS if quick else STEPS
    samples = QUICK_SAMPLES if quick else SAMPLES

    # ## Data and training
    x_train, y_train = make_data(seed)
    model, train_loss = train(x_train, y_train, steps, seed)

    # ## Monte Carlo dropout on a grid and at the training inputs
    grid = np.linspace(*GRID).astype("float32")
    predictions = mc_dropout(model, grid[:, None], samples)
    mean, std = predictions.mean(axis=0), predictions.std(axis=0)
    deterministic = np.asarray(model(grid[:, None], training=False))[:, 0]
    std_near = float(mc_dropout(model, x_train, samples).std(axis=0).mean())
    std_gap = float(std[np.abs(grid) < GAP].mean())
    std_outside = float(std[np.abs(grid) >= OUTSIDE].mean())
    in_bands = np.zeros_like(grid, dtype=bool)
    for low, high in TRAIN_BANDS:
        in_bands |= (grid >= low) & (grid <= high)
    findings = {
        "samples": samples,
        "train_steps": steps,
        "train_mse": float(train_loss),
        "std_near_data": std_near,
        "std_in_gap": std_gap,
        "std_outside": std_outside,
        "gap_over_near": std_gap / std_near,
        "outside_over_near": std_outside / std_near,
        "mean_abs_error_in_bands": float(np.abs(mean - np.sin(grid))[in_bands].mean()),
    }

    figure = plot(x_train, y_train, grid, mean, std, deterministic, findings)
    run_dir.save_figure(figure, "dropout_uncertainty.png")

    supported = std_outside > OUTSIDE_FACTOR * std_near
    table = markdown_table(["where", "inputs", "mean predictive std", "ratio to near the data"], [
        ("at the training inputs", f"{len(x_train)} points in {TRAIN_BANDS}", std_near, 1.0),
        ("in the gap", f"abs(x) < {GAP:g}", std_gap, std_gap / std_near),
        ("outside the training range", f"{OUTSIDE:g} <= abs(x) <= {GRID[1]:g}", std_outside,
         std_outside / std_near),
    ])
    gap_verdict = "larger too" if std_gap > OUTSIDE_FACTOR * std_near else "not clearly larger"
    measured = (f"the MC-dropout spread is {std_near:.3f} at the training inputs and {std_outside:.3f} outside "
                f"the training range ({std_outside / std_near:.1f}x); in the gap it is {std_gap:.3f} "
                f"({std_gap / std_near:.1f}x, {gap_verdict}).")
    summary = measured[0].upper() + measured[1:] if supported else "Not shown by this run: " + measured
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
