"""Backbones by name: every one builds at its minimum size, weights load from each kind of
source, and bad options fail early with a message that names the problem."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf

import keras

from headstart import models
from headstart.models import backbone_specs, backbones
from headstart.models.backbones import build_backbone, build_classifier, check_backbone_options, get_spec
from headstart.recipes import network
from headstart.recipes.errors import UsageError

APPLICATIONS = [name for name in backbones.list_backbones() if get_spec(name).family != "own"]
OWN = [name for name in backbones.list_backbones() if get_spec(name).family == "own"]
# The heaviest at their minimum size (3 to 8 s each on 2 CPU cores); CI runs them too.
SLOW = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_m", "efficientnet_v2_l",
        "convnext_base", "convnext_large", "convnext_xlarge", "resnet152", "resnet152_v2", "densenet201",
        "inception_resnet_v2"}
# One backbone per way Keras names its ImageNet file, plus MobileNet's per-size files.
WEIGHTS_FILE_CASES = [
    ("mobilenet", 128), ("mobilenet", 100), ("mobilenet_v2", 96), ("mobilenet_v3_small", 32),
    ("efficientnet_b0", 32), ("efficientnet_v2_b0", 32), ("resnet50", 32), ("resnet50_v2", 32),
    ("densenet121", 32), ("convnext_tiny", 32), ("xception", 71), ("inception_v3", 75), ("vgg19", 32),
]


def _slow_if_heavy(names):
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in names]


def _images(size, channels=3, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, channels)).astype("float32")


def _perturb(model, seed=0):
    """Give every weight a recognisable random value, as training would."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))


def _assert_same_weights(actual, expected):
    actual, expected = actual.get_weights(), expected.get_weights()
    assert len(actual) == len(expected)
    for left, right in zip(actual, expected):
        np.testing.assert_array_equal(left, right)


class _Fetched(Exception):
    """Raised by a fake `get_file` with the file name Keras asked for."""


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "models"


@pytest.fixture
def offline(monkeypatch, empty_cache):
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    return empty_cache


# ## The registry

def test_names_follow_the_conventions():
    names = backbones.list_backbones()
    assert len(names) == len(set(names))
    assert all(name == name.lower() and " " not in name for name in names)
    for name in ("mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                 "efficientnet_b7", "efficientnet_v2_b3", "efficientnet_v2_s", "efficientnet_v2_l", "resnet50",
                 "resnet101_v2", "densenet201", "convnext_xlarge", "xception", "inception_v3", "vgg16", "vgg19"):
        assert name in APPLICATIONS, name
    # Keras' ImageNet ResNet-50 takes the shared name; every other own model keeps its registry name.
    assert get_spec("resnet50").family == "resnet"
    assert set(OWN) == {"resnet8", "resnet14", "resnet20", "resnet32", "resnet18", "resnet34", "cnn",
                        "autoencoder_conv", "autoencoder_dense"}
    assert set(OWN) <= set(models.list_models())


def test_specs_describe_inputs_and_weights():
    for name in APPLICATIONS:
        spec = get_spec(name)
        assert spec.channels == (3,) and spec.has_imagenet_weights
        assert spec.min_size <= spec.default_size and spec.max_size is None
    for name in OWN:
        spec = get_spec(name)
        assert spec.channels == (1, 3) and not spec.has_imagenet_weights
    assert (get_spec("xception").min_size, get_spec("inception_v3").min_size) == (71, 75)
    assert get_spec("efficientnet_b7").default_size == 600
    assert get_spec("mobilenet_v2").imagenet_file_for(160).endswith("_1.0_160_no_top.h5")
    assert get_spec("mobilenet_v2").imagenet_file_for(150).endswith("_1.0_224_no_top.h5")


