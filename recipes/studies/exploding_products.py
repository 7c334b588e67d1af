"""Exploding and vanishing products: why a deep network's signal needs properly scaled weights.

    headstart study exploding-products            # about 10 s on 2 busy CPU cores (NumPy only)
    headstart study exploding-products --quick

The lecture's demonstration: multiply 100 random 4x4 Gaussian matrices. With entries of
variance 1 the product explodes (norm ~1e24); with a small variance it vanishes. A deep
network's forward signal and backward gradient are such products (one factor per layer).

The figure's left panel is the lecture's setting (4x4) for several entry scales, with the
median and the 10-90% spread over many seeds on a log scale. "Properly scaled" means
standard deviation 1/sqrt(n) (Xavier/LeCun: the mean squared norm is preserved), and, as a
reference, random orthogonal factors, whose product keeps its norm exactly. The right panel
shows what the left one cannot: at 4x4 even the 1/sqrt(n) product drifts down, because the
*typical* norm of a product of n x n Gaussian factors changes by about exp(-k / (2n)) over k
factors (the mean is preserved, the median is not); the drift fades as the width grows to
the sizes real layers have.
"""

import math

import numpy as np

from headstart.recipes.studies import StudyResult, markdown_table, pyplot

DESCRIPTION = "norm of a product of 100 random matrices: explodes, vanishes, or stays bounded when scaled"
CLAIM = ("The product of 100 random 4x4 Gaussian matrices explodes when the entries have variance 1, "
         "vanishes when their variance is small, and stays bounded only when the scale is set properly.")

# ## Defaults
FACTORS = 100                      # the lecture's 100 matrices
WIDTH = 4                          # the lecture's 4x4
SCALES = {"std 1 (the lecture's)": 1.0, "std 0.1 (small)": 0.1}  # plus 1/sqrt(n) and orthogonal
SEEDS = 200                        # products per curve: the median and spread are over these
WIDTHS = (4, 16, 64)               # right panel: 1/sqrt(n) at growing widths (256 is slow under a loaded BLAS)
QUICK = {"seeds": 20, "widths": (4, 64)}
# "Exploded"/"vanished": the median norm changed by at least this many orders of magnitude.
EXTREME_ORDERS = 10
# "Bounded": a wide (n >= 64) properly scaled product stays within this many orders.
BOUNDED_ORDERS = 1.0


def product_log_norms(width, std, factors, rng, orthogonal=False):
    """log10 of ||W_1 W_2 ... W_k||_F / sqrt(n) for k = 0..factors (k = 0 is the identity).

    The running product is renormalised at every step and its log norm accumulated, so
    products of 1e-80 or 1e+80 are exact rather than under- or overflowing.
    """
    total = 0.5 * math.log10(width)  # log10 ||I||_F
    product = np.eye(width) / 10**total
    log_norms = [total]
    for _ in range(factors):
        if orthogonal:
            q, r = np.linalg.qr(rng.standard_normal((width, width)))
            factor = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
        else:
            factor = rng.normal(0.0, std, size=(width, width))
        product = product @ factor
        norm = np.linalg.norm(product)
        total += math.log10(norm)
        product /= norm
        log_norms.append(total)
    # ||P||_F / sqrt(n): 1 for any orthogonal P, so "bounded" means "stays near 0 in log10".
    return np.array(log_norms) - 0.5 * math.log10(width)


def curves(width, std, factors, seeds, rng, orthogonal=False):
    runs = np.stack([product_log_norms(width, std, factors, rng, orthogonal) for _ in range(seeds)])
    return {"median": np.median(runs, axis=0), "p10": np.percentile(runs, 10, axis=0),
            "p90": np.percentile(runs, 90, axis=0)}


