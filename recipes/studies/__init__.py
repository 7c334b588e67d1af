"""Training-dynamics studies: each reproduces one claim of the lecture material as a figure.

    headstart study --list
    headstart study exploding-products            # figures, results.md, findings.json in runs/study/...
    headstart study initialization --quick        # the same code path, shrunk to a few seconds

A study is a module with `DESCRIPTION` (one line), `CLAIM` (the lecture's claim its figure
shows, one sentence) and `run(run_dir, *, quick=False, seed=0) -> StudyResult`. It saves
its figures with `run_dir.save_figure(...)` and reports, honestly, whether this run showed
the claim (`supported`) and the numbers that decide it (`findings`).

Modules are imported only when a study is asked for, so the list of names works even
while a study's module is missing or broken; running such a study is a usage error.

In Python: `headstart.recipes.studies.run_study("symmetry", quick=True)`.
"""

import dataclasses
import importlib
import math

from headstart.recipes.errors import UsageError

# Study name -> module. The order is the order of `headstart study --list`.
STUDIES = {
    "exploding-products": "headstart.recipes.studies.exploding_products",
    "initialization": "headstart.recipes.studies.initialization",
    "symmetry": "headstart.recipes.studies.symmetry",
    "vanishing-gradients": "headstart.recipes.studies.vanishing_gradients",
    "optimizers": "headstart.recipes.studies.optimizers",
    "regularization": "headstart.recipes.studies.regularization",
    "dropout-uncertainty": "headstart.recipes.studies.dropout_uncertainty",
    "learning-rate": "headstart.recipes.studies.learning_rate",
    "double-descent": "headstart.recipes.studies.double_descent",
    "dead-relu": "headstart.recipes.studies.dead_relu",
    "gradient-clipping": "headstart.recipes.studies.gradient_clipping",
    "ensembles": "headstart.recipes.studies.ensembles",
    "pooling": "headstart.recipes.studies.pooling",
    "weight-decay-vs-l2": "headstart.recipes.studies.weight_decay_vs_l2",
}


@dataclasses.dataclass
class StudyResult:
    """What a study reports besides its figures.

    Args:
        table: a Markdown table of the numbers the figure shows.
        findings: the numbers that support or refute the claim (JSON-serialisable once
            NumPy scalars and arrays are converted, which `run_study` does).
        supported: whether this run showed the claim.
        summary: one honest line; if the run did not show the claim, it says so.
    """

    table: str
    findings: dict
    supported: bool
    summary: str


def verdict(checks, measured, shown=None):
    """(supported, summary) of a study whose claim is the conjunction of `checks` ({name: bool}):
    "`shown`: `measured`." when every check held, else the checks that did not, then `measured`."""
    if all(checks.values()):
        return True, f"{shown}: {measured}." if shown else measured[0].upper() + measured[1:]
    failed = [name for name, passed in checks.items() if not passed]
    return False, f"This run did not show the whole claim ({', '.join(failed)} did not hold): {measured}."


def list_studies():
    return list(STUDIES)


def load_study(name):
    """The study's module; unknown or unimportable names raise `UsageError`."""
    if name not in STUDIES:
        raise UsageError(f"unknown study {name!r}; known studies: {', '.join(STUDIES)}")
    try:
        return importlib.import_module(STUDIES[name])
    except ModuleNotFoundError as error:
        if error.name != STUDIES[name]:
            raise  # the module is there but one of its imports is missing: a bug, not bad input
        raise UsageError(f"study {name!r} is not available in this checkout: {STUDIES[name]} is missing") from error


def describe_study(name):
    """The study's one-line description, or why it cannot be loaded (the list must always work)."""
    try:
        return load_study(name).DESCRIPTION
    except UsageError:
        return "(not available in this checkout)"
    except Exception as error:  # noqa: BLE001 - a broken study must not hide the others
        return f"(fails to import: {type(error).__name__}: {error})"


_quiet = False   # run_study(quiet=True): `say` prints nothing


