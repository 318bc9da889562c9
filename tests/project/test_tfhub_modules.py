"""Modules built the way tfhub.dev publishes them (plain tensorflow_hub calls), used by the model as TF Hub says.

Each kind: a feature-vector module (``default`` and ``image_feature_vector`` give features,
a ``train`` variant with batch-norm updates, regularization losses), a classification
module (``default`` gives logits, ``image_feature_vector`` features), a module of any input
size without ImageModuleInfo, one without a ``train`` variant, and a TF2 SavedModel.
"""

import http.server
import os
import tarfile
import threading

import numpy as np
import pytest
import tensorflow_hub as hub

from project import feature_extractor, model_fn
from project.options import OPTIONS
from tests.helpers import tf

v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys
SIZE = 12
FEATURES = 6
LOGITS = 11
REGULARIZATION = 0.01
CLASS_NAMES = ["a", "b", "c"]


def conv_features(images, is_training, channels=FEATURES):
    """A 3x3 convolution with batch norm and ReLU, average-pooled: [batch, channels] features and the map."""
    kernel = v1.get_variable("conv/kernel", [3, 3, 3, channels])
    v1.add_to_collection(v1.GraphKeys.REGULARIZATION_LOSSES, REGULARIZATION * tf.nn.l2_loss(kernel))
    gamma = v1.get_variable("bn/gamma", [channels], initializer=v1.ones_initializer())
    beta = v1.get_variable("bn/beta", [channels], initializer=v1.zeros_initializer())
    mean = v1.get_variable("bn/moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False)
    variance = v1.get_variable("bn/moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False)
    activations = tf.nn.conv2d(images, kernel, 1, "SAME")
    if is_training:
        normalized, batch_mean, batch_variance = v1.nn.fused_batch_norm(activations, gamma, beta)
        v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, mean.assign(0.5 * mean + 0.5 * batch_mean))
        v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, variance.assign(0.5 * variance + 0.5 * batch_variance))
    else:
        normalized, _, _ = v1.nn.fused_batch_norm(activations, gamma, beta, mean, variance, is_training=False)
    feature_map = tf.nn.relu(normalized)
    return tf.reduce_mean(feature_map, axis=[1, 2]), feature_map


def image_module(kind, path):
    """Write a module of ``kind`` to ``path`` with plain hub calls; return ``path``."""
    height = None if kind == "any_size" else SIZE

    def module_fn(is_training=False):
        images = v1.placeholder(tf.float32, [None, height, height, 3], name="images")
        features, feature_map = conv_features(images, is_training)
        vector_outputs = {"default": features, "conv/feature_map": feature_map}
        if kind == "classification":
            logits = tf.matmul(features, v1.get_variable("logits/kernel", [FEATURES, LOGITS]))
            hub.add_signature(inputs={"images": images}, outputs=logits)
            hub.add_signature("image_classification", inputs={"images": images}, outputs=logits)
        else:
            hub.add_signature(inputs={"images": images}, outputs=features)
        hub.add_signature("image_feature_vector", inputs={"images": images}, outputs=vector_outputs)
        if kind != "any_size":
            hub.attach_image_module_info(hub.ImageModuleInfo(default_image_size={"height": SIZE, "width": SIZE}))

    variants = [(set(), {"is_training": False})]
    if kind != "no_train_variant":
        variants.append(({"train"}, {"is_training": True}))
    spec = hub.create_module_spec(module_fn, tags_and_args=variants)
    with tf.Graph().as_default():
        module = hub.Module(spec)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            module.export(path, session)
    return path


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    root = tmp_path_factory.mktemp("modules")
    return {kind: image_module(kind, str(root / kind))
            for kind in ("feature_vector", "classification", "any_size", "no_train_variant")}


def make_params(hub_module, **overrides):
    params = {option.name: option.default for option in OPTIONS}
    params.update(hub_module=hub_module, image_size=SIZE, random_seed=0, num_classes=len(CLASS_NAMES),
                  class_names=CLASS_NAMES, steps_per_epoch=1, train_steps=1, dropout_rate=0.0,
                  l2_regularization=0.0, learning_rate=0.1, optimizer="SGD")
    params.update(overrides)
    return params


def build(params, mode=ModeKeys.TRAIN, image_size=SIZE):
    images = tf.constant(np.random.RandomState(0).uniform(0, 255, [4, image_size, image_size, 3]), tf.float32)
    return model_fn.model_fn({"image": images}, tf.constant([0, 1, 2, 0]), mode, params)


def head_width():
    (kernel,) = [v for v in v1.global_variables() if v.op.name == "head/logits/kernel"]
    return kernel.shape.as_list()[0]


def module_variable(name):
    (variable,) = [v for v in v1.global_variables() if v.op.name == f"{model_fn.MODULE_SCOPE}/{name}"]
    return variable


@pytest.mark.parametrize("kind", ["feature_vector", "classification"])
def test_features_come_from_the_image_feature_vector_signature(modules, kind):
    params = make_params(modules[kind])
    assert feature_extractor.resolve(params).use.signature == "image_feature_vector"
    build(params)
    assert head_width() == FEATURES  # not the classification module's 11 logits


def test_hub_signature_and_hub_output_choose_other_features(modules):
    build(make_params(modules["classification"], hub_signature="default"))
    assert head_width() == LOGITS


