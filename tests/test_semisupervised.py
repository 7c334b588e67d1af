"""`headstart semisupervised`: autoencoder pretraining, encoder-initialised classifier vs. scratch."""

import json
from pathlib import Path

from headstart.recipes.cli import main


def test_semisupervised_recipe_runs_end_to_end_on_tiny_settings(tmp_path, capsys):
    runs = tmp_path / "runs"
    status = main(["semisupervised", "--autoencoder-epochs", "2", "--epochs", "1", "--finetune-epochs", "1",
                   "--labels-per-class", "1,2", "--image-size", "8", "--runs-dir", str(runs), "--name", "t"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| 1 |" in printed and "| 2 |" in printed
    run = Path(runs) / "semisupervised" / "t"
    for name in ("autoencoder.keras", "reconstructions.png", "accuracy_vs_labels.png", "results.md",
                 "metrics.json", "config.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"1", "2"}
    assert all(0.0 <= value <= 1.0 for row in metrics["accuracy"].values() for value in row.values())
    # Beside both starts, the baselines on the same images, in the table too.
    assert all(set(row) == {"autoencoder", "scratch", "pixels", "linear_probe"} for row in metrics["accuracy"].values())
    assert "logistic regression on the pixels" in printed and "linear probe on the encoder" in printed
    # The run's model is the classifier of the largest budget, complete: all ten digits, one channel.
    info = json.loads((run / "model.json").read_text())
    assert info["class_names"] == [str(digit) for digit in range(10)]
    assert (info["image_size"], info["channels"], info["data"]["labels_per_class"]) == ([8, 8], 1, 2)
    assert (run / "model.keras").is_file() and (run / "best.keras").is_file()
    # The autoencoder trained without labels: its reconstruction loss went down.
    losses = [row["loss"] for row in metrics["autoencoder"]["history"]]
    assert losses[-1] < losses[0]


def test_semisupervised_rejects_bad_label_budgets_and_image_sizes(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["semisupervised", "--labels-per-class", "0,3", "--runs-dir", str(runs)]) == 2
    assert main(["semisupervised", "--image-size", "10", "--runs-dir", str(runs)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "--labels-per-class" in errors[0] and "--image-size" in errors[1]
    assert not runs.exists()
