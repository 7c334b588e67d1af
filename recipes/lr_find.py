"""Find a learning rate: a short run at an exponentially increasing rate, the loss against the rate.

    headstart lr-find                          # the head phase of the default finetune demo, ~20 s
    headstart lr-find --phase finetune --weights runs/pretrain/NAME/best.keras --unfreeze stage3
    headstart lr-find --start 1e-6 --end 1 --scan-steps 50

fastai's `lr_find` (Smith 2017, "Cyclical learning rates"): one batch per step, the rate
multiplied by the same factor each step from --start to --end, the loss smoothed by an
exponential moving average, and the scan stopped once the smoothed loss is above 4x its best.
The suggested rate is the lower of two of fastai's rules: the steepest descent of the
smoothed loss and a tenth of the rate at its minimum.

It takes every `headstart finetune` option, so it scans the model and data of the finetune
command it precedes. `--phase head` scans phase 1 (the head on the frozen backbone, for
--lr); `--phase finetune` first trains the head as phase 1 does (--steps or --epochs at --lr), then
scans phase 2 (--unfreeze, --batch-norm, --layer-decay / --lr-groups: the rate found is the
base rate, for --finetune-lr). Batches are drawn from the training split, repeated as needed.

Writes runs/lr-find/<name>/: lr_find.csv (step, learning_rate, loss, smoothed_loss),
lr_find.png, suggestion.json, config.json.
"""

import math

from headstart.recipes import finetune, layer_rate_options, options
from headstart.recipes.errors import UsageError

# ## Defaults: fastai's.
PHASE = "head"
START = 1e-7        # lowest rate scanned
END = 10.0          # highest rate scanned (the scan usually stops well before: the loss explodes)
STEPS = 100         # batches, one rate each
# Weight of the running average of the loss (debiased, as fastai's). fastai's 0.98 averages
# over ~50 steps, which over 100 steps spanning 8 decades lags the loss by ~4 decades of
# rate (the minimum and the blow-up show up far too late); 0.9 lags by less than one.
SMOOTHING = 0.9
DIVERGENCE = 4.0    # stop when the smoothed loss is above this many times its best
MEANINGFUL_DROP = 0.1   # the steepest descent counts only if the smoothed loss fell by this share
PHASE_FLAGS = {"head": "--lr", "finetune": "--finetune-lr"}


def add_arguments(parser):
    finetune.add_arguments(parser)
    layer_rate_options.add_arguments(parser)
    group = parser.add_argument_group("learning-rate finder")
    group.add_argument("--phase", choices=tuple(PHASE_FLAGS), default=PHASE,
                       help="scan phase 1 (the head, backbone frozen) or phase 2 (after training the head, with "
                            f"--unfreeze). Default: {PHASE}")
    group.add_argument("--start", type=float, default=START, help=f"lowest learning rate. Default: {START:g}")
    group.add_argument("--end", type=float, default=END, help=f"highest learning rate. Default: {END:g}")
    # Not --steps: that is finetune's head-phase budget, which --phase finetune trains first.
    group.add_argument("--scan-steps", type=int, default=STEPS, help=f"batches, one rate each. Default: {STEPS}")


def validate(args):
    """Every check, before any data is read or anything written; raises UsageError."""
    check_range(args.start, args.end, args.scan_steps)
    # Every shared option (layer rates included), and the run name under runs/lr-find/.
    finetune.validate(args, recipe="lr-find")


def check_range(start, end, steps):
    options.check_positive_float(start, "--start")
    options.check_positive_float(end, "--end")
    if start >= end:
        raise UsageError(f"--start {start:g} must be below --end {end:g}: the rate rises from --start to --end")
    if steps is None or steps < 5:
        raise UsageError(f"--scan-steps must be 5 or more, got {steps}")


def learning_rates(start, end, steps):
    """`steps` rates from `start` to `end`, each the previous times the same factor."""
    return [start * (end / start) ** (step / (steps - 1)) for step in range(steps)]


