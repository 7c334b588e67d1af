"""Callbacks: what watches training.

    from headstart.callbacks import EarlyStopping, GradientLogger, HistoryWriter, ProgressLogger

Names are imported on first use, so `import headstart.callbacks` (and the keras-free
`headstart.callbacks.gradient_log` and `headstart.callbacks.atomic`) do not pull in TensorFlow.
"""

import importlib

_EXPORTS = {
    "EarlyStopping": "headstart.callbacks.early_stopping",
    "EpochTimer": "headstart.callbacks.epoch_timer",
    "GradientLogger": "headstart.callbacks.gradient_logger",
    "GradualUnfreezing": "headstart.callbacks.gradual_unfreezing",
    "HistoryWriter": "headstart.callbacks.history_writer",
    "ProgressLogger": "headstart.callbacks.progress",
    "atomic_write_bytes": "headstart.callbacks.atomic",
    "atomic_write_text": "headstart.callbacks.atomic",
    "plot_gradient_log": "headstart.callbacks.gradient_log",
    "read_history": "headstart.callbacks.history_writer",
    "read_gradient_log": "headstart.callbacks.gradient_log",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'headstart.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(list(globals()) + __all__)
