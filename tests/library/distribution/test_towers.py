"""Tower replication: one step on two (virtual CPU) towers equals one step on one device with the same global batch."""

import numpy as np
import pytest

from library.distribution import towers
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys

BATCH = 8
TWO_CPUS = v1.ConfigProto(device_count={"CPU": 2}, allow_soft_placement=True)
TWO_TOWERS = ("/cpu:0", "/cpu:1")


def batch():
    """A fixed global batch: 4 inputs per example, targets of a known linear function."""
    x = np.random.default_rng(0).uniform(size=(BATCH, 4)).astype(np.float32)
    return {"x": tf.constant(x)}, tf.constant(x @ np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))


def model_fn(features, labels, mode, params):
    """Linear regression with a running mean of its inputs in UPDATE_OPS and a summary, through the towers seams."""
    weights = v1.get_variable("weights", [4, 1], initializer=v1.constant_initializer(0.5))
    mean = v1.get_variable("input_mean", [4], initializer=v1.zeros_initializer(), trainable=False)
    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, mean.assign(tf.reduce_mean(features["x"], 0), read_value=False))
    loss = v1.losses.mean_squared_error(labels, tf.matmul(features["x"], weights))
    v1.summary.scalar("loss", loss)
    optimizer = towers.optimizer(lambda: v1.train.GradientDescentOptimizer(params["learning_rate"]))
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = optimizer.minimize(loss, v1.train.get_or_create_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def one_step(function, devices=()):
    """(loss, {variable name: value}) after one training step of ``function``, replicated over ``devices`` if any."""
    with tf.Graph().as_default():
        features, labels = batch()
        if devices:
            function = towers.replicate_model_fn(function, devices)
        spec = function(features, labels, ModeKeys.TRAIN, {"learning_rate": 0.1})
        with v1.Session(config=TWO_CPUS) as session:
            session.run(v1.global_variables_initializer())
            loss, _ = session.run([spec.loss, spec.train_op])
            return loss, {variable.op.name: session.run(variable) for variable in v1.global_variables()}


def test_two_towers_step_as_one_device_on_the_same_batch():
    one_loss, one = one_step(model_fn)
    two_loss, two = one_step(model_fn, TWO_TOWERS)

    assert sorted(two) == sorted(one) == ["global_step", "input_mean", "weights"]  # no tower has variables of its own
    assert two["global_step"] == one["global_step"] == 1
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-6)
    assert not np.allclose(one["weights"], 0.5)  # the step did change them
    assert two_loss == pytest.approx(one_loss, rel=1e-6)  # the mean of the towers' losses on equal slices


def test_update_ops_and_summaries_come_from_the_first_tower():
    _, two = one_step(model_fn, TWO_TOWERS)
    features, _ = batch()
    with v1.Session() as session:
        first_half = session.run(features["x"])[:BATCH // 2]
    np.testing.assert_allclose(two["input_mean"], first_half.mean(0), rtol=1e-6)
    features, labels = batch()
    towers.replicate_model_fn(model_fn, TWO_TOWERS)(features, labels, ModeKeys.TRAIN, {"learning_rate": 0.1})
    assert [summary.op.name for summary in v1.get_collection(v1.GraphKeys.SUMMARIES)] == ["loss"]
    assert len(v1.get_collection(v1.GraphKeys.UPDATE_OPS)) == 1


def test_each_tower_runs_on_its_device_on_its_slice_and_variables_stay_on_the_host():
    features, labels = batch()
    towers.replicate_model_fn(model_fn, TWO_TOWERS[::-1])(features, labels, ModeKeys.TRAIN, {"learning_rate": 0.1})
    graph = v1.get_default_graph()
    assert graph.get_operation_by_name("MatMul").device == "/cpu:1"  # the first tower, on the first device given
    assert graph.get_operation_by_name("tower_1/MatMul").device == "/cpu:0"
    assert graph.get_operation_by_name("tower_1/MatMul").inputs[0].shape.as_list() == [BATCH // 2, 4]
    assert graph.get_operation_by_name("weights").device == "/cpu:0"


def test_other_modes_call_the_model_fn_as_it_is():
    calls = []
    features, labels = batch()
    towers.replicate_model_fn(lambda *args: calls.append(args), TWO_TOWERS)(features, labels, ModeKeys.EVAL, {})
    assert len(calls) == 1 and calls[0][0] is features


def test_create_once_shares_one_object_across_the_towers_of_a_call():
    created = []

    def sharing_model_fn(features, labels, mode, params):
        created.append(towers.create_once("thing", object))
        return model_fn(features, labels, mode, params)

    features, labels = batch()
    towers.replicate_model_fn(sharing_model_fn, TWO_TOWERS)(features, labels, ModeKeys.TRAIN, {"learning_rate": 0.1})
    assert len(created) == 2 and created[0] is created[1]
    assert towers.create_once("thing", object) is not created[0]  # outside a replicated call: a new one


def test_a_model_fn_without_the_tower_optimizer_is_refused():
    def plain_model_fn(features, labels, mode, params):
        loss = tf.reduce_sum(v1.get_variable("w", [], initializer=v1.zeros_initializer()) * features["x"])
        train_op = v1.train.GradientDescentOptimizer(0.1).minimize(loss, v1.train.get_or_create_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    features, labels = batch()
    with pytest.raises(ValueError, match="must build its train_op with towers.optimizer"):
        towers.replicate_model_fn(plain_model_fn, TWO_TOWERS)(features, labels, ModeKeys.TRAIN, {})


def test_the_training_input_batches_the_global_batch_on_the_host():
    """A one-pipeline, one-replica context: the input_fn batches all of it and stages nothing on a GPU."""
    contexts = []
    towers.Towers(TWO_TOWERS).input_fn(lambda input_context=None: contexts.append(input_context))()
    assert contexts[0].num_replicas_in_sync == contexts[0].num_input_pipelines == 1
    assert contexts[0].get_per_replica_batch_size(BATCH) == BATCH


def test_the_towers_share_one_optimizer():
    """One optimizer, so its own variables (a mixed-precision loss scale, here a counter) exist once, as on one device."""
    built = []

    def counting_optimizer():
        built.append(v1.Variable(0, name="optimizer_state"))
        return v1.train.GradientDescentOptimizer(0.1)

    def counting_model_fn(features, labels, mode, params):
        loss = v1.losses.mean_squared_error(labels, features["x"][:, :1] * v1.get_variable("w", [], tf.float32))
        train_op = towers.optimizer(counting_optimizer).minimize(loss, v1.train.get_or_create_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    features, labels = batch()
    towers.replicate_model_fn(counting_model_fn, TWO_TOWERS)(features, labels, ModeKeys.TRAIN, {})
    assert len(built) == 1
    assert sorted(variable.op.name for variable in v1.global_variables()) == ["global_step", "optimizer_state", "w"]
