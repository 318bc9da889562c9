"""Training on several devices or machines with TensorFlow's own machinery: tf.distribute and TF_CONFIG.

The ``distribution`` option picks one of:

- ``none``: one device, the run loop's own train/evaluate cycles.
- ``mirrored``: synchronous training on this machine's GPUs: all-reduce (``MirroredStrategy``), or
  for a model no strategy can mirror, tower replication (``library.towers``).
- ``multi_worker``: synchronous collective all-reduce across machines
  (``tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy``), cluster from TF_CONFIG.
- ``parameter_server``: asynchronous between-graph replication with ps tasks, cluster from
  TF_CONFIG. No strategy: Estimator places the variables on the ps tasks itself
  (``replica_device_setter``), the path it was built around. The v1
  ``ParameterServerStrategy`` also runs on TF 2.15, but its input_context reports one
  replica in sync, so every worker would read a full ``train_batch_size`` batch.

Batch semantics: ``train_batch_size`` is the global batch. Under a strategy Estimator calls
the input_fn once per input pipeline (one per machine) with a ``tf.distribute.InputContext``;
the input_fn takes every n-th file (``input_pipeline_id`` of ``num_input_pipelines``) and
batches ``input_context.get_per_replica_batch_size(train_batch_size)`` examples per
replica, so one step trains on the global batch. With parameter servers each worker steps
on its own: :func:`training_input_fn` hands the input_fn an equivalent context, so each of the
n training workers (chief included) reads its own files in batches of ``train_batch_size / n``,
and one global step is one worker's batch (:func:`images_per_step`).

Evaluation runs where Estimator runs it: after checkpoints in the same process for
``mirrored``, in the separate ``evaluator`` task of a cluster, always on one device so that
the loss is computed exactly as on one machine. :class:`BestSnapshotExporter` keeps the
best-validation-loss snapshot there. ``python -m library.local_cluster`` runs a cluster on
this machine; docs/scaling-out.md shows TF_CONFIG for Kubernetes and Slurm.
"""

import errno
import json
import os
import socket
import sys
from typing import Callable, Optional

from library import evaluation_report
from library.best_checkpoint import BestCheckpoint
from library.config import ConfigError
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()

CLUSTER_DISTRIBUTIONS = ("multi_worker", "parameter_server")
# Task types each cluster distribution runs (TensorFlow's names).
SUPPORTED_TASKS = {
    "multi_worker": ("chief", "worker", "evaluator"),
    "parameter_server": ("chief", "worker", "ps", "evaluator"),
}
TRAINING_TASKS = ("chief", "worker")
CLUSTER_EXAMPLE = '{"chief": ["host0:2222"], "worker": ["host1:2222"]}'
TASK_EXAMPLE = '{"type": "worker", "index": 0}'
# Least seconds between two evaluations; the evaluator also looks for a new checkpoint this often
# (cheap: a look at the checkpoint state file), so each cycle's checkpoint is evaluated promptly.
EVAL_THROTTLE_SECS = 5


