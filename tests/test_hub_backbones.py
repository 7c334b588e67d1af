"""KerasHub backbones (`--backbone hub:PRESET`): found, built, frozen and fine-tuned offline.

Every preset here is a tiny config with random weights (32 px, patch 8, 2 layers, hidden 32
for ViT; a two-stack ResNet), written as a local preset folder by KerasHub's own
`save_to_preset`: nothing is downloaded. The reference for each built backbone is the
KerasHub model itself, fed what its image converter would feed it.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from headstart.recipes.errors import UsageError

VIT_CONFIG = dict(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
RESNET_CONFIG = dict(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
                     stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
                     image_shape=(None, None, 3))
EFFICIENTNET_CONFIG = dict(stackwise_width_coefficients=[0.25] * 2, stackwise_depth_coefficients=[1.0] * 2,
                           stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
                           stackwise_input_filters=[16, 16], stackwise_output_filters=[16, 24],
                           stackwise_expansion_ratios=[1, 2], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
                           stackwise_strides=[1, 2], stackwise_block_types=["v1", "v1"], num_features=64,
                           stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False])
VIT_SCALE, VIT_OFFSET = 1 / 127.5, -1.0   # ViT's converter: pixels to [-1, 1]


def vit_preset(folder):
    """A tiny ViT preset folder (config, random weights, image converter); returns (folder, KerasHub model)."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(**VIT_CONFIG)
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=VIT_SCALE, offset=VIT_OFFSET).save_to_preset(
        str(folder))
    return folder, backbone


def resnet_preset(folder):
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(**RESNET_CONFIG)
    backbone.save_to_preset(str(folder))
    return folder, backbone


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    return {"vit": vit_preset(root / "vit_tiny"), "resnet": resnet_preset(root / "resnet_tiny")}