def _fresh_python(code, *args):
    """Run `code` in a new interpreter (nothing imported yet); returns its stdout."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    finished = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def test_the_registry_imports_without_keras_or_tensorflow():
    # What lets every verb refuse a bad --backbone / --image-size / --weights before TensorFlow starts.
    output = _fresh_python(
        "import sys, json; from headstart.models import backbone_specs as specs; "
        "spec = specs.check_backbone_options('mobilenet_v2', 96, None); "
        "print(json.dumps([spec.min_size, len(specs.list_backbones()), "
        "[name for name in ('keras', 'tensorflow') if name in sys.modules]]))")
    min_size, count, imported = json.loads(output)
    assert (min_size, count) == (32, len(backbones.list_backbones()))
    assert imported == []


def test_list_backbones_prints_the_registry_without_tensorflow():
    output = _fresh_python("import sys, headstart.recipes.cli as cli; status = cli.main(['list', 'backbones']); "
                           "print('TF' if 'tensorflow' in sys.modules else 'noTF'); sys.exit(status)")
    lines = output.splitlines()
    assert lines[-1] == "noTF"
    registry, _, hub = "\n".join(lines[:-1]).partition("\n\n")   # the registry, then the KerasHub families
    rows = {line.split()[0]: line.split()[1:] for line in registry.splitlines()[1:]}
    assert list(rows) == backbones.list_backbones()
    for name, (family, min_size, default_size) in rows.items():
        spec = get_spec(name)
        assert (family, int(min_size), int(default_size)) == (spec.family, spec.min_size, spec.default_size)
    from headstart.models import hub_presets

    hub_rows = [line.split() for line in hub.splitlines()[2:]]
    assert hub_rows == [[family, kind, str(count)] for family, kind, count in hub_presets.families()]


def test_backbones_builds_from_the_registry_table():
    """One table: the Keras side re-exports the registry's specs, it keeps no copy of its own."""
    assert backbones.list_backbones() == backbone_specs.list_backbones()
    for name in backbones.list_backbones():
        assert get_spec(name) is backbone_specs.get_spec(name)
    assert backbones.check_backbone_options is backbone_specs.check_backbone_options


def test_registry_agrees_with_the_builders():
    from headstart.models.resnet import PRESETS

    # The own ResNets are the builder's presets (but resnet50, Keras' name), with its stage count.
    resnets = [name for name in OWN if name.startswith("resnet")]
    assert resnets == [name for name in PRESETS if name not in APPLICATIONS]
    for name in resnets:
        assert get_spec(name).min_size == 2 ** (len(PRESETS[name][1]) - 1), name
    # Every keras.applications spec names a constructor and a preprocess_input Keras has.
    for name in APPLICATIONS:
        spec = get_spec(name)
        assert callable(getattr(keras.applications, spec.constructor)), name
        assert callable(getattr(keras.applications, spec.preprocess_module).preprocess_input), name


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "xception", "resnet8", "cnn",
                                  "autoencoder_conv"])
def test_the_registry_minimum_size_is_the_smallest_keras_builds(name):
    """The registry's sizes, checked against Keras itself (every backbone is built below as well)."""
    spec = get_spec(name)
    size = spec.min_size
    if spec.family == backbone_specs.OWN:
        model = models.create_model(name, input_shape=(size, size, 3),
                                    **({} if name.startswith("autoencoder") else {"num_classes": 2}))
    else:
        model = getattr(keras.applications, spec.constructor)(include_top=False, weights=None,
                                                              input_shape=(size, size, 3))
    assert model.input_shape == (None, size, size, 3)
    smaller = size - spec.size_multiple
    with pytest.raises(ValueError):
        if spec.family == backbone_specs.OWN:
            models.create_model(name, input_shape=(smaller, smaller, 3))
        else:
            getattr(keras.applications, spec.constructor)(include_top=False, weights=None,
                                                          input_shape=(smaller, smaller, 3))


def test_preprocess_is_looked_up_lazily_and_once_per_family():
    assert get_spec("resnet8").preprocess is backbone_specs.scale_to_unit_interval
    assert get_spec("resnet50").preprocess is get_spec("resnet101").preprocess
    assert get_spec("resnet50").preprocess.__name__ == "resnet_preprocess_input"


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(UsageError, match="did you mean mobilenet_v2") as error:
        get_spec("mobilnet_v2")
    assert "backbone='mobilnet_v2'" in str(error.value)
    with pytest.raises(UsageError, match="known backbones: mobilenet, "):
        get_spec("transformer")


