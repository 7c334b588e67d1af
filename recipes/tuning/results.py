"""What a finished search leaves in its run directory: trials.csv, summary.md, search.png,
best_hyperparameters.json and best.keras."""

import math

from headstart.recipes.tuning.hypermodel import EPOCHS_METRIC, SECONDS_METRIC
from headstart.recipes.tuning.tuners import failure_reason

TOP_TRIALS = 10   # rows of summary.md


def trial_rows(oracle, starts=()):
    """One dict per trial the oracle knows, in trial-id order.

    Columns: trial_id, every hyperparameter (Hyperband's `tuner/...` bookkeeping too), the
    objective, epochs run, seconds, status, failure reason, and the tuner that ran it.
    `starts` are the records of `headstart.recipes.tuning.tuners.TRIAL_STARTS`.
    """
    objective = oracle.objective.name
    last_tuner = {record["trial_id"]: record["tuner_id"] for record in starts}
    names = list(dict.fromkeys(name for trial in oracle.trials.values() for name in trial.hyperparameters.values))
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        completed = trial.status == "COMPLETED"

        def metric(name):
            return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None

        row = {"trial_id": trial_id}
        row.update({name: trial.hyperparameters.values.get(name) for name in names})
        row.update({objective: trial.score if completed else None, "epochs": None if metric(EPOCHS_METRIC) is None else int(metric(EPOCHS_METRIC)),
                    "seconds": metric(SECONDS_METRIC), "status": trial.status,
                    "reason": "" if completed else failure_reason(trial),
                    "tuner_id": last_tuner.get(trial_id, "")})
        rows.append(row)
    return rows


def ranked(rows, objective):
    """Completed trials, best first (losses lowest, other metrics highest)."""
    sign = 1.0 if objective.endswith("loss") else -1.0
    scored = [row for row in rows if row["status"] == "COMPLETED" and row[objective] is not None
              and math.isfinite(row[objective])]
    return sorted(scored, key=lambda row: sign * row[objective])


def summary_table(rows, objective, top=TOP_TRIALS):
    """Markdown: the top trials with their values, objective, epochs and time."""
    best = ranked(rows, objective)[:top]
    if not best:
        return "No trial completed.\n"
    names = [name for name in best[0] if name not in ("trial_id", objective, "epochs", "seconds", "status",
                                                        "reason", "tuner_id") and not name.startswith("tuner/")]
    lines = ["| rank | trial | " + " | ".join([objective, *names, "epochs", "seconds"]) + " |",
             "|---" * (len(names) + 5) + "|"]
    for rank, row in enumerate(best, 1):
        cells = [f"{row[objective]:.4f}", *(format_value(row[name]) for name in names),
                 format_value(row["epochs"]), format_value(row["seconds"])]
        lines.append(f"| {rank} | {row['trial_id']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_value(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def plot_search(rows, objective):
    """The objective against the learning rate and the weight decay, coloured by dropout."""
    from headstart.recipes.plots import plt

    scored = ranked(rows, objective)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    dropout = [row.get("dropout") or 0.0 for row in scored]
    for axis, name, label in zip(axes, ("lr", "weight_decay"), ("learning rate (head phase)", "weight decay")):
        points = axis.scatter([row.get(name) for row in scored], [row[objective] for row in scored], c=dropout,
                              cmap="viridis", vmin=0.0, vmax=max(dropout + [0.6]), edgecolors="black",
                              linewidths=0.4)
        if all(isinstance(row.get(name), float) and row[name] > 0 for row in scored) and scored:
            axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(objective)
    figure.colorbar(points, ax=axes, label="dropout")
    figure.suptitle(f"{len(scored)} completed trials")
    return figure


def best_hyperparameters(rows, objective, fixed_options, finetune_values):
    """The best trial in the shape `headstart finetune --from-tuning` reads (see `headstart.recipes.tune`)."""
    best = ranked(rows, objective)[0]
    values = {name: value for name, value in best.items()
              if name not in ("trial_id", objective, "epochs", "seconds", "status", "reason", "tuner_id")
              and value is not None}
    tuned = finetune_values({name: value for name, value in values.items() if not name.startswith("tuner/")})
    return {"objective": {"name": objective, "value": best[objective]}, "trial_id": best["trial_id"],
            "hyperparameters": values, "finetune_options": {**fixed_options, **tuned}}
