"""library.hub.keras_application: Keras Applications weights (.h5) as TF1 Hub image modules, checked against Keras."""

import importlib

import numpy as np
import pytest
import tensorflow_hub as hub

from library.hub import hub_module, keras_application, write_module
from tests.helpers import tf

v1 = tf.compat.v1
SIZE = 32


def saved_weights(name, path, batch, alpha=None):
    """Weights of a ``weights=None`` application (of width ``alpha``), batch-norm statistics made non-trivial, saved as
    .h5; returns the plain Keras model's features of the [0, 1] images ``batch``: what the module must reproduce."""
    constructor = getattr(tf.keras.applications, name)
    preprocess_input = importlib.import_module(constructor.__module__).preprocess_input
    random = np.random.RandomState(0)
    with tf.Graph().as_default(), v1.Session() as session:
        model = keras_application.build(name, SIZE, alpha=alpha)
        session.run(v1.global_variables_initializer())
        values = []
        for variable, value in zip(model.weights, model.get_weights()):
            if "moving_variance" in variable.name:
                value = random.uniform(0.5, 1.5, value.shape)
            elif "moving_mean" in variable.name:
                value = random.normal(0, 0.1, value.shape)
            values.append(value.astype(value.dtype if hasattr(value, "dtype") else np.float32))
        model.set_weights(values)
        model.save_weights(path)
        return session.run(model(preprocess_input(tf.constant(batch) * 255.0), training=False))


def images(count=3):
    return np.random.RandomState(1).uniform(size=[count, SIZE, SIZE, 3]).astype(np.float32)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """(weights .h5, module directory, Keras's features of images()) of MobileNetV2, written by the command line."""
    root = tmp_path_factory.mktemp("keras")
    weights = str(root / "mobilenet_v2.h5")
    expected = saved_weights("MobileNetV2", weights, images())
    module_dir = str(root / "module")
    assert write_module.main(["--keras_application", "MobileNetV2", "--weights", weights,
                            "--image_size", str(SIZE), "--output", module_dir]) == 0
    return weights, module_dir, expected


def module_features(module_dir, batch, tags=None):
    with tf.Graph().as_default():
        features = hub.Module(module_dir, tags=tags)(batch)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            return session.run(features)


@pytest.mark.slow
def test_mobilenet_v2_module_gives_the_keras_models_features(mobilenet):
    _, module_dir, expected = mobilenet
    assert expected.shape == (3, 1280) and expected.std() > 1e-3
    assert np.abs(module_features(module_dir, images()) - expected).max() <= 1e-4
    assert not hub_module.has_random_weights(module_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name, feature_size", [("ResNet50", 2048), ("EfficientNetB0", 1280)])
def test_other_applications_give_the_keras_models_features(tmp_path, name, feature_size):
    weights = str(tmp_path / "weights.h5")
    expected = saved_weights(name, weights, images(2))
    keras_application.export(name, weights, SIZE, str(tmp_path / "module"))
    assert expected.shape == (2, feature_size) and expected.std() > 1e-3
    assert np.abs(module_features(str(tmp_path / "module"), images(2)) - expected).max() <= 1e-4


@pytest.mark.slow
def test_code_written_for_tfhub_dev_modules_uses_it(mobilenet):
    _, module_dir, _ = mobilenet
    spec = hub.load_module_spec(module_dir)
    assert hub.get_expected_image_size(spec) == [SIZE, SIZE]
    assert set(spec.get_tags()) == {frozenset(), frozenset({"train"})}
    module = hub.Module(spec)
    outputs = module(images(), signature="image_feature_vector", as_dict=True)
    assert outputs["default"].shape.as_list() == [3, 1280]


@pytest.mark.slow
def test_train_variant_runs_batch_norm_on_batch_statistics_with_updates(mobilenet):
    _, module_dir, _ = mobilenet
    module = hub.Module(module_dir, trainable=True, tags={"train"})
    features = module(images())
    updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
    assert len(updates) == 104  # 52 batch norms, two moving averages each
    mean = module.variable_map["bn_Conv1/moving_mean"]
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        before = session.run(mean)
        session.run([features, updates])
        assert not np.array_equal(session.run(mean), before)


@pytest.mark.parametrize("argv, message", [
    (["--keras_application", "NoSuchNet", "--weights", "w.h5"], "error: --keras_application NoSuchNet: no such model"),
    (["--keras_application", "MobileNetV2", "--weights", "/nowhere/w.h5"],
     "error: --weights /nowhere/w.h5: no such file; give the .h5 weights of MobileNetV2 or 'imagenet'"),
    (["--keras_application", "MobileNetV2"], "error: --weights goes with --keras_application"),
    (["--keras_application", "ResNet50", "--weights", "w.h5", "--alpha", "0.5"],
     "error: --alpha: ResNet50 takes no width multiplier; leave --alpha out"),
    (["--keras_application", "MobileNetV2", "--weights", "w.h5", "--alpha", "0"], "error: argument --alpha: must be above 0"),
    (["--network", "x", "--alpha", "0.5"], "error: --alpha goes with --keras_application"),
    (["--keras_application", "MobileNetV2", "--weights", "w.h5", "--network", "x"], "error: argument --network"),
])
def test_command_line_mistakes_are_one_line(tmp_path, capsys, argv, message):
    try:
        code = write_module.main([*argv, "--output", str(tmp_path / "module")])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code in (1, 2) and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "module").exists()


@pytest.mark.slow
def test_weights_of_another_application_are_one_line(tmp_path, capsys, mobilenet):
    weights, _, _ = mobilenet
    assert write_module.main(["--keras_application", "ResNet50", "--weights", weights, "--image_size", str(SIZE),
                            "--output", str(tmp_path / "module")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --weights {weights}: not the weights of ResNet50 without its top (")
    assert err.count("\n") == 1


def test_imagenet_weights_without_a_network_say_what_to_do(tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/mobilenet.h5: None -- [Errno -3] name resolution")

    monkeypatch.setattr(importlib.import_module("keras.src.applications.mobilenet_v2").data_utils, "get_file", no_network)
    assert write_module.main(["--keras_application", "MobileNetV2", "--weights", "imagenet", "--image_size", "96",
                            "--output", str(tmp_path / "module")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --weights imagenet: Keras cannot download the ImageNet weights of MobileNetV2 (")
    assert "pass --weights PATH.h5" in err and err.count("\n") == 1


@pytest.mark.slow
def test_weights_of_another_width_are_one_line_and_load_with_their_alpha(tmp_path, capsys):
    weights = str(tmp_path / "mobilenet_v2_035.h5")
    expected = saved_weights("MobileNetV2", weights, images(), alpha=0.35)
    argv = ["--keras_application", "MobileNetV2", "--weights", weights, "--image_size", str(SIZE)]
    assert write_module.main([*argv, "--output", str(tmp_path / "module")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --weights {weights}: not the weights of MobileNetV2 of width alpha 1 without its "
                          "top (Trying to assign to variable with tensor with wrong shape. Expected [")
    assert "); pass the --alpha they were saved with, or save them with tf.keras.applications.MobileNetV2(" in err
    assert err.count("\n") == 1 and len(err) < 500
    assert not (tmp_path / "module").exists()

    assert write_module.main([*argv, "--alpha", "0.35", "--output", str(tmp_path / "module")]) == 0
    assert expected.shape == (3, 1280)
    assert np.abs(module_features(str(tmp_path / "module"), images()) - expected).max() <= 1e-4
