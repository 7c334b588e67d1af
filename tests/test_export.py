"""`headstart export`: each format round-trips through its own runtime on raw uint8 images, the
parity check refuses an altered artifact, labels.txt follows the run's class order, and bad
input is one line, exit 2, nothing written.

The reference everywhere is the run's Keras serving model (raw images -> logits) with the
temperature read from model.json and the softmax done here in NumPy: nothing of the export
code path (its `Calibrated` layer, its converters) is trusted.
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from headstart.recipes import cli, export, trained


@pytest.fixture(scope="module")
def run_folder(finished_run, tmp_path_factory):
    """A copy of conftest's finished tiny run (exports write into RUN/export/)."""
    return shutil.copytree(finished_run, tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def held_out(run_folder):
    """(uint8 test images, labels, reference probabilities) of the run."""
    model = trained.load(run_folder)
    images, labels = [], []
    for batch_images, batch_labels in model.splits().test:
        images.append(np.asarray(batch_images).astype(np.uint8))
        labels.append(np.asarray(batch_labels))
    images = np.concatenate(images)
    return images, np.concatenate(labels), reference_probabilities(run_folder, images)


def reference_probabilities(run_folder, images):
    """softmax(logits / T) in NumPy, float64: the Keras serving model's logits, model.json's T."""
    model = trained.load(run_folder)
    logits = np.asarray(model.serving(images.astype(np.float32), training=False), np.float64)
    scaled = logits / json.loads((run_folder / "model.json").read_text())["temperature"]
    exponentials = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def snapshot(folder):
    """Every file and folder under `folder` (hidden ones too), with each file's bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def litert_probabilities(path, images):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return np.concatenate([runner(image=images[start:start + 16])["output_0"] for start in range(0, len(images), 16)])


def onnx_probabilities(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def encoded(image, file_format):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=file_format)
    return buffer.getvalue()


def check_folder(output, run_folder, artifact):
    """labels.txt in the run's class order, the model card, the artifact; nothing else, no leftovers."""
    names = json.loads((run_folder / "model.json").read_text())["class_names"]
    assert sorted(path.name for path in output.iterdir()) == sorted([artifact, "labels.txt", "model_card.md"])
    assert (output / "labels.txt").read_text().splitlines() == names
    card = (output / "model_card.md").read_text()
    for words in ("resnet8", "digits", "temperature", "Parity", "accuracy", "UTC"):
        assert words in card
    assert not [path for path in output.parent.iterdir() if path.name.startswith(".")]   # no temporary folder


# ## Round trips

def test_saved_model_round_trip_on_uint8_images_and_encoded_bytes(run_folder, held_out, tmp_path):
    import tensorflow as tf

    from headstart.recipes.data.pipeline import image_from_bytes

    images, labels, expected = held_out
    output = tmp_path / "saved_model"
    result = export.export(run_folder, format="saved_model", output=output, min_accuracy=0.0)
    check_folder(output, run_folder, "saved_model")
    loaded = tf.saved_model.load(str(output / "saved_model"))
    assert set(loaded.signatures) >= {"serving_default", "serve", "serve_bytes"}
    got = loaded.signatures["serving_default"](image=tf.constant(images))["probabilities"].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=export.TOLERANCES[("saved_model", None)], rtol=0)
    assert result["parity"]["passed"] and result["parity"]["max_abs_difference"] <= 1e-5
    assert result["accuracy"] == pytest.approx(np.mean(expected.argmax(1) == labels))

    # Files of any size: a 3x larger PNG and JPEG of the first images, decoded and resized as in training.
    files = [encoded(np.repeat(np.repeat(image, 3, axis=0), 3, axis=1), file_format)
             for image in images[:4] for file_format in ("PNG", "JPEG")]
    as_trained = np.stack([image_from_bytes(tf.constant(data), (8, 8), 3).numpy() for data in files])
    got = loaded.signatures["serve_bytes"](image_bytes=tf.constant(files))["probabilities"].numpy()
    np.testing.assert_allclose(got, reference_probabilities(run_folder, as_trained), atol=1e-5, rtol=0)


