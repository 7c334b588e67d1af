"""Studies ensembles, pooling and weight-decay-vs-l2 in their quick setting, and one through the CLI.

The quick setting is the default code path with fewer steps; its numbers must show the
claim each study's figure is about, checked where possible against an independent
reference (a closed formula, NumPy, Keras' own layers and optimizer). Seeds and data are
fixed, and every assertion has a margin over what the quick runs measure.
"""

import json
import math

import numpy as np

from headstart.recipes import studies
from headstart.recipes.cli import main
from headstart.recipes.rundir import RunDir


def run_quick(name, tmp_path, figure):
    _, result = studies.run_study(name, RunDir(tmp_path), quick=True, seed=0)
    assert (tmp_path / figure).stat().st_size > 10_000
    assert (tmp_path / "results.md").read_text().startswith(f"# Study: {name}")
    assert json.loads((tmp_path / "findings.json").read_text())["findings"] == result.findings
    return result


def test_new_studies_are_listed_last_in_order():
    assert list(studies.STUDIES)[-3:] == ["ensembles", "pooling", "weight-decay-vs-l2"]
    for name in ("ensembles", "pooling", "weight-decay-vs-l2"):
        module = studies.load_study(name)
        assert module.DESCRIPTION and module.CLAIM and callable(module.run)
