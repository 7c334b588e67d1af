"""GradientLogger: are gradients vanishing or exploding, layer by layer?"""

import csv
import math
import os
import warnings

import keras
import tensorflow as tf

from headstart.callbacks.gradient_log import COLUMNS, last_logged_step, summarize_layers, update_ratio

# From scripts/bench_gradient_logger.py (BENCHMARKS.md): one logged step costs 0.5-5 ms (idle to
# heavily loaded), 0.6-5% of a resnet8 step on 2 CPU cores; one in 50 stays under 1% even with
# steps ten times faster.
DEFAULT_EVERY_N_STEPS = 50


class GradientLogger(keras.callbacks.Callback):
    """Log per-layer gradient norms, weight norms and update-to-weight ratios during `fit`.

    The gradients measured are the ones the optimizer applies, with no extra forward or
    backward pass: for the duration of `fit`, the callback wraps the `apply` method of the
    model's optimizer (the inner optimizer of a `LossScaleOptimizer`), so the norms are taken
    inside the compiled train step, on the gradients `train_step` computed. It works with any
    Functional or Sequential model and any Keras optimizer, with `jit_compile` and with
    `steps_per_execution > 1`; the optimizer is restored when `fit` ends.

    Every `every_n_steps` steps (counted from the start of each `fit`, so the first step is
    always logged) it records, for each trainable variable: the L2 norm of its gradient
    (before any clipping by the optimizer, after undoing `loss_scale_factor`), the norm of its
    weights before the step, and the norm of the update actually applied
    (weights after - weights before, so momentum, Adam's scaling, clipping and weight decay
    are all included). Layer values combine a layer's variables (see
    `headstart.callbacks.gradient_log.summarize_layers`).

    A layer whose gradient norm is above `exploding_threshold` or not finite is flagged as
    exploding at once; one whose gradient norm stays below `vanishing_threshold` on two
    logged steps in a row is flagged as vanishing (a single zero is normal: a residual branch
    whose last batch-norm scale starts at zero passes no gradient on the first step). Each
    layer and problem is warned about once per `fit` and listed in `flags`. Records are read
    back from the device in batches, at the latest at each epoch end, so warnings can come
    up to one epoch late.

    Outputs:
        - `log_dir/filename`: CSV, one row per variable per logged step (columns in
          `headstart.callbacks.gradient_log.COLUMNS`), appended to and flushed as records arrive. When
          the file already holds rows (a second `fit` phase, a resumed run), steps continue
          after its last step.
        - `tensorboard_dir`: scalars `grad_norm/<layer>`, `weight_norm/<layer>` and
          `update_ratio/<layer>`.
        - `latest`: `{layer: {"step", "epoch", "grad_norm", "weight_norm", "update_norm",
          "update_ratio"}}` for the last logged step.
        - `flags`: list of `{"layer", "problem" ("vanishing" or "exploding"), "step",
          "grad_norm"}`, one per layer and problem.

    On logged steps the weights are copied before the optimizer updates them, so the
    callback keeps one float32 copy of the trainable weights while `fit` runs. With gradient
    accumulation the norms are those of each micro-batch gradient. A `tf.distribute`
    strategy with one replica works; with more than one, `fit` raises `ValueError`.

    Args:
        log_dir: Directory for the CSV log (created if missing), or `None` to keep only
            `latest` and `flags`. Defaults to `None`.
        every_n_steps: Log one training step in this many. Defaults to `50` (under 1% of the
            step time of a small ResNet, see BENCHMARKS.md).
        vanishing_threshold: A layer gradient norm below this on two logged steps in a row
            is flagged as vanishing. Defaults to `1e-7`.
        exploding_threshold: A layer gradient norm above this, or not finite, is flagged as
            exploding. Defaults to `1e3`.
        tensorboard_dir: Directory for TensorBoard scalars, or `None`. Defaults to `None`.
        filename: Name of the CSV file in `log_dir`. Defaults to `"gradients.csv"`.

    Example:

    >>> logger = GradientLogger(log_dir="runs/cifar", every_n_steps=20)
    >>> model.fit(x, y, epochs=3, callbacks=[logger])
    >>> logger.flags
    [{'layer': 'dense', 'problem': 'vanishing', 'step': 20, 'grad_norm': 3.1e-09}]
    """

    def __init__(self, log_dir=None, every_n_steps=DEFAULT_EVERY_N_STEPS, vanishing_threshold=1e-7,
                 exploding_threshold=1e3, tensorboard_dir=None, filename="gradients.csv"):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be an integer >= 1. Received: every_n_steps={every_n_steps!r}")
        for name, value in (("vanishing_threshold", vanishing_threshold), ("exploding_threshold", exploding_threshold)):
            if not _is_positive_number(value):
                raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
        if vanishing_threshold >= exploding_threshold:
            raise ValueError("`vanishing_threshold` must be below `exploding_threshold`. Received: "
                             f"vanishing_threshold={vanishing_threshold!r}, exploding_threshold={exploding_threshold!r}")
        if not filename or os.path.basename(filename) != filename:
            raise ValueError(f"`filename` must be a plain file name. Received: filename={filename!r}")
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.vanishing_threshold = vanishing_threshold
        self.exploding_threshold = exploding_threshold
        self.tensorboard_dir = tensorboard_dir
        self.filename = filename
        self.latest = {}
        self.flags = []
        self._log_file = self._csv_writer = self._tensorboard_writer = None

    @property
    def log_path(self):
        """The CSV log's path, or `None` without `log_dir`."""
        return None if self.log_dir is None else os.path.join(self.log_dir, self.filename)

    def on_train_begin(self, logs=None):
        replicas = self.model.distribute_strategy.num_replicas_in_sync
        if replicas > 1:
            # Each replica would record its own share of the gradient into the same buffers.
            raise ValueError("GradientLogger measures the gradients of a single replica; train on one device to "
                             f"log gradients. Received: num_replicas_in_sync={replicas}")
        # Allow instances to be re-used across `model.fit()` calls.
        self.latest = {}
        self.flags = []
        self._below_vanishing = set()  # layers whose last logged gradient norm was below the threshold
        self._epoch = 0
        self._last_batch = -1
        self._steps_since_read = 0
        self._records_read = 0

        variables = list(self.model.trainable_variables)
        owners = _variable_owners(self.model)
        self._variable_names = [owners[id(variable)] for variable in variables]
        self._variable_index = {id(variable): index for index, variable in enumerate(variables)}
        steps_per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        # Records wait on the device until read; size the ring buffer so that reading once
        # every few executions never lets it wrap around unread records.
        self._capacity = max(64, 2 * (steps_per_execution // self.every_n_steps + 2))
        self._steps_per_execution = steps_per_execution
        self._first_step = int(self.model.optimizer.iterations.numpy())
        self._open_outputs()

        # The weights before the step, copied on logged steps only, to measure the update.
        self._snapshots = [tf.Variable(tf.zeros(variable.shape), trainable=False) for variable in variables]
        self._norms = tf.Variable(tf.zeros((self._capacity, 3, len(variables))), trainable=False)
        self._record_steps = tf.Variable(tf.zeros((self._capacity,), tf.int64), trainable=False)
        self._record_count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._steps_this_fit = tf.Variable(0, dtype=tf.int64, trainable=False)

        self._optimizer = _applying_optimizer(self.model.optimizer)
        self._original_apply = _hook_apply(self._optimizer, self._apply_and_measure)
        # `fit` built (and may already have traced) the train function before this hook
        # existed: rebuild it so the next trace goes through the wrapped `apply`.
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1, `batch` is the last step of the execution.
        self._steps_since_read += batch - self._last_batch
        self._last_batch = batch
        # Read before the next execution could overwrite records not yet read.
        if (self._steps_since_read + self._steps_per_execution) // self.every_n_steps + 1 > self._capacity:
            self._read_records()

    def on_epoch_end(self, epoch, logs=None):
        self._read_records()

    def on_train_end(self, logs=None):
        self._read_records()
        _unhook_apply(self._optimizer, self._original_apply)
        # The traced train function still calls the measuring code: drop it, so that a later
        # `fit` without this callback traces a clean one.
        self.model.train_function = None
        self._close_outputs()
        # Drop the device buffers and the references to the optimizer, so that a finished
        # callback holds no training state (keras-tuner deep-copies callbacks per trial).
        self._snapshots = self._norms = self._record_steps = self._record_count = self._steps_this_fit = None
        self._optimizer = self._original_apply = None

    def _apply_and_measure(self, grads, trainable_variables=None):
        """Stands in for `optimizer.apply` while `fit` runs; traced into the train step."""
        if trainable_variables is None:
            # Only custom loops call apply() without variables; nothing to name the norms by.
            return self._original_apply(grads, trainable_variables)
        grads, trainable_variables = list(grads), list(trainable_variables)
        known = [(self._variable_index[id(variable)], grad, variable)
                 for grad, variable in zip(grads, trainable_variables) if id(variable) in self._variable_index]
        if not known:
            return self._original_apply(grads, trainable_variables)
        log_now = tf.equal(self._steps_this_fit % self.every_n_steps, 0)
        # The optimizer's apply() stays outside tf.cond: under a tf.distribute strategy it
        # synchronises replicas (merge_call), which is not allowed inside control flow.
        self._on_logged_steps(log_now, lambda: self._take_snapshot(known))
        self._original_apply(grads, trainable_variables)
        self._on_logged_steps(log_now, lambda: self._record(known))
        self._steps_this_fit.assign_add(1)

    def _on_logged_steps(self, log_now, function):
        if self.every_n_steps == 1:
            function()
        else:
            # Only the taken branch runs: steps that are not logged pay for one comparison.
            tf.cond(log_now, function, lambda: None)

    def _take_snapshot(self, known):
        for index, _, variable in known:
            self._snapshots[index].assign(_as_float32(variable.value))

    def _record(self, known):
        scale = self._optimizer.loss_scale_factor
        grad_norms, weight_norms, update_norms = [], [], []
        for index, grad, variable in known:
            before = self._snapshots[index].value()
            grad_norms.append(tf.constant(0.0) if grad is None else _norm(grad))
            weight_norms.append(tf.norm(before))
            update_norms.append(tf.norm(_as_float32(variable.value) - before))
        if scale is not None:
            grad_norms = [norm / scale for norm in grad_norms]
        columns = [[index] for index, _, _ in known]
        # Variables this apply() did not receive (none, in a standard train_step) get 0.
        rows = [tf.scatter_nd(columns, tf.stack(norms), [len(self._variable_names)])
                for norms in (grad_norms, weight_norms, update_norms)]
        slot = self._record_count % self._capacity
        self._norms.scatter_nd_update([[slot]], [tf.stack(rows)])
        self._record_steps.scatter_nd_update([[slot]], [self._first_step + self._steps_this_fit])
        self._record_count.assign_add(1)

    def _read_records(self):
        self._steps_since_read = 0
        count = int(self._record_count.numpy())
        if count == self._records_read:
            return
        norms, steps = self._norms.numpy(), self._record_steps.numpy()
        rows = []
        for record in range(max(self._records_read, count - self._capacity), count):
            slot = record % self._capacity
            for column, (layer, variable) in enumerate(self._variable_names):
                grad_norm, weight_norm, update_norm = (float(value) for value in norms[slot, :, column])
                rows.append({"step": int(steps[slot]), "epoch": self._epoch, "layer": layer, "variable": variable,
                             "grad_norm": grad_norm, "weight_norm": weight_norm, "update_norm": update_norm,
                             "update_ratio": update_ratio(update_norm, weight_norm)})
        self._records_read = count
        if self._csv_writer is not None:
            self._csv_writer.writerows(rows)
            self._log_file.flush()
        summaries = summarize_layers(rows)
        for summary in summaries:
            self.latest[summary["layer"]] = {key: value for key, value in summary.items() if key != "layer"}
            self._flag(summary)
        if self._tensorboard_writer is not None:
            with self._tensorboard_writer.as_default():
                for summary in summaries:
                    for name in ("grad_norm", "weight_norm", "update_ratio"):
                        tf.summary.scalar(f"{name}/{summary['layer']}", summary[name], step=summary["step"])
            self._tensorboard_writer.flush()

    def _flag(self, summary):
        layer, grad_norm = summary["layer"], summary["grad_norm"]
        if not math.isfinite(grad_norm) or grad_norm > self.exploding_threshold:
            problem, comparison = "exploding", f"above exploding_threshold={self.exploding_threshold:g}"
        elif grad_norm < self.vanishing_threshold and layer in self._below_vanishing:
            problem, comparison = "vanishing", f"below vanishing_threshold={self.vanishing_threshold:g} for two logged steps"
        else:
            if grad_norm < self.vanishing_threshold:
                self._below_vanishing.add(layer)
            else:
                self._below_vanishing.discard(layer)
            return
        if any(flag["layer"] == layer and flag["problem"] == problem for flag in self.flags):
            return
        self.flags.append({"layer": layer, "problem": problem, "step": summary["step"], "grad_norm": grad_norm})
        warnings.warn(f"GradientLogger: {problem} gradients in layer '{layer}' at step {summary['step']}: "
                      f"gradient norm {grad_norm:.3g} is {comparison} (reported once per layer and problem).",
                      stacklevel=2)

    def _open_outputs(self):
        # Keras skips on_train_end when fit raises: close what such a fit left open.
        self._close_outputs()
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)
            last_step = last_logged_step(self.log_path) if os.path.isfile(self.log_path) else None
            if last_step is not None:
                # A new optimizer restarts its iteration count at 0; keep the log's steps increasing.
                self._first_step = max(self._first_step, last_step + 1)
            cut_short = not _ends_with_newline(self.log_path)
            self._log_file = open(self.log_path, "a", newline="", encoding="utf-8")
            self._csv_writer = csv.DictWriter(self._log_file, fieldnames=COLUMNS, lineterminator="\n")
            if self._log_file.tell() == 0:
                self._csv_writer.writeheader()
            elif cut_short:
                self._log_file.write("\n")  # end the interrupted line, so the next row starts clean
        if self.tensorboard_dir is not None:
            self._tensorboard_writer = tf.summary.create_file_writer(os.fspath(self.tensorboard_dir))

    def _close_outputs(self):
        if self._log_file is not None:
            self._log_file.close()
        if self._tensorboard_writer is not None:
            self._tensorboard_writer.close()
        self._log_file = self._csv_writer = self._tensorboard_writer = None


def _is_positive_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _ends_with_newline(path):
    """True for a missing or empty file too: there is no line to finish."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return True
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _as_float32(tensor):
    return tf.cast(tensor, tf.float32)


def _norm(grad):
    if isinstance(grad, tf.IndexedSlices):
        # Repeated indices must be summed before squaring; densifying does that.
        grad = tf.convert_to_tensor(grad)
    return tf.norm(_as_float32(grad))


def _applying_optimizer(optimizer):
    """The optimizer whose `apply` sees the unscaled gradients that update the weights."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Its own apply() gets scaled gradients and skips the step when they overflow; the
        # inner optimizer is called only with finite, unscaled ones.
        return optimizer.inner_optimizer
    return optimizer


def _hook_apply(optimizer, replacement):
    """Make `optimizer.apply` call `replacement`; return the bound original."""
    stale = vars(optimizer).get("apply")
    if getattr(stale, "_gradient_logger_original", None) is not None:
        # A fit that raised never reached on_train_end: drop the stale hook first.
        _unhook_apply(optimizer, stale._gradient_logger_original)
    original = optimizer.apply

    def apply(grads, trainable_variables=None):
        return replacement(grads, trainable_variables)

    apply._gradient_logger_original = original
    optimizer.apply = apply
    return original


def _unhook_apply(optimizer, original):
    if "apply" in vars(optimizer):
        del optimizer.apply
    if optimizer.apply != original:
        # The original was itself an instance attribute (someone else's wrapper): put it back.
        optimizer.apply = original


def _variable_owners(model):
    """`{id(variable): (layer path, variable name)}` for the model's trainable variables.

    Variable paths do not name enclosing Functional sub-models ("conv1/kernel" inside a
    "backbone" sub-model), so the owners are found by walking the layer tree; the deepest
    layer holding a variable owns it.
    """
    owners = {}

    def visit(layer, path):
        for variable in layer.trainable_weights:
            owners[id(variable)] = (path or layer.name, variable.name)
        # Keras has no public "direct children" accessor; _flatten_layers is what Layer uses.
        for child in layer._flatten_layers(include_self=False, recursive=False):
            visit(child, f"{path}/{child.name}" if path else child.name)

    visit(model, "")
    return owners
