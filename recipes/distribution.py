"""Multi-worker training: who this process is in the `TF_CONFIG` cluster, and the strategy.

Every worker runs the same program; `tf.distribute.MultiWorkerMirroredStrategy` reads
`TF_CONFIG` to join the others, and the chief alone writes the run's files (see
`headstart.recipes.rundir`). `cluster_role` is plain Python, so options can be checked before
TensorFlow loads; the rest imports TensorFlow when called.
"""

import functools
import json
import os
from typing import NamedTuple

from headstart.recipes.errors import UsageError


class ClusterRole(NamedTuple):
    task_type: str      # "chief", "worker", ... as TF_CONFIG names it; "chief" without a cluster
    index: int
    is_chief: bool
    num_workers: int    # tasks that train (chief and workers); 1 without a cluster


def cluster_role(environ=None):
    """This process's role in the `TF_CONFIG` cluster.

    The chief is the task of type "chief" or, when the cluster has none, "worker" 0 (the
    rule of `tf.distribute`'s multi-worker strategy). Without `TF_CONFIG`, or with a
    cluster of one task, the process is alone and therefore chief.

    Args:
        environ: the environment to read `TF_CONFIG` from. Defaults to `os.environ`.

    Raises:
        UsageError: `TF_CONFIG` is not JSON or does not say which task this process is.

    Example:
        >>> cluster_role({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
        ...               '"task": {"type": "worker", "index": 1}}'})
        ClusterRole(task_type='worker', index=1, is_chief=False, num_workers=2)
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not text.strip():
        return ClusterRole("chief", 0, True, 1)
    try:
        config = json.loads(text)
        cluster = config.get("cluster") or {}
        task = config.get("task") or {}
        task_type, index = str(task.get("type", "")), int(task.get("index", 0))
        num_workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    except (ValueError, TypeError, AttributeError) as error:
        raise UsageError(f"TF_CONFIG is not a cluster description tf.distribute can read ({error}); "
                         'expected {"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}')
    if num_workers <= 1 and not task_type:
        return ClusterRole("chief", 0, True, max(num_workers, 1))
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise UsageError(f"TF_CONFIG's task {task_type!r} {index} is not in its cluster "
                         f"({', '.join(f'{name}: {len(tasks)}' for name, tasks in cluster.items())})")
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    return ClusterRole(task_type, index, is_chief, num_workers)


@functools.cache
def multi_worker_strategy():
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3's `fit` can train with.

    Keras 3 (checked up to 3.15) calls `strategy.reduce` in two ways the multi-worker
    strategy rejects once there are two workers (keras-team/keras#20585,
    tensorflow/tensorflow#72388): on the whole `(images, labels)` batch, to find the
    input shapes before the first step, and with `axis=0` on the scalar loss and
    metrics of every step. This strategy reduces a structure one value at a time and
    scalars across replicas only; everything else is the TensorFlow class unchanged.

    One per process: it configures TensorFlow's collective ops, which TensorFlow allows
    only at startup, so make it before TensorFlow runs anything.
    """
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            if isinstance(value, (tuple, list, dict)):
                # Keras reduces an input batch only to learn its shapes; across workers that
                # fails whenever their batches differ in size (the last one of an epoch).
                return tf.nest.map_structure(lambda one: self.experimental_local_results(one)[0], value)
            if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
                axis = None  # the loss and metrics of a step are scalars: reduce across replicas only
            return super().reduce(reduce_op, value, axis)

    return KerasMultiWorkerMirroredStrategy()


def synchronize_batch_norm(model, strategy):
    """With more than one replica, batch norm normalizes with the statistics of the global batch.

    Each replica would otherwise normalize with its own slice of the batch and update
    its own moving mean and variance: the workers would end with different batch-norm
    statistics, the saved model would hold only the chief's, and the model would differ
    from the same model trained on one device with the same global batch. Synchronized,
    every replica applies the same update and all of them hold the same weights.
    Applies to every `BatchNormalization` layer in `model`, nested models included
    (the project's backbones and `keras.applications` ones alike).
    """
    import keras

    if strategy.num_replicas_in_sync <= 1:
        return
    if isinstance(model, keras.layers.BatchNormalization):
        model.synchronized = True
    for layer in getattr(model, "layers", []):
        synchronize_batch_norm(layer, strategy)
