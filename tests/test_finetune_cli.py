"""`headstart finetune` / `pretrain` / `list` from the command line: the default path end to end,
and every bad input as one line on stderr, exit status 2, nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.recipes import data, finetune, network
from headstart.recipes.cli import main

# Small and quick: the default recipe's code path, shrunk (big_vision's runlocal idea).
QUICK = ["--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "1", "--labels-per-class", "2",
         "--image-size", "16"]


def _one_folder_class(tmp_path):
    folder = tmp_path / "one_class" / "cats"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    return str(tmp_path / "one_class")


def _resnet8_weights(tmp_path):
    from headstart import models

    path = tmp_path / "resnet8.weights.h5"
    models.create_model("resnet8", input_shape=(16, 16, 3), num_classes=5).get_layer("backbone").save_weights(path)
    return str(path)


BAD_INPUTS = {
    "unknown backbone": (["finetune", "--backbone", "mobilenet_v9"], "mobilenet_v9"),
    "unknown dataset": (["finetune", "--data", "tfds:no_such_dataset"], "no_such_dataset"),
    "missing data folder": (["finetune", "--data", "/no/such/folder"], "/no/such/folder"),
    "folder with one class": (["finetune", "--data", "{one_class}"], "class"),
    "image size below the backbone minimum": (
        ["finetune", "--backbone", "mobilenet_v2", "--weights", "none", "--image-size", "16"], "32"),
    "weights file missing": (["finetune", "--weights", "/no/such.weights.h5", "--compare-scratch"], "/no/such.weights.h5"),
    "weights for another architecture": (
        ["finetune", "--backbone", "cnn", "--weights", "{resnet8_weights}", "--image-size", "16"], "cnn"),
    "imagenet weights offline": (["finetune", "--backbone", "mobilenet_v2", "--weights", "imagenet"], "imagenet"),
    "unknown block to unfreeze from": (["finetune", "--weights", "none", "--unfreeze", "stage9"], "stage9"),
    "negative epochs": (["finetune", "--epochs", "-1"], "--epochs"),
    "negative learning rate": (["finetune", "--lr", "-0.1"], "--lr"),
    "zero fine-tune learning rate": (["finetune", "--finetune-lr", "0"], "--finetune-lr"),
    "dropout of 1 or more": (["finetune", "--dropout", "1.5"], "--dropout"),
    "zero labels per class": (["finetune", "--labels-per-class", "0"], "labels_per_class"),
    "unknown augmentation": (["finetune", "--augment", "blur"], "blur"),
    "bad head units": (["finetune", "--head-units", "64,x"], "--head-units"),
    "cache dir not writable": (["finetune", "--cache-dir", "{a_file}/features"], "--cache-dir"),
    "negative l2sp alpha": (["finetune", "--regularizer", "l2sp", "--l2sp-alpha", "-1"], "--l2sp-alpha"),
    "unknown regularizer": (["finetune", "--regularizer", "l3"], "--regularizer"),
    "unknown option": (["finetune", "--learning-rate", "0.1"], "--learning-rate"),
    "unknown verb": (["fine-tune"], "fine-tune"),
    "pretrain on a keras.applications model": (["pretrain", "--model", "mobilenet_v2"], "mobilenet_v2"),
    "pretrain with negative epochs": (["pretrain", "--epochs", "-3"], "--epochs"),
    "list something unknown": (["list", "optimizers"], "optimizers"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    argv, expected = BAD_INPUTS[case]
    fill = {}
    if any("{one_class}" in arg for arg in argv):
        fill["one_class"] = _one_folder_class(tmp_path)
    if any("{resnet8_weights}" in arg for arg in argv):
        fill["resnet8_weights"] = _resnet8_weights(tmp_path)
    if any("{a_file}" in arg for arg in argv):
        fill["a_file"] = str(tmp_path / "a_file")
        (tmp_path / "a_file").write_text("not a folder")
    argv = [arg.format(**fill) for arg in argv]
    runs = tmp_path / "runs"

    status = main(argv + (["--runs-dir", str(runs)] if argv[0] in ("finetune", "pretrain") else []))

    stderr = capsys.readouterr().err.strip()
    assert status == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("headstart: error:") and expected in stderr
    assert not runs.exists()


def test_existing_run_is_refused_without_overwrite_and_left_untouched(tmp_path, capsys):
    run = tmp_path / "runs" / "finetune" / "mine"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    status = main(["finetune", "--name", "mine", "--runs-dir", str(tmp_path / "runs")])
    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in run.iterdir()] == ["metrics.json"]


def test_default_recipe_pretrains_once_fine_tunes_and_compares_with_scratch(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["finetune", *QUICK, "--runs-dir", runs, "--name", "first"]) == 0
    printed = capsys.readouterr().out
    assert "pretraining resnet8 on digits 0-4" in printed
    assert "| transfer (resnet8" in printed and "| scratch (same resnet8" in printed

    run = Path(runs) / "finetune" / "first"
    for name in ("config.json", "history.csv", "metrics.json", "best.keras", "history.png", "results.md",
                 "scratch/metrics.json", "scratch/best.keras"):
        assert (run / name).is_file(), name
    assert (run / "tensorboard").is_dir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert [phase["name"] for phase in metrics["phases"]] == ["head", "finetune"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    config = json.loads((run / "config.json").read_text())
    assert config["weights_resolved"].endswith("best.keras") and config["classes"] == "target"
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header, one head epoch, one fine-tune epoch

    # The baselines, on the run's own images: the pixel one is what scikit-learn gives on the
    # arrays of the same split loaded again (so the run used exactly those images).
    assert "| logistic regression on the pixels" in printed and "| linear probe on the frozen backbone" in printed
    assert set(metrics["baselines"]) == {"pixels", "linear_probe"}
    from headstart.models import backbones
    from headstart.recipes import baselines, data

    again = data.load("digits", classes="target", labels_per_class=2, image_size=16, seed=0,
                      preprocess=backbones.get_spec("resnet8").preprocess)
    assert metrics["baselines"]["pixels"] == {**baselines.run(again)["pixels"],
                                              "seconds": metrics["baselines"]["pixels"]["seconds"]}

    # Pretrained once: the second run reuses the first one's backbone. (The reuse is decided
    # before anything trains; the scratch baseline, already run above, is left out here.)
    assert main(["finetune", *QUICK, "--no-compare-scratch", "--runs-dir", runs, "--name", "second"]) == 0
    assert "reusing the pretrained backbone" in capsys.readouterr().out


def test_pretrained_file_from_pretrain_feeds_finetune(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["pretrain", "--epochs", "1", "--image-size", "16", "--runs-dir", runs, "--name", "src"]) == 0
    weights = Path(runs) / "pretrain" / "src" / "best.keras"
    assert weights.is_file()
    # The pretraining run is a complete model too: digits 0-4 in output order, at its size.
    info = json.loads((weights.parent / "model.json").read_text())
    assert info["class_names"] == ["0", "1", "2", "3", "4"] and info["image_size"] == [16, 16]
    assert (weights.parent / "model.keras").is_file() and info["temperature"] > 0
    assert main(["finetune", "--weights", str(weights), "--epochs", "1", "--finetune-epochs", "1",
                 "--image-size", "16", "--unfreeze", "stage2", "--regularizer", "l2sp",
                 "--layer-decay", "0.5", "--gradual-unfreeze", "1",
                 "--augment", "none", "--cache-dir", str(tmp_path / "features"), "--runs-dir", runs, "--name", "dst"]) == 0
    out = capsys.readouterr().out
    assert "| transfer (resnet8" in out and "scratch" not in out
    assert any((tmp_path / "features").iterdir())  # the head trained on features cached on disk
    metrics = json.loads((Path(runs) / "finetune" / "dst" / "metrics.json").read_text())
    assert metrics["phases"][0]["feature_cache"] is True


def test_python_dash_m_recipes_is_the_same_as_headstart():
    headstart = Path(sys.executable).with_name("headstart")
    by_script = subprocess.run([str(headstart), "list", "models"], capture_output=True, text=True, check=True)
    by_module = subprocess.run([sys.executable, "-m", "headstart", "list", "models"], capture_output=True,
                               text=True, check=True)
    assert by_script.stdout == by_module.stdout
    assert "resnet20" in by_module.stdout


# ## The digits presets apply to digits only

def _image_folder(root):
    from test_data import make_image_folder

    return str(make_image_folder(root, classes=("ants", "bees", "wasps"), per_class=4, size=8))


def test_a_folder_takes_all_its_classes_and_labels_where_digits_takes_the_demo(tmp_path, capsys, recwarn):
    """The README's own examples: no --classes, no --labels-per-class. With digits' presets
    leaking (--classes target, 5 labels per class) they stopped at validation; 4 images
    per class also leave fewer than 5 training images, so only "all labels" can run."""
    folder, runs = _image_folder(tmp_path / "images"), str(tmp_path / "runs")
    assert main(["finetune", "--data", folder, "--weights", "none", "--epochs", "1", "--finetune-epochs", "1",
                 "--image-size", "8", "--runs-dir", runs, "--name", "mine"]) == 0
    printed = capsys.readouterr().out
    assert f"\n{folder} (all labels), validation accuracy:" in printed or \
        f"\n{folder} (all labels), test accuracy:" in printed
    config = json.loads((Path(runs) / "finetune" / "mine" / "config.json").read_text())
    assert config["classes"] is None and config["labels_per_class"] is None
    assert config["class_names"] == ["ants", "bees", "wasps"]
    # Every epoch ran in full: Keras did not run out of a split's data.
    assert not [w for w in recwarn if "ran out of data" in str(w.message)]

    assert main(["pretrain", "--model", "resnet8", "--data", folder, "--epochs", "1", "--image-size", "8",
                 "--runs-dir", runs, "--name", "src"]) == 0
    assert f"pretrained resnet8 on {folder} (all classes)" in capsys.readouterr().out
    config = json.loads((Path(runs) / "pretrain" / "src" / "config.json").read_text())
    assert config["classes"] is None and config["class_names"] == ["ants", "bees", "wasps"]


def test_digits_still_defaults_to_the_demo_and_all_can_be_asked_for(tmp_path):
    from headstart.recipes import lr_find, pretrain, tune
    from headstart.recipes.cli import options_for

    runs = str(tmp_path / "runs")
    args = options_for("finetune", runs_dir=runs)
    assert (args.classes, args.labels_per_class) == (None, None)   # unset until validate knows the data
    finetune.validate(args)
    assert (args.classes, args.labels_per_class) == ("target", 5)
    args = options_for("pretrain", runs_dir=runs)
    pretrain.validate(args)
    assert (args.classes, args.labels_per_class) == ("source", None)
    # lr-find scans, and tune searches, the same demo (the search's trials read these options).
    for verb, module in (("lr-find", lr_find), ("tune", tune)):
        args = options_for(verb, runs_dir=runs, name=verb)
        module.validate(args)
        assert (args.classes, args.labels_per_class) == ("target", 5), verb
    assert tune.fixed_options(args)["classes"] == "target" and tune.fixed_options(args)["labels_per_class"] == 5

    args = options_for("finetune", runs_dir=runs, classes="all", labels_per_class="all")
    finetune.validate(args)
    assert (args.classes, args.labels_per_class) == ("all", "all")
    assert data.check_source("digits", classes="all", labels_per_class="all").classes is None

    folder = _image_folder(tmp_path / "images")
    args = options_for("finetune", data=folder, runs_dir=runs)
    finetune.validate(args)
    assert (args.classes, args.labels_per_class) == (None, None)


def test_from_tuning_takes_no_digits_preset_as_a_choice(tmp_path, capsys):
    search = tmp_path / "search"
    search.mkdir()
    (search / "best_hyperparameters.json").write_text(json.dumps({"finetune_options": {
        "data": "digits", "classes": "target", "labels_per_class": 5, "lr": 0.05}}))
    from headstart.recipes.cli import options_for

    args = options_for("finetune", from_tuning=str(search))
    finetune.take_tuned_options(args)
    assert args.tuned == {"lr": 0.05}   # the presets were the search's defaults, not its choices
    args = options_for("finetune", from_tuning=str(search), data="./elsewhere")
    finetune.take_tuned_options(args)
    assert args.classes is None and args.labels_per_class is None   # the folder keeps all its classes

    (search / "best_hyperparameters.json").write_text(json.dumps({"finetune_options": {
        "data": "digits", "classes": "5,6", "labels_per_class": 3}}))
    args = options_for("finetune", from_tuning=str(search))
    finetune.take_tuned_options(args)
    assert args.tuned == {"classes": "5,6", "labels_per_class": 3}


def test_labels_per_class_takes_an_integer_or_all(capsys):
    assert main(["finetune", "--labels-per-class", "few"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "positive integer or 'all'" in error
