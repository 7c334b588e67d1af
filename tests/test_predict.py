"""`headstart predict`: files, folders and globs in; the model's calibrated top classes out, on stdout and in a CSV."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

from headstart.recipes import calibration, predict
from headstart.recipes.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Digits of several sizes and formats (PNG, JPEG, grayscale and RGB), one nested, and a broken file."""
    folder = tmp_path_factory.mktemp("images")
    digits = load_digits()
    paths = []
    for index, (size, mode, suffix) in enumerate([(8, "L", ".png"), (40, "RGB", ".png"), (13, "L", ".jpg"),
                                                   (64, "RGB", ".jpg"), (21, "L", ".bmp")]):
        pixels = (digits.images[index + 5] * 255 / 16).round().astype(np.uint8)
        image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR).convert(mode)
        path = folder / ("nested" if index == 4 else "") / f"digit{index}{suffix}"
        path.parent.mkdir(exist_ok=True)
        image.save(path)
        paths.append(path)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder, paths


def expected_probabilities(run, paths):
    """The trained network (best.keras) on each file decoded (PIL; TensorFlow for JPEG) and resized by TensorFlow the way the
    training pipeline does (bilinear, rounded to uint8), scaled to [0, 1]; calibrated with model.json's temperature."""
    network = keras.saving.load_model(run / "best.keras", compile=False)
    batch = []
    for path in paths:
        if str(path).endswith(".jpg"):
            # JPEG decoders differ by a few levels (DCT and upsampling): take TensorFlow's, which training used.
            pixels = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3).numpy().astype(np.float32)
        else:   # lossless formats: PIL's pixels are the file's
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        resized = tf.image.resize(pixels, (8, 8), method="bilinear").numpy()
        batch.append(np.clip(np.round(resized), 0, 255))
    logits = np.asarray(network(np.stack(batch) / 255.0, training=False))
    return calibration.softmax(logits, json.loads((run / "model.json").read_text())["temperature"])


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_predict_on_files_equals_the_model_on_the_same_decoded_images(finished_run, images, tmp_path, capsys):
    folder, paths = images
    output = tmp_path / "out.csv"
    assert main(["predict", str(finished_run), str(folder), "--top-k", "5", "--output", str(output)]) == 0
    captured = capsys.readouterr()
    rows = read_csv(output)
    # Every decodable file, the nested one too, in sorted order; the broken one named on stderr and skipped.
    assert [row["path"] for row in rows] == sorted(map(str, paths))
    assert "skipped" in captured.err and "broken.png" in captured.err
    assert "5 images predicted" in captured.out
    expected = expected_probabilities(finished_run, [row["path"] for row in rows])
    class_names = json.loads((finished_run / "model.json").read_text())["class_names"]
    for row, probabilities in zip(rows, expected):
        predicted = {row[f"class_{k}"]: float(row[f"probability_{k}"]) for k in range(1, 6)}
        assert predicted == pytest.approx(dict(zip(class_names, probabilities)), abs=2e-6)
        # Sorted most probable first.
        assert row["class_1"] == class_names[int(np.argmax(probabilities))]
        assert float(row["probability_1"]) >= float(row["probability_2"])


def test_globs_files_and_batches_give_the_same_rows(finished_run, images, tmp_path):
    folder, paths = images
    whole = predict.predict(finished_run, [str(folder)], top_k=2)
    # A glob, a file named twice and batches of 2: the same rows, each file once.
    pieces = predict.predict(finished_run, [str(folder / "*.png"), str(paths[2]), str(folder / "**" / "*.bmp"),
                                            str(paths[2]), str(folder / "digit3.jpg")], top_k=2, batch_size=2)
    by_path = {row["path"]: row for row in whole}
    assert len(pieces) == len(whole) == 5
    for row in pieces:
        assert row.keys() == by_path[row["path"]].keys()
        for k in (1, 2):
            assert row[f"class_{k}"] == by_path[row["path"]][f"class_{k}"]
            assert row[f"probability_{k}"] == pytest.approx(by_path[row["path"]][f"probability_{k}"], abs=2e-6)


def test_top_k_beyond_the_classes_gives_every_class_and_tta_averages_the_views(finished_run, images):
    from headstart.recipes import trained

    folder, _ = images
    plain = predict.predict(finished_run, [str(folder)], top_k=50)
    assert {key for key in plain[0] if key.startswith("class_")} == {f"class_{k}" for k in range(1, 6)}
    assert all(sum(row[f"probability_{k}"] for k in range(1, 6)) == pytest.approx(1, abs=1e-5) for row in plain)
    averaged = predict.predict(finished_run, [str(folder)], top_k=50, tta=True)
    assert [row["path"] for row in averaged] == [row["path"] for row in plain]
    model = trained.load(finished_run)
    decoded = predict.read_images([row["path"] for row in averaged], model.image_size, model.channels)
    expected = np.mean([model.probabilities(view) for view in trained.tta_views(decoded)], axis=0)
    for row, probabilities in zip(averaged, expected):
        got = {row[f"class_{k}"]: row[f"probability_{k}"] for k in range(1, 6)}
        assert got == pytest.approx(dict(zip(model.class_names, probabilities)), abs=2e-6)


@pytest.mark.parametrize("extra, words", [
    (["{tmp}/none_here/*.png"], "no file, folder or glob match"),
    (["{empty}"], "no images"),
    (["{images}", "--top-k", "0"], "--top-k"),
    (["{images}", "--output", "{existing}"], "already exists"),
    (["{images}", "--output", "{tmp}"], "is a folder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(extra, words, finished_run, images, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)   # where the default predictions.csv would go
    (tmp_path / "empty").mkdir()
    existing = tmp_path / "existing.csv"
    existing.write_text("mine\n")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    fill = dict(tmp=tmp_path, empty=tmp_path / "empty", images=images[0], existing=existing)
    assert main(["predict", str(finished_run), *(arg.format(**fill) for arg in extra)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("headstart: error:") and words in error and len(error.splitlines()) == 1
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before and existing.read_text() == "mine\n"


def test_predict_needs_a_finished_run(tmp_path, images, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "finetune" / "unfinished"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    assert main(["predict", str(run), str(images[0])]) == 2
    error = capsys.readouterr().err
    assert "not a finished run" in error and "--resume" in error
    assert not (tmp_path / "predictions.csv").exists()
