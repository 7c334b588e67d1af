"""Study: bagging lowers the variance of predictions; dropout's test-time network is the mean of its masks.

    headstart study ensembles            # 88-110 s on 2 busy CPU cores (45-48 s of CPU time)
    headstart study ensembles --quick    # the same code path, fewer models and passes

Bagging. `MODELS` MLPs (`headstart.models.build_mlp`) are each trained on a bootstrap sample
of the digits' training split (as many draws, with replacement, as there are images) from
their own random initialisation. A bag of k models predicts the mean of their softmax
outputs. For each k the models are split into disjoint bags; across bags, the variance of the
predicted probabilities (per held-out image and class, averaged) measures how much the
prediction depends on the luck of the draw. For a fixed training set the bootstrap models
are independent draws, so a bag of k must have variance sigma^2 / k, sigma^2 being a single
model's: the closed formula the figure draws and the study checks. The held-out error of the
bags is set against a single bootstrap model and against one model trained on all of the
training split (the honest baseline: each bootstrap sample holds only ~63 % of the images).

Dropout at test time. Keras' `Dropout` is inverted dropout: at training time it keeps a unit
with probability 1 - rate and divides it by 1 - rate, so the test-time network is the
network itself (`training=False`), no rescaling. The study trains two dropout MLPs and runs
many stochastic passes (`training=True`, a fresh mask per row) over the held-out images,
comparing the running mean of the logits after n passes with the deterministic logits.
With one hidden layer the logits are linear in the dropped units, so the mean of the masks
is exactly the deterministic network and the gap shrinks as sigma / sqrt(n) (sigma: the
spread of single passes). With two hidden layers a ReLU sits between the dropout layers:
the deterministic network is only an approximation of the mean (the "weight scaling"
rule), and the gap levels off at that approximation's error instead of going to 0.
"""

import numpy as np

from headstart.recipes.studies import StudyResult, digits_arrays, markdown_table, pyplot, say, verdict

DESCRIPTION = "Bagging k bootstrap MLPs (variance ~ 1/k, held-out error) and dropout's MC mean vs. its test-time network"
CLAIM = ("Averaging models trained on bootstrap samples lowers the variance of the predictions (as 1/k for k "
         "models) and the test error; the mean of many dropout passes approaches the deterministic test-time "
         "network, at the 1/sqrt(n) rate where the network is linear after the dropout layer.")

# ## Bagging
MODELS = 12
BAG_SIZES = (1, 2, 3, 6)       # disjoint bags of each size (at least two bags, for a variance)
HIDDEN_UNITS = (64,)
LEARNING_RATE = 3e-3
BATCH_SIZE = 128               # fewer steps per model: the default run trains 15 of them
EPOCHS = 20

# ## Dropout at test time
DROPOUT_RATE = 0.5
DROPOUT_NETWORKS = {"1 hidden layer": (64,), "2 hidden layers": (64, 64)}
PASSES = (1, 4, 16, 64, 256, 1024)
PASSES_PER_BATCH = 64          # stochastic passes run as one batch of tiled images

QUICK = {"models": 4, "bag_sizes": (1, 2), "epochs": 4, "passes": (1, 4, 16, 64, 256)}

# ## What counts as shown
VARIANCE_TOLERANCE = 0.35      # measured bag variance within 35 % of sigma^2 / k
RATE_TOLERANCE = 0.25          # one hidden layer: gap within 25 % of sigma / sqrt(n) at every n
PLATEAU_FACTOR = 2.0           # two hidden layers: final gap at least twice sigma / sqrt(n)


def bootstrap_indices(size, models, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, size, size) for _ in range(models)]


def shuffled_stream(images, labels, epochs, seed):
    """`epochs` passes over the data, each in its own seeded random order, as one pair of arrays.

    One `fit` over this stream with `shuffle=False` trains as `epochs` shuffled epochs would,
    but Keras sets up one epoch instead of `epochs` of them, and the batches are exactly the
    same whenever the seed is the same.
    """
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(images)) for _ in range(epochs)])
    return images[order], labels[order]


def train_mlp(images, labels, hidden_units, epochs, seed, dropout=0.0):
    import keras

    from headstart.models import build_mlp

    keras.utils.set_random_seed(seed)
    model = build_mlp(images.shape[1:], 10, hidden_units=hidden_units, dropout=dropout)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*shuffled_stream(images, labels, epochs, seed), batch_size=BATCH_SIZE, epochs=1, shuffle=False,
              verbose=0)
    return model


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def bagging(data, models, epochs, seed):
    """Held-out probabilities of every bootstrap model and of one model on all the data."""
    x_train, y_train, x_val, _ = data
    probabilities = []
    for index, sample in enumerate(bootstrap_indices(len(x_train), models, seed)):
        say(f"training bootstrap model {index + 1}/{models} ({epochs} epochs)")
        model = train_mlp(x_train[sample], y_train[sample], HIDDEN_UNITS, epochs, seed + 1 + index)
        probabilities.append(softmax(np.asarray(model(x_val))))
    say(f"training one model on the whole training split ({epochs} epochs)")
    full = softmax(np.asarray(train_mlp(x_train, y_train, HIDDEN_UNITS, epochs, seed)(x_val)))
    return np.stack(probabilities), full  # (models, images, classes), (images, classes)


