"""Best snapshot: exact copies, only on improvement, surviving restarts and crashes."""

import datetime
import json
import math
import os

import numpy as np
import pytest

from library.evaluation.best_checkpoint import BestCheckpoint
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()

# Two CPU devices, so a checkpoint can have one data shard per device, as Estimator's
# sharded Saver writes them on multi-device machines.
TWO_CPUS = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
# Step 10 has one data shard and step 100 two, so a step-10 prefix glob that also takes
# step 100's files cannot go unnoticed however the directory listing is ordered.
SHARDS = {10: 1, 100: 2, 1000: 2}


def snapshot_files(step):
    """The exact listing of best_model_dir holding the snapshot of step ``step``."""
    shards = [f"model.ckpt-{step}.data-{i:05d}-of-{SHARDS[step]:05d}" for i in range(SHARDS[step])]
    return sorted(["checkpoint", f"model.ckpt-{step}.index", f"model.ckpt-{step}.json", *shards])


SNAPSHOT_10 = snapshot_files(10)
SNAPSHOT_100 = snapshot_files(100)


class SimulatedCrash(Exception):
    """Stands for a kill or power loss in the middle of an update."""


def make_variables(value=0.0, devices=1):
    """The model: a weight vector and a bias, spread over ``devices`` CPUs."""
    with tf.device("/cpu:0"):
        weights = tf.compat.v1.get_variable("weights", initializer=[value, value + 1.0])
    with tf.device(f"/cpu:{devices - 1}"):
        bias = tf.compat.v1.get_variable("bias", initializer=value * 10.0)
    return weights, bias


def save_checkpoint(directory, step, value):
    """Save a checkpoint at ``step`` with variables derived from ``value``, as training would."""
    with tf.Graph().as_default():
        make_variables(value, devices=SHARDS[step])
        saver = tf.compat.v1.train.Saver(sharded=True)
        with tf.compat.v1.Session(config=TWO_CPUS) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, os.path.join(directory, "model.ckpt"), global_step=step)


def restored_values(checkpoint_path):
    """The (weights, bias) a fresh graph gets from restoring ``checkpoint_path``."""
    with tf.Graph().as_default():
        weights, bias = make_variables()
        with tf.compat.v1.Session(config=TWO_CPUS) as session:
            tf.compat.v1.train.Saver().restore(session, checkpoint_path)
            found_weights, found_bias = session.run([weights, bias])
            return found_weights.tolist(), float(found_bias)


def results(loss, step, accuracy=0.75):
    """Evaluation results as Estimator.evaluate returns them: numpy scalars."""
    return {
        "loss": np.float32(loss),
        "accuracy": np.float32(accuracy),
        "global_step": np.int64(step),
    }


@pytest.fixture
def checkpoints(tmp_path):
    """Steps 10 and 100 in one model_dir, so a prefix glob for step 10 would also catch step 100."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    return {step: save_checkpoint(str(model_dir), step, value=float(step)) for step in (10, 100)}


@pytest.fixture
def best_dir(tmp_path):
    return str(tmp_path / "best")


def listing(directory):
    return sorted(tf.io.gfile.listdir(directory))


def assert_best_is(best_dir, step, loss):
    """The snapshot latest_checkpoint finds restores step ``step``'s values and has its record."""
    snapshot = tf.train.latest_checkpoint(best_dir)
    assert snapshot == os.path.join(best_dir, f"model.ckpt-{step}")
    assert restored_values(snapshot) == ([step, step + 1.0], step * 10.0)
    record = BestCheckpoint(best_dir).record
    assert (record["step"], record["loss"]) == (step, loss)


def test_first_update_copies_exactly_the_evaluated_checkpoint(checkpoints, best_dir):
    best = BestCheckpoint(best_dir)
    assert (best.record, best.best_loss, best.checkpoint_path) == (None, None, None)

    assert best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0) is True

    assert listing(best_dir) == SNAPSHOT_10
    assert best.checkpoint_path == os.path.join(best_dir, "model.ckpt-10")
    assert best.best_loss == 0.5
    assert_best_is(best_dir, 10, 0.5)
    assert "model.ckpt-100.index" in listing(os.path.dirname(checkpoints[10]))  # the trap was there