def images(count=3, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


# ## Finding presets (no Keras)

def test_a_local_preset_is_read_without_importing_keras(presets):
    folder = presets["vit"][0]
    code = ("import sys; from headstart.models import hub_presets as h; p = h.resolve(sys.argv[1]); "
            "print(p.backbone_class, p.family, p.kind, p.image_size, *map(float, p.image_scaling())); "
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, f"hub:{folder}"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == f"ViTBackbone vit transformer 32 {VIT_SCALE} {VIT_OFFSET}"
    assert out[1] == "False False"


def test_a_named_preset_is_found_in_the_kagglehub_cache(tmp_path, monkeypatch):
    from headstart.models import hub_presets
    from headstart.recipes import network

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    name = "vit_base_patch16_224_imagenet"
    family, handle = hub_presets.builtin_presets()[name]
    assert family == "vit" and handle.startswith("kaggle://keras/vit/keras/vit_base_patch16_224_imagenet/")
    # Not cached, offline: the one line says how to fetch it and where it goes.
    with pytest.raises(UsageError) as refused:
        hub_presets.resolve(f"hub:{name}")
    message = str(refused.value)
    assert "cannot be downloaded" in message and "on a machine with internet" in message
    assert "KAGGLEHUB_CACHE" in message and "hub:/path/to/preset" in message and str(tmp_path) in message
    # Cached where kagglehub puts it: found, and read from there.
    cached = tmp_path.joinpath("models", *handle[len("kaggle://"):].split("/"))
    cached.mkdir(parents=True)
    (cached / "config.json").write_text(json.dumps({"class_name": "ViTBackbone", "config": {
        "image_shape": [224, 224, 3], "patch_size": 16}}))
    preset = hub_presets.resolve(f"hub:{name}")
    assert preset.folder == cached and preset.image_size == 224


def test_the_families_listed_are_the_supported_ones_with_their_presets():
    from headstart.models import hub_presets

    families = {family: (kind, count) for family, kind, count in hub_presets.families()}
    assert set(families) == {"vit", "resnet", "efficientnet"}
    assert families["vit"][0] == "transformer" and families["resnet"][0] == "conv"
    assert all(count > 0 for _, count in families.values())


@pytest.mark.parametrize("backbone, words", [
    ("hub:bert_base_en", ("bert preset", "does not fine-tune")),
    ("hub:vit_base_patch16_224_imagenett", ("Unknown KerasHub preset", "did you mean", "vit_base_patch16_224_imagenet")),
    ("hub:./no_such_folder", ("no such preset folder",)),
])
def test_unusable_presets_are_refused(backbone, words):
    from headstart.models import hub_presets

    with pytest.raises(UsageError) as refused:
        hub_presets.resolve(backbone)
    assert all(word in str(refused.value) for word in words), str(refused.value)


def test_a_folder_without_config_or_of_another_task_is_refused(tmp_path):
    from headstart.models import hub_presets

    with pytest.raises(UsageError, match="has no config.json"):
        hub_presets.resolve(f"hub:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"class_name": "GemmaBackbone", "config": {}}))
    with pytest.raises(UsageError, match="GemmaBackbone preset, which headstart does not fine-tune"):
        hub_presets.resolve(f"hub:{tmp_path}")


# ## Building: the same outputs as KerasHub's own model

def test_vit_backbone_is_the_preset_model_with_its_converter_and_class_token(presets):
    from headstart.models import backbones, freezing

    folder, reference = presets["vit"]
    backbone = backbones.build_backbone(f"hub:{folder}", 32, weights="preset")
    batch = images()
    # Our input is scaled to [0, 1] (the data pipeline's); KerasHub's converter takes 0-255.
    ours = np.asarray(backbone(batch / 255.0))
    theirs = np.asarray(reference(batch * VIT_SCALE + VIT_OFFSET))[:, 0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert backbone.output_shape == (None, 32)
    assert freezing.block_names(backbone) == ["transformer_block_1", "transformer_block_2"]


def test_resnet_backbone_keeps_the_presets_layers_flat(presets):
    from headstart.models import backbones, freezing, layer_rates

    folder, reference = presets["resnet"]
    backbone = backbones.build_backbone(f"hub:{folder}", 32, weights="preset")
    batch = images()
    np.testing.assert_allclose(np.asarray(backbone(batch / 255.0)), np.asarray(reference(batch / 255.0)),
                               rtol=1e-4, atol=1e-5)
    assert freezing.block_names(backbone) == ["conv1", "pool1", "stack0", "stack1"]
    assert list(layer_rates.backbone_groups(backbone))[-2:] == ["stack0", "stack1"]
    # weights=None: the same architecture, other (random) weights.
    fresh = backbones.build_backbone(f"hub:{folder}", 32, weights=None)
    assert [w.shape for w in fresh.weights] == [w.shape for w in backbone.weights]
    assert not np.allclose(fresh.get_layer("conv1_conv").kernel, backbone.get_layer("conv1_conv").kernel)


def test_efficientnet_builds_from_config_with_its_blocks():
    from headstart.models import freezing, hub_backbones

    backbone = hub_backbones.build_from_config("EfficientNetBackbone", EFFICIENTNET_CONFIG, 32)
    assert backbone.name == "backbone" and backbone.output_shape[1:3] == (8, 8)
    assert freezing.block_names(backbone, sub_blocks=True)[:4] == ["block1", "block1a", "block2", "block2a"]


def test_unfreezing_from_a_transformer_block_trains_only_the_blocks_above(presets):
    from headstart.models import backbones, freezing

    backbone = backbones.build_backbone(f"hub:{presets['vit'][0]}", 32, weights=None)
    freezing.freeze(backbone)
    assert backbone.trainable_weights == []
    freezing.unfreeze(backbone, from_layer="transformer_block_2")
    block2 = backbone.get_layer("transformer_block_2")
    layer_norm = backbone.layers[-2]
    expected = {id(w) for w in block2.trainable_weights + layer_norm.trainable_weights}
    assert {id(w) for w in backbone.trainable_weights} == expected and expected


def test_a_hub_classifier_round_trips_through_keras_file(presets, tmp_path):
    import keras

    from headstart import models
    from headstart.models import backbones

    model = backbones.build_classifier(f"hub:{presets['vit'][0]}", 3, 32, weights="preset")
    model.save(tmp_path / "m.keras")
    models.register_keras_objects(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    batch = images() / 255.0
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), rtol=1e-5, atol=1e-6)
    assert model.name == "hub_vit_tiny"


# ## Fine-tuning end to end, offline

@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_finetune_a_hub_backbone_offline_a_few_steps(presets, family, tmp_path, monkeypatch, capsys):
    from headstart.recipes import network, trained
    from headstart.recipes.cli import main

    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    monkeypatch.chdir(tmp_path)
    status = main(["finetune", "--backbone", f"hub:{presets[family][0]}", "--image-size", "32", "--steps", "3",
                   "--finetune-steps", "3", "--no-baselines", "--name", family, "--layer-decay", "0.5",
                   "--unfreeze", "transformer_block_2" if family == "vit" else "stack1"])
    assert status == 0
    out = capsys.readouterr().out
    assert "weights preset" in out and out.count("finetune  epoch") == 3
    run = tmp_path / "runs" / "finetune" / family
    metrics = json.loads((run / "metrics.json").read_text())
    assert [phase["name"] for phase in metrics["phases"]] == ["head", "finetune"]
    assert not (run / "lora.weights.h5").exists()
    # The run's complete model loads and predicts (raw 0-255 images in).
    model = trained.load(run)
    probabilities = model.probabilities(images(2).astype("uint8"))
    assert probabilities.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_list_backbones_shows_the_hub_families(capsys):
    from headstart.recipes.cli import main

    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "KerasHub presets" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["vit", "transformer"] == next(row[:2] for row in rows if row and row[0] == "vit")
    assert any(row[:2] == ["efficientnet", "conv"] for row in rows)


def test_an_onnx_export_its_runtime_cannot_run_is_refused_in_one_line(presets, tmp_path, monkeypatch, capsys):
    """tf2onnx writes ViT's exact GELU as `Erfc`, which ONNX Runtime has no kernel for: one line, nothing kept."""
    from headstart.recipes import export, network
    from headstart.recipes.cli import main

    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--backbone", f"hub:{presets['vit'][0]}", "--image-size", "32", "--steps", "1",
                 "--finetune-steps", "0", "--no-baselines", "--name", "v", "--quiet"]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "finetune" / "v"
    before = sorted(path.name for path in run.iterdir())
    assert main(["export", str(run), "--format", "onnx"]) == export.GATE_EXIT_STATUS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the onnx runtime cannot run the converted model" in err
    assert sorted(path.name for path in run.iterdir()) == before


def test_rank_backbones_takes_hub_presets_with_and_without_their_weights(presets, tmp_path, monkeypatch, capsys):
    from headstart.recipes import network
    from headstart.recipes.cli import main

    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    preset = presets["resnet"][0]
    status = main(["rank-backbones", "--backbones", f"hub:{preset},hub:{preset}:none", "--image-size", "32",
                   "--runs-dir", str(tmp_path), "--name", "r", "--quiet"])
    assert status == 0
    ranking = json.loads((tmp_path / "rank-backbones" / "r" / "ranking.json").read_text())["ranking"]
    assert sorted(row["candidate"] for row in ranking) == sorted([f"hub:{preset}:preset", f"hub:{preset}:none"])
