"""`headstart evaluate` and the run's complete model: figures against scikit-learn and NumPy on the same images."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn import metrics as sk

from headstart.recipes import calibration, data, evaluate, trained
from headstart.recipes.cli import main


def reference_logits(run_folder, split):
    """The trained network (best.keras) on the run's split loaded again the way training loads it
    (preprocessed by the pipeline, / 255): no serving model, no model.json but the temperature."""
    network = keras.saving.load_model(run_folder / "best.keras", compile=False)
    splits = data.load("digits", image_size=8, channels=3, classes="target", labels_per_class=5, seed=0)
    logits, labels = [], []
    for images, batch_labels in getattr(splits, split):
        logits.append(np.asarray(network(images, training=False)))
        labels.append(batch_labels.numpy())
    return np.concatenate(logits).astype(np.float64), np.concatenate(labels)


@pytest.fixture(scope="module")
def evaluated(finished_run, tmp_path_factory):
    """`headstart evaluate RUN --tta` on a copy of the run: (run folder, evaluation/metrics.json, printed)."""
    run = tmp_path_factory.mktemp("evaluated") / "tiny"
    shutil.copytree(finished_run, run)
    metrics = evaluate.evaluate(run, tta=True)
    return run, metrics


def test_model_json_names_the_classes_in_output_order_and_how_to_find_the_data(finished_run):
    info = json.loads((finished_run / "model.json").read_text())
    assert info["class_names"] == ["5", "6", "7", "8", "9"]
    assert (info["image_size"], info["channels"], info["preprocess"], info["backbone"]) == ([8, 8], 3, None, "resnet8")
    assert info["data"]["source"] == "digits" and info["data"]["labels_per_class"] == 5
    assert info["temperature"] > 0


def test_model_keras_takes_raw_images_and_gives_the_trained_networks_logits(finished_run):
    from headstart import models

    models.register_keras_objects()
    serving = keras.saving.load_model(finished_run / "model.keras", compile=False)
    network = keras.saving.load_model(finished_run / "best.keras", compile=False)
    raw = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(serving(raw)), np.asarray(network(raw / 255.0)), atol=1e-5)


def test_the_temperature_minimises_validation_log_loss(finished_run):
    logits, labels = reference_logits(finished_run, "val")
    info = json.loads((finished_run / "model.json").read_text())
    temperature = info["temperature"]
    grid = np.exp(np.linspace(np.log(0.01), np.log(100), 4001))
    best_on_grid = grid[np.argmin([calibration.log_loss(logits, labels, t) for t in grid])]
    assert temperature == pytest.approx(best_on_grid, rel=0.01)
    # Temperature scaling lowered the validation log loss, and never changes a prediction.
    assert calibration.log_loss(logits, labels, temperature) < calibration.log_loss(logits, labels)
    assert info["validation"]["calibrated_log_loss"] < info["validation"]["log_loss"]
    np.testing.assert_array_equal(calibration.softmax(logits, temperature).argmax(1), logits.argmax(1))


def test_log_loss_and_softmax_match_scikit_learn_and_scipy():
    from scipy.special import softmax

    logits = np.random.default_rng(1).normal(0, 3, (50, 4))
    labels = np.random.default_rng(2).integers(0, 4, 50)
    np.testing.assert_allclose(calibration.softmax(logits, 2.5), softmax(logits / 2.5, axis=1), rtol=1e-12)
    assert calibration.log_loss(logits, labels, 2.5) == pytest.approx(
        sk.log_loss(labels, softmax(logits / 2.5, axis=1), labels=range(4)), rel=1e-9)


def numpy_ece(probabilities, labels, bins=15):
    """Guo et al.'s expected calibration error, written out with a loop over the bins."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    total = 0.0
    for low, high in zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:]):
        members = (confidence > low) & (confidence <= high) if low > 0 else (confidence <= high)
        if members.any():
            total += members.sum() * abs(np.mean(predicted[members] == labels[members]) - confidence[members].mean())
    return total / len(labels)