def read_tf_config(distribution: str) -> dict:
    """The TF_CONFIG environment variable, checked against ``distribution``; {} when unset."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        if distribution in CLUSTER_DISTRIBUTIONS:
            raise ConfigError(f"TF_CONFIG: not set; distribution {distribution} needs it to name the cluster and this "
                              "task (see docs/scaling-out.md, or try python -m library.local_cluster)")
        return {}
    tf_config = _parse(text)
    if distribution in CLUSTER_DISTRIBUTIONS:
        _check_cluster(tf_config.get("cluster"), distribution)
        _check_task(tf_config, distribution)
    else:
        tasks = sum(len(addresses) for addresses in tf_config.get("cluster", {}).values())
        if tasks > 1:
            raise ConfigError(f"TF_CONFIG: describes a cluster of {tasks} tasks, but distribution {distribution} "
                              "trains on this machine only; use multi_worker or parameter_server, or unset TF_CONFIG")
    return tf_config


def _parse(text: str) -> dict:
    """TF_CONFIG as a JSON object, its cluster (if any) a mapping of task types to address lists."""
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG: not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(tf_config, dict):
        raise ConfigError("TF_CONFIG: expected a JSON object with 'cluster' and 'task'")
    cluster = tf_config.get("cluster", {})
    if not isinstance(cluster, dict) or not all(
        isinstance(addresses, list) and all(isinstance(address, str) for address in addresses)
        for addresses in cluster.values()
    ):
        raise ConfigError("TF_CONFIG: 'cluster' must map task types to lists of host:port addresses, "
                          f"e.g. {CLUSTER_EXAMPLE}")
    return tf_config


def _check_cluster(cluster: Optional[dict], distribution: str) -> None:
    """Raise ConfigError unless ``distribution`` can train on ``cluster``."""
    if not cluster:
        raise ConfigError(f"TF_CONFIG: no 'cluster'; distribution {distribution} needs one, e.g. {CLUSTER_EXAMPLE}")
    supported = SUPPORTED_TASKS[distribution]
    for task_type in cluster:
        if task_type not in supported:
            raise ConfigError(f"TF_CONFIG: cluster has '{task_type}' tasks, which distribution {distribution} "
                              f"does not run (it runs {', '.join(supported)})")
    chiefs = len(cluster.get("chief", []))
    if chiefs != 1:
        raise ConfigError(f"TF_CONFIG: cluster needs exactly one 'chief' (it writes the checkpoints), not {chiefs}")
    if distribution == "parameter_server" and not cluster.get("ps"):
        raise ConfigError("TF_CONFIG: cluster has no 'ps' tasks, which distribution parameter_server needs; "
                          "add some or use multi_worker")


def _check_task(tf_config: dict, distribution: str) -> None:
    """Raise ConfigError unless this task is one of the cluster that ``distribution`` runs."""
    task_type, index = _task(tf_config)
    supported = SUPPORTED_TASKS[distribution]
    if task_type not in supported:
        raise ConfigError(f"TF_CONFIG: task type '{task_type}' is not supported by distribution {distribution} "
                          f"(supported: {', '.join(supported)})")
    listed = len(tf_config["cluster"].get(task_type, []))
    if task_type == "evaluator" and index != 0:
        raise ConfigError(f"TF_CONFIG: task index {index} is out of range: a cluster has one evaluator, index 0")
    if task_type == "evaluator" and distribution == "multi_worker" and not listed:
        # Collective all-reduce looks the evaluator up in the cluster; the ps path does not.
        raise ConfigError('TF_CONFIG: distribution multi_worker needs the evaluator\'s own address in its cluster, '
                          'e.g. "evaluator": ["host9:2222"]')
    if task_type != "evaluator" and index >= listed:
        raise ConfigError(f"TF_CONFIG: task index {index} is out of range: "
                          f"cluster lists {listed} '{task_type}' address(es)")
    if task_type != "evaluator":  # the evaluator starts no server
        _check_port_free(tf_config["cluster"][task_type][index], task_type, index)


def _check_port_free(address: str, task_type: str, index: int) -> None:
    """Raise ConfigError when this task's port is taken: gRPC would log a page of JSON and fail to start."""
    port = address.rpartition(":")[2]
    if not port.isdigit():
        raise ConfigError(f"TF_CONFIG: address {address!r} of {task_type} {index} has no port; write host:port")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: lingering connections are no obstacle
        try:
            probe.bind(("", int(port)))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return  # e.g. a privileged port: TensorFlow's own attempt will tell
            raise ConfigError(f"TF_CONFIG: port {port} of this task ({task_type} {index}, {address}) is already in use "
                              "on this machine; stop what listens there or give the task another port") from None


def _task(tf_config: dict) -> tuple:
    """(type, index) of this task, as TF_CONFIG names it."""
    task = tf_config.get("task")
    valid = (
        isinstance(task, dict) and isinstance(task.get("type"), str) and task["type"]
        and isinstance(task.get("index"), int) and not isinstance(task["index"], bool) and task["index"] >= 0
    )
    if not valid:
        raise ConfigError(f"TF_CONFIG: 'task' must name this task with a type and an index >= 0, e.g. {TASK_EXAMPLE}")
    return task["type"], task["index"]


