import os

# Quiet TensorFlow's start-up banners so test failures stay readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CPU-only everywhere; keep thread pools small so the 2-core CI machine is not oversubscribed.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from a clean Keras session with a fixed seed."""
    import keras

    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield
