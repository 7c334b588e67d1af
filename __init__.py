"""headstart: Keras 3 / TensorFlow recipes for transfer learning.

The one import name. The repository's top-level folders are its subpackages
(pyproject.toml maps them): `headstart.models` (what is built), `headstart.callbacks`
(what watches training) and `headstart.recipes` (what runs: data, the engine, the verbs).

    from headstart import models
    from headstart.callbacks import EarlyStopping
    from headstart.recipes import data, engine

Importing `headstart` imports nothing else, so it costs no TensorFlow start-up.
"""

__version__ = "0.1.0"
