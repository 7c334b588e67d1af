"""Which part a process plays in a keras-tuner search, from keras-tuner's own environment variables.

keras-tuner's chief/worker mode is driven by `KERASTUNER_TUNER_ID` ("chief", or a worker's
id such as "tuner0"), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`. Every process
runs the same `headstart tune ... --name NAME`: the chief serves the oracle and writes the
results files once every trial is done; workers ask it for trials and run them.
"""

import os

from headstart.recipes.errors import UsageError

STANDALONE, CHIEF, WORKER = "standalone", "chief", "worker"
VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def role(environ=None):
    """`"standalone"` (no oracle address set), `"chief"` or `"worker"`.

    Follows keras-tuner's rule (`keras_tuner.src.distribute.utils`): distributed when
    `KERASTUNER_ORACLE_IP` is set, and the chief is the process whose tuner id contains
    "chief". Raises `UsageError` when the oracle address is set without the port or id,
    which keras-tuner would only report after the model is built.
    """
    environ = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in environ:
        return STANDALONE
    missing = [name for name in VARIABLES if not environ.get(name)]
    if missing:
        raise UsageError(f"KERASTUNER_ORACLE_IP is set (distributed search) but {', '.join(missing)} "
                         "is not: set all of " + ", ".join(VARIABLES))
    return CHIEF if "chief" in environ["KERASTUNER_TUNER_ID"] else WORKER


def writes_results(current_role):
    """Only one process writes trials.csv, summary.md and the rest: the chief, or the only process."""
    return current_role in (STANDALONE, CHIEF)
