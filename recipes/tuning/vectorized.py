"""Head-only trials trained together: keras-tuner picks the values, a `HeadPopulation` trains them.

A head-only search (`--finetune-epochs 0`, or the head stage of `--phases`) trains only
heads on the frozen backbone's cached features, so its trials differ only in numbers the
population keeps per head. The oracle is asked for up to `--population` trials at once
(`oracle.create_trial`, each under its own tuner id: keras-tuner keeps one running trial
per tuner id), they train together, and each is then reported (`update_trial`, its best
epoch's metrics at that step) and ended (`end_trial`) through the oracle, and its whole
classifier saved as the trial's checkpoint. So trials.csv, the summary, `--resume` and
`finetune --from-tuning` see ordinary keras-tuner trials.

A population killed part-way leaves its trials running in the oracle's saved state;
keras-tuner's reload queues them for a retry, and the resumed search trains them again
from the start (finished trials are never rerun). Hyperband is refused: its rounds continue
single trials from saved checkpoints, which a population does not fit.
"""

import time

from headstart.recipes import options
from headstart.recipes.errors import UsageError
from headstart.recipes.tuning import distributed
from headstart.recipes.tuning import space as search_space

POPULATION = 32
VECTORIZED_TUNERS = ("random", "bayesian", "grid")


def refusal(args):
    """Why this search's heads cannot train as a population (a one-line reason), or None when they can."""
    if distributed.role() != distributed.STANDALONE:
        return "a distributed search runs one trial per process"
    if args.finetune_epochs:
        return "it trains only heads: pass --finetune-epochs 0 (or use --phases head,finetune)"
    if args.tuner not in VECTORIZED_TUNERS:
        return (f"--tuner {args.tuner} continues single trials round by round; use --tuner "
                f"{', '.join(VECTORIZED_TUNERS)}")
    if not args.feature_cache:
        return "it trains heads on cached features: drop --no-feature-cache"
    if args.augment:
        return (f"--augment {args.augment} changes the backbone's input every epoch, so its features cannot be "
                "cached: pass --augment none")
    if any(search_space.values_of(args.space, "mixup")) or args.cutmix:   # mixup is searched: its values
        return "--mixup / --cutmix change the inputs every epoch, so their features cannot be cached"
    if search_space.values_of(args.space, "head_units") != [search_space.NO_HIDDEN_LAYER]:
        return f"the heads have no hidden layer: pass --head-units {search_space.NO_HIDDEN_LAYER}"
    # What the population's step does not do (it is AdamW with decoupled decay on a plain loss).
    for name, value, plain in (("--weight-decay-kind", args.weight_decay_kind, "decoupled"),
                               ("--regularizer", args.regularizer, "none"), ("--ema", args.ema, None),
                               ("--grad-accum", args.grad_accum, 1), ("--class-weight", args.class_weight, "none"),
                               ("--precision", args.precision, "float32")):
        if value != plain:
            return f"{name} {value} is not supported by a population of heads; leave it at its default"
    return None


def check(args):
    """`--population`: a size of 1 or more; an explicit one on a search whose heads cannot train
    together is refused. Sets `args.population` to the size in use, 1 when trials run one at a time."""
    explicit = args.population is not None
    size = POPULATION if args.population is None else args.population
    options.check_positive_int(size, "--population")
    reason = refusal(args)
    if reason and explicit and size > 1:
        raise UsageError(f"--population {size}: {reason}")
    args.population = 1 if reason else size


def run_search(tuner, hypermodel, args):
    """The search: as populations when `args.population` is above 1, else keras-tuner's own loop."""
    if args.population > 1:
        search(tuner, hypermodel, args)
    else:
        tuner.search(verbose=int(args.verbose))


def search(tuner, hypermodel, args):
    """Run the search with up to `args.population` trials a population, until the oracle stops."""
    oracle = tuner.oracle
    oracle.verbose = int(args.verbose)
    from keras_tuner.src.tuners.gridsearch import GridSearchOracle

    grid = isinstance(oracle, GridSearchOracle)
    slots = [f"{tuner.tuner_id}-head{slot}" for slot in range(args.population)]
    finished = False
    while not finished:
        trials = []
        for slot in slots:
            trial = oracle.create_trial(slot)
            if trial.status == "STOPPED":
                finished = True
                break
            if trial.status != "RUNNING":   # IDLE: the oracle waits on the running trials' results
                break
            trials.append(trial)
            if grid:
                # GridSearch steps from finished trials to the next point; queued at once, as
                # keras-tuner does with its first trial for several workers, a running trial gives
                # the next point now (the oracle skips a point already tried).
                oracle._populate_next.append(trial.trial_id)
        if not trials:
            break
        for batch_size in dict.fromkeys(hypermodel.trial_args(trial.hyperparameters.values).batch_size
                                        for trial in trials):
            # The features are batched: one population per batch size.
            train_population(tuner, hypermodel, args, [trial for trial in trials if hypermodel.trial_args(
                trial.hyperparameters.values).batch_size == batch_size])