def _training_workers(tf_config: dict) -> int:
    """Tasks that run training steps: the chief and the workers (1 without a cluster)."""
    cluster = tf_config.get("cluster")
    return sum(len(cluster.get(task_type, [])) for task_type in TRAINING_TASKS) if cluster else 1


def mirrored_devices(num_gpus: Optional[int] = None) -> list:
    """The devices ``mirrored`` trains on: the first ``num_gpus`` GPUs (all by default).

    Without a GPU: ``num_gpus`` virtual CPU devices (a test aid: the same code path, no speed-up;
    :func:`with_virtual_cpus` creates them), else the CPU alone with a warning.
    """
    gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus and num_gpus and num_gpus > gpus:
        raise ConfigError(f"num_gpus: {num_gpus}, but this machine has {gpus} GPU(s); lower it or leave it unset for all")
    if gpus:
        return [f"/gpu:{index}" for index in range(num_gpus or gpus)]
    if num_gpus is None:
        print("warning: distribution mirrored: no GPU found; training with one replica on the CPU", file=sys.stderr)
    return [f"/cpu:{index}" for index in range(num_gpus or 1)]


def with_virtual_cpus(session_config: tf.compat.v1.ConfigProto, distribution: str,
                      num_gpus: Optional[int]) -> tf.compat.v1.ConfigProto:
    """``session_config`` with ``num_gpus`` CPU devices when ``mirrored`` asks for several on a machine without GPUs.

    Graph-mode sessions create their devices from ``device_count``, so this works after
    TensorFlow has started, unlike ``tf.config.set_logical_device_configuration``.
    """
    if distribution == "mirrored" and num_gpus and not tf.config.list_physical_devices("GPU"):
        session_config.device_count["CPU"] = num_gpus
    return session_config


def train_strategy(distribution: str, num_gpus: Optional[int] = None) -> Optional[tf.compat.v1.distribute.Strategy]:
    """The ``RunConfig(train_distribute=...)`` for ``distribution``; None for none and parameter_server.

    ``eval_distribute`` stays None on purpose: a distributed evaluation averages per-replica
    losses and so weighs a partial last batch differently, and the best snapshot must
    compare losses computed exactly as on one machine.
    """
    if distribution == "mirrored":
        return tf.compat.v1.distribute.MirroredStrategy(mirrored_devices(num_gpus))
    if distribution == "multi_worker":
        return tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy()
    return None


def images_per_step(train_batch_size: int, train_distribute, tf_config: dict) -> int:
    """Images one global step trains on: the global batch, or with parameter servers one worker's share."""
    replicas = train_distribute.num_replicas_in_sync if train_distribute else _training_workers(tf_config)
    if train_batch_size % replicas:
        raise ConfigError(f"train_batch_size: {train_batch_size} does not split evenly across {replicas} replicas; "
                          f"use a multiple of {replicas}")
    return train_batch_size if train_distribute else train_batch_size // replicas


def worker_input_context(distribution: str, tf_config: dict) -> Optional[tf.distribute.InputContext]:
    """This parameter-server training worker's files and batch share, which no strategy hands out; else None."""
    if distribution != "parameter_server":
        return None
    task_type, index = _task(tf_config)
    if task_type not in TRAINING_TASKS:
        return None
    workers = _training_workers(tf_config)
    pipeline = 0 if task_type == "chief" else 1 + index  # the chief's first, then the workers'
    return tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=pipeline,
                                      num_replicas_in_sync=workers)


def training_input_fn(input_fn, params: dict, distribution: str, tf_config: dict) -> Callable:
    """The training input_fn for Estimator: passes on the strategy's input_context, or this worker's own.

    ``input_fn(params, mode, input_context=None)`` is the experiment's. Estimator hands an
    input_context only to a function that declares the argument, as this one does.
    """
    worker_context = worker_input_context(distribution, tf_config)

    def train_input_fn(input_context=None):
        return input_fn(params, tf.estimator.ModeKeys.TRAIN, input_context or worker_context)

    return train_input_fn