def scan(train_step, rates, smoothing=SMOOTHING, divergence=DIVERGENCE):
    """Call `train_step(rate) -> loss` at each rate until the smoothed loss diverges.

    Returns (rows, stop): one dict per step (step, learning_rate, loss, smoothed_loss), and
    why the scan stopped early (`"diverged"`, `"non_finite"`) or `None`.
    """
    rows, average, best = [], 0.0, math.inf
    for step, rate in enumerate(rates):
        loss = float(train_step(rate))
        if not math.isfinite(loss):
            return rows, "non_finite"
        average = smoothing * average + (1 - smoothing) * loss
        smoothed = average / (1 - smoothing ** (step + 1))
        rows.append({"step": step + 1, "learning_rate": rate, "loss": loss, "smoothed_loss": smoothed})
        if smoothed > divergence * best:
            return rows, "diverged"
        best = min(best, smoothed)
    return rows, None


def suggest(rows):
    """fastai's two rules on the smoothed loss; the suggestion is the lower (the safer) of the two.

    `minimum_tenth`: a tenth of the rate at the minimum. `steepest`: where the smoothed
    loss falls fastest per decade of rate, before its minimum. A slope means something only
    where the loss really falls: when the smoothed loss drops by less than `MEANINGFUL_DROP`
    of its first value before the minimum, the steepest point is noise on a flat curve and
    the suggestion is `minimum_tenth` alone (`steepest` is then `None`). Rates are clamped
    into the scanned range.
    """
    import numpy as np

    rates = np.array([row["learning_rate"] for row in rows])
    smoothed = np.array([row["smoothed_loss"] for row in rows])
    lowest = int(np.argmin(smoothed))

    def clamp(rate):
        return float(min(max(rate, rates[0]), rates[-1]))

    minimum_tenth = clamp(rates[lowest] / 10)
    steepest = None
    if lowest >= 2 and smoothed[:lowest].max() - smoothed[lowest] >= MEANINGFUL_DROP * abs(smoothed[0]):
        slopes = np.gradient(smoothed[:lowest + 1], np.log10(rates[:lowest + 1]))
        steepest = clamp(rates[int(np.argmin(slopes))])
    suggested = minimum_tenth if steepest is None else min(steepest, minimum_tenth)
    return {"suggested": suggested, "steepest": steepest, "minimum_tenth": minimum_tenth,
            "minimum": float(rates[lowest]), "minimum_loss": float(smoothed[lowest])}


def plot_lr_find(rows, suggestion, phase):
    from headstart.recipes.plots import plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    rates = [row["learning_rate"] for row in rows]
    axis.plot(rates, [row["loss"] for row in rows], color="lightgrey", linewidth=1, label="loss (per batch)")
    axis.plot(rates, [row["smoothed_loss"] for row in rows], label="smoothed loss")
    for key, style in (("steepest", ":"), ("minimum_tenth", "-.")):
        if suggestion[key] is not None:
            axis.axvline(suggestion[key], color="grey", linestyle=style, linewidth=1, label=f"{key} {suggestion[key]:.2g}")
    axis.axvline(suggestion["suggested"], color="red", linewidth=1.2, label=f"suggested {suggestion['suggested']:.2g}")
    axis.set_xscale("log")
    # The blow-up at the end would flatten the part that matters: cut the axis above it.
    losses = [row["loss"] for row in rows]
    axis.set_ylim(min(losses) * 0.9, min(max(losses), 2.5 * rows[0]["smoothed_loss"]) * 1.05)
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    axis.set_title(f"learning-rate finder, {phase} phase ({PHASE_FLAGS[phase]})")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def build_model(args):
    """The finetune recipe's model and data for these options; the head trained first for phase 2."""
    from headstart.recipes import engine

    model, splits, _ = finetune.model_and_data(args)
    if args.phase == "finetune" and (args.epochs or args.steps):
        training = engine.TrainingOptions(weight_decay=args.weight_decay, patience=args.patience,
                                          verbose=int(args.verbose), progress=options.progress(args),
                                          feature_cache=args.feature_cache, cache_dir=args.cache_dir,
                                          **options.training_tools(args, splits))
        options.say(args, "training the head first, as finetune's phase 1 does "
                          f"({finetune.budget_words(args.epochs, args.steps)} at --lr {args.lr:g})")
        engine.fine_tune(lambda: model, splits, head_epochs=args.epochs or 0, finetune_epochs=0, head_steps=args.steps,
                         learning_rate=args.lr, finetune_learning_rate=args.finetune_lr, options=training,
                         schedule=args.schedule, warmup=args.warmup)
    return model, splits


