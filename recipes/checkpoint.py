"""The engine's resume checkpoint: everything needed to continue a run after a SIGKILL.

After every completed epoch the engine saves, in one folder per save:

    state.json      where the run is (phase, epochs done), the early-stopping state, the
                    history and phase summaries so far, the best value seen
    arrays.npz      the model's weights and random-seed states, the optimizer's state (moments, step count),
                    the phase's best weights held by early stopping, the run's best weights

Keras' `BackupAndRestore` saves the model and optimizer of one `fit`; a fine-tune is
several `fit` calls with recompiles in between and best weights kept across them, so the
engine needs this bigger state. Each save is written to a temporary folder, renamed into
place, and only then named in `latest` (itself replaced atomically), so a kill at any
moment leaves the previous complete checkpoint in use.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np

from headstart.callbacks.atomic import atomic_write_text

LATEST = "latest"
ARRAY_GROUPS = ("model", "seeds", "optimizer", "phase_best", "run_best")


class TrainingCheckpoint:
    """A folder of per-epoch saves; `load()` returns the newest complete one or None."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def exists(self):
        return (self.folder / LATEST).is_file()

    def save(self, state, arrays):
        """Save `state` (JSON-ready) and `arrays` ({group: list of arrays or None}) as the newest checkpoint."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{state['epoch']:05d}-{'done' if state.get('phase_done') else 'running'}-p{state['phase_index']}"
        temporary = self.folder / f".{name}.{os.getpid()}.tmp"
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
        flat = {}
        for group in ARRAY_GROUPS:
            values = arrays.get(group)
            state.setdefault("arrays", {})[group] = None if values is None else len(values)
            for index, value in enumerate(values or ()):
                flat[f"{group}_{index}"] = np.asarray(value)
        with open(temporary / "arrays.npz", "wb") as handle:
            np.savez(handle, **flat)
            handle.flush()
            os.fsync(handle.fileno())
        atomic_write_text(temporary / "state.json", json.dumps(state, indent=1, default=_plain))
        target = self.folder / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
        atomic_write_text(self.folder / LATEST, name + "\n")
        for old in self.folder.iterdir():   # older saves, and temporary folders of killed saves
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self):
        """The newest checkpoint as (state, {group: list of arrays or None}), or None when there is none."""
        if not self.exists():
            return None
        folder = self.folder / (self.folder / LATEST).read_text().strip()
        state = json.loads((folder / "state.json").read_text())
        with np.load(folder / "arrays.npz") as stored:
            arrays = {group: None if count is None else [stored[f"{group}_{index}"] for index in range(count)]
                      for group, count in state["arrays"].items()}
        return state, arrays

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def optimizer_variables(optimizer):
    """The optimizer's state variables, including those of an optimizer it wraps (`LayerRateOptimizer`)."""
    variables = list(optimizer.variables)
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        variables += [variable for variable in inner.variables if all(variable is not v for v in variables)]
    return variables


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