# ## Every backbone builds

@pytest.mark.parametrize("name", _slow_if_heavy(APPLICATIONS))
def test_application_builds_at_its_minimum_size(name):
    spec = get_spec(name)
    backbone = build_backbone(name, spec.min_size)
    features = backbone(spec.preprocess(_images(spec.min_size)), training=False)

    assert backbone.name == "backbone"
    assert backbone.input_shape == (None, spec.min_size, spec.min_size, 3)
    assert len(features.shape) == 4 and features.shape[0] == 1
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(features)))
    # The minimum is Keras' own: one pixel less and keras.applications refuses.
    with pytest.raises(ValueError, match=f"at least {spec.min_size}"):
        getattr(keras.applications, spec.constructor)(include_top=False, weights=None,
                                                      input_shape=(spec.min_size - 1, spec.min_size - 1, 3))


@pytest.mark.parametrize("name", OWN)
@pytest.mark.parametrize("channels", [1, 3])
def test_own_backbone_builds_at_its_minimum_size(name, channels):
    spec = get_spec(name)
    backbone = build_backbone(name, spec.min_size, channels=channels)
    features = keras.ops.convert_to_numpy(
        backbone(spec.preprocess(_images(spec.min_size, channels, batch=2)), training=False))

    assert backbone.name == "backbone"
    assert backbone.input_shape == (None, spec.min_size, spec.min_size, channels)
    assert features.shape[0] == 2 and np.all(np.isfinite(features))
    # The minimum is the builder's own: below it, it refuses.
    smaller = spec.min_size - spec.size_multiple
    if smaller >= 1:
        with pytest.raises(ValueError):
            models.create_model(name, input_shape=(smaller, smaller, channels))


def test_application_backbone_is_the_keras_model_renamed():
    backbone = build_backbone("vgg16", 32)
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    # VGG names every layer but its input, which Keras numbers ("input_layer_1").
    assert [layer.name for layer in backbone.layers[1:]] == [layer.name for layer in reference.layers[1:]]
    assert [tuple(weight.shape) for weight in backbone.weights] == [tuple(weight.shape) for weight in reference.weights]


def test_classifier_is_backbone_then_head():
    model = build_classifier("resnet8", num_classes=5, image_size=16, dropout=0.2, hidden_units=(8,))
    assert model.name == "resnet8"
    assert [layer.name for layer in model.layers] == ["image", "backbone", "head"]
    assert model.output_shape == (None, 5)
    assert model.get_layer("head").get_layer("head_hidden1_dense").units == 8

    model = build_classifier("mobilenet_v3_small", num_classes=3, image_size=32)
    assert [layer.name for layer in model.layers[1:]] == ["backbone", "head"]
    assert tuple(model(_images(32), training=False).shape) == (1, 3)


@pytest.mark.parametrize("name", ["mobilenet", "mobilenet_v3_small", "resnet50", "resnet50_v2", "densenet121",
                                  "efficientnet_b0", "convnext_tiny", "vgg16", "resnet8"])
def test_preprocess_works_on_numpy_without_touching_it_and_in_tf_data(name):
    preprocess = get_spec(name).preprocess
    images = _images(8, batch=2)
    original = images.copy()

    from_numpy = np.asarray(preprocess(images))
    np.testing.assert_array_equal(images, original)
    from_pipeline = next(iter(tf.data.Dataset.from_tensor_slices(images).batch(2).map(preprocess))).numpy()
    np.testing.assert_allclose(from_pipeline, from_numpy, rtol=1e-6, atol=1e-5)
    assert np.all(np.isfinite(from_numpy))


# ## Cheap checks before building