def say(message):
    """A line about what the study is doing (one per configuration it trains), unless run quietly."""
    if not _quiet:
        print(f"  {message}", flush=True)


def run_study(name, run_dir=None, *, quick=False, seed=0, runs_root="runs", run_name=None, overwrite=False,
              quiet=False):
    """Run one study and write `results.md` and `findings.json` next to its figures.

    Args:
        name: a study name from `STUDIES`.
        run_dir: a `RunDir` or a folder path. Defaults to `None`: a new run directory
            `runs_root/study/NAME/run_name` (a timestamp when `run_name` is `None`).
        quick: the shrunk setting the tests use (a few seconds). Defaults to `False`.
        seed: seeds NumPy, Python and Keras. Defaults to `0`.
        quiet: print nothing while it runs (by default, a line per configuration trained).
            Defaults to `False`.

    Returns:
        `(run_dir, StudyResult)`.
    """
    from headstart.recipes.rundir import RunDir

    module = load_study(name)
    if seed is None or seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}")
    if run_dir is None:
        run_dir = RunDir.create(f"study/{name}", run_name, runs_root, overwrite)
    else:
        run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        # Studies append to logs (GradientLogger's CSV); an earlier run's rows would mix in.
        if run_dir.path.exists() and any(run_dir.path.iterdir()):
            raise UsageError(f"{run_dir.path} is not empty: give run_study an empty or new folder")
        run_dir.path.mkdir(parents=True, exist_ok=True)
    global _quiet
    was_quiet, _quiet = _quiet, quiet
    try:
        result = module.run(run_dir, quick=quick, seed=seed)
    finally:
        _quiet = was_quiet
    result.findings = to_plain(result.findings)
    run_dir.write_json("findings.json", {"study": name, "quick": quick, "seed": seed,
                                          "supported": bool(result.supported), "summary": result.summary,
                                          "findings": result.findings})
    run_dir.write_text("results.md", results_markdown(name, module, result, quick=quick, seed=seed))
    return run_dir, result


def results_markdown(name, module, result, *, quick, seed):
    setting = "quick" if quick else "default"
    return (f"# Study: {name}\n\n"
            f"**Claim.** {module.CLAIM}\n\n"
            f"**Supported by this run:** {'yes' if result.supported else 'no'} "
            f"({setting} setting, seed {seed})\n\n"
            f"**Summary.** {result.summary}\n\n"
            f"{result.table.rstrip()}\n")


# ## Helpers the studies share

def to_plain(value):
    """NumPy scalars and arrays (also nested in dicts and lists) to plain Python for JSON."""
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return to_plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


def markdown_table(headers, rows):
    """A Markdown table; floats are written with 3 significant digits."""
    def cell(value):
        if isinstance(value, float) or hasattr(value, "dtype"):
            return f"{float(value):.3g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot on the headless backend (recipes run on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def digits_arrays(seed=0):
    """The digits through `headstart.recipes.data.load` as NumPy arrays, standardised per pixel.

    The studies want whole arrays (a batch to probe, `fit` on arrays) and inputs with
    zero mean and unit variance, which the initialisation schemes assume.

    Returns:
        `(x_train, y_train, x_val, y_val)`: float32 `(n, 64)` and int labels; the
        training split's mean and standard deviation standardise both.
    """
    import numpy as np

    from headstart.recipes import data

    splits = data.load("digits", image_size=8, channels=1, batch_size=512, test_fraction=0.0,
                       shuffle=False, seed=seed)

    def arrays(dataset):
        batches = list(dataset.as_numpy_iterator())
        images = np.concatenate([images for images, _ in batches]).reshape(-1, 64)
        return images, np.concatenate([labels for _, labels in batches])

    x_train, y_train = arrays(splits.train)
    x_val, y_val = arrays(splits.val)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0  # the always-blank corner pixels
    return ((x_train - mean) / std).astype("float32"), y_train, ((x_val - mean) / std).astype("float32"), y_val