def test_expected_calibration_error_matches_a_numpy_loop():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.full(5, 0.3), 400)
    labels = rng.integers(0, 5, 400)
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(
        numpy_ece(probabilities, labels), abs=1e-12)
    # A model that is right exactly as often as it says is calibrated.
    confident = np.tile([[0.75, 0.25]], (400, 1))
    assert calibration.expected_calibration_error(confident, np.r_[np.zeros(300, int), np.ones(100, int)]) == \
        pytest.approx(0.0, abs=1e-12)


def test_evaluate_metrics_equal_scikit_learns_on_the_same_predictions(evaluated):
    run, metrics = evaluated
    logits, labels = reference_logits(run, "test")
    temperature = json.loads((run / "model.json").read_text())["temperature"]
    probabilities = calibration.softmax(logits, temperature)
    predicted = probabilities.argmax(1)
    assert metrics["split"] == "test" and metrics["examples"] == len(labels) == 179
    assert metrics["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(labels, predicted))
    assert metrics["macro_f1"] == pytest.approx(sk.f1_score(labels, predicted, average="macro"))
    assert metrics["top_3_accuracy"] == pytest.approx(sk.top_k_accuracy_score(labels, probabilities, k=3))
    assert "top_5_accuracy" not in metrics   # 5 classes: top-5 is always right
    assert metrics["log_loss"] == pytest.approx(sk.log_loss(labels, probabilities), rel=1e-4)
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predicted, zero_division=0)
    np.testing.assert_allclose([row["precision"] for row in metrics["per_class"]], precision)
    np.testing.assert_allclose([row["recall"] for row in metrics["per_class"]], recall)
    np.testing.assert_allclose([row["f1"] for row in metrics["per_class"]], f1)
    assert [row["support"] for row in metrics["per_class"]] == list(support)
    matrix = sk.confusion_matrix(labels, predicted)
    assert metrics["confusion_matrix"] == matrix.tolist()
    worst = metrics["most_confused"][0]
    off_diagonal = matrix - np.diag(np.diag(matrix))
    assert worst["count"] == off_diagonal.max() and matrix[worst["true"], worst["predicted"]] == worst["count"]
    # The accuracy finetune reported for its test split is the one evaluate finds again.
    assert metrics["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"],
                                                abs=1e-6)


def test_evaluate_calibration_figures_before_and_after(evaluated):
    run, metrics = evaluated
    logits, labels = reference_logits(run, "test")
    temperature = metrics["temperature"]
    after = metrics["calibration"]
    assert after["ece_before"] == pytest.approx(numpy_ece(calibration.softmax(logits), labels), abs=1e-6)
    assert after["ece_after"] == pytest.approx(numpy_ece(calibration.softmax(logits, temperature), labels), abs=1e-6)
    assert after["log_loss_before"] == pytest.approx(sk.log_loss(labels, calibration.softmax(logits)), rel=1e-4)