def test_record_holds_plain_json_values(checkpoints, best_dir):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    BestCheckpoint(best_dir).update_if_better(checkpoints[10], results(0.5, 10), epoch=1.5)

    with open(os.path.join(best_dir, "model.ckpt-10.json")) as handle:
        record = json.load(handle)
    written = datetime.datetime.fromisoformat(record.pop("time"))
    assert before <= written <= datetime.datetime.now(datetime.timezone.utc)
    assert record == {
        "step": 10,
        "epoch": 1.5,
        "loss": 0.5,
        "metrics": {"accuracy": 0.75},
        "source_checkpoint": checkpoints[10],
    }
    assert type(record["step"]) is int and type(record["metrics"]["accuracy"]) is float


def test_worse_or_equal_loss_does_not_update(checkpoints, best_dir):
    best = BestCheckpoint(best_dir)
    best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)

    assert best.update_if_better(checkpoints[100], results(0.75, 100), epoch=2.0) is False
    assert best.update_if_better(checkpoints[100], results(0.5, 100), epoch=2.0) is False

    assert listing(best_dir) == SNAPSHOT_10
    assert_best_is(best_dir, 10, 0.5)


def test_better_loss_replaces_snapshot_and_removes_old_files(checkpoints, best_dir):
    best = BestCheckpoint(best_dir)
    best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)

    assert best.update_if_better(checkpoints[100], results(0.25, 100), epoch=2.0) is True

    assert listing(best_dir) == SNAPSHOT_100
    assert best.best_loss == 0.25
    assert_best_is(best_dir, 100, 0.25)


def test_best_survives_restart_and_a_worse_first_evaluation(checkpoints, best_dir):
    BestCheckpoint(best_dir).update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)

    restarted = BestCheckpoint(best_dir)
    assert restarted.best_loss == 0.5
    assert restarted.record["step"] == 10
    assert restarted.update_if_better(checkpoints[100], results(0.625, 100), epoch=2.0) is False
    assert_best_is(best_dir, 10, 0.5)

    assert restarted.update_if_better(checkpoints[100], results(0.375, 100), epoch=2.0) is True
    assert_best_is(best_dir, 100, 0.375)


@pytest.mark.parametrize("bad_loss", [math.nan, math.inf])
def test_non_finite_loss_is_never_an_improvement(checkpoints, best_dir, bad_loss):
    best = BestCheckpoint(best_dir)
    assert best.update_if_better(checkpoints[10], results(bad_loss, 10), epoch=1.0) is False
    assert best.record is None

    best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)
    assert best.update_if_better(checkpoints[100], results(bad_loss, 100), epoch=2.0) is False
    assert_best_is(best_dir, 10, 0.5)


@pytest.mark.parametrize(
    "missing, message",
    [
        (".index", r"model\.ckpt-100\.index is missing"),
        (".data-00001-of-00002", r"incomplete.*00000-of-00002"),
    ],
)
def test_missing_source_file_is_a_clear_error(checkpoints, best_dir, missing, message):
    best = BestCheckpoint(best_dir)
    best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)
    os.remove(checkpoints[100] + missing)

    with pytest.raises(FileNotFoundError, match=message):
        best.update_if_better(checkpoints[100], results(0.25, 100), epoch=2.0)

    assert listing(best_dir) == SNAPSHOT_10
    assert_best_is(best_dir, 10, 0.5)


def crash_at(monkeypatch, operation, call_number):
    """Make the ``call_number``-th ``tf.io.gfile.<operation>`` die midway, like a kill would."""
    real = getattr(tf.io.gfile, operation)
    calls = []

    def dying(source, target, overwrite=False):
        calls.append(target)
        if len(calls) == call_number:
            if operation == "copy":  # half a file under the temporary name
                with open(target, "wb") as handle:
                    handle.write(b"partial")
            raise SimulatedCrash(f"{operation} #{call_number} of {target}")
        return real(source, target, overwrite=overwrite)

    monkeypatch.setattr(tf.io.gfile, operation, dying)


