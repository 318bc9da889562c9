"""Distribution: TF_CONFIG checks, batch and file shares, the best snapshot as an exporter, mirrored training."""

import json
import socket
import os
import types

import numpy as np
import pytest

from library import distribution, local_cluster
from library.best_checkpoint import BestCheckpoint
from library.config import ConfigError
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys

PS_CLUSTER = {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"], "ps": ["host3:2222"]}
COLLECTIVE_CLUSTER = {"chief": ["host0:2222"], "worker": ["host1:2222"]}


def tf_config(cluster, task_type, index=0):
    """The TF_CONFIG of task ``task_type`` ``index`` of ``cluster``."""
    return {"cluster": cluster, "task": {"type": task_type, "index": index}}


def set_tf_config(monkeypatch, value):
    """Set TF_CONFIG as a cluster manager would: a JSON string, or raw text when given a str."""
    monkeypatch.setenv("TF_CONFIG", value if isinstance(value, str) else json.dumps(value))


@pytest.fixture(autouse=True)
def no_tf_config(monkeypatch):
    """No test sees a TF_CONFIG it did not set."""
    monkeypatch.delenv("TF_CONFIG", raising=False)


# --- read_tf_config ---------------------------------------------------------------------------

@pytest.mark.parametrize("distribution_name, value, message", [
    ("parameter_server", None,
     "TF_CONFIG: not set; distribution parameter_server needs it to name the cluster and this task "
     "(see docs/scaling-out.md, or try python -m library.local_cluster)"),
    ("multi_worker", '{"cluster": }', "TF_CONFIG: not valid JSON (Expecting value at character 12)"),
    ("none", "[1, 2]", "TF_CONFIG: expected a JSON object with 'cluster' and 'task'"),
    ("multi_worker", {"cluster": {"chief": "host0:2222"}, "task": {"type": "chief", "index": 0}},
     "TF_CONFIG: 'cluster' must map task types to lists of host:port addresses, "
     'e.g. {"chief": ["host0:2222"], "worker": ["host1:2222"]}'),
    ("multi_worker", {"task": {"type": "chief", "index": 0}},
     'TF_CONFIG: no \'cluster\'; distribution multi_worker needs one, e.g. {"chief": ["host0:2222"], "worker": ["host1:2222"]}'),
    ("multi_worker", {"cluster": COLLECTIVE_CLUSTER},
     'TF_CONFIG: \'task\' must name this task with a type and an index >= 0, e.g. {"type": "worker", "index": 0}'),
    ("multi_worker", {"cluster": COLLECTIVE_CLUSTER, "task": {"type": "worker", "index": "0"}},
     'TF_CONFIG: \'task\' must name this task with a type and an index >= 0, e.g. {"type": "worker", "index": 0}'),
    ("multi_worker", tf_config(PS_CLUSTER, "worker"),
     "TF_CONFIG: cluster has 'ps' tasks, which distribution multi_worker does not run (it runs chief, worker, evaluator)"),
    ("parameter_server", tf_config({"master": ["host0:2222"], "ps": ["host1:2222"]}, "ps"),
     "TF_CONFIG: cluster has 'master' tasks, which distribution parameter_server does not run "
     "(it runs chief, worker, ps, evaluator)"),
    ("multi_worker", tf_config({"worker": ["host0:2222", "host1:2222"]}, "worker"),
     "TF_CONFIG: cluster needs exactly one 'chief' (it writes the checkpoints), not 0"),
    ("parameter_server", tf_config(COLLECTIVE_CLUSTER, "chief"),
     "TF_CONFIG: cluster has no 'ps' tasks, which distribution parameter_server needs; add some or use multi_worker"),
    ("multi_worker", tf_config(COLLECTIVE_CLUSTER, "ps"),
     "TF_CONFIG: task type 'ps' is not supported by distribution multi_worker (supported: chief, worker, evaluator)"),
    ("parameter_server", tf_config(PS_CLUSTER, "worker", 2),
     "TF_CONFIG: task index 2 is out of range: cluster lists 2 'worker' address(es)"),
    ("parameter_server", tf_config(PS_CLUSTER, "evaluator", 1),
     "TF_CONFIG: task index 1 is out of range: a cluster has one evaluator, index 0"),
    ("multi_worker", tf_config(COLLECTIVE_CLUSTER, "evaluator"),
     'TF_CONFIG: distribution multi_worker needs the evaluator\'s own address in its cluster, e.g. "evaluator": ["host9:2222"]'),
    ("mirrored", tf_config(COLLECTIVE_CLUSTER, "chief"),
     "TF_CONFIG: describes a cluster of 2 tasks, but distribution mirrored trains on this machine only; "
     "use multi_worker or parameter_server, or unset TF_CONFIG"),
])
def test_tf_config_mistakes_are_one_line_errors(monkeypatch, distribution_name, value, message):
    if value is not None:
        set_tf_config(monkeypatch, value)
    with pytest.raises(ConfigError) as error:
        distribution.read_tf_config(distribution_name)
    assert str(error.value) == message


@pytest.mark.parametrize("distribution_name, ps", [("parameter_server", 1), ("multi_worker", 0)])
def test_every_task_of_a_local_cluster_passes(monkeypatch, distribution_name, ps):
    addresses = iter(f"127.0.0.1:{port}" for port in range(2000, 2010))
    for task in local_cluster.cluster_tasks(workers=2, ps=ps, evaluator=True, addresses=addresses):
        set_tf_config(monkeypatch, task.tf_config)
        assert distribution.read_tf_config(distribution_name) == task.tf_config


@pytest.mark.parametrize("task_type", ["chief", "ps"])
def test_a_port_already_in_use_is_a_one_line_error(monkeypatch, task_type):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        cluster = {"chief": [address], "ps": ["127.0.0.1:1"]} if task_type == "chief" else {
            "chief": ["127.0.0.1:1"], "ps": [address]}
        set_tf_config(monkeypatch, tf_config(cluster, task_type))
        with pytest.raises(ConfigError) as error:
            distribution.read_tf_config("parameter_server")
    assert str(error.value) == (f"TF_CONFIG: port {address.split(':')[1]} of this task ({task_type} 0, {address}) is "
                                "already in use on this machine; stop what listens there or give the task another port")


def test_parameter_server_evaluator_may_stay_out_of_the_cluster(monkeypatch):
    """As the Estimator documentation writes it: the evaluator is not part of the training cluster."""
    set_tf_config(monkeypatch, tf_config(PS_CLUSTER, "evaluator"))
    assert distribution.read_tf_config("parameter_server")["task"]["type"] == "evaluator"


@pytest.mark.parametrize("distribution_name", ["none", "mirrored"])
def test_one_machine_needs_no_tf_config_and_accepts_a_one_task_one(monkeypatch, distribution_name):
    assert distribution.read_tf_config(distribution_name) == {}
    one_task = tf_config({"chief": ["host0:2222"]}, "chief")
    set_tf_config(monkeypatch, one_task)
    assert distribution.read_tf_config(distribution_name) == one_task


# --- batch and file shares --------------------------------------------------------------------

def two_replicas():
    """Stands for a strategy with two replicas in sync."""
    return types.SimpleNamespace(num_replicas_in_sync=2)


def test_a_step_trains_on_the_global_batch_under_a_strategy():
    assert distribution.images_per_step(8, two_replicas(), {}) == 8


def test_a_step_trains_on_one_workers_share_with_parameter_servers():
    """Three training workers (chief and two workers) step on their own, each on a third of the batch."""
    assert distribution.images_per_step(12, None, tf_config(PS_CLUSTER, "worker")) == 4
    assert distribution.images_per_step(12, None, {}) == 12


@pytest.mark.parametrize("train_distribute, cluster, replicas", [(two_replicas(), {}, 2), (None, PS_CLUSTER, 3)])
def test_a_batch_that_does_not_split_evenly_is_an_error(train_distribute, cluster, replicas):
    with pytest.raises(ConfigError) as error:
        distribution.images_per_step(7, train_distribute, tf_config(cluster, "chief"))
    assert str(error.value) == (f"train_batch_size: 7 does not split evenly across {replicas} replicas; "
                                f"use a multiple of {replicas}")


@pytest.mark.parametrize("task_type, index, pipeline", [("chief", 0, 0), ("worker", 0, 1), ("worker", 1, 2)])
def test_each_parameter_server_worker_gets_its_own_pipeline(task_type, index, pipeline):
    context = distribution.worker_input_context("parameter_server", tf_config(PS_CLUSTER, task_type, index))
    assert (context.num_input_pipelines, context.input_pipeline_id) == (3, pipeline)
    assert context.get_per_replica_batch_size(12) == 4


@pytest.mark.parametrize("distribution_name, task", [("parameter_server", "evaluator"), ("parameter_server", "ps"),
                                                     ("multi_worker", "worker"), ("mirrored", None)])
def test_only_parameter_server_training_tasks_get_a_worker_context(distribution_name, task):
    config = tf_config(PS_CLUSTER, task) if task else {}
    assert distribution.worker_input_context(distribution_name, config) is None


def recording_input_fn(calls):
    """An experiment input_fn that records what it was called with."""
    def input_fn(params, mode, input_context=None):
        calls.append((params, mode, input_context))
    return input_fn


def test_training_input_fn_passes_the_strategys_context_on():
    calls = []
    train_input_fn = distribution.training_input_fn(recording_input_fn(calls), {"a": 1}, "mirrored", {})
    strategy_context = tf.distribute.InputContext(1, 0, 2)
    train_input_fn(input_context=strategy_context)
    assert calls == [({"a": 1}, ModeKeys.TRAIN, strategy_context)]


def test_training_input_fn_brings_the_parameter_server_workers_own_context():
    calls = []
    worker_1 = tf_config(PS_CLUSTER, "worker", 1)
    distribution.training_input_fn(recording_input_fn(calls), {}, "parameter_server", worker_1)()
    context = calls[0][2]
    assert (context.num_input_pipelines, context.input_pipeline_id) == (3, 2)


@pytest.mark.parametrize("distribution_name, task_type, index, filters", [
    ("parameter_server", "chief", 0, ["/job:ps", "/job:chief"]),
    ("parameter_server", "worker", 1, ["/job:ps", "/job:worker/task:1"]),
    ("parameter_server", "evaluator", 0, []),
    ("multi_worker", "worker", 0, []),  # the collective strategy sets its own
])
def test_device_filters_keep_a_ps_task_from_waiting_for_the_whole_cluster(distribution_name, task_type, index, filters):
    own = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    filtered = distribution.with_device_filters(own, distribution_name, tf_config(PS_CLUSTER, task_type, index))
    assert list(filtered.device_filters) == filters
    assert filtered.allow_soft_placement and not own.device_filters


# --- strategies -------------------------------------------------------------------------------

@pytest.mark.parametrize("distribution_name", ["none", "parameter_server"])
def test_no_strategy_without_replicas_to_mirror(distribution_name):
    assert distribution.train_strategy(distribution_name) is None


def gpus(monkeypatch, count):
    """Pretend this machine has ``count`` GPUs."""
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu"] * count if kind == "GPU" else [])


@pytest.mark.parametrize("visible, num_gpus, devices", [
    (4, None, ["/gpu:0", "/gpu:1", "/gpu:2", "/gpu:3"]),
    (4, 2, ["/gpu:0", "/gpu:1"]),
    (0, 2, ["/cpu:0", "/cpu:1"]),  # virtual CPU devices, a test aid
    (0, None, ["/cpu:0"]),
])
def test_mirrored_trains_on_all_gpus_or_num_gpus(monkeypatch, visible, num_gpus, devices):
    gpus(monkeypatch, visible)
    assert distribution.mirrored_devices(num_gpus) == devices


def test_more_gpus_than_the_machine_has_is_a_one_line_error(monkeypatch):
    gpus(monkeypatch, 2)
    with pytest.raises(ConfigError) as error:
        distribution.mirrored_devices(4)
    assert str(error.value) == "num_gpus: 4, but this machine has 2 GPU(s); lower it or leave it unset for all"


@pytest.mark.parametrize("visible, distribution_name, num_gpus, cpus", [
    (0, "mirrored", 3, 3), (0, "mirrored", None, 1), (0, "none", 3, 1), (2, "mirrored", 2, 1)])
def test_virtual_cpu_devices_only_for_mirrored_num_gpus_without_a_gpu(monkeypatch, visible, distribution_name,
                                                                       num_gpus, cpus):
    gpus(monkeypatch, visible)
    config = distribution.with_virtual_cpus(tf.compat.v1.ConfigProto(), distribution_name, num_gpus)
    assert config.device_count.get("CPU", 1) == cpus


def test_multi_worker_counts_the_replicas_of_the_whole_cluster(monkeypatch):
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    set_tf_config(monkeypatch, tf_config(cluster, "worker"))
    assert distribution.train_strategy("multi_worker").num_replicas_in_sync == 3


# --- the best snapshot as an exporter ---------------------------------------------------------

def save_checkpoint(directory, step):
    """A one-variable checkpoint at ``step``, as training writes it."""
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("weights", initializer=[float(step)])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(session, os.path.join(directory, "model.ckpt"), global_step=step)


def export(exporter, checkpoint_path, loss, step):
    """Call the exporter as Estimator's evaluator does after evaluating ``checkpoint_path``."""
    results = {"loss": np.float32(loss), "global_step": np.int64(step)}
    return exporter.export(None, "unused", checkpoint_path, results, is_the_final_export=False)


def test_exporter_snapshots_only_improvements_and_reports_each_evaluation(tmp_path):
    evaluations = []
    best = BestCheckpoint(str(tmp_path / "best"))
    exporter = distribution.BestSnapshotExporter(best, steps_per_epoch=10,
                                                 on_evaluation=lambda *args: evaluations.append(args))
    first, second = save_checkpoint(str(tmp_path), 10), save_checkpoint(str(tmp_path), 20)

    assert export(exporter, first, 0.5, 10) == best.checkpoint_path
    assert export(exporter, second, 0.75, 20) is None

    assert (best.record["step"], best.record["epoch"], best.record["loss"]) == (10, 1.0, 0.5)
    assert [(epoch, improved) for _, epoch, improved in evaluations] == [(1.0, True), (2.0, False)]


def test_exporter_snapshots_what_was_evaluated_in_place_of_the_checkpoint(tmp_path):
    best = BestCheckpoint(str(tmp_path / "best"))
    trained, recalibrated = save_checkpoint(str(tmp_path / "a"), 10), save_checkpoint(str(tmp_path / "b"), 10)
    exporter = distribution.BestSnapshotExporter(best, steps_per_epoch=10, evaluated={trained: recalibrated})
    assert export(exporter, trained, 0.5, 10) == best.checkpoint_path
    assert best.record["source_checkpoint"] == recalibrated


def test_exporter_skips_a_checkpoint_rotated_away_during_evaluation(tmp_path, capsys):
    best = BestCheckpoint(str(tmp_path / "best"))
    exporter = distribution.BestSnapshotExporter(best, steps_per_epoch=10)
    gone = os.path.join(str(tmp_path), "model.ckpt-10")

    assert export(exporter, gone, 0.5, 10) is None

    assert best.record is None
    assert capsys.readouterr().err == (f"warning: {gone} was deleted before it could be snapshotted; "
                                       "raise keep_checkpoint_max or checkpoint less often\n")


def test_exporter_does_not_hide_a_best_model_dir_that_is_no_snapshot_directory(tmp_path):
    model_dir = str(tmp_path)
    checkpoint = save_checkpoint(model_dir, 10)
    exporter = distribution.BestSnapshotExporter(BestCheckpoint(model_dir), steps_per_epoch=10)
    with pytest.raises(FileNotFoundError, match="not a best-snapshot directory"):
        export(exporter, checkpoint, 0.5, 10)


# --- mirrored training -----------------------------------------------------------------------

EXAMPLES, GLOBAL_BATCH = 64, 8
TWO_CPUS = tf.compat.v1.ConfigProto(device_count={"CPU": 2}, allow_soft_placement=True)


def regression_input_fn(contexts):
    """An experiment input_fn over EXAMPLES synthetic examples; records the input_context it gets."""
    def input_fn(params, mode, input_context=None):
        contexts.append(input_context)
        x = np.random.default_rng(0).uniform(size=(EXAMPLES, 4)).astype(np.float32)
        y = x @ np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
        examples = tf.data.Dataset.from_tensor_slices(({"x": x}, y))
        if mode != ModeKeys.TRAIN:
            return examples.batch(GLOBAL_BATCH)
        return examples.repeat().batch(input_context.get_per_replica_batch_size(GLOBAL_BATCH), drop_remainder=True)
    return input_fn


def regression_model_fn(batch_sizes):
    """A linear model_fn that records the batch size each replica trains on."""
    def model_fn(features, labels, mode):
        weights = tf.compat.v1.get_variable("weights", [4, 1], initializer=tf.compat.v1.zeros_initializer())
        loss = tf.compat.v1.losses.mean_squared_error(labels, tf.matmul(features["x"], weights))
        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(mode, loss=loss)
        batch_sizes.append(features["x"].shape[0])
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.05)
        train_op = optimizer.minimize(loss, tf.compat.v1.train.get_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)
    return model_fn