def bag_statistics(probabilities, y_val, bag_sizes):
    """Per bag size: the variance across disjoint bags, its sigma^2 / k prediction, the bags' mean error."""
    single_variance = float(probabilities.var(axis=0, ddof=1).mean())
    statistics = {}
    for size in bag_sizes:
        bags = probabilities[:len(probabilities) // size * size].reshape(-1, size, *probabilities.shape[1:]).mean(axis=1)
        errors = [float(np.mean(np.argmax(bag, axis=-1) != y_val)) for bag in bags]
        statistics[size] = {"bags": len(bags), "variance": float(bags.var(axis=0, ddof=1).mean()),
                            "predicted_variance": single_variance / size, "error": float(np.mean(errors))}
    return statistics


def dropout_gap(model, images, passes):
    """RMS gap between the mean logits of n stochastic passes and the deterministic logits, per n in `passes`.

    Also returns sigma, the RMS spread of single passes around their mean (over all passes).
    """
    deterministic = np.asarray(model(images, training=False))
    total = np.zeros_like(deterministic, dtype=np.float64)
    squares = np.zeros_like(total)
    gaps, done = {}, 0
    while done < max(passes):
        batch = min(PASSES_PER_BATCH, max(passes) - done)
        logits = np.asarray(model(np.tile(images, (batch, 1)), training=True), dtype=np.float64)
        logits = logits.reshape(batch, *deterministic.shape)
        for row in logits:  # one pass at a time, so every n in `passes` is seen
            total += row
            squares += row ** 2
            done += 1
            if done in passes:
                gaps[done] = float(np.sqrt(np.mean((total / done - deterministic) ** 2)))
    variance = squares / done - (total / done) ** 2
    sigma = float(np.sqrt(np.mean(variance) * done / (done - 1)))
    return gaps, sigma


def plot(statistics, whole_bag, single_error, full_error, dropout, passes):
    plt = pyplot()
    figure, (error_axes, variance_axes, dropout_axes) = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
    sizes = list(statistics)
    models, whole_bag_error = whole_bag
    error_axes.plot([*sizes, models], [*(statistics[size]["error"] for size in sizes), whole_bag_error], marker="o",
                    label="bag of k bootstrap models (mean over disjoint bags)")
    error_axes.axhline(full_error, color="black", linestyle="--", label=f"one model on all the data: {full_error:.3f}")
    error_axes.axhline(single_error, color="tab:gray", linestyle=":",
                       label=f"one bootstrap model (mean): {single_error:.3f}")
    error_axes.set_xscale("log", base=2)
    error_axes.set_xticks([*sizes, models], [str(size) for size in (*sizes, models)])
    error_axes.set_xlabel("models in the bag, k")
    error_axes.set_ylabel("held-out error")
    error_axes.set_title("Bagging: held-out error", fontsize=10)
    error_axes.legend(fontsize=8)
    variance_axes.plot(sizes, [statistics[size]["variance"] for size in sizes], marker="o",
                       label="measured across disjoint bags")
    variance_axes.plot(sizes, [statistics[size]["predicted_variance"] for size in sizes], color="black",
                       linestyle="--", label="sigma^2 / k (independent models)")
    variance_axes.set_xscale("log", base=2)
    variance_axes.set_xticks(sizes, [str(size) for size in sizes])
    variance_axes.set_yscale("log")
    variance_axes.set_xlabel("models in the bag, k")
    variance_axes.set_ylabel("variance of predicted probabilities")
    variance_axes.set_title("Bagging: variance of the prediction", fontsize=10)
    variance_axes.legend(fontsize=8)
    for index, (name, result) in enumerate(dropout.items()):
        color = f"C{index}"
        dropout_axes.plot(passes, [result["gaps"][n] for n in passes], marker="o", color=color, label=f"{name}: measured")
        dropout_axes.plot(passes, [result["sigma"] / np.sqrt(n) for n in passes], color=color, linestyle="--",
                          label=f"{name}: sigma / sqrt(n)")
    dropout_axes.set_xscale("log")
    dropout_axes.set_yscale("log")
    dropout_axes.set_xlabel("stochastic passes averaged, n")
    dropout_axes.set_ylabel("RMS(mean logits - deterministic logits)")
    dropout_axes.set_title(f"Dropout {DROPOUT_RATE:g}: mean of n passes vs. the test-time network", fontsize=10)
    dropout_axes.legend(fontsize=8)
    for axes in (error_axes, variance_axes, dropout_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(f"Ensembles on digits: bagging MLPs {HIDDEN_UNITS} and dropout as an implicit ensemble", fontsize=12)
    return figure


def run(run_dir, *, quick=False, seed=0):
    models = QUICK["models"] if quick else MODELS
    bag_sizes = QUICK["bag_sizes"] if quick else BAG_SIZES
    epochs = QUICK["epochs"] if quick else EPOCHS
    passes = QUICK["passes"] if quick else PASSES
    data = digits_arrays(seed)
    x_train, y_train, x_val, y_val = data

    # ## Bagging
    probabilities, full = bagging(data, models, epochs, seed)
    statistics = bag_statistics(probabilities, y_val, bag_sizes)
    single_error = statistics[1]["error"]
    full_error = float(np.mean(np.argmax(full, axis=-1) != y_val))
    whole_bag_error = float(np.mean(np.argmax(probabilities.mean(axis=0), axis=-1) != y_val))

    # ## Dropout: the mean of many masks against the deterministic network
    dropout = {}
    for name, hidden_units in DROPOUT_NETWORKS.items():
        say(f"training the dropout MLP with {name} ({epochs} epochs), then {max(passes)} stochastic passes")
        model = train_mlp(x_train, y_train, hidden_units, epochs, seed, dropout=DROPOUT_RATE)
        gaps, sigma = dropout_gap(model, x_val, passes)
        dropout[name] = {"gaps": gaps, "sigma": sigma,
                         "gap_over_rate": {n: gaps[n] / (sigma / np.sqrt(n)) for n in passes}}

    figure = plot(statistics, (models, whole_bag_error), single_error, full_error, dropout, passes)
    run_dir.save_figure(figure, "ensembles.png")

    # ## What the run shows
    # A bag of one is the single models themselves: its ratio is 1 by construction, not a test.
    variance_ratios = {size: value["variance"] / value["predicted_variance"] for size, value in statistics.items()
                       if size > 1}
    linear, nonlinear = dropout["1 hidden layer"], dropout["2 hidden layers"]
    checks = {
        "variance_follows_one_over_k": all(abs(ratio - 1) <= VARIANCE_TOLERANCE for ratio in variance_ratios.values()),
        "bag_beats_single_model": whole_bag_error < single_error,
        "linear_gap_at_sqrt_n_rate": all(abs(ratio - 1) <= RATE_TOLERANCE for ratio in linear["gap_over_rate"].values()),
        "nonlinear_gap_levels_off": nonlinear["gap_over_rate"][max(passes)] >= PLATEAU_FACTOR,
    }
    findings = {
        "models": models, "epochs": epochs, "checks": checks,
        "bags": statistics, "variance_over_prediction": variance_ratios,
        "single_model_error": single_error, "whole_bag_error": whole_bag_error, "full_data_model_error": full_error,
        "dropout": dropout,
    }
    table = markdown_table(["models in the bag", "disjoint bags", "variance of probabilities", "sigma^2 / k",
                            "held-out error"],
                           [(size, value["bags"], value["variance"], value["predicted_variance"], value["error"])
                            for size, value in statistics.items()]
                           + [(models, 1, "-", "-", whole_bag_error), ("one model, all the data", 1, "-", "-", full_error)])
    table += "\n" + markdown_table(
        ["passes n", *(f"{name}: gap" for name in dropout), *(f"{name}: gap / (sigma/sqrt(n))" for name in dropout)],
        [(n, *(result["gaps"][n] for result in dropout.values()),
          *(result["gap_over_rate"][n] for result in dropout.values())) for n in passes])
    measured = (f"bags of {', '.join(map(str, variance_ratios))} bootstrap models had prediction variance "
                f"{', '.join(f'{ratio:.2f}' for ratio in variance_ratios.values())} times sigma^2 / k; the bag of "
                f"{models} erred on {whole_bag_error:.3f} of the held-out digits, one bootstrap model on "
                f"{single_error:.3f} and one model on all the data on {full_error:.3f}. Dropout's mean of "
                f"{max(passes)} passes was {linear['gaps'][max(passes)]:.3f} from the deterministic logits with one "
                f"hidden layer ({linear['gap_over_rate'][max(passes)]:.2f} x sigma/sqrt(n)) and "
                f"{nonlinear['gaps'][max(passes)]:.3f} with two ({nonlinear['gap_over_rate'][max(passes)]:.1f} x: "
                "the weight-scaling approximation's error).")
    supported, summary = verdict(checks, measured)
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
