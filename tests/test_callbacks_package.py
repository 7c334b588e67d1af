import subprocess
import sys

import pytest

from headstart import callbacks


def test_every_exported_name_imports():
    for name in callbacks.__all__:
        assert getattr(callbacks, name).__name__ == name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'EarlyStop'"):
        callbacks.EarlyStop  # noqa: B018


def test_importing_the_package_and_the_plot_module_does_not_import_tensorflow():
    # The plot script and the CLI stay fast: TensorFlow is only loaded for the callbacks.
    code = "import sys, callbacks, callbacks.gradient_log, callbacks.atomic; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
