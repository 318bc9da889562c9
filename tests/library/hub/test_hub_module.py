"""library.hub.hub_module: module specs, exports to disk, export from a checkpoint.

The network here is a tiny one of this test module (which is also the ``--networks_package``
of the command-line tests, tests/library/hub/test_write_module.py), so the library is tested without the project.
"""

import os

import numpy as np
import pytest
import tensorflow_hub as hub

from library.configuration.config import POSITIVE, Option
from library.hub import hub_module
from tests.helpers import tf

v1 = tf.compat.v1
IMAGE_SIZE = 8


def tiny_network(images, is_training, params):
    """A 3x3 convolution, scaled by the width multiplier, centred by batch or moving mean."""
    kernel = v1.get_variable("kernel", [3, 3, 3, 4])
    moving_mean = v1.get_variable("moving_mean", [4], initializer=v1.zeros_initializer(), trainable=False)
    activations = tf.nn.conv2d(images, kernel, strides=1, padding="SAME") * params["width_multiplier"]
    if is_training:
        mean = tf.reduce_mean(activations, axis=[0, 1, 2])
        v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, moving_mean.assign(mean, read_value=False))
    else:
        mean = moving_mean
    return tf.reduce_mean(activations - mean, axis=[1, 2])


NETWORKS = {"tiny": tiny_network}
OPTIONS = (Option("width_multiplier", float, 1.0, "scales the features", valid=POSITIVE),)


def tiny_spec(seed=None):
    return hub_module.create_spec(tiny_network, IMAGE_SIZE, {"width_multiplier": 1.0}, seed=seed)


def image_batch():
    return np.random.RandomState(0).uniform(size=[2, IMAGE_SIZE, IMAGE_SIZE, 3]).astype(np.float32)


def run_with_fresh_variables(fetches):
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        return session.run(fetches)