def set_phase_trainable(model, args):
    """What trains in the scanned phase, exactly as `engine.fine_tune` sets it."""
    from headstart.recipes import engine

    if args.phase == "head":
        engine.train_head_only(model)
    else:
        engine.train_head_and_backbone(model, args.unfreeze, args.batch_norm)


def with_progress_lines(train_step, steps, lines=10, clock=None):
    """`train_step`, printing a line every tenth of the scan: step k/n, the rate, the loss, the time left
    (an upper bound: the scan usually stops early, once the loss diverges). The time left is the
    mean step after the first (which traces the step) times the steps left."""
    import time

    from headstart.callbacks.progress import duration

    clock = clock or time.perf_counter
    every, started, first_done, done = max(1, steps // lines), clock(), None, 0

    def step(rate):
        nonlocal done, first_done
        loss = train_step(rate)
        done += 1
        now = clock()
        if first_done is None:
            first_done = now
        if done % every == 0 or done == steps:
            seconds = now - started
            mean = (now - first_done) / (done - 1) if done > 1 else seconds
            left = f"~{duration(mean * (steps - done))} left" if done < steps else "done"
            print(f"lr-find  step {done}/{steps}  lr {rate:.2g}  loss {float(loss):.3f}  {seconds:.1f} s  {left}",
                  flush=True)
        return loss

    return step


def find(args):
    """Run the scan on validated `args`; returns (run_dir, rows, stop, suggestion)."""
    from headstart.recipes import engine
    from headstart.recipes.rundir import RunDir, run_config

    model, splits = build_model(args)
    set_phase_trainable(model, args)
    rates = ({"decay": args.layer_decay, "groups": args.lr_groups}
             if args.phase == "finetune" and (args.layer_decay is not None or args.lr_groups) else None)
    engine.compile_model(model, learning_rate=args.start, weight_decay=args.weight_decay, layer_rates=rates)

    batches = iter(splits.train.repeat())

    def train_step(rate):
        model.optimizer.learning_rate = rate   # a variable: assigned, the step is not retraced
        images, labels = next(batches)
        return model.train_on_batch(images, labels, return_dict=True)["loss"]

    options.say(args, f"lr-find  scanning {args.scan_steps} learning rates from {args.start:g} to {args.end:g}, one batch each "
                      "(stops when the loss diverges)")
    if not getattr(args, "quiet", False):
        train_step = with_progress_lines(train_step, args.scan_steps)
    rows, stop = scan(train_step, learning_rates(args.start, args.end, args.scan_steps))
    if not rows:
        raise UsageError(f"the loss was not finite at --start {args.start:g}: lower --start")
    suggestion = {**suggest(rows), "phase": args.phase, "flag": PHASE_FLAGS[args.phase], "start": args.start,
                  "end": args.end, "steps": args.scan_steps, "steps_run": len(rows), "stop": stop}
    # Created only now: a scan that fails leaves no empty run directory blocking a retry.
    run_dir = RunDir.create("lr-find", args.name, args.runs_dir, args.overwrite)
    run_dir.write_json("config.json", run_config(args, recipe="lr-find", class_names=splits.class_names))
    run_dir.write_csv("lr_find.csv", rows)
    run_dir.write_json("suggestion.json", suggestion)
    run_dir.save_figure(plot_lr_find(rows, suggestion, args.phase), "lr_find.png")
    return run_dir, rows, stop, suggestion


def run(args):
    validate(args)
    run_dir, rows, stop, suggestion = find(args)
    stopped = {"diverged": f", stopped at {rows[-1]['learning_rate']:.2g}: the loss passed {DIVERGENCE:g}x its best",
               "non_finite": f", stopped after {rows[-1]['learning_rate']:.2g}: the loss was not finite"}.get(stop, "")
    print(f"scanned {len(rows)} rates from {args.start:g} to {rows[-1]['learning_rate']:.2g}{stopped}")
    steepest = (f"steepest descent {suggestion['steepest']:.2g}" if suggestion["steepest"] is not None
                else f"no steepest descent: the loss fell by less than {MEANINGFUL_DROP:.0%}")
    print(f"suggested {suggestion['flag']} {suggestion['suggested']:.2g} ({steepest}; minimum "
          f"{suggestion['minimum']:.2g} / 10 = {suggestion['minimum_tenth']:.2g})")
    print(f"run directory: {run_dir.path}")
    return 0