def test_check_rejects_bad_sizes_and_channels():
    with pytest.raises(UsageError, match="at least 75x75 pixels") as error:
        check_backbone_options("inception_v3", 64, None)
    assert "image_size=64" in str(error.value)
    with pytest.raises(UsageError, match="positive integer"):
        check_backbone_options("resnet8", 0, None)
    with pytest.raises(UsageError, match="multiple of 4"):
        check_backbone_options("autoencoder_conv", 30, None)
    with pytest.raises(UsageError, match="3 channels"):
        check_backbone_options("mobilenet_v2", 96, None, channels=1)
    assert check_backbone_options("resnet8", 4, None, channels=1) is get_spec("resnet8")


def test_check_rejects_missing_and_unknown_weights_files(tmp_path):
    missing = tmp_path / "nowhere" / "best.keras"
    with pytest.raises(UsageError, match="does not exist") as error:
        check_backbone_options("resnet8", 16, str(missing))
    assert str(missing) in str(error.value)
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(UsageError, match=r"\.keras, \.weights\.h5 or \.h5"):
        check_backbone_options("resnet8", 16, str(tmp_path / "weights.npz"))


def test_imagenet_for_an_own_backbone_is_refused():
    with pytest.raises(UsageError, match="resnet8 is one of the project's own backbones and has no ImageNet"):
        check_backbone_options("resnet8", 32, "imagenet")


# ## ImageNet weights offline

def test_imagenet_offline_and_not_cached_fails_at_once_saying_what_to_do(offline, monkeypatch):
    # "At once": no download and no connection is even attempted (a download would wait
    # for the network's time-outs before failing).
    import socket
    import urllib.request

    def attempted(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", attempted)
    monkeypatch.setattr(urllib.request, "urlopen", attempted)
    monkeypatch.setattr(keras.utils, "get_file", attempted)
    with pytest.raises(UsageError) as error:
        check_backbone_options("mobilenet_v2", 160, "imagenet")
    message = str(error.value)

    assert "\n" not in message
    assert "ImageNet weights for mobilenet_v2 are not cached and cannot be downloaded (no network)" in message
    assert ("keras.applications.MobileNetV2(include_top=False, weights='imagenet', input_shape=(160, 160, 3))"
            in message)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5" in message
    assert str(offline) in message and "--weights PATH" in message
    # Building checks first, so it fails the same way before any layer is made.
    with pytest.raises(UsageError, match="not cached and cannot be downloaded"):
        build_backbone("mobilenet_v2", 160, weights="imagenet")


def test_imagenet_cached_passes_offline_without_asking_the_network(monkeypatch, empty_cache):
    def fail(*args, **kwargs):
        raise AssertionError("the network should not be asked when the weights are cached")

    monkeypatch.setattr(network, "is_online", fail)
    empty_cache.mkdir(parents=True)
    (empty_cache / get_spec("efficientnet_b0").imagenet_file_for(224)).write_bytes(b"")
    assert check_backbone_options("efficientnet_b0", 224, "imagenet").name == "efficientnet_b0"


def test_weights_cache_dir_is_where_keras_downloads_to(monkeypatch):
    from keras.src.backend import config   # what keras.utils.get_file reads

    assert backbones.weights_cache_dir() == Path(config.keras_home()) / "models"
    monkeypatch.setenv("KERAS_HOME", "/somewhere/keras")
    assert str(backbones.weights_cache_dir()) == "/somewhere/keras/models"


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
@pytest.mark.parametrize("name, size", WEIGHTS_FILE_CASES)
def test_imagenet_file_name_is_the_one_keras_fetches(monkeypatch, empty_cache, name, size):
    def fake_get_file(fname, *args, **kwargs):
        raise _Fetched(fname)

    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: True)
    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", fake_get_file)
    with pytest.raises(_Fetched) as fetched:
        build_backbone(name, size, weights="imagenet")
    assert fetched.value.args[0] == get_spec(name).imagenet_file_for(size)


def test_failed_download_is_a_usage_error(monkeypatch, empty_cache):
    def unreachable(fname, origin, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno 101] Network is unreachable")

    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: True)
    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", unreachable)
    with pytest.raises(UsageError, match=r"cannot be downloaded \(the download failed\)"):
        build_backbone("vgg16", 32, weights="imagenet")


# ## Weights from files

