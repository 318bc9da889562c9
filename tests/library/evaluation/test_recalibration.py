"""Batch-norm recalibration: population statistics of the recalibration images into a new checkpoint, nothing else touched."""

import os

import numpy as np
import pytest
import tensorflow_hub as hub

from library.evaluation import recalibration as recalibration
from library.hub import hub_module
from project.networks import layers
from tests.helpers import tf

v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys
BATCH, SIZE, CHANNELS, CLASSES = 8, 4, 3, 2
SCOPE = "net"


def network(images, is_training, params):
    """A convolution, batch norm (momentum 0.9) and a feature vector: the batch-norm statistics under test."""
    del params
    activations = layers.conv_batch_norm(images, CHANNELS, 3, 1, is_training=is_training, name="unit", momentum=0.9)
    return {"default": layers.global_average_pool(tf.nn.relu(activations)), "net/unit": activations}


def model_fn(features, labels, mode, params):
    """Batch norm in the network itself (``hub`` False), or in a hub module of it, fine-tuned or frozen."""
    training = mode == ModeKeys.TRAIN
    if params["hub"]:
        spec = hub_module.create_spec(network, SIZE, {}, seed=0)
        tags = hub_module.TRAIN_TAGS if training and params["fine_tuning"] else None
        module = hub.Module(spec, trainable=params["fine_tuning"], tags=tags, name=SCOPE)
        outputs = module(features["image"], as_dict=True)
    else:
        with v1.variable_scope(SCOPE):
            outputs = network(features["image"], training, params)
    logits = layers.dense(outputs["default"], CLASSES, "head")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = v1.train.AdamOptimizer(0.1).minimize(loss, v1.train.get_or_create_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def images(batches, seed=0):
    """``batches`` batches of images, each batch with its own offset, so that the batch means differ."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(index, 1 + index, (BATCH, SIZE, SIZE, 3)) for index in range(batches)]).astype(np.float32)


def input_fn(data):
    """Batches of ``data`` in order, as the recalibration input of an experiment."""
    labels = np.arange(len(data)) % CLASSES
    return lambda: tf.data.Dataset.from_tensor_slices(({"image": data}, labels)).batch(BATCH)


def trained_checkpoint(model_dir, params, step=7):
    """``model_dir/model.ckpt-<step>``, the state file's latest, after a few training steps on other images."""
    with tf.Graph().as_default():
        features, labels = v1.data.make_one_shot_iterator(input_fn(images(3, seed=1) * 3)().repeat()).get_next()
        spec = model_fn(features, labels, ModeKeys.TRAIN, params)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for _ in range(3):
                session.run(spec.train_op)
            session.run(v1.train.get_global_step().assign(step))
            path = v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt"), global_step=step)
    return path


def variables(checkpoint):
    """{name: value} of every variable in ``checkpoint``."""
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def convolved(checkpoint, data):
    """The activations batch norm sees: ``data`` through the checkpoint's convolution, [N, H, W, C]."""
    kernel = tf.train.load_variable(checkpoint, f"{SCOPE}/unit/conv/kernel")
    with tf.Graph().as_default(), v1.Session() as session:
        return session.run(tf.nn.conv2d(data, kernel, strides=1, padding="SAME"))


@pytest.mark.parametrize("hub_module_used", [False, True], ids=["network", "fine-tuned hub module"])
def test_one_batch_gives_exactly_its_statistics_and_leaves_trainable_variables_bit_identical(tmp_path, hub_module_used):
    params = {"hub": hub_module_used, "fine_tuning": True}
    checkpoint = trained_checkpoint(str(tmp_path), params)
    data = images(1)
    result = recalibration.recalibrate(checkpoint, model_fn, input_fn(data), params, batches=1)
    assert result.checkpoint == str(tmp_path / "recalibrated.ckpt-7")
    assert (result.statistics, result.batches) == (2, 1) and result.seconds > 0
    assert tf.train.latest_checkpoint(str(tmp_path)) == result.checkpoint

    before, after = variables(checkpoint), variables(result.checkpoint)
    assert before.keys() == after.keys()
    moving = {f"{SCOPE}/unit/batch_norm/moving_mean", f"{SCOPE}/unit/batch_norm/moving_variance"}
    for name in before.keys() - moving:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)  # weights, Adam slots, global_step
    activations = convolved(checkpoint, data).reshape(-1, CHANNELS)
    np.testing.assert_allclose(after[f"{SCOPE}/unit/batch_norm/moving_mean"], activations.mean(0), rtol=1e-5, atol=1e-6)
    # fused_batch_norm hands the updates the unbiased variance, the population estimate.
    np.testing.assert_allclose(after[f"{SCOPE}/unit/batch_norm/moving_variance"], activations.var(0, ddof=1), rtol=1e-5)
    assert not np.allclose(before[f"{SCOPE}/unit/batch_norm/moving_mean"], activations.mean(0), rtol=1e-2)