def test_evaluate_writes_the_report_and_the_three_figures(evaluated):
    run, metrics = evaluated
    folder = run / "evaluation"
    assert json.loads((folder / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    report = (folder / "report.md").read_text()
    assert "| 5 |" in report and "| 9 |" in report and "Most confused" in report and "with TTA" in report
    for figure in ("confusion_matrix.png", "top_losses.png", "reliability.png"):
        with Image.open(folder / figure) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_tta_is_the_mean_over_the_image_and_its_crop_and_their_mirrors_after_flip_training(evaluated, finished_run):
    run, metrics = evaluated
    model = trained.load(finished_run)
    images = np.random.default_rng(4).integers(0, 256, (3, 8, 8, 3)).astype(np.float32)
    views = trained.tta_views(images)
    assert len(views) == 2 and not model.trained_with_flips   # the tiny run trained without flips
    np.testing.assert_array_equal(views[0], images)
    expected = np.mean([calibration.softmax(model.logits(view), model.temperature) for view in views], axis=0)
    np.testing.assert_allclose(model.probabilities(images, tta=True), expected, atol=1e-6)
    # At 32 px the crop is the central 28 x 28 pixels, enlarged back (bilinear); with flips, both mirrored.
    large = np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    mirrored = trained.tta_views(large, flip=True)
    np.testing.assert_allclose(mirrored[1], tf.image.resize(large[:, 2:30, 2:30], (32, 32)).numpy(), atol=1e-4)
    np.testing.assert_array_equal(mirrored[2], large[:, :, ::-1])
    np.testing.assert_allclose(mirrored[3], mirrored[1][:, :, ::-1], atol=1e-4)
    assert set(metrics["tta"]) >= {"accuracy", "macro_f1", "log_loss", "ece", "confusion_matrix"}


def test_evaluate_on_an_image_folder_of_the_runs_classes(finished_run, tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "holdout"
    names = []
    for index in range(40):   # the first images of digits 5-9, as PNGs of their own size, in class folders
        label = int(digits.target[index])
        if label >= 5:
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[index] * 255 / 16).round().astype(np.uint8)).save(
                folder / str(label) / f"{index}.png")
            names.append(label)
    output = tmp_path / "evaluation"
    assert main(["evaluate", str(finished_run), "--data", str(folder), "--output", str(output), "--quiet"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["examples"] == len(names)
    assert sum(row["support"] for row in metrics["per_class"]) == len(names)
    assert "all split of" in capsys.readouterr().out
    assert not (finished_run / "evaluation").exists()   # --output chose where it went

    # A folder with a class the model has no output for is refused, and nothing is written.
    (folder / "cat").mkdir()
    shutil.copy(next((folder / "5").iterdir()), folder / "cat" / "a.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["evaluate", str(finished_run), "--data", str(folder), "--output", str(tmp_path / "other")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("headstart: error:") and "cat" in error and len(error.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_made_before_model_json_still_evaluates(finished_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(finished_run, run)
    stored = json.loads((run / "model.json").read_text())["temperature"]
    (run / "model.json").unlink()
    (run / "model.keras").unlink()
    metrics = evaluate.evaluate(run)
    # The serving model is put together from best.keras and config.json, and calibrated on the same
    # validation split: the same temperature and the same figures as the complete run.
    assert metrics["temperature_fitted_now"] is True
    assert metrics["temperature"] == pytest.approx(stored, rel=1e-3)
    assert metrics["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"],
                                                abs=1e-6)
    assert not (run / "model.json").exists()   # evaluate writes only its evaluation folder


def test_evaluating_again_replaces_the_evaluation_folder(evaluated):
    run, _ = evaluated
    stale = run / "evaluation" / "stale.txt"
    stale.write_text("from before")
    evaluate.evaluate(run, split="val")
    assert not stale.exists()
    assert json.loads((run / "evaluation" / "metrics.json").read_text())["split"] == "val"


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "{tmp}/nowhere"], "not a run folder"),
    (["evaluate", "{tmp}"], "not a finished run"),
    (["evaluate", "{run}", "--data", "{tmp}/missing"], "does not exist"),
    (["evaluate", "{run}", "--classes", "5,6"], "--classes"),
    (["evaluate", "{run}", "--data", "digits"], "other classes than the run"),
    (["evaluate", "{run}", "--data", "digits", "--classes", "1,5"], "no output for them"),
    (["evaluate", "{run}", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "{run}", "--split", "everything"], "--split"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, words, finished_run, tmp_path, capsys):
    listing = sorted(str(p) for p in finished_run.rglob("*"))
    argv = [arg.format(tmp=tmp_path, run=finished_run) for arg in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("headstart: error:") and words in error and len(error.splitlines()) == 1
    assert sorted(str(p) for p in finished_run.rglob("*")) == listing
    assert not any(tmp_path.iterdir())
