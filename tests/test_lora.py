"""LoRA (`--lora-rank`): Keras' enable_lora on the chosen dense layers, the rest frozen.

On a tiny ViT config (32 px, patch 8, 2 layers, hidden 32; random weights, no download)
and a small MLP. References: the closed formulas for the LoRA parameter count and the
adapted layer (`x @ (W + alpha / rank * A @ B) + bias`, in NumPy).
"""

import json

import keras
import numpy as np
import pytest

from test_hub_backbones import VIT_CONFIG, images, resnet_preset, vit_preset

RANK = 2


def vit_classifier(rank=RANK, alpha=None, pattern=None, seed=0, classes=3):
    from headstart.models import heads, hub_backbones, lora

    keras.utils.set_random_seed(seed)
    backbone = hub_backbones.build_from_config("ViTBackbone", VIT_CONFIG, 32)
    model = heads.attach_head(backbone, classes, name="vit")
    if rank:
        lora.adapt(model.get_layer("backbone"), rank, alpha, pattern)
    return model


def randomize_adapters(model, seed=1):
    """B starts at zero (the adapted model equals the base): give the matrices values to compare."""
    from headstart.models import lora

    rng = np.random.default_rng(seed)
    for variable in lora.lora_variables(model):
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))


def test_trainable_weights_are_exactly_the_lora_matrices_and_the_head():
    from headstart.models import lora

    model = vit_classifier()
    lora.train_adapters(model)
    head = model.get_layer("head")
    adapted = [layer for layer in model.get_layer("backbone")._flatten_layers() if getattr(layer, "lora_enabled", 0)]
    # The default on a transformer: each block's query and value projections.
    assert sorted(layer.path for layer in adapted) == [f"transformer_block_{b}/mha/{p}" for b in (1, 2)
                                                       for p in ("query", "value")]
    expected = {id(v) for v in lora.lora_variables(model)} | {id(v) for v in head.weights}
    assert {id(v) for v in model.trainable_weights} == expected
    assert len(model.trainable_weights) == 2 * len(adapted) + 2
    # Each projection's kernel is (hidden 32, heads 2, key dim 16); Keras' EinsumDense LoRA
    # factors it over its last axis: A is (32, 2, r), B is (r, 16).
    hidden, heads = VIT_CONFIG["hidden_dim"], VIT_CONFIG["num_heads"]
    lora_parameters = len(adapted) * (hidden * heads * RANK + RANK * hidden // heads)
    head_parameters = hidden * 3 + 3
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == lora_parameters + head_parameters


def test_an_adapted_dense_layer_computes_the_lora_formula():
    from headstart.models import lora

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    mlp = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Dense(5, name="hidden")(inputs)),
                      name="backbone")
    # An MLP has no attention projections: the default adapts every Dense layer.
    assert sorted(lora.adapt(mlp, rank=2, alpha=6)) == ["hidden", "out"]
    randomize_adapters(mlp)
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    layer = mlp.get_layer("hidden")
    w, b = np.asarray(layer._kernel), np.asarray(layer.bias)
    a, bb = np.asarray(layer.lora_kernel_a), np.asarray(layer.lora_kernel_b)
    np.testing.assert_allclose(np.asarray(layer(x)), x @ (w + 6 / 2 * a @ bb) + b, rtol=1e-5, atol=1e-5)


def test_training_moves_the_adapters_and_never_the_frozen_base(tmp_path):
    from headstart.models import lora
    from headstart.recipes import data, engine

    splits = data.load("digits", classes="target", labels_per_class=5, image_size=32, channels=3,
                       preprocess=lambda images: images / 255.0, seed=0)
    model = vit_classifier(classes=splits.num_classes)
    backbone = model.get_layer("backbone")
    base = {v.path: np.asarray(v).copy() for v in backbone.weights if "lora_kernel" not in v.path}
    adapters = {v.path: np.asarray(v).copy() for v in lora.lora_variables(backbone)}
    result = engine.fine_tune(lambda: model, splits, head_steps=2, finetune_steps=4, learning_rate=1e-2,
                              finetune_learning_rate=1e-2, lora=True, options=engine.TrainingOptions(
                                  progress="quiet", patience=100))
    assert [phase["name"] for phase in result.phases] == ["head", "lora"]
    after = {v.path: np.asarray(v) for v in backbone.weights}
    unchanged = [path for path, value in base.items() if np.array_equal(after[path], value)]
    assert unchanged == list(base), "a frozen base weight changed"
    assert any(not np.array_equal(after[path], value) for path, value in adapters.items())


def test_a_lora_model_round_trips_through_keras_with_the_same_outputs(tmp_path):
    from headstart import models

    model = vit_classifier()
    randomize_adapters(model)
    batch = images() / 255.0
    model.save(tmp_path / "lora.keras")
    models.register_keras_objects(tmp_path / "lora.keras")
    loaded = keras.saving.load_model(tmp_path / "lora.keras", compile=False)
    # Keras saves each adapter merged into its kernel: the same function, no LoRA matrices left.
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), rtol=1e-4, atol=1e-5)