@pytest.fixture
def trained_resnet8(tmp_path):
    """A resnet8 classifier with perturbed weights, saved as .keras."""
    model = models.create_model("resnet8", input_shape=(16, 16, 3), num_classes=5)
    _perturb(model)
    path = tmp_path / "resnet8.keras"
    model.save(path)
    return model, path


# Fresh processes loading a `.keras` file saved with every kind of object the project
# registers with Keras, each importing only what that kind of caller imports: the recipes
# (`finetune --weights FILE` loads through `backbones.build_backbone`), and scripts and tests
# that load a run's best.keras whole, compiled.
FRESH_LOADERS = {
    "recipes": "from headstart.models import backbones; "
               "model = backbones.build_backbone('resnet8', 16, weights=path)",
    "keras then models": "import keras; from headstart import models; model = keras.saving.load_model(path)",
    "backbones module": "import headstart.models.backbones, keras; model = keras.saving.load_model(path)",
    "models then register": "from headstart import models; import keras; models.register_keras_objects(); "
                            "model = keras.saving.load_model(path)",
}
FRESH_LOAD = """
import json, sys
path = sys.argv[1]
{load}
import keras, numpy as np
backbone = model if model.name == "backbone" else model.get_layer("backbone")
np.savez(sys.argv[2], *backbone.get_weights())
convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
print(json.dumps({{
    "optimizer": type(getattr(model, "optimizer", None)).__name__,
    "layers": sorted({{type(layer).__module__ + "." + type(layer).__name__ for layer in backbone.layers}}),
    "initializers": sorted({{type(conv.kernel_initializer).__module__ for conv in convs}}),
    "regularizers": sorted({{type(conv.kernel_regularizer).__name__ for conv in convs}}),
}}))
"""


