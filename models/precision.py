"""Mixed precision: Keras' dtype policies for one run, with the head and the loss in float32.

    from headstart.models import precision
    with precision.policy("mixed_bfloat16"):
        model = backbones.build_classifier("resnet8", 5, 32)   # backbone computes in bfloat16

Under `"mixed_float16"` or `"mixed_bfloat16"` Keras keeps every variable in float32 and
computes in the half type (`keras.config.set_dtype_policy`); `model.compile` wraps the
optimizer in a `LossScaleOptimizer` for float16, whose small range would otherwise let
gradients underflow. The head is always built in float32 (`head_layers`, used by
`headstart.models.heads.build_head`), as Keras' mixed-precision guide advises for the last
layers: the logits, and so the loss, stay in float32 whatever the backbone computes in.

Mixed precision pays on accelerators with half-precision units (GPU tensor cores, TPUs);
on a CPU it is usually slower than float32 (measured: README, "Budgets in steps,
schedules and the usual fine-tuning tools").
"""

import contextlib

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def policy(name):
    """Build (and so train) every layer created inside under the dtype policy `name`; the
    previous global policy comes back afterwards, also on error."""
    if name not in POLICIES:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(POLICIES)}. Received: name={name!r}")
    with _global_policy(name):
        yield


@contextlib.contextmanager
def head_layers():
    """Layers built inside compute in their variables' dtype: float32 under a mixed policy,
    and under any other policy (float32, or a float64 `floatx`) as they would anyway."""
    current = _explicit_policy()
    if current is None or current.compute_dtype == current.variable_dtype:
        yield
        return
    with _global_policy(current.variable_dtype):
        yield


def _explicit_policy():
    """The policy set with `keras.config.set_dtype_policy`, or None while none is: Keras'
    `dtype_policy()` would fix one from `floatx` on first reading, so a later `set_floatx`
    would no longer apply."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("dtype_policy", None)


@contextlib.contextmanager
def _global_policy(name):
    import keras
    from keras.src.backend.common import global_state

    previous = _explicit_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        global_state.set_global_attribute("dtype_policy", previous)   # None again if it was unset


def unsupported_reason(name):
    """Why this machine's default device cannot train under `name` (a convolution, batch norm
    and a matrix product, forward and backward, in its compute dtype), or None if it can."""
    if name == "float32":
        return None
    import numpy as np
    import tensorflow as tf

    compute_dtype = name.removeprefix("mixed_")
    try:
        images = tf.constant(np.ones((2, 8, 8, 3)), dtype=compute_dtype)
        kernel = tf.Variable(np.ones((3, 3, 3, 4)), dtype=compute_dtype)
        with tf.GradientTape() as tape:
            features = tf.nn.conv2d(images, kernel, strides=1, padding="SAME")
            mean, variance = tf.nn.moments(features, axes=(0, 1, 2))
            features = tf.nn.batch_normalization(features, mean, variance, None, None, 1e-3)
            loss = tf.reduce_sum(tf.matmul(tf.reshape(features, (2, -1)), tf.ones((256, 1), dtype=compute_dtype)))
        gradient = tape.gradient(loss, kernel)
        if gradient is None or not np.isfinite(tf.cast(loss, tf.float32).numpy()):
            return f"{compute_dtype} training gives no finite gradient"
    except (tf.errors.OpError, TypeError, ValueError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no kernel'}"
    return None