def run(run_dir, *, quick=False, seed=0):
    seeds = QUICK["seeds"] if quick else SEEDS
    widths = QUICK["widths"] if quick else WIDTHS
    rng = np.random.default_rng(seed)

    # ## The lecture's setting: 4x4 factors at several scales
    scaled_label = f"std 1/sqrt(n) = {1 / math.sqrt(WIDTH):g} (Xavier/LeCun)"
    settings = {**SCALES, scaled_label: 1 / math.sqrt(WIDTH), "orthogonal (norm-preserving)": None}
    lecture = {label: curves(WIDTH, std or 1.0, FACTORS, seeds, rng, orthogonal=std is None)
               for label, std in settings.items()}
    # ## The width effect: 1/sqrt(n) at growing widths
    by_width = {width: curves(width, 1 / math.sqrt(width), FACTORS, seeds, rng) for width in widths}

    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = np.arange(FACTORS + 1)
    for label, curve in lecture.items():
        line, = left.plot(steps, 10 ** curve["median"], label=label)
        left.fill_between(steps, 10 ** curve["p10"], 10 ** curve["p90"], color=line.get_color(), alpha=0.2)
    left.set_yscale("log")
    low, high = left.get_ylim()
    left.set_yticks([10.0**power for power in range(-100, 101, 20) if low <= 10.0**power <= high])
    left.set_xlabel("number of factors k")
    left.set_ylabel("||W1 W2 ... Wk||_F / sqrt(n)")
    left.set_title(f"{WIDTH}x{WIDTH} Gaussian factors: median, 10-90% over {seeds} seeds")
    left.legend(fontsize=8)
    left.grid(alpha=0.3, which="major")
    for width, curve in by_width.items():
        line, = right.plot(steps, 10 ** curve["median"], label=f"n = {width}")
        right.fill_between(steps, 10 ** curve["p10"], 10 ** curve["p90"], color=line.get_color(), alpha=0.2)
    right.plot(steps, np.exp(-steps / (2 * WIDTH)), "k:", linewidth=1, label=f"exp(-k/2n), n = {WIDTH}")
    right.set_yscale("log")
    right.set_xlabel("number of factors k")
    right.set_title("std 1/sqrt(n): the drift fades with the width n")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="major")
    figure.tight_layout()
    run_dir.save_figure(figure, "exploding_products.png")

    # ## What the run shows
    orders = {label: float(curve["median"][-1]) for label, curve in lecture.items()}
    width_orders = {width: float(curve["median"][-1]) for width, curve in by_width.items()}
    large, small = orders["std 1 (the lecture's)"], orders["std 0.1 (small)"]
    scaled, orthogonal = orders[scaled_label], orders["orthogonal (norm-preserving)"]
    widest = max(widths)
    findings = {
        "factors": FACTORS, "width": WIDTH, "seeds": seeds,
        "log10_median_norm_after_100": orders,
        "log10_median_norm_after_100_scaled_by_width": width_orders,
        "exploded": large >= EXTREME_ORDERS,
        "vanished": small <= -EXTREME_ORDERS,
        "scaled_drift_much_smaller": abs(scaled) < min(abs(large), abs(small)) / 3,
        "wide_scaled_bounded": abs(width_orders[widest]) <= BOUNDED_ORDERS,
        "orthogonal_bounded": abs(orthogonal) <= 1e-6,
    }
    supported = all(findings[key] for key in ("exploded", "vanished", "scaled_drift_much_smaller",
                                              "wide_scaled_bounded", "orthogonal_bounded"))
    rows = [(label, f"1e{value:+.1f}") for label, value in orders.items()]
    rows += [(f"std 1/sqrt(n), n = {width}", f"1e{value:+.1f}") for width, value in width_orders.items()]
    table = markdown_table(("factors", "median Frobenius norm / sqrt(n) after 100 factors"), rows)
    if supported:
        summary = (f"Over 100 factors the median norm grew to 1e{large:+.0f} at std 1 and fell to 1e{small:+.0f} "
                   f"at std 0.1; at std 1/sqrt(n) it drifted only to 1e{scaled:+.1f} for 4x4 (the finite-width "
                   f"exp(-k/2n) effect) and stayed at 1e{width_orders[widest]:+.2f} for {widest}x{widest}; "
                   "orthogonal factors keep it exactly.")
    else:
        failed = [key for key in ("exploded", "vanished", "scaled_drift_much_smaller", "wide_scaled_bounded",
                                  "orthogonal_bounded") if not findings[key]]
        summary = f"This run did not show the claim: {', '.join(failed)} did not hold (see the table)."
    return StudyResult(table=table, findings=findings, supported=supported, summary=summary)