@pytest.mark.filterwarnings("ignore:To make it possible to preserve tf.data options")  # TF's, in graph mode
def test_mirrored_without_gpu_warns_and_trains_on_one_cpu_replica(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # also on a GPU machine
    strategy = distribution.train_strategy("mirrored")
    assert capsys.readouterr().err == "warning: distribution mirrored: no GPU found; training with one replica on the CPU\n"
    batch_sizes = []
    run_config = tf.estimator.RunConfig(str(tmp_path), train_distribute=strategy)
    estimator = tf.estimator.Estimator(regression_model_fn(batch_sizes), config=run_config)

    estimator.train(distribution.training_input_fn(regression_input_fn([]), {}, "mirrored", {}), max_steps=2)

    assert strategy.num_replicas_in_sync == 1 and batch_sizes == [GLOBAL_BATCH]
    assert estimator.get_variable_value("global_step") == 2


@pytest.mark.filterwarnings("ignore:To make it possible to preserve tf.data options")  # TF's, in graph mode
def test_mirrored_training_splits_the_global_batch_and_keeps_the_best_snapshot(tmp_path):
    strategy = tf.compat.v1.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # train_strategy's, with two devices
    steps_per_epoch = EXAMPLES // distribution.images_per_step(GLOBAL_BATCH, strategy, {})
    contexts, batch_sizes, evaluations = [], [], []
    run_config = tf.estimator.RunConfig(str(tmp_path / "model"), save_checkpoints_steps=steps_per_epoch,
                                        train_distribute=strategy, session_config=TWO_CPUS)
    estimator = tf.estimator.Estimator(regression_model_fn(batch_sizes), config=run_config)
    input_fn = regression_input_fn(contexts)
    best = BestCheckpoint(str(tmp_path / "best"))

    distribution.train_and_evaluate(
        estimator, distribution.training_input_fn(input_fn, {}, "mirrored", {}), lambda: input_fn({}, ModeKeys.EVAL),
        max_steps=2 * steps_per_epoch, best=best, steps_per_epoch=steps_per_epoch,
        on_evaluation=lambda result, epoch, improved: evaluations.append((int(result["global_step"]), epoch, improved)),
        throttle_secs=0,
    )

    assert batch_sizes == [GLOBAL_BATCH // 2] * 2  # one model_fn call per replica, each on half the batch
    assert contexts[0].num_replicas_in_sync == 2  # training; evaluation runs on one device, without a context
    assert contexts[1:] == [None, None]
    assert estimator.get_variable_value("global_step") == 2 * steps_per_epoch == 16
    assert evaluations == [(8, 1.0, True), (16, 2.0, True)]
    assert tf.train.latest_checkpoint(best.best_model_dir) == best.checkpoint_path
    assert best.record["step"] == 16