@pytest.fixture(scope="module")
def models_with_every_registered_kind(tmp_path_factory):
    """{shortcut: (model, path)}: resnet8s (our initializers) with L2-SP kernels, compiled with a
    LayerRateOptimizer and trained a step, saved as .keras. Identity shortcuts add ZeroPadChannels
    layers; projection ones are the architecture `build_backbone("resnet8")` takes weights from."""
    from headstart.models.layer_rates import with_layer_rates
    from headstart.models.regularizers import L2SP

    saved = {}
    for shortcut in ("identity", "projection"):
        model = models.create_model("resnet8", input_shape=(16, 16, 3), num_classes=3, shortcut=shortcut,
                                    kernel_regularizer=L2SP(1e-3))
        model.compile(optimizer=with_layer_rates(keras.optimizers.Adam(1e-3), model, decay=0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        # One step of Keras' own train_step, run eagerly: the same step `fit` runs and the same
        # file (weights, optimizer state, compile config), without the ~7 s of tracing it for `fit`.
        model.train_step((tf.constant(_images(16, batch=4)), tf.constant([0, 1, 2, 0])))
        assert int(model.optimizer.iterations.numpy()) == 1
        path = tmp_path_factory.mktemp("saved") / f"{shortcut}.keras"
        model.save(path)
        saved[shortcut] = model, path
    return saved


@pytest.mark.parametrize("loader", list(FRESH_LOADERS))
def test_keras_file_with_every_registered_kind_loads_in_a_fresh_process(models_with_every_registered_kind,
                                                                        tmp_path, loader):
    # The recipes take a backbone's weights into a fresh build of the same architecture.
    model, path = models_with_every_registered_kind["projection" if loader == "recipes" else "identity"]
    weights_path = tmp_path / "loaded.npz"
    facts = json.loads(_fresh_python(FRESH_LOAD.format(load=FRESH_LOADERS[loader]), path, weights_path)
                       .splitlines()[-1])

    loaded = np.load(weights_path)
    expected = model.get_layer("backbone").get_weights()
    assert len(loaded.files) == len(expected)
    for index, value in enumerate(expected):
        np.testing.assert_array_equal(loaded[f"arr_{index}"], value)
    if loader != "recipes":
        assert "headstart.models.resnet.ZeroPadChannels" in facts["layers"]
        assert facts["optimizer"] == "LayerRateOptimizer"
        assert facts["initializers"] == ["headstart.models.initializers"]
        assert facts["regularizers"] == ["L2SP"]


def test_keras_file_gives_the_saved_classifiers_backbone(trained_resnet8):
    model, path = trained_resnet8
    backbone = build_backbone("resnet8", 16, weights=str(path))
    _assert_same_weights(backbone, model.get_layer("backbone"))
    assert backbone.name == "backbone"


def test_keras_file_weights_start_a_backbone_at_another_image_size(trained_resnet8):
    model, path = trained_resnet8
    backbone = build_backbone("resnet8", 32, weights=path)
    assert backbone.input_shape == (None, 32, 32, 3)
    _assert_same_weights(backbone, model.get_layer("backbone"))


def test_classifier_from_keras_file_has_the_backbone_and_a_new_head(trained_resnet8):
    model, path = trained_resnet8
    classifier = build_classifier("resnet8", num_classes=3, image_size=16, weights=path)
    _assert_same_weights(classifier.get_layer("backbone"), model.get_layer("backbone"))
    assert classifier.output_shape == (None, 3)


def test_keras_file_of_an_autoencoder_gives_its_encoder(tmp_path):
    autoencoder = models.create_model("autoencoder_conv", input_shape=(16, 16, 1))
    _perturb(autoencoder)
    path = tmp_path / "autoencoder.keras"
    autoencoder.save(path)

    backbone = build_backbone("autoencoder_conv", 16, weights=path, channels=1)
    _assert_same_weights(backbone, autoencoder.get_layer("encoder"))
    assert backbone.output_shape == (None, 32)


def test_keras_file_of_another_architecture_is_refused(trained_resnet8):
    _, path = trained_resnet8
    with pytest.raises(UsageError, match="does not match backbone resnet14") as error:
        build_backbone("resnet14", 16, weights=path)
    assert str(path) in str(error.value)


def test_weights_file_of_the_backbone_loads(trained_resnet8, tmp_path):
    model, _ = trained_resnet8
    path = tmp_path / "backbone.weights.h5"
    model.get_layer("backbone").save_weights(path)
    _assert_same_weights(build_backbone("resnet8", 16, weights=path), model.get_layer("backbone"))


def test_weights_file_of_a_whole_classifier_loads_its_backbone(trained_resnet8, tmp_path):
    model, _ = trained_resnet8
    path = tmp_path / "classifier.weights.h5"
    model.save_weights(path)
    _assert_same_weights(build_backbone("resnet8", 16, weights=path), model.get_layer("backbone"))


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    other = models.create_model("resnet14", input_shape=(16, 16, 3), num_classes=5).get_layer("backbone")
    path = tmp_path / "resnet14.weights.h5"
    other.save_weights(path)
    with pytest.raises(UsageError, match="does not match backbone resnet8 with inputs 16x16x3") as error:
        build_backbone("resnet8", 16, weights=path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_legacy_h5_weights_load_like_keras_applications_files(tmp_path):
    """keras.applications' ImageNet files are legacy HDF5 weights, matched by layer order."""
    from keras.src.legacy.saving import legacy_h5_format

    source = build_backbone("vgg16", 32)
    _perturb(source)
    path = tmp_path / "vgg16_notop.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)
    _assert_same_weights(build_backbone("vgg16", 32, weights=path), source)
    with pytest.raises(UsageError, match="does not match backbone vgg19"):
        build_backbone("vgg19", 32, weights=path)


def test_legacy_h5_model_file_gives_its_backbone(trained_resnet8, tmp_path):
    model, _ = trained_resnet8
    path = tmp_path / "classifier.h5"
    model.save(path)
    _assert_same_weights(build_backbone("resnet8", 16, weights=path), model.get_layer("backbone"))


def test_unreadable_files_are_usage_errors(tmp_path):
    for file_name in ("broken.keras", "broken.h5", "broken.weights.h5"):
        path = tmp_path / file_name
        path.write_bytes(b"not a model")
        with pytest.raises(UsageError, match=re.escape(str(path))):
            build_backbone("resnet8", 16, weights=path)