def test_spec_has_a_train_and_a_default_variant_and_tells_its_image_size():
    spec = tiny_spec()
    assert set(spec.get_tags()) == {frozenset(), frozenset({"train"})}
    assert set(spec.get_signature_names()) == {"default", "image_feature_vector"}
    assert hub.get_expected_image_size(spec) == [IMAGE_SIZE, IMAGE_SIZE]
    images = spec.get_input_info_dict()["images"]
    assert (images.dtype, images.get_shape().as_list()) == (tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
    assert spec.get_output_info_dict()["default"].get_shape().as_list() == [None, 4]


def test_only_the_train_variant_updates_moving_averages():
    for tags in (hub_module.TRAIN_TAGS, None):
        hub.Module(tiny_spec(), trainable=True, tags=tags)(image_batch())
    assert len(v1.get_collection(v1.GraphKeys.UPDATE_OPS)) == 1


def test_seed_makes_fresh_variables_reproducible():
    kernels = [hub.Module(tiny_spec(seed), name=f"module{index}").variable_map["kernel"]
               for index, seed in enumerate((7, 7, 8))]
    first, same_seed, other_seed = run_with_fresh_variables(kernels)
    np.testing.assert_array_equal(first, same_seed)
    assert not np.allclose(first, other_seed)


@pytest.mark.parametrize("tags", [None, hub_module.TRAIN_TAGS])
def test_exported_module_gives_the_features_of_the_in_memory_spec(tmp_path, tags):
    spec = tiny_spec(seed=0)
    module_dir = str(tmp_path / "module")
    hub_module.export_spec(spec, module_dir)
    in_memory = hub.Module(spec, tags=tags, name="in_memory")
    v1.train.init_from_checkpoint(os.path.join(module_dir, "variables", "variables"), in_memory.variable_map)
    loaded = hub.Module(module_dir, tags=tags, name="loaded")
    expected, actual = run_with_fresh_variables([in_memory(image_batch()), loaded(image_batch())])
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert np.abs(expected).max() > 1e-3  # not trivially equal
    assert hub.get_expected_image_size(loaded) == [IMAGE_SIZE, IMAGE_SIZE]


def test_export_from_checkpoint_keeps_the_checkpoint_values(tmp_path):
    spec = tiny_spec()
    trained = hub.Module(spec, name="feature_extractor")
    kernel_value = np.random.RandomState(1).normal(size=[3, 3, 3, 4]).astype(np.float32)
    moving_mean_value = np.arange(4, dtype=np.float32)
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        session.run([trained.variable_map["kernel"].assign(kernel_value),
                     trained.variable_map["moving_mean"].assign(moving_mean_value)])
        checkpoint = v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
        expected = session.run(trained(image_batch()))
    hub_module.export_from_checkpoint(spec, checkpoint, str(tmp_path / "module"), "feature_extractor")

    with tf.Graph().as_default():
        loaded = hub.Module(str(tmp_path / "module"))
        actual, loaded_kernel, loaded_mean = run_with_fresh_variables(
            [loaded(image_batch()), loaded.variable_map["kernel"], loaded.variable_map["moving_mean"]]
        )
    np.testing.assert_array_equal(loaded_kernel, kernel_value)
    np.testing.assert_array_equal(loaded_mean, moving_mean_value)
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert not hub_module.has_random_weights(str(tmp_path / "module"))


def test_a_module_of_fresh_variables_says_so_and_one_of_given_values_does_not(tmp_path):
    hub_module.export_spec(tiny_spec(seed=1), str(tmp_path / "fresh"))
    values = {"kernel": np.ones([3, 3, 3, 4], np.float32), "moving_mean": np.full([4], 2.0, np.float32)}
    hub_module.export_spec(tiny_spec(), str(tmp_path / "given"), values)
    assert hub_module.has_random_weights(str(tmp_path / "fresh"))
    assert not hub_module.has_random_weights(str(tmp_path / "given"))
    reader = tf.train.load_checkpoint(str(tmp_path / "given" / "variables" / "variables"))
    np.testing.assert_array_equal(reader.get_tensor("moving_mean"), values["moving_mean"])


def test_failed_export_leaves_nothing_behind(tmp_path):
    v1.get_variable("unrelated", [1])
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        checkpoint = v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    with pytest.raises(ValueError, match="Tensor feature_extractor/kernel is not found"):
        hub_module.export_from_checkpoint(tiny_spec(), checkpoint, str(tmp_path / "module"), "feature_extractor")
    assert not [name for name in os.listdir(tmp_path) if "module" in name]


def test_export_replaces_an_earlier_module_and_leaves_no_temporary_directory(tmp_path):
    module_dir = str(tmp_path / "module")
    hub_module.export_spec(tiny_spec(seed=1), module_dir)
    hub_module.export_spec(tiny_spec(seed=2), module_dir)
    assert os.listdir(tmp_path) == ["module"]
    reader = tf.train.load_checkpoint(os.path.join(module_dir, "variables", "variables"))
    with tf.Graph().as_default():
        (expected,) = run_with_fresh_variables([hub.Module(tiny_spec(seed=2)).variable_map["kernel"]])
    np.testing.assert_array_equal(reader.get_tensor("kernel"), expected)


def test_export_refuses_a_directory_that_is_not_a_module(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a hub module; choose a new or empty directory"):
        hub_module.export_spec(tiny_spec(), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_export_refuses_a_module_directory_that_also_holds_other_files(tmp_path):
    module_dir = tmp_path / "module"
    hub_module.export_spec(tiny_spec(seed=1), str(module_dir))
    (module_dir / "notes.txt").write_text("keep me")
    before = sorted(os.listdir(module_dir))
    with pytest.raises(ValueError) as error:
        hub_module.export_spec(tiny_spec(seed=2), str(module_dir))
    assert str(error.value) == (f"{module_dir} holds an earlier hub module but also 'notes.txt', which replacing the "
                                "module would delete; move them away or choose a new or empty directory")
    assert sorted(os.listdir(module_dir)) == before and (module_dir / "notes.txt").read_text() == "keep me"
    assert os.listdir(tmp_path) == ["module"]
