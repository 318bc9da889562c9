"""EfficientNet-Lite0 with its ImageNet weights: real photos get their ImageNet classes, the module keeps them."""

import os

import numpy as np
import pytest
import skimage
import tensorflow_hub as hub
from PIL import Image

from library.hub import hub_module, write_module
from project import feature_extractor
from project.networks import PRETRAINED, efficientnet_lite0
from tests.helpers import tf

v1 = tf.compat.v1
PARAMS = {"hub_module": "efficientnet_lite0", "image_size": None, "random_seed": None, "hub_signature": None,
          "hub_output": None, "fine_tuning": False}
PHOTOS = os.path.join(os.path.dirname(skimage.__file__), "data")  # real photos a pinned package ships


def centre_crop(name, size=224):
    """The photo's central square, resized bilinearly to ``size``, as float32 RGB in [0, 1]."""
    image = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    return np.asarray(image, np.float32) / 255.0


@pytest.fixture(scope="module")
def photos():
    return np.stack([centre_crop("chelsea.png"), centre_crop("coffee.png")])


def run_module(spec, images, tags=None):
    """(ImageNet probabilities, features) of ``images`` through a hub.Module of ``spec``."""
    with tf.Graph().as_default():
        module = hub.Module(spec, tags=tags)
        logits = module(images, signature=hub_module.CLASSIFICATION_SIGNATURE)
        features = module(images, signature="image_feature_vector")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            return session.run([tf.nn.softmax(logits), features])


def test_real_photos_get_their_imagenet_classes(photos):
    probabilities, features = run_module(feature_extractor.resolve(PARAMS).spec, photos)
    cat, coffee = probabilities
    assert list(np.argsort(-cat)[:3]) == [285, 282, 281]  # Egyptian cat, tiger cat, tabby
    assert np.argmax(coffee) == 967 and coffee[967] == pytest.approx(0.945, abs=0.002)  # espresso
    assert features.shape == (2, 1280) and features.min() >= 0.0  # ReLU6 activations, averaged


def test_the_module_follows_the_image_module_conventions_plus_classification():
    extractor = feature_extractor.resolve(PARAMS)
    spec = extractor.spec
    assert not extractor.random_weights
    assert sorted(spec.get_signature_names()) == ["default", "image_classification", "image_feature_vector"]
    assert spec.get_output_info_dict("image_classification")["default"].get_shape().as_list() == [None, 1000]
    outputs = spec.get_output_info_dict("default")
    assert outputs["default"].get_shape().as_list() == [None, 1280]
    assert outputs["efficientnet_lite0/head"].get_shape().as_list() == [None, 7, 7, 1280]
    assert [outputs[f"efficientnet_lite0/stage{stage}"].get_shape().as_list()[1:] for stage in range(7)] == [
        [112, 112, 16], [56, 56, 24], [28, 28, 40], [14, 14, 80], [14, 14, 112], [7, 7, 192], [7, 7, 320]]
    assert hub.get_expected_image_size(spec) == [224, 224]
    assert set(spec.get_tags()) == {frozenset(), frozenset({"train"})}
    assert "fine-tuned" not in feature_extractor.describe(PARAMS)
    assert feature_extractor.describe(PARAMS).startswith("feature extractor: efficientnet_lite0 (pretrained); "
                                                         "signature image_feature_vector, output default: 1280 features")


def test_the_train_variant_updates_every_batch_norm_as_recalibration_expects():
    with tf.Graph().as_default():
        hub.Module(feature_extractor.resolve(PARAMS).spec, trainable=True, tags={"train"})(
            tf.zeros([2, 224, 224, 3]))
        updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2 * 49  # moving mean and variance of the stem, 16 blocks' 47 and the head
        assert all(update.type == "AssignSubVariableOp" for update in updates)


def test_exported_module_keeps_the_weights_bit_for_bit(tmp_path, photos):
    output = tmp_path / "efficientnet_lite0"
    assert write_module.main(["--network", "efficientnet_lite0", "--output", str(output)],
                           networks_package="project.networks") == 0
    assert not hub_module.has_random_weights(str(output))
    exported = run_module(hub.load_module_spec(str(output)), photos)
    cached = run_module(feature_extractor.resolve(PARAMS).spec, photos)
    for before, after in zip(cached, exported):
        np.testing.assert_array_equal(before, after)


def test_the_module_is_built_once_per_weights_and_size_and_reused():
    cache = os.environ["TFHUB_CACHE_DIR"]
    feature_extractor.resolve(PARAMS)
    built = {name: os.stat(os.path.join(cache, name, hub_module.MODULE_DEF_FILE)).st_mtime_ns
             for name in os.listdir(cache) if name.startswith("efficientnet_lite0-224px-")}
    assert len(built) == 1
    feature_extractor._pretrained_spec.cache_clear()  # a new process finds the module on disk
    feature_extractor.resolve(PARAMS)
    assert {name: os.stat(os.path.join(cache, name, hub_module.MODULE_DEF_FILE)).st_mtime_ns for name in built} == built
    assert feature_extractor.network_key(PARAMS) == next(iter(built))
    assert feature_extractor.network_key({**PARAMS, "image_size": 160}).startswith("efficientnet_lite0-160px-")


def test_a_weights_file_that_is_not_the_pinned_one_is_refused_in_one_line(tmp_path):
    copy = tmp_path / "weights.pth"
    original = open(efficientnet_lite0.WEIGHTS.path, "rb").read()
    copy.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of the last weight flipped
    weights = hub_module.PretrainedWeights(str(copy), efficientnet_lite0.WEIGHTS_SHA256, efficientnet_lite0.imagenet_weights)
    with pytest.raises(ValueError, match=rf"^weights file {copy} has SHA-256 [0-9a-f]{{64}}, not the pinned "
                                         rf"{efficientnet_lite0.WEIGHTS_SHA256}; reinstall its package"):
        weights.values()
    assert PRETRAINED["efficientnet_lite0"] is efficientnet_lite0.WEIGHTS
