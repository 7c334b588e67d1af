"""A population of classification heads trained side by side on the same cached features.

Every head is `build_head`'s head without hidden layers (pooling, dropout, logits), so
the pooled features are the same for all of them and only the logits layer differs:
the population keeps the N kernels and biases stacked along a leading axis ([N, D, K],
[N, K]) and one compiled step updates them all on one batch. Each head has its own
learning rate, decoupled weight decay, dropout rate and label smoothing, as [N] vectors;
the schedule (constant, cosine, one-cycle) is the same shape for all, scaled by each
head's rate.

The update is Keras' AdamW written out for the stacked weights, operation for operation
(`keras.optimizers.AdamW`: decay `w - w * wd * lr` on the kernel only, the bias being in
`engine.NO_DECAY_NAMES`, then Adam's step with its bias correction), and the loss is the
engine's: softmax cross-entropy on logits against `(1 - s) * one_hot + s / K`, the mean
over the batch. So each head ends where the same head trained alone by `engine` would,
up to float rounding (tests/test_vectorized.py checks it against Keras).

Early stopping is per head, as the engine's `EarlyStopping` decides it (the best epoch of
the monitored metric, `patience` epochs without improvement stop it): a stopped head is
masked out of the update, and each head ends with its best epoch's weights.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from headstart.models import schedules

# Keras' AdamW defaults (engine.compile_model uses them).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7


class HeadPopulation:
    """N heads `pooling -> dropout -> logits` over features of `feature_shape`.

    Args:
        feature_shape: one backbone output without the batch axis ((H, W, C) or (D,)).
        num_classes: logits per head (2 or more).
        learning_rate, weight_decay, dropout, label_smoothing: one value per head.
        pooling: as `build_head`'s: "avg", "max" or "flatten".
        schedule, warmup, total_steps: the learning-rate shape over the phase's optimizer
            steps (`headstart.models.schedules.make`), applied to each head's rate.
        seed: of the heads' initial weights (Glorot-uniform kernels, zero biases, as Keras'
            Dense) and of the dropout masks.
    """

    def __init__(self, feature_shape, num_classes, *, learning_rate, weight_decay, dropout, label_smoothing,
                 pooling="avg", schedule="constant", warmup=None, total_steps=0, seed=0):
        vectors = [np.asarray(values, dtype="float32") for values in
                   (learning_rate, weight_decay, dropout, label_smoothing)]
        self.size = len(vectors[0])
        if self.size < 1 or any(len(vector) != self.size for vector in vectors):
            raise ValueError("learning_rate, weight_decay, dropout and label_smoothing need one value per head")
        self.num_classes = int(num_classes)
        self.pool = pooling_layer(tuple(feature_shape), pooling)
        units = int(np.prod(self.pool.compute_output_shape((None, *feature_shape))[1:]))
        # One Keras schedule per head, for the exact rate Keras would use at each step.
        self.rates = [schedules.make(schedule, float(rate), total_steps, warmup) for rate in vectors[0]]
        self.weight_decay, self.dropout, self.label_smoothing = (tf.constant(vector) for vector in vectors[1:])
        self.base_rates = vectors[0]
        # Head k starts as a Keras Dense kernel drawn with seed + k (any other start: `set_weights`).
        self.kernel = tf.Variable(np.stack([
            keras.ops.convert_to_numpy(keras.initializers.GlorotUniform(seed=seed + index)((units, self.num_classes)))
            for index in range(self.size)]), name="kernel")
        self.bias = tf.Variable(tf.zeros((self.size, self.num_classes)), name="bias")
        self.slots = [tf.Variable(tf.zeros_like(variable)) for variable in (self.kernel, self.bias) for _ in range(2)]
        self.iterations = tf.Variable(0, dtype="int64", name="iterations")
        self.active = tf.Variable(tf.ones((self.size,), dtype="bool"), name="active")
        self.generator = tf.random.Generator.from_seed(seed)
        # One compiled call per batch. (A whole pass in one graph, the dataset iterated inside the
        # tf.function, measured 4x slower per epoch on one batch of 25 features: its iterator costs more.)
        self._step = tf.function(self._train_step, reduce_retracing=True)
        self._evaluate = tf.function(self._evaluate_batch, reduce_retracing=True)

    def set_weights(self, kernel, bias):
        """Start every head from these stacked weights ([N, D, K], [N, K])."""
        self.kernel.assign(kernel)
        self.bias.assign(bias)

    def head_weights(self, index):
        """Head `index`'s [kernel, bias], in the order of a `build_head` head's weights."""
        return [self.kernel[index].numpy(), self.bias[index].numpy()]

    def learning_rates(self):
        """Each head's rate at the current step, as Keras' optimizer reads its `learning_rate`."""
        return tf.stack([tf.cast(rate(self.iterations) if callable(rate) else rate, "float32")
                         for rate in self.rates])

    def losses(self, logits, labels):
        """[N, B] cross-entropies of `logits` [N, B, K] against integer `labels` [B], with each head's smoothing."""
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, (-1,)), "int32"), self.num_classes)[None]
        smoothing = self.label_smoothing[:, None, None]
        targets = one_hot * (1.0 - smoothing) + smoothing / self.num_classes
        return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)

    def logits(self, pooled, training):
        if training:
            # Keras' Dropout: keep with probability 1 - rate, scale the kept by 1 / (1 - rate).
            rate = self.dropout[:, None, None]
            keep = self.generator.uniform(tf.stack([self.size, tf.shape(pooled)[0], tf.shape(pooled)[1]])) >= rate
            inputs = tf.where(keep, pooled[None] / (1.0 - rate), 0.0)
        else:
            inputs = tf.broadcast_to(pooled[None], (self.size, tf.shape(pooled)[0], pooled.shape[-1]))
        return tf.einsum("nbd,ndk->nbk", inputs, self.kernel) + self.bias[:, None, :]

    def _train_step(self, features, labels):
        pooled = self.pool(features)
        with tf.GradientTape() as tape:
            logits = self.logits(pooled, training=True)
            losses = tf.reduce_mean(self.losses(logits, labels), axis=1)   # [N]: each head's batch mean
            total = tf.reduce_sum(losses)   # heads share no weight: each gradient is its own loss's
        gradients = tape.gradient(total, [self.kernel, self.bias])
        learning_rate = self.learning_rates()
        step = tf.cast(self.iterations + 1, "float32")
        alpha = learning_rate * tf.sqrt(1 - tf.pow(BETA_2, step)) / (1 - tf.pow(BETA_1, step))
        active = self.active
        for variable, gradient, (momentum, velocity), decays in (
                (self.kernel, gradients[0], self.slots[0:2], True), (self.bias, gradients[1], self.slots[2:4], False)):
            shape = (-1,) + (1,) * (len(variable.shape) - 1)
            lr, wd, scale = (tf.reshape(vector, shape) for vector in (learning_rate, self.weight_decay, alpha))
            mask = tf.reshape(active, shape)
            weights = variable - variable * wd * lr if decays else variable
            new_momentum = momentum + (gradient - momentum) * (1 - BETA_1)
            new_velocity = velocity + (tf.square(gradient) - velocity) * (1 - BETA_2)
            updated = weights - (new_momentum * scale) / (tf.sqrt(new_velocity) + EPSILON)
            for target, value in ((variable, updated), (momentum, new_momentum), (velocity, new_velocity)):
                target.assign(tf.where(mask, value, target))
        self.iterations.assign_add(1)
        predicted = tf.argmax(logits, axis=-1, output_type="int32")
        correct = tf.reduce_sum(tf.cast(predicted == tf.cast(tf.reshape(labels, (1, -1)), "int32"), "float32"), 1)
        return losses, correct

    def _evaluate_batch(self, features, labels):
        logits = self.logits(self.pool(features), training=False)
        predicted = tf.argmax(logits, axis=-1, output_type="int32")
        correct = tf.cast(predicted == tf.cast(tf.reshape(labels, (1, -1)), "int32"), "float32")
        return tf.reduce_mean(self.losses(logits, labels), axis=1), tf.reduce_sum(correct, axis=1)

    def train_epoch(self, batches):
        """One pass over `batches` of (features, labels); returns {"loss": [N], "accuracy": [N]}
        averaged over the examples, as Keras logs them."""
        return self._averaged(self._step, batches)

    def evaluate(self, batches):
        """{"loss": [N], "accuracy": [N]} of every head on `batches`, without dropout."""
        return self._averaged(self._evaluate, batches)

    def _averaged(self, function, batches):
        # Keras' Mean metrics: each batch weighs its size.
        loss, correct, count = np.zeros(self.size), np.zeros(self.size), 0
        for features, labels in batches:
            size = int(features.shape[0])
            batch_loss, batch_correct = function(features, labels)
            loss += batch_loss.numpy().astype("float64") * size
            correct += batch_correct.numpy()
            count += size
        return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}


