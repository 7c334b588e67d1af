"""Two worker processes on 127.0.0.1 train one model with `--strategy multiworker`.

Each worker runs the real CLI (`headstart pretrain`) with its own TF_CONFIG. The chief
writes the run folder under --runs-dir; the other worker writes the same files into a
private folder that is deleted when it exits, so the driver below copies that folder
out just before exit: the test then compares the two workers' own `best.keras`.
"""

import csv
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np

import headstart.models.backbones  # noqa: F401 (registers the project's layers and initializers for loading)

# The CLI, then (worker only) a copy of its private run folder before exit deletes it,
# then one JSON line: how many replicas trained in sync, and where the private folder was.
DRIVER = """
import json, shutil, sys
from headstart.recipes import cli, distribution, rundir

status = cli.main(sys.argv[2:])
role = distribution.cluster_role()
private = None
if status == 0 and not role.is_chief:
    private = str(rundir.worker_folder())
    shutil.copytree(private, sys.argv[1])
replicas = distribution.multi_worker_strategy().num_replicas_in_sync if status == 0 else None
print(json.dumps({"replicas": replicas, "private_folder": private}))
sys.exit(status)
"""
# Only a safety net against a hang (a worker waiting forever for a peer that died).
HANG_TIMEOUT_SECONDS = 600


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for one in sockets:
            one.bind(("127.0.0.1", 0))
        return [one.getsockname()[1] for one in sockets]
    finally:
        for one in sockets:
            one.close()


def start_workers(tmp_path, arguments):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(tmp_path / f"worker{index}-copy"), *arguments],
            env=environ, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def wait_for(workers):
    """(exit status, stdout, stderr) of each worker; kills both if either is still running at the end."""
    finished = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=HANG_TIMEOUT_SECONDS)
            finished.append((worker.returncode, stdout, stderr))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return finished


def all_files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_two_workers_train_one_model_and_only_the_chief_writes_the_run(tmp_path):
    runs = tmp_path / "runs"
    finished = wait_for(start_workers(tmp_path, [
        "pretrain", "--strategy", "multiworker", "--image-size", "8", "--epochs", "3",
        "--name", "together", "--runs-dir", str(runs), "--seed", "0"]))
    for index, (status, stdout, stderr) in enumerate(finished):
        assert status == 0, f"worker {index} exited {status}:\n{stdout[-2000:]}\n{stderr[-6000:]}"
    reports = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in finished]
    assert [report["replicas"] for report in reports] == [2, 2]  # one cluster, one replica per worker

    # Only the chief (worker 0) wrote under --runs-dir; the worker's private folder is gone.
    chief_run = runs / "pretrain" / "together"
    assert {path.split("/")[0] for path in all_files(runs)} == {"pretrain"}
    assert [path.name for path in (runs / "pretrain").iterdir()] == ["together"]
    assert {"best.keras", "config.json", "history.csv", "metrics.json"} <= set(all_files(chief_run))
    assert reports[0]["private_folder"] is None
    assert not os.path.exists(reports[1]["private_folder"])
    worker_run = tmp_path / "worker1-copy" / "pretrain" / "together"

    # The same model on both workers: every weight, batch-norm statistics included, bit for bit.
    chief_model = keras.models.load_model(chief_run / "best.keras")
    worker_model = keras.models.load_model(worker_run / "best.keras")
    assert len(chief_model.weights) == len(worker_model.weights) > 0
    for chief_weight, worker_weight in zip(chief_model.weights, worker_model.weights):
        assert chief_weight.path == worker_weight.path
        np.testing.assert_array_equal(chief_weight.numpy(), worker_weight.numpy(), err_msg=chief_weight.path)
    chief_metrics, worker_metrics = (json.loads((run / "metrics.json").read_text()) for run in (chief_run, worker_run))
    assert chief_metrics["test_accuracy"] == worker_metrics["test_accuracy"]  # evaluated together, too
    assert chief_metrics["best"] == worker_metrics["best"]

    # And it learned: the training loss fell from epoch to epoch.
    with open(chief_run / "history.csv") as history_file:
        losses = [float(row["loss"]) for row in csv.DictReader(history_file)]
    assert len(losses) == 3
    assert losses[2] < losses[1] < losses[0]
