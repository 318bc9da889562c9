"""Cycles in one training session: a checkpoint at every cycle's end, evaluated exactly as Estimator.evaluate does."""

import numpy as np
import pytest

from library.evaluation.evaluator import CheckpointEvaluation
from library.training.cycles import CyclesHook, TrainingPlan
from tests.helpers import tf

v1 = tf.compat.v1
FEATURES = np.random.RandomState(0).normal(size=[10, 3]).astype(np.float32)
LABELS = (FEATURES.sum(axis=1) > 0).astype(np.int32)


def model_fn(features, labels, mode):
    """A linear classifier of 3 numbers into 2 classes."""
    kernel = v1.get_variable("logits/kernel", [3, 2], initializer=v1.glorot_uniform_initializer(seed=0))
    logits = tf.matmul(features, kernel)
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    if mode == tf.estimator.ModeKeys.EVAL:
        predicted = tf.argmax(logits, 1, output_type=tf.int32)
        return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops={
            "accuracy": v1.metrics.accuracy(labels, predicted),
            "true_positives": v1.metrics.true_positives_at_thresholds(labels, tf.nn.softmax(logits)[:, 1], [0.3, 0.7])})
    train_op = v1.train.GradientDescentOptimizer(0.5).minimize(loss, global_step=v1.train.get_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def eval_input():
    """One pass in batches of 4: the last batch is partial."""
    return tf.data.Dataset.from_tensor_slices((FEATURES, LABELS)).batch(4)


def train_input():
    return tf.data.Dataset.from_tensor_slices((FEATURES, LABELS)).repeat().batch(4)


def test_every_cycle_end_is_checkpointed_and_evaluated_as_estimator_evaluate_does(tmp_path):
    estimator = tf.estimator.Estimator(model_fn, str(tmp_path), tf.estimator.RunConfig(tf_random_seed=0,
                                                                                       log_step_count_steps=None))
    evaluation = CheckpointEvaluation(model_fn, eval_input)
    evaluated = []

    def on_cycle_end(checkpoint):
        evaluated.append(evaluation.evaluate(checkpoint))

    plan = TrainingPlan(examples=8, images_per_step=4, steps_per_epoch=2, cycle_steps=2, total_steps=5)
    hook = CyclesHook(plan, str(tmp_path / "model.ckpt"), on_cycle_end)
    try:
        estimator.train(train_input, max_steps=5, hooks=[hook])
    finally:
        hook.close()
    on_cycle_end(tf.train.latest_checkpoint(str(tmp_path)))  # the run's last step: Estimator saved it
    assert [checkpoint.rsplit("-", 1)[1] for checkpoint, _ in evaluated] == ["2", "4", "5"]
    losses = set()
    for checkpoint, results in evaluated:
        expected = estimator.evaluate(eval_input, checkpoint_path=checkpoint)
        assert results.keys() == expected.keys() and results["global_step"] == expected["global_step"]
        for name in ("loss", "accuracy"):
            assert results[name] == expected[name], name
        np.testing.assert_array_equal(results["true_positives"], expected["true_positives"])
        losses.add(float(results["loss"]))
    assert len(losses) == 3  # each evaluation saw its own checkpoint
    evaluation.close()


def test_a_failed_evaluation_stops_training_with_an_error_not_as_the_end_of_the_input(tmp_path):
    estimator = tf.estimator.Estimator(model_fn, str(tmp_path), tf.estimator.RunConfig(log_step_count_steps=None))

    def failing(checkpoint):
        raise tf.errors.OutOfRangeError(None, None, "an evaluation metric read its input")

    plan = TrainingPlan(examples=8, images_per_step=4, steps_per_epoch=2, cycle_steps=2, total_steps=4)
    with pytest.raises(RuntimeError, match="evaluation of .*model.ckpt-2 failed: an evaluation metric read its input"):
        estimator.train(train_input, max_steps=4, hooks=[CyclesHook(plan, str(tmp_path / "model.ckpt"), failing)])
