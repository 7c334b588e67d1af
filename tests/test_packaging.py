"""headstart installs one import name, and a user's own `models.py` never shadows it.

Both ways of installing are checked: the editable install the tests run from (`pip install
-e .`, setuptools' finder maps `headstart` onto the repository root), and a regular install
of the wheel (`pip install .` copies the listed packages), each from a folder holding a
`models.py`, `callbacks.py`, `recipes.py` and `models/` of the user's that would break
headstart if they were imported.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
SUBPACKAGE_FOLDERS = ("models", "callbacks", "recipes")
TRAP = "raise SystemExit('the user\\'s own {name} was imported instead of headstart\\'s')\n"


@pytest.fixture
def user_folder(tmp_path):
    """A project folder of the user's, with modules named like headstart's folders."""
    folder = tmp_path / "user_project"
    folder.mkdir()
    for name in ("models", "callbacks", "recipes"):
        (folder / f"{name}.py").write_text(TRAP.format(name=f"{name}.py"))
    # A package `models/` beside the module: Python prefers the package, so trap it too.
    (folder / "models").mkdir()
    (folder / "models" / "__init__.py").write_text(TRAP.format(name="models/"))
    return folder


def _python(code, cwd, installed=None):
    """Python in `cwd`, which is also on PYTHONPATH (a sys.path entry of the user's), after
    `installed` (a folder headstart was installed into) when given."""
    path = [str(installed)] if installed else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(cwd)])}
    return subprocess.run([sys.executable, *code], cwd=cwd, env=env, capture_output=True, text=True)


# `python -m headstart list models` (run_module is what -m runs; sys.path[0] is the user's
# folder either way), then where headstart came from and which top-level names got imported.
PROBE = """
import runpy, sys
sys.argv = ["headstart", "list", "models"]
try:
    runpy.run_module("headstart", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
import headstart
print(headstart.__file__)
print(sorted(name for name in ("models", "callbacks", "recipes") if name in sys.modules))
"""


def _check_headstart_runs(cwd, installed=None, expect_under=REPOSITORY):
    """`python -m headstart list models` from `cwd`, with `cwd` also on PYTHONPATH."""
    run = _python(["-c", PROBE], cwd, installed)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "resnet8" in run.stdout and "autoencoder_conv" in run.stdout
    location, top_level = run.stdout.strip().splitlines()[-2:]
    assert Path(location).resolve().is_relative_to(Path(expect_under).resolve())
    assert top_level == "[]", f"top-level modules were imported: {top_level}"


def test_editable_install_ignores_the_users_modules(user_folder):
    _check_headstart_runs(user_folder)


def test_every_subpackage_is_listed_in_pyproject():
    """A folder with an __init__.py that pyproject does not list would be missing from `pip install .`."""
    import tomllib

    listed = set(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"headstart"} | {
        "headstart." + ".".join(init.parent.relative_to(REPOSITORY).parts)
        for folder in SUBPACKAGE_FOLDERS for init in (REPOSITORY / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts}
    assert listed == found


@pytest.mark.slow
def test_regular_install_has_one_top_level_name_and_every_module(tmp_path, user_folder):
    source = tmp_path / "source"
    shutil.copytree(REPOSITORY, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = wheels.glob("headstart-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"headstart", wheel.name.split("-py")[0] + ".dist-info"}
    modules = {name for name in names if name.endswith(".py")}
    expected = {"headstart/__init__.py", "headstart/__main__.py"} | {
        "headstart/" + str(path.relative_to(REPOSITORY))
        for folder in SUBPACKAGE_FOLDERS for path in (REPOSITORY / folder).rglob("*.py")
        if "__pycache__" not in path.parts}
    assert modules == expected
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py')[0]}.dist-info/entry_points.txt").decode()
    assert "headstart = headstart.recipes.cli:main" in entry_points

    target = tmp_path / "installed"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # PYTHONPATH comes before the editable install's finder, so this runs the installed copy.
    _check_headstart_runs(user_folder, installed=target, expect_under=target)