@pytest.mark.parametrize("quantize", [None, "float16"])
def test_litert_float_round_trip(run_folder, held_out, tmp_path, quantize):
    images, _, expected = held_out
    output = tmp_path / "litert"
    export.export(run_folder, format="litert", quantize=quantize, output=output)
    check_folder(output, run_folder, "model.tflite")
    got = litert_probabilities(output / "model.tflite", images)
    tolerance = export.TOLERANCES[("litert", quantize)]
    np.testing.assert_allclose(got, expected, atol=tolerance, rtol=0)
    # The same top class wherever Keras' top two are further apart than the differences allowed.
    ordered = np.sort(expected, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 2 * tolerance
    assert clear.sum() > len(images) / 2
    np.testing.assert_array_equal(got[clear].argmax(1), expected[clear].argmax(1))


def test_litert_int8_round_trip_reports_agreement_and_accuracy_drop(run_folder, held_out, tmp_path):
    images, labels, expected = held_out
    output = tmp_path / "litert-int8"
    result = export.export(run_folder, format="litert", quantize="int8", output=output)
    check_folder(output, run_folder, "model.tflite")
    float32_bytes = 4 * trained.load(run_folder).serving.count_params()
    assert (output / "model.tflite").stat().st_size < float32_bytes / 2   # int8 weights: a quarter of float32's
    got = litert_probabilities(output / "model.tflite", images)
    agree = got.argmax(1) == expected.argmax(1)
    assert agree.mean() >= 0.8
    # Probabilities move by int8 steps, not by the ~0.5 a wrong artifact gives.
    assert np.abs(got - expected).max() < 0.2
    parity = result["parity"]
    assert parity["top1_agreement"] == pytest.approx(agree.mean())
    keras_accuracy, int8_accuracy = np.mean(expected.argmax(1) == labels), np.mean(got.argmax(1) == labels)
    assert parity["accuracy_drop"] == pytest.approx(keras_accuracy - int8_accuracy)
    assert f"(drop {keras_accuracy - int8_accuracy:+.4f})" in (output / "model_card.md").read_text()


def test_onnx_round_trip_from_the_command_line(run_folder, held_out, capsys):
    images, _, expected = held_out
    assert cli.main(["export", str(run_folder), "--format", "onnx"]) == 0
    output = run_folder / "export" / "onnx"   # the default place
    check_folder(output, run_folder, "model.onnx")
    got = onnx_probabilities(output / "model.onnx", images)
    np.testing.assert_allclose(got, expected, atol=export.TOLERANCES[("onnx", None)], rtol=0)
    printed = capsys.readouterr().out
    assert "parity onnx: max abs difference" in printed and "top-1 agreement 1.0000" in printed
    assert f"tolerance {export.TOLERANCES[('onnx', None)]:g}" in printed and str(output) in printed


def test_labels_follow_the_runs_class_order_not_sorted(run_folder, tmp_path):
    """A run whose outputs are recorded as 9, 8, 7, 6, 5: labels.txt says so, and label i names output i."""
    shuffled = shutil.copytree(run_folder, tmp_path / "reversed", ignore=shutil.ignore_patterns("export"))
    info = json.loads((shuffled / "model.json").read_text())
    info["class_names"] = info["class_names"][::-1]
    (shuffled / "model.json").write_text(json.dumps(info))
    output = tmp_path / "onnx"
    export.export(shuffled, format="onnx", output=output)
    labels = (output / "labels.txt").read_text().splitlines()
    assert labels == ["9", "8", "7", "6", "5"]
    model = trained.load(shuffled)
    images = np.concatenate([np.asarray(batch).astype(np.uint8) for batch, _ in model.splits().test])
    got = onnx_probabilities(output / "model.onnx", images)
    keras_top = np.asarray(model.serving(images.astype(np.float32))).argmax(1)
    assert [labels[i] for i in got.argmax(1)] == [model.class_names[i] for i in keras_top]


# ## Refusals: nothing left behind

def altered(change):
    """`export.artifact_model` with `change` applied to the model it builds: a broken artifact."""
    import keras

    real = export.artifact_model

    def artifact_model(model):
        probabilities = real(model)
        return keras.Model(probabilities.inputs, change(probabilities.outputs[0]))

    return artifact_model


def _reversed_classes(probabilities):
    import keras

    return keras.ops.flip(probabilities, axis=-1)


def _wrong_temperature(probabilities):
    import keras

    return keras.ops.softmax(keras.ops.log(probabilities) * 1.5, axis=-1)   # T / 1.5 instead of T


ALTERATIONS = {"classes in reverse order": _reversed_classes, "a wrong temperature": _wrong_temperature}


@pytest.mark.parametrize("alteration", ALTERATIONS)
def test_parity_check_refuses_an_altered_artifact(run_folder, monkeypatch, capsys, alteration):
    output = run_folder / "export" / "litert"
    if not output.exists():   # a good export first: a refused --overwrite must keep it
        assert cli.main(["export", str(run_folder), "--format", "litert", "--quiet"]) == 0
    before = snapshot(run_folder)
    capsys.readouterr()
    monkeypatch.setattr(export, "artifact_model", altered(ALTERATIONS[alteration]))
    assert cli.main(["export", str(run_folder), "--format", "litert", "--overwrite"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headstart: error: parity check failed: parity litert:")
    assert "not exported" in lines[0] and "Traceback" not in captured.err
    assert snapshot(run_folder) == before   # the earlier export intact, no temporary folder


def test_a_converter_error_is_one_line_and_leaves_nothing(run_folder, monkeypatch, capsys):
    def failing_converter(keras_model, path, model):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"half written")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(export, "_write_saved_model", failing_converter)
    before = snapshot(run_folder)
    assert cli.main(["export", str(run_folder), "--format", "saved_model"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["headstart: error: the saved_model converter failed (RuntimeError: No space left on device); "
                     "not exported (--verbose shows its log)"]
    assert snapshot(run_folder) == before


def test_the_help_states_the_tolerances_in_force():
    doc = export.__doc__
    stated = {float(number) for number in re.findall(r"\b\d+e-\d+\b", doc)}
    for (format, quantize), tolerance in export.TOLERANCES.items():
        assert tolerance in stated, (format, quantize)
    assert f"{export.INT8_MIN_AGREEMENT:.0%}" in doc and f"up to {export.PARITY_IMAGES}" in doc


def test_min_accuracy_gate_refuses_before_converting(run_folder, held_out, capsys):
    _, labels, expected = held_out
    accuracy = np.mean(expected.argmax(1) == labels)
    assert accuracy < 0.95
    before = snapshot(run_folder)
    assert cli.main(["export", str(run_folder), "--format", "saved_model", "--output",
                     str(run_folder / "gated"), "--min-accuracy", "0.95"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"headstart: error: accuracy {accuracy:.4f} on the test split ({len(labels)} images) is below "
                     "--min-accuracy 0.95: not exported"]
    assert snapshot(run_folder) == before


# ## Bad input: one line, exit 2, nothing written, no TensorFlow

def _unfinished(root):
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.json").write_text("{}")
    return root / "unfinished"


def _no_model(root):
    (root / "no_model").mkdir()
    (root / "no_model" / "metrics.json").write_text("{}")
    (root / "no_model" / "config.json").write_text("{}")
    return root / "no_model"


def _info_without_model(root, run_folder):
    folder = root / "info_only"
    folder.mkdir()
    for name in ("metrics.json", "config.json", "model.json"):
        shutil.copy(run_folder / name, folder / name)
    return folder


def _existing_output(root, run_folder):
    (root / "taken").mkdir()
    return run_folder


BAD_INPUTS = {
    "not a run folder": (lambda root, run: [str(root / "nowhere"), "--format", "onnx"], "is not a run folder"),
    "an unfinished run": (lambda root, run: [str(_unfinished(root)), "--format", "onnx"], "is not a finished run"),
    "a run without a model": (lambda root, run: [str(_no_model(root)), "--format", "onnx"], "holds no model"),
    "model.json but no model.keras": (lambda root, run: [str(_info_without_model(root, run)), "--format", "onnx"],
                                      "no model.keras"),
    "no run given": (lambda root, run: ["--format", "onnx"], "give the run to export"),
    "no format given": (lambda root, run: [str(run)], "--format must be one of saved_model, litert, onnx"),
    "unknown format": (lambda root, run: [str(run), "--format", "coreml"], "invalid choice: 'coreml'"),
    "saved_model cannot quantize": (lambda root, run: [str(run), "--format", "saved_model", "--quantize", "int8"],
                                    "saved_model is exported in float32 only"),
    "onnx cannot quantize": (lambda root, run: [str(run), "--format", "onnx", "--quantize", "float16"],
                             "--format litert takes float16 or int8"),
    "unknown quantization": (lambda root, run: [str(run), "--format", "litert", "--quantize", "int4"],
                             "invalid choice: 'int4'"),
    "min accuracy above 1": (lambda root, run: [str(run), "--format", "onnx", "--min-accuracy", "1.5"],
                             "--min-accuracy is an accuracy, in [0, 1]"),
    "min accuracy below 0": (lambda root, run: [str(run), "--format", "onnx", "--min-accuracy=-0.1"],
                             "--min-accuracy is an accuracy, in [0, 1]"),
    "min accuracy not a number": (lambda root, run: [str(run), "--format", "onnx", "--min-accuracy", "nan"],
                                  "--min-accuracy is an accuracy"),
    "existing output": (lambda root, run: [str(_existing_output(root, run)), "--format", "onnx", "--output",
                                           str(root / "taken")], "exists: pass --overwrite"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_nothing_written(run_folder, tmp_path, capsys, case):
    arguments, words = BAD_INPUTS[case]
    argv = ["export", *arguments(tmp_path, run_folder)]
    before, run_before = snapshot(tmp_path), snapshot(run_folder)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headstart: error:") and words in lines[0], captured.err
    assert snapshot(tmp_path) == before and snapshot(run_folder) == run_before


def test_a_missing_runtime_says_how_to_install_it(run_folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # how Python marks a module as not importable
    before = snapshot(run_folder)
    assert cli.main(["export", str(run_folder), "--format", "onnx"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ['headstart: error: --format onnx needs onnxruntime: pip install "headstart[export]"']
    assert snapshot(run_folder) == before


def test_bad_input_is_refused_before_tensorflow_is_imported(run_folder, tmp_path):
    """One process, several refusals: TensorFlow is still not imported after them (each would cost ~10 s)."""
    cases = [[str(tmp_path / "nowhere"), "--format", "onnx"], [str(run_folder), "--format", "coreml"],
             [str(run_folder), "--format", "onnx", "--quantize", "int8"],
             [str(run_folder), "--format", "litert", "--min-accuracy", "2"]]
    driver = ("import json, sys, headstart.recipes.cli as cli; "
              "statuses = [cli.main(['export', *argv]) for argv in json.loads(sys.argv[1])]; "
              "print(statuses, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", driver, json.dumps(cases)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.stdout.strip() == "[2, 2, 2, 2] False", done.stderr
    assert len(done.stderr.strip().splitlines()) == len(cases)