# An update from step 10 to step 100 copies 3 files (2 shards, index), each then renamed,
# then renames the record (4th) and, as its commit, the state file (5th).
@pytest.mark.parametrize(
    "operation, call_number",
    [("copy", 1), ("copy", 3), ("rename", 1), ("rename", 3), ("rename", 4), ("rename", 5)],
)
def test_crash_during_copy_leaves_previous_best_usable(
    checkpoints, best_dir, monkeypatch, operation, call_number
):
    BestCheckpoint(best_dir).update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)

    with monkeypatch.context() as patch:
        crash_at(patch, operation, call_number)
        with pytest.raises(SimulatedCrash):
            BestCheckpoint(best_dir).update_if_better(checkpoints[100], results(0.25, 100), 2.0)

    assert_best_is(best_dir, 10, 0.5)
    assert listing(best_dir) != SNAPSHOT_10  # leftovers of the crashed copy ...
    restarted = BestCheckpoint(best_dir)
    assert restarted.update_if_better(checkpoints[100], results(0.25, 100), epoch=2.0) is True
    assert listing(best_dir) == SNAPSHOT_100  # ... are gone after the next update
    assert_best_is(best_dir, 100, 0.25)


def test_crash_after_commit_leaves_new_best_and_next_update_cleans_up(
    checkpoints, best_dir, monkeypatch
):
    BestCheckpoint(best_dir).update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)

    def dying_remove(path):
        raise SimulatedCrash(f"remove {path}")

    with monkeypatch.context() as patch:
        patch.setattr(tf.io.gfile, "remove", dying_remove)
        with pytest.raises(SimulatedCrash):
            BestCheckpoint(best_dir).update_if_better(checkpoints[100], results(0.25, 100), 2.0)

    assert_best_is(best_dir, 100, 0.25)
    assert set(SNAPSHOT_10) < set(listing(best_dir))
    newer = save_checkpoint(os.path.dirname(checkpoints[10]), 1000, value=1000.0)
    BestCheckpoint(best_dir).update_if_better(newer, results(0.125, 1000), epoch=3.0)
    assert listing(best_dir) == snapshot_files(1000)


def test_restarted_model_dir_reusing_the_best_name_gets_a_fresh_snapshot(checkpoints, best_dir):
    best = BestCheckpoint(best_dir)
    best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)
    retrained = save_checkpoint(os.path.dirname(checkpoints[10]), 10, value=7.0)

    assert best.update_if_better(retrained, results(0.25, 10), epoch=1.0) is True

    snapshot = tf.train.latest_checkpoint(best_dir)
    assert snapshot == best.checkpoint_path != os.path.join(best_dir, "model.ckpt-10")
    assert restored_values(snapshot) == ([7.0, 8.0], 70.0)
    assert len(listing(best_dir)) == len(SNAPSHOT_10)
    assert best.best_loss == 0.25


def test_on_new_best_is_called_with_the_snapshot_after_each_improvement(checkpoints, best_dir):
    seen = []

    def export(snapshot_path):
        seen.append((snapshot_path, BestCheckpoint(best_dir).best_loss))

    best = BestCheckpoint(best_dir, on_new_best=export)

    best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)
    best.update_if_better(checkpoints[100], results(0.75, 100), epoch=2.0)
    best.update_if_better(checkpoints[100], results(0.25, 100), epoch=2.0)

    assert seen == [
        (os.path.join(best_dir, "model.ckpt-10"), 0.5),
        (os.path.join(best_dir, "model.ckpt-100"), 0.25),
    ]


def test_directory_with_a_state_file_but_no_record_is_refused(checkpoints):
    model_dir = os.path.dirname(checkpoints[10])
    best = BestCheckpoint(model_dir)  # best_model_dir mistakenly set to model_dir

    with pytest.raises(FileNotFoundError, match="not a best-snapshot directory"):
        best.update_if_better(checkpoints[10], results(0.5, 10), epoch=1.0)
    assert "model.ckpt-10.index" in listing(model_dir)


def test_relative_directories_give_a_movable_snapshot(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    BestCheckpoint("best").update_if_better("model/model.ckpt-10", results(0.5, 10), epoch=1.0)

    assert tf.train.latest_checkpoint("best") == os.path.join("best", "model.ckpt-10")
    os.rename("best", "moved")
    assert_best_is(str(tmp_path / "moved"), 10, 0.5)
