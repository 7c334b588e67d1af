"""The run directory's chief-only rule under TF_CONFIG, and `cluster_role` itself.

The two-process training test is tests/test_multiworker.py; these tests set TF_CONFIG in
this process only to check who writes where.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.recipes import rundir
from headstart.recipes.distribution import ClusterRole, cluster_role
from headstart.recipes.errors import UsageError
from headstart.recipes.rundir import RunDir, check_run_name


def tf_config(task_type, index, cluster=None):
    cluster = cluster or {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("environ, expected", [
    ({}, ClusterRole("chief", 0, True, 1)),
    ({"TF_CONFIG": ""}, ClusterRole("chief", 0, True, 1)),
    ({"TF_CONFIG": tf_config("worker", 0)}, ClusterRole("worker", 0, True, 2)),
    ({"TF_CONFIG": tf_config("worker", 1)}, ClusterRole("worker", 1, False, 2)),
    # With a task named "chief", worker 0 is an ordinary worker (tf.distribute's rule).
    ({"TF_CONFIG": tf_config("chief", 0, {"chief": ["a:1"], "worker": ["b:2"]})}, ClusterRole("chief", 0, True, 2)),
    ({"TF_CONFIG": tf_config("worker", 0, {"chief": ["a:1"], "worker": ["b:2"]})},
     ClusterRole("worker", 0, False, 2)),
    ({"TF_CONFIG": tf_config("worker", 0, {"worker": ["a:1"]})}, ClusterRole("worker", 0, True, 1)),
])
def test_cluster_role_follows_tf_distribute_chief_rule(environ, expected):
    assert cluster_role(environ) == expected


@pytest.mark.parametrize("text", ["{not json", tf_config("worker", 2), tf_config("ps", 0), '["a list"]'])
def test_cluster_role_rejects_a_tf_config_it_cannot_place_this_task_in(text):
    with pytest.raises(UsageError, match="TF_CONFIG"):
        cluster_role({"TF_CONFIG": text})


def test_chief_writes_the_real_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 0))
    run_dir = RunDir.create("pretrain", "run", tmp_path)
    run_dir.write_text("note.txt", "chief\n")
    assert (tmp_path / "pretrain" / "run" / "note.txt").read_text() == "chief\n"


def test_non_chief_writes_a_private_folder_and_nothing_under_runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 1))
    run_dir = RunDir.create("pretrain", "run", tmp_path / "runs")
    run_dir.write_json("metrics.json", {"accuracy": 1.0})
    assert run_dir.path.is_relative_to(rundir.worker_folder())
    assert json.loads(run_dir.file("metrics.json").read_text()) == {"accuracy": 1.0}
    assert not (tmp_path / "runs").exists()


def test_existing_chief_run_does_not_stop_a_non_chief(tmp_path, monkeypatch):
    (tmp_path / "pretrain" / "run").mkdir(parents=True)
    (tmp_path / "pretrain" / "run" / "config.json").write_text("{}")
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 1))
    run_dir = RunDir.create("pretrain", "run", tmp_path)  # no --overwrite: the chief is the one to refuse
    assert run_dir.path != tmp_path / "pretrain" / "run"
    assert (tmp_path / "pretrain" / "run" / "config.json").read_text() == "{}"
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 0))
    with pytest.raises(UsageError, match="already exists"):
        check_run_name("pretrain", "run", tmp_path)


def test_non_chief_still_rejects_bad_names_like_the_chief(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 1))
    with pytest.raises(UsageError, match="--name"):
        check_run_name("pretrain", "a/b", tmp_path)
    with pytest.raises(UsageError, match="--resume"):
        check_run_name("pretrain", "run", tmp_path, overwrite=True, resume=True)


def test_non_chief_resumes_from_a_copy_of_the_chiefs_run(tmp_path, monkeypatch):
    chief_run = tmp_path / "pretrain" / "run"
    chief_run.mkdir(parents=True)
    (chief_run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 1))
    run_dir = RunDir.create("pretrain", "run", tmp_path, resume=True)
    assert run_dir.file("history.csv").read_text() == "epoch,loss\n1,0.5\n"
    run_dir.write_text("history.csv", "changed by the worker\n")
    assert (chief_run / "history.csv").read_text() == "epoch,loss\n1,0.5\n"


def test_non_chief_resume_needs_the_chiefs_run_visible(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config("worker", 1))
    with pytest.raises(UsageError, match="non-chief.*shar"):
        check_run_name("pretrain", "missing", tmp_path, resume=True)


def test_non_chief_private_folder_is_deleted_when_the_process_exits(tmp_path):
    script = ("from headstart.recipes.rundir import RunDir\n"
              f"run_dir = RunDir.create('pretrain', 'run', {str(tmp_path)!r})\n"
              "run_dir.write_text('note.txt', 'x')\n"
              "print(run_dir.path)\n")
    environ = {**os.environ, "TF_CONFIG": tf_config("worker", 1)}
    finished = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    private_path = finished.stdout.strip()
    assert private_path and not private_path.startswith(str(tmp_path))
    assert not Path(private_path).exists()
    assert list(tmp_path.iterdir()) == []