@pytest.mark.parametrize("overrides, message", [
    ({"hub_signature": "nope"}, "hub_signature nope: module {m} has no such signature; it offers: "
                                "default, image_classification, image_feature_vector"),
    ({"hub_output": "nope"}, "hub_output nope: signature image_feature_vector of module {m} has no such output; "
                             "it offers: conv/feature_map, default"),
    ({"hub_output": "conv/feature_map"}, "hub_output conv/feature_map of module {m} has shape (None, 12, 12, 6), "
                                         "not [batch, features]; feature-vector outputs of signature "
                                         "image_feature_vector: default"),
])
def test_a_signature_or_output_the_module_lacks_is_a_one_line_error(modules, overrides, message):
    with pytest.raises(ValueError) as error:
        feature_extractor.resolve(make_params(modules["classification"], **overrides))
    assert str(error.value) == message.format(m=modules["classification"])


def test_a_module_of_any_size_takes_image_size(modules):
    params = make_params(modules["any_size"], image_size=20)
    assert feature_extractor.resolve(params).use.fixed_image_size is None
    assert feature_extractor.input_image_size(params) == 20
    assert "input 20x20 (image_size)" in feature_extractor.describe(params)
    spec = build(params, image_size=20)
    assert spec.loss.shape == [] and head_width() == FEATURES


def run_one_step(spec, fetches):
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        before = session.run(fetches)
        session.run(spec.train_op)
        return before, session.run(fetches)


@pytest.mark.parametrize("kind, fine_tuning, batch_norm, statistics_updated", [
    ("feature_vector", True, "train", True),  # the train variant: batch statistics, moving averages updated
    ("feature_vector", True, "frozen", False),  # the inference graph, trainable: stored statistics, weights learn
    ("feature_vector", True, None, False),  # a pretrained module's default: frozen
    ("feature_vector", False, "train", False),  # frozen module: inference graph, nothing of the module changes
    ("no_train_variant", True, "train", False),  # fine-tuned through the inference graph: statistics stay as loaded
])
def test_batch_norm_statistics_frozen_or_updated_as_documented(modules, kind, fine_tuning, batch_norm,
                                                               statistics_updated):
    spec = build(make_params(modules[kind], fine_tuning=fine_tuning, fine_tuning_batch_norm=batch_norm))
    assert len(v1.get_collection(v1.GraphKeys.UPDATE_OPS)) == (2 if statistics_updated else 0)
    statistics = {"mean": module_variable("bn/moving_mean"), "variance": module_variable("bn/moving_variance"),
                  "kernel": module_variable("conv/kernel")}
    before, after = run_one_step(spec, statistics)
    for name in ("mean", "variance"):
        assert (not np.array_equal(before[name], after[name])) == statistics_updated
    assert (not np.array_equal(before["kernel"], after["kernel"])) == fine_tuning


def test_a_module_without_train_variant_is_fine_tuned_with_a_warning(modules):
    params = make_params(modules["no_train_variant"], fine_tuning=True, fine_tuning_batch_norm="train")
    assert feature_extractor.check(params) == [
        f"warning: module {modules['no_train_variant']} has no 'train' graph variant: fine-tuning runs its "
        "inference graph, so its batch-norm statistics stay as loaded"]


@pytest.mark.parametrize("fine_tuning", [True, False])
def test_module_regularization_joins_the_fine_tuning_loss(modules, fine_tuning):
    spec = build(make_params(modules["feature_vector"], fine_tuning=fine_tuning))
    graph = v1.get_default_graph()
    cross_entropy = graph.get_tensor_by_name("softmax_cross_entropy_loss/value:0")
    regularization = graph.get_tensor_by_name("module_regularization:0")
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        loss, cross_entropy, regularization, kernel = session.run(
            [spec.loss, cross_entropy, regularization, module_variable("conv/kernel")])
    expected = REGULARIZATION * np.sum(kernel ** 2) / 2 if fine_tuning else 0.0
    np.testing.assert_allclose(regularization, expected, rtol=1e-5)
    np.testing.assert_allclose(loss, cross_entropy + expected, rtol=1e-5)


def tf1_saved_model(path):
    """A SavedModel without tfhub_module.pb, as TF2 tfhub.dev versions are."""
    with tf.Graph().as_default(), v1.Session() as session:
        images = v1.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        v1.saved_model.simple_save(session, path, {"images": images}, {"features": tf.reduce_mean(images, [1, 2])})
    return path


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server of ``tmp_path/served``; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_tf2_saved_model_by_path_or_url_is_one_line(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    saved_model = tf1_saved_model(str(tmp_path / "tf2"))
    with tarfile.open(tmp_path / "served" / "tf2.tar.gz", "w:gz") as archive:
        for name in os.listdir(saved_model):
            archive.add(os.path.join(saved_model, name), arcname=name)
    for handle in (saved_model, f"{http_server}/tf2.tar.gz"):
        with pytest.raises(ValueError) as error:
            feature_extractor.resolve(make_params(handle))
        assert str(error.value).startswith(
            f"hub_module {handle} is a TF2 SavedModel, not a TF1 Hub module (no tfhub_module.pb); hub.Module needs "
            "the TF1 Hub format: on tfhub.dev pick the model's 'TF1 Hub format' version")


def test_a_url_that_cannot_be_fetched_is_one_line_pointing_to_the_offline_routes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    with socket_closed_port() as port:
        handle = f"http://127.0.0.1:{port}/module.tar.gz"
        with pytest.raises(ValueError) as error:
            feature_extractor.resolve(make_params(handle))
    message = str(error.value)
    assert message.startswith(f"hub_module {handle}: cannot download it (URLError: ")
    assert "\n" not in message
    assert "--keras_application MobileNetV2 --weights PATH.h5" in message
    assert "--hub_module small_cnn --fine_tuning" in message


class socket_closed_port:
    """A loopback port nobody listens on, for the duration of the block."""

    def __enter__(self):
        import socket

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return port

    def __exit__(self, *exc):
        return False