def test_several_batches_give_the_moments_of_all_their_images_not_a_moving_average(tmp_path):
    params = {"hub": False, "fine_tuning": True}
    checkpoint = trained_checkpoint(str(tmp_path), params)
    data = images(4)
    result = recalibration.recalibrate(checkpoint, model_fn, input_fn(data), params, batches=3)
    assert result.batches == 3
    after = variables(result.checkpoint)
    activations = convolved(checkpoint, data[:3 * BATCH])
    per_batch = activations.reshape(3, -1, CHANNELS)
    np.testing.assert_allclose(after[f"{SCOPE}/unit/batch_norm/moving_mean"], activations.reshape(-1, CHANNELS).mean(0),
                               rtol=1e-5, atol=1e-6)
    exact = per_batch.var(1, ddof=1).mean(0) + per_batch.mean(1).var(0)  # mean of variances + variance of means
    np.testing.assert_allclose(after[f"{SCOPE}/unit/batch_norm/moving_variance"], exact, rtol=1e-5)
    np.testing.assert_allclose(exact, activations.reshape(-1, CHANNELS).var(0), rtol=1e-2)
    assert per_batch.mean(1).var(0).sum() > 0.02 * exact.sum()  # the spread of the batch means counts in these data


def test_a_recalibrator_reused_for_a_later_checkpoint_measures_the_same_batches_as_a_fresh_one(tmp_path):
    params = {"hub": True, "fine_tuning": True}
    data = images(4)
    reused = recalibration.Recalibrator(model_fn, input_fn(data), params, batches=2)
    try:
        first = reused.recalibrate(trained_checkpoint(str(tmp_path), params, 7))
        later = trained_checkpoint(str(tmp_path), params, 9)
        second = reused.recalibrate(later)
    finally:
        reused.close()
    assert (first.batches, second.batches) == (2, 2)
    assert second.checkpoint == str(tmp_path / "recalibrated.ckpt-9") and not os.path.exists(first.checkpoint + ".index")
    actual = variables(second.checkpoint)
    fresh = recalibration.recalibrate(later, model_fn, input_fn(data), params, batches=2)
    expected = variables(fresh.checkpoint)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def test_a_frozen_hub_module_is_left_untouched(tmp_path):
    params = {"hub": True, "fine_tuning": False}
    checkpoint = trained_checkpoint(str(tmp_path), params)
    files = sorted(os.listdir(tmp_path))
    result = recalibration.recalibrate(checkpoint, model_fn, input_fn(images(1)), params, batches=2)
    assert (result.checkpoint, result.statistics) == (checkpoint, 0)
    assert sorted(os.listdir(tmp_path)) == files
    assert "nothing to recalibrate" in result.summary()


def test_a_new_recalibration_replaces_the_previous_one_and_a_recalibrated_checkpoint_is_kept(tmp_path):
    params = {"hub": False, "fine_tuning": True}
    first = recalibration.recalibrate(trained_checkpoint(str(tmp_path), params, 7), model_fn, input_fn(images(1)),
                                      params, 1).checkpoint
    again = recalibration.recalibrate(first, model_fn, input_fn(images(1)), params, 1)
    assert again.checkpoint == first and again.summary() == f"batch norm: {first} is recalibrated already"
    second = recalibration.recalibrate(trained_checkpoint(str(tmp_path), params, 9), model_fn, input_fn(images(1)),
                                       params, 1).checkpoint
    assert second.endswith("recalibrated.ckpt-9")
    assert not [name for name in os.listdir(tmp_path) if name.startswith("recalibrated.ckpt-7")]
    state = v1.train.get_checkpoint_state(str(tmp_path))
    assert state.model_checkpoint_path == second
    assert [os.path.basename(path) for path in state.all_model_checkpoint_paths] == [
        "model.ckpt-9", "recalibrated.ckpt-9"]  # a fresh Saver lists only its own


def test_a_relative_model_dir_keeps_working(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"hub": False, "fine_tuning": True}
    os.makedirs("out/model")
    checkpoint = trained_checkpoint("out/model", params)
    result = recalibration.recalibrate(checkpoint, model_fn, input_fn(images(1)), params, 1)
    assert tf.train.latest_checkpoint("out/model") == result.checkpoint == "out/model/recalibrated.ckpt-7"
    assert "model_checkpoint_path: \"recalibrated.ckpt-7\"" in (tmp_path / "out/model/checkpoint").read_text()


def test_without_make_latest_the_state_file_is_left_to_the_chief(tmp_path):
    params = {"hub": False, "fine_tuning": True}
    checkpoint = trained_checkpoint(str(tmp_path), params)
    result = recalibration.recalibrate(checkpoint, model_fn, input_fn(images(1)), params, 1, make_latest=False)
    assert tf.train.latest_checkpoint(str(tmp_path)) == checkpoint
    assert recalibration.checkpoint_at_step(str(tmp_path), 7) == checkpoint
    assert recalibration.checkpoint_at_step(str(tmp_path), 8) is None
    assert tf.io.gfile.exists(result.checkpoint + ".index")


def test_an_update_of_another_form_is_a_one_line_error():
    average = v1.get_variable("average", [2], initializer=v1.zeros_initializer(), trainable=False)
    update = average.assign_sub(tf.constant([1.0, 2.0]))  # no ``average - batch`` to find
    with pytest.raises(recalibration.RecalibrationError, match="set batch_norm_recalibration_batches 0$"):
        recalibration.batch_statistics([update])
