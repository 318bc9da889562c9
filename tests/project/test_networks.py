"""Project networks: the reference MobileNetV2 sizes, batch norm per mode, feature shapes."""

import numpy as np
import pytest

from project.networks import NETWORKS, layers
from tests.helpers import tf

v1 = tf.compat.v1


def parameter_count(variables):
    return sum(int(np.prod(variable.shape)) for variable in variables)


@pytest.mark.parametrize("width, trainable, total, feature_channels", [
    (1.0, 2_223_872, 2_257_984, 1280),
    (0.35, 396_128, 410_208, 1280),
    (1.4, 4_315_776, 4_363_712, 1792),
])
def test_mobilenet_v2_has_the_reference_sizes(width, trainable, total, feature_channels):
    """Same counts as Keras' MobileNetV2(include_top=False, alpha=width) at 224x224."""
    images = v1.placeholder(tf.float32, [None, 224, 224, 3])
    outputs = NETWORKS["mobilenet_v2"](images, True, {"width_multiplier": width})
    assert outputs["default"].shape.as_list() == [None, feature_channels]
    assert outputs["mobilenet_v2/features"].shape.as_list() == [None, 7, 7, feature_channels]
    assert [outputs[f"mobilenet_v2/stage{stage}"].shape.as_list()[1] for stage in range(7)] == [112, 56, 28, 14, 14, 7, 7]
    assert parameter_count(v1.trainable_variables()) == trainable
    assert parameter_count(v1.global_variables()) == total


@pytest.mark.parametrize("is_training, update_ops", [(True, 10), (False, 0)])
def test_small_cnn_gives_64_features_at_any_size(is_training, update_ops):
    """Five batch norms, each updating two moving averages in training only."""
    images = tf.random.uniform([2, 40, 24, 3], seed=0)
    outputs = NETWORKS["small_cnn"](images, is_training, {})
    assert len(v1.get_collection(v1.GraphKeys.UPDATE_OPS)) == update_ops
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        values = session.run(outputs)
    assert values["default"].shape == (2, 64)
    assert np.all(np.isfinite(values["default"]))
    assert {name: value.shape for name, value in values.items() if name != "default"} == {
        "small_cnn/conv0": (2, 40, 24, 16), "small_cnn/conv1": (2, 20, 12, 32), "small_cnn/conv2": (2, 20, 12, 32),
        "small_cnn/conv3": (2, 10, 6, 64), "small_cnn/conv4": (2, 10, 6, 64)}


def test_batch_norm_uses_batch_statistics_in_training_and_moving_averages_otherwise():
    activations = np.random.RandomState(0).normal(3.0, 2.0, [4, 2, 2, 3]).astype(np.float32)
    trained = layers.batch_norm(tf.constant(activations), True, "trained", momentum=0.9, epsilon=1e-3)
    inferred = layers.batch_norm(tf.constant(activations), False, "inferred", epsilon=1e-3)
    variables = {variable.op.name: variable for variable in v1.global_variables()}
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        trained_value, inferred_value = session.run([trained, inferred])
        session.run(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
        moving_mean, moving_variance = session.run(
            [variables["trained/moving_mean"], variables["trained/moving_variance"]]
        )
    mean, variance = activations.mean(axis=(0, 1, 2)), activations.var(axis=(0, 1, 2))
    np.testing.assert_allclose(trained_value, (activations - mean) / np.sqrt(variance + 1e-3), atol=1e-5)
    np.testing.assert_allclose(inferred_value, activations / np.sqrt(1 + 1e-3), rtol=1e-6)  # fresh averages: 0 and 1
    np.testing.assert_allclose(moving_mean, 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(moving_variance, 0.9 + 0.1 * activations.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)
