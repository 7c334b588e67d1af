"""L2-SP wired for transfer: the backbone is pulled towards its pretrained weights, the head towards 0."""

import numpy as np
import pytest

from headstart import models
from headstart.models.regularizers import regularize_towards_pretrained
from headstart.recipes import engine
from tests.test_engine import _splits


def _classifier():
    return models.build_resnet((8, 8, 3), 3, stage_blocks=(1, 1), stage_filters=(4, 8))


def _head_kernels(model):
    return [layer.kernel.numpy() for layer in model.get_layer("head").layers if hasattr(layer, "kernel")]


def test_penalty_is_plain_l2_on_the_head_at_the_start_and_grows_with_backbone_distance():
    model = _classifier()
    anchored = regularize_towards_pretrained(model, alpha=0.5, beta=0.01)
    conv = model.get_layer("backbone").get_layer("stage1_block1_1_conv")
    assert anchored == sum(1 for layer in model.get_layer("backbone").layers if hasattr(layer, "kernel"))
    head_l2 = 0.01 * sum(float(np.sum(k ** 2)) for k in _head_kernels(model))
    assert float(sum(model.losses)) == pytest.approx(head_l2, rel=1e-5)

    delta = np.random.default_rng(0).normal(size=conv.kernel.shape).astype("float32") * 0.1
    conv.kernel.assign(conv.kernel.numpy() + delta)
    expected = head_l2 + 0.5 * float(np.sum(delta ** 2))
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_fine_tuning_with_l2sp_stays_closer_to_the_pretrained_backbone():
    distances = {}
    for alpha in (0.0, 10.0):
        model = _classifier()
        start = {v.path: v.numpy().copy() for v in model.get_layer("backbone").trainable_weights}

        def build(model=model, alpha=alpha):
            regularize_towards_pretrained(model, alpha=alpha, beta=0.0)
            return model

        engine.fine_tune(build, _splits(), head_epochs=1, finetune_epochs=3, learning_rate=1e-2,
                         finetune_learning_rate=1e-2, batch_norm="frozen",
                         options=engine.TrainingOptions(patience=10, weight_decay=0.0))
        distances[alpha] = sum(float(np.sum((v.numpy() - start[v.path]) ** 2))
                               for v in model.get_layer("backbone").weights if v.path in start)
    assert distances[10.0] < distances[0.0]