def train_population(tuner, hypermodel, args, trials):
    """Train `trials`' heads together, then report and end each trial through the oracle."""
    import keras_tuner

    from headstart.recipes import engine
    from headstart.recipes.tuning.hypermodel import EPOCHS_METRIC, SECONDS_METRIC
    from headstart.recipes.tuning.population import HeadPopulation, PerHeadStopping

    for trial in trials:
        tuner.on_trial_begin(trial)
    values = [hypermodel.trial_args(trial.hyperparameters.values) for trial in trials]
    # One classifier for every population of a batch size: its backbone computes the features
    # (once per search), and a trial's checkpoint is it with that trial's head (dropout has no weights).
    models = hypermodel.population_models
    if values[0].batch_size not in models:
        models[values[0].batch_size] = hypermodel.build(
            keras_tuner.HyperParameters.from_config(trials[0].hyperparameters.get_config()))
    model = models[values[0].batch_size]
    splits = hypermodel.splits(values[0])
    features = hypermodel.features(model, splits, values[0].batch_size)
    head = model.get_layer("head")
    started = time.perf_counter()
    population = HeadPopulation(
        head.input_shape[1:], splits.num_classes, learning_rate=[trial.lr for trial in values],
        weight_decay=[trial.weight_decay for trial in values], dropout=[trial.dropout for trial in values],
        label_smoothing=[trial.label_smoothing for trial in values], pooling=pooling_of(head),
        schedule=args.schedule, warmup=args.warmup, total_steps=args.epochs * engine.train_batches(splits),
        seed=args.seed + int(trials[0].trial_id))
    stopping = PerHeadStopping(population, args.objective, args.patience)
    for epoch in range(args.epochs):
        batches = features.train_epochs(epoch, epoch + 1) if features.train_epochs is not None else features.train
        trained = population.train_epoch(batches)
        validated = population.evaluate(features.val)
        logs = {"loss": trained["loss"], "accuracy": trained["accuracy"],
                "val_loss": validated["loss"], "val_accuracy": validated["accuracy"]}
        if not stopping.end_epoch(epoch, logs):
            break
    seconds = time.perf_counter() - started
    options.say(args, f"population of {len(trials)} heads trained together: {epoch + 1} epochs in {seconds:.1f} s")
    for index, trial in enumerate(trials):
        if stopping.failure[index] is not None:
            trial.status, trial.message = "FAILED", stopping.failure[index]
        else:
            history = stopping.history[index]
            best = history[stopping.best_epoch[index]]
            metrics = {key: value for key, value in best.items() if key not in ("epoch", "phase")}
            # Each trial's share of the population's time: the seconds column still sums to the search's.
            metrics.update({EPOCHS_METRIC: len(history), SECONDS_METRIC: round(seconds / len(trials), 3)})
            tuner.oracle.update_trial(trial.trial_id, metrics, step=int(stopping.best_epoch[index]))
            if beats_the_best(tuner.oracle, metrics[args.objective]):
                # keras-tuner loads a checkpoint only to give the best models (best.keras, the best
                # head of --phases): saving every trial's classifier cost more than training them.
                # Saved before the trial ends, so a kill cannot leave the best trial without one.
                head.set_weights([stopping.best_kernel[index], stopping.best_bias[index]])
                model.save_weights(tuner._get_checkpoint_fname(trial.trial_id))
            trial.status = "COMPLETED"
        tuner.on_trial_end(trial)


def pooling_of(head):
    """The pooling of a `build_head` head, from its layer names (`head_avg_pool`, ...)."""
    names = [layer.name for layer in head.layers]
    return next((pooling for pooling in ("avg", "max") if f"{head.name}_{pooling}_pool" in names), "flatten")


def beats_the_best(oracle, score):
    """Whether a trial scoring `score` becomes the oracle's best (ties keep the earlier trial, as
    `oracle.get_best_trials` sorts them stably)."""
    best = oracle.get_best_trials(1)
    if not best or best[0].score is None:
        return True
    return score > best[0].score if oracle.objective.direction == "max" else score < best[0].score