def pooling_layer(feature_shape, pooling):
    """The parameter-free part of `build_head`: a feature map to a vector (a vector passes as it is)."""
    if len(feature_shape) == 3:
        return {"avg": keras.layers.GlobalAveragePooling2D(), "max": keras.layers.GlobalMaxPooling2D(),
                "flatten": keras.layers.Flatten()}[pooling]
    if len(feature_shape) == 1:
        return keras.layers.Identity()
    return keras.layers.Flatten()


class PerHeadStopping:
    """The engine's early stopping, for each head: the best epoch of `monitor` and its weights,
    a stop after `patience` epochs without improvement, a failure on a non-finite value."""

    def __init__(self, population, monitor, patience):
        self.population, self.monitor, self.patience = population, monitor, patience
        self.sign = -1.0 if monitor.endswith("loss") else 1.0   # higher is better after the sign
        size = population.size
        self.best = np.full(size, -math.inf)
        self.best_epoch = np.full(size, -1)
        self.wait = np.zeros(size, dtype=int)
        self.history = [[] for _ in range(size)]
        self.failure = [None] * size
        self.best_kernel = population.kernel.numpy()
        self.best_bias = population.bias.numpy()

    def end_epoch(self, epoch, logs):
        """Record `logs` ({metric: [N]}) for the heads still training; stop those that must."""
        active = self.population.active.numpy()
        kernel, bias = None, None
        for index in np.flatnonzero(active):
            row = {"epoch": epoch + 1, "phase": "head", **{key: float(values[index]) for key, values in logs.items()}}
            if not all(math.isfinite(row[key]) for key in ("loss", self.monitor)):
                self.failure[index] = (f"training diverged in phase head at epoch {epoch + 1} (the loss or "
                                       f"{self.monitor} is not finite): try a lower learning rate than "
                                       f"{self.population.base_rates[index]:g}")
                active[index] = False
                continue
            self.history[index].append(row)
            value = self.sign * row[self.monitor]
            if value > self.best[index]:
                if kernel is None:
                    kernel, bias = self.population.kernel.numpy(), self.population.bias.numpy()
                self.best[index], self.best_epoch[index], self.wait[index] = value, epoch, 0
                self.best_kernel[index], self.best_bias[index] = kernel[index], bias[index]
            else:
                self.wait[index] += 1
                if self.wait[index] >= self.patience:
                    active[index] = False
        self.population.active.assign(active)
        return bool(active.any())
