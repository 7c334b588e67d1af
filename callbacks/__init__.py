"""Callbacks: what watches training.

    from callbacks import EarlyStopping, GradientLogger, HistoryWriter

Names are imported on first use, so `import callbacks` (and the keras-free
`callbacks.gradient_log` and `callbacks.atomic`) do not pull in TensorFlow.
"""

import importlib

_EXPORTS = {
    "EarlyStopping": "callbacks.early_stopping",
    "EpochTimer": "callbacks.epoch_timer",
    "GradientLogger": "callbacks.gradient_logger",
    "GradualUnfreezing": "callbacks.gradual_unfreezing",
    "HistoryWriter": "callbacks.history_writer",
    "atomic_write_bytes": "callbacks.atomic",
    "atomic_write_text": "callbacks.atomic",
    "plot_gradient_log": "callbacks.gradient_log",
    "read_history": "callbacks.history_writer",
    "read_gradient_log": "callbacks.gradient_log",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(list(globals()) + __all__)