def with_device_filters(session_config: tf.compat.v1.ConfigProto, distribution: str,
                        tf_config: dict) -> tf.compat.v1.ConfigProto:
    """A copy of ``session_config`` through which a ps-mode chief or worker talks only to the ps tasks and itself.

    Estimator sets these filters only when RunConfig has no session_config. Without them the
    session waits for every task of the cluster, forever for an evaluator listed in it.
    """
    filtered = tf.compat.v1.ConfigProto()
    filtered.CopyFrom(session_config)
    if distribution == "parameter_server":
        task_type, index = _task(tf_config)
        own_device = {"chief": "/job:chief", "worker": f"/job:worker/task:{index}"}.get(task_type)
        if own_device:
            filtered.device_filters.extend(["/job:ps", own_device])
    return filtered


class BestSnapshotExporter(tf.estimator.Exporter):
    """Updates the best-validation-loss snapshot after each evaluation, in the task that evaluates."""

    def __init__(self, best: BestCheckpoint, steps_per_epoch: int,
                 on_evaluation: Optional[Callable[[dict, float, bool], None]] = None, evaluated: Optional[dict] = None):
        self._best = best
        self._steps_per_epoch = steps_per_epoch
        self._on_evaluation = on_evaluation
        self._evaluated = {} if evaluated is None else evaluated  # checkpoint -> what was evaluated in its place

    @property
    def name(self) -> str:
        """Estimator's name for it (it writes nothing under ``model_dir/export/<name>``)."""
        return "best_snapshot"

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export) -> Optional[str]:
        """Snapshot ``checkpoint_path`` (or what was evaluated in its place) if its loss is the best so far;
        the snapshot's path if it was."""
        checkpoint_path = self._evaluated.get(checkpoint_path, checkpoint_path)
        epoch = eval_result["global_step"] / self._steps_per_epoch
        scalars, _ = evaluation_report.split(eval_result)  # the record keeps numbers, not the report's arrays
        improved = self._snapshot_if_better(checkpoint_path, scalars, epoch)
        if self._on_evaluation is not None:
            self._on_evaluation(eval_result, epoch, improved)
        return self._best.checkpoint_path if improved else None

    def _snapshot_if_better(self, checkpoint_path: str, eval_result: dict, epoch: float) -> bool:
        """``update_if_better``, except that a checkpoint the chief rotated away meanwhile is skipped with a warning.

        In a cluster the chief trains on while the evaluator evaluates, so ``keep_checkpoint_max``
        may delete the evaluated checkpoint (its index first) before it is copied.
        """
        try:
            return self._best.update_if_better(checkpoint_path, eval_result, epoch)
        except (FileNotFoundError, tf.errors.NotFoundError):
            if tf.io.gfile.exists(checkpoint_path + ".index"):
                raise  # not a rotation: e.g. best_model_dir holds a checkpoint without a record
            print(f"warning: {checkpoint_path} was deleted before it could be snapshotted; "
                  "raise keep_checkpoint_max or checkpoint less often", file=sys.stderr)
            return False


def train_and_evaluate(estimator, train_input_fn, eval_input_fn, *, max_steps: int, best: BestCheckpoint,
                       steps_per_epoch: int, hooks=(), on_evaluation=None, recalibration=None,
                       throttle_secs: int = EVAL_THROTTLE_SECS) -> None:
    """Run this task's part of ``tf.estimator.train_and_evaluate``: train, evaluate, keep the best snapshot.

    Which part comes from TF_CONFIG: chief and workers train to ``max_steps``, ps tasks serve
    variables until they are stopped, the evaluator evaluates each new checkpoint (at most every
    ``throttle_secs``) until one reaches ``max_steps``; without TF_CONFIG this process does
    both, evaluating after each checkpoint. ``on_evaluation(eval_result, epoch, improved)``
    is called after each evaluation. ``recalibration``: a ``batch_norm_recalibration.EvaluatorHook`` (or None),
    run in each evaluation; the snapshot is taken of the checkpoint it evaluated.
    """
    train_spec = tf.estimator.TrainSpec(train_input_fn, max_steps=max_steps, hooks=list(hooks))
    exporter = BestSnapshotExporter(best, steps_per_epoch, on_evaluation, recalibration and recalibration.evaluated)
    eval_spec = tf.estimator.EvalSpec(
        eval_input_fn, steps=None, exporters=[exporter], hooks=[recalibration] if recalibration else [],
        start_delay_secs=0, throttle_secs=throttle_secs,
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