def test_the_saved_adapter_applied_to_a_fresh_base_gives_the_same_outputs(tmp_path):
    from headstart.models import lora

    model = vit_classifier(alpha=4)
    randomize_adapters(model)
    lora.save_adapter(model.get_layer("backbone"), tmp_path / lora.ADAPTER_FILE)
    import h5py

    datasets = []
    with h5py.File(tmp_path / lora.ADAPTER_FILE) as file:
        file.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
    # The adapter alone: two matrices per adapted layer, nothing of the base.
    assert sorted(datasets) == sorted(f"transformer_block_{b}/mha/{p}/lora_kernel_{m}" for b in (1, 2)
                                      for p in ("query", "value") for m in "ab")
    fresh = vit_classifier(rank=None)   # the same seed: the same base and head weights, no LoRA
    batch = images() / 255.0
    assert not np.allclose(np.asarray(fresh(batch)), np.asarray(model(batch)), atol=1e-4)
    loaded = lora.load_adapter(fresh.get_layer("backbone"), tmp_path / lora.ADAPTER_FILE)
    assert len(loaded) == 4
    np.testing.assert_allclose(np.asarray(fresh(batch)), np.asarray(model(batch)), rtol=1e-5, atol=1e-6)


def test_no_layer_to_adapt_is_refused_with_what_exists():
    from headstart.models import hub_backbones, lora
    from test_hub_backbones import RESNET_CONFIG

    with pytest.raises(ValueError, match="no Dense or EinsumDense layers.*LoRA only for dense layers"):
        lora.targets(hub_backbones.build_from_config("ResNetBackbone", RESNET_CONFIG, 32))
    with pytest.raises(ValueError, match=r"matches none.*attention_output, dense_1, dense_2, key, query, value"):
        lora.targets(vit_classifier(rank=None).get_layer("backbone"), "nothing_like_this")
    # A pattern picks what it names: here every attention projection, output included.
    chosen = lora.targets(vit_classifier(rank=None).get_layer("backbone"), r"mha/")
    assert len(chosen) == 8


def test_finetune_with_lora_end_to_end_writes_the_adapter_and_a_merged_model(tmp_path, monkeypatch, capsys):
    from headstart.models import lora
    from headstart.recipes import network, trained
    from headstart.recipes.cli import main

    folder, _ = vit_preset(tmp_path / "vit_tiny")
    monkeypatch.setattr(network, "is_online", lambda *args, **kwargs: False)
    monkeypatch.chdir(tmp_path)
    status = main(["finetune", "--backbone", f"hub:{folder}", "--image-size", "32", "--steps", "2",
                   "--finetune-steps", "3", "--lora-rank", "2", "--lora-alpha", "4", "--no-baselines",
                   "--name", "lora", "--quiet"])
    assert status == 0
    assert "head then LoRA rank 2" in capsys.readouterr().out
    run = tmp_path / "runs" / "finetune" / "lora"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [phase["name"] for phase in metrics["phases"]] == ["head", "lora"]
    # best.keras loads; the adapter applied to the same base backbone gives its outputs.
    from headstart import models
    from headstart.models import backbones

    models.register_keras_objects(run / "best.keras")
    network_model = keras.saving.load_model(run / "best.keras", compile=False)
    base = backbones.build_classifier(f"hub:{folder}", 5, 32, weights="preset")
    base.get_layer("head").set_weights(network_model.get_layer("head").get_weights())
    lora.load_adapter(base.get_layer("backbone"), run / lora.ADAPTER_FILE)
    batch = images() / 255.0
    np.testing.assert_allclose(np.asarray(base(batch)), np.asarray(network_model(batch)), rtol=1e-4, atol=1e-5)
    # model.keras (what predict and export read) holds the merged network: the same logits on raw images.
    served = trained.load(run)
    np.testing.assert_allclose(served.logits(images()), np.asarray(network_model(batch)), rtol=1e-4, atol=1e-4)


def test_lora_on_a_convolutional_hub_backbone_is_refused(tmp_path):
    from headstart.recipes.cli import build_parser
    from headstart.recipes.errors import UsageError
    from headstart.recipes import finetune

    folder, _ = resnet_preset(tmp_path / "resnet_tiny")
    args = build_parser().parse_args(["finetune", "--backbone", f"hub:{folder}", "--image-size", "32",
                                      "--lora-rank", "2", "--runs-dir", str(tmp_path / "runs")])
    with pytest.raises(UsageError, match="no Dense or EinsumDense layers"):
        finetune.validate(args)
    assert not (tmp_path / "runs").exists()
