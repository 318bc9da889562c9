"""Batch-norm recalibration ("precise BN"): population statistics in the checkpoint before it is evaluated.

Batch norm normalizes by batch statistics in training and by moving averages of them in
evaluation. Those averages lag the weights (momentum), and they are taken over training
crops, which evaluation does not see. So a checkpoint's evaluation can measure stale
statistics more than the weights. Recalibration, as detectron2's and pycls's "precise BN",
and at evaluation's crop and resolution, as FixRes argues:

1. build the model's TRAINING graph (batch statistics) on training images preprocessed like
   evaluation (the experiment's ``recalibration_input_fn``), once per run (:class:`Recalibrator`
   keeps it and its session for every later checkpoint), and restore the checkpoint;
2. find every moving average the batch-norm updates (UPDATE_OPS) write, and the batch
   statistic each update feeds it (the ``average - (average - batch) * (1 - momentum)``
   update of tf.layers, Keras, slim and ``project/networks/layers``);
3. run ``batches`` batches through it, updating nothing, and take the true population
   moments: means are the mean of the batch means; a variance is the mean of the batch
   variances plus the variance of the batch means (its ``moving_mean`` sibling), so that both
   are the moments of all the images together, not another moving average;
4. write a new checkpoint, ``recalibrated.ckpt-<step>``, beside the original: the same
   variables and step, only the moving statistics replaced. It is saved under its final
   name first and then, where asked, made the directory's latest by one atomic rewrite of
   the ``checkpoint`` state file: a kill before that rewrite leaves the original the latest,
   one after it the recalibrated one, both complete. Older recalibrated checkpoints are then
   deleted.

In a cluster the evaluator restores the chief's checkpoints itself (Estimator's evaluator
loop), so :class:`EvaluatorHook` recalibrates each one after that restore and restores the
recalibrated checkpoint in its place; it leaves the state file to the chief.

Trainable variables are restored and saved, never run through an update. A model without
batch-norm updates (a frozen hub module, a network without batch norm) is left as it is.
The module knows nothing about the project: the experiment hands it ``model_fn``,
``recalibration_input_fn`` and params (see ``library/training/run_loop.py``).
"""

import collections
import contextlib
import dataclasses
import os
import sys
import time
from typing import Callable, Optional

import numpy as np

from library import model_directory
from library.configuration.config import ConfigError
from library.experiment import capability
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1

PREFIX = "recalibrated.ckpt"
_ASSIGNS = ("AssignSubVariableOp", "AssignSub")
_READS = ("Identity", "ReadVariableOp", "Cast")
_SEARCH_DEPTH = 6  # ops between an assign and the ``average - batch`` it scales (mul, cast, where, ...)
_MEAN, _VARIANCE = "moving_mean", "moving_variance"


class RecalibrationError(ConfigError):
    """Recalibration cannot work for this model or input (a one-line error naming the option to turn it off)."""


@dataclasses.dataclass(frozen=True)
class Recalibration:
    """What one recalibration did: the checkpoint to evaluate, how many statistics and batches, how long."""

    checkpoint: str
    statistics: int
    batches: int
    seconds: float

    def summary(self) -> str:
        """The line the run loop prints before the evaluation it prepared."""
        if not self.statistics and is_recalibrated(self.checkpoint):
            return f"batch norm: {self.checkpoint} is recalibrated already"
        if not self.statistics:
            return f"batch norm: nothing to recalibrate (no batch-norm updates in training); {self.checkpoint} as is"
        return (f"batch norm: {self.statistics} moving statistics recalibrated on {self.batches} batches "
                f"in {self.seconds:.1f}s: {self.checkpoint}")


def is_recalibrated(checkpoint: str) -> bool:
    """Whether ``checkpoint`` was written by :func:`recalibrate` (it needs no second pass)."""
    return os.path.basename(checkpoint).startswith(PREFIX + "-")


def recalibrator(experiment, params: dict, batches: int, session_config=None) -> Optional["Recalibrator"]:
    """The :class:`Recalibrator` of the experiment's model; None when recalibration is off (``batches`` 0)."""
    if batches == 0:
        return None
    input_fn = capability(experiment, "recalibration_input_fn")
    return Recalibrator(experiment.model_fn, lambda: input_fn(params), params, batches, session_config)


def evaluator_hook(model_dir: str, experiment, params: dict, batches: int, session_config=None):
    """The :class:`EvaluatorHook` of a cluster's evaluator; None when recalibration is off (``batches`` 0)."""
    found = recalibrator(experiment, params, batches, session_config)
    if found is None:
        return None
    return EvaluatorHook(model_dir, lambda checkpoint: found.before_evaluation(checkpoint, make_latest=False))


class EvaluatorHook(tf.estimator.SessionRunHook):
    """A cluster evaluator's recalibration: Estimator's evaluator loop evaluates the chief's checkpoints itself,
    so this hook, once the checkpoint is restored, recalibrates it and restores the recalibrated one in its place.

    ``evaluated[checkpoint]`` is then the recalibrated checkpoint, which the best snapshot copies.
    """

    def __init__(self, model_dir: str, recalibrate_checkpoint: Callable[[str], str]):
        self._model_dir = model_dir
        self._recalibrate = recalibrate_checkpoint
        self.evaluated = {}

    def begin(self):
        self._step = v1.train.get_global_step()
        self._saver = v1.train.Saver()

    def after_create_session(self, session, coord):
        step = int(session.run(self._step))
        checkpoint = checkpoint_at_step(self._model_dir, step)
        if checkpoint is None:
            print(f"warning: batch norm: the checkpoint of step {step} was deleted before it could be recalibrated; "
                  "evaluating its moving statistics", file=sys.stderr, flush=True)
            return
        recalibrated = self._recalibrate(checkpoint)
        self._saver.restore(session, recalibrated)
        self.evaluated[checkpoint] = recalibrated


def checkpoint_at_step(model_dir: str, step: int) -> Optional[str]:
    """The (not recalibrated) checkpoint of ``step`` that model_dir's state file lists, if it still exists."""
    state = v1.train.get_checkpoint_state(model_dir)
    for path in reversed(state.all_model_checkpoint_paths if state else []):
        if path.endswith(f"-{step}") and not is_recalibrated(path) and tf.io.gfile.exists(path + ".index"):
            return path
    return None


def recalibrate(checkpoint: str, model_fn: Callable, input_fn: Callable, params: dict, batches: int, *,
                session_config=None, make_latest: bool = True) -> Recalibration:
    """One :meth:`Recalibrator.recalibrate` of ``checkpoint`` (the graph built for it alone)."""
    with contextlib.closing(Recalibrator(model_fn, input_fn, params, batches, session_config)) as recalibrator:
        return recalibrator.recalibrate(checkpoint, make_latest)


class Recalibrator:
    """The recalibration graph and session of one model: built at its first checkpoint, reused for every later one
    (a training run recalibrates before each evaluation; building the graph again would cost seconds each time)."""

    def __init__(self, model_fn: Callable, input_fn: Callable, params: dict, batches: int, session_config=None):
        self._build = lambda: _RecalibrationGraph(model_fn, input_fn, params, session_config)
        self._graph = None
        self.batches = batches
        self._said_nothing_to_do = False

    def before_evaluation(self, checkpoint: str, make_latest: bool = True) -> str:
        """The checkpoint to evaluate in place of ``checkpoint``; prints one line saying what was done, at what cost
        (that there is nothing to recalibrate only once: a model without batch-norm updates never gets any)."""
        result = self.recalibrate(checkpoint, make_latest)
        nothing_to_do = not result.statistics and not is_recalibrated(result.checkpoint)
        if not (nothing_to_do and self._said_nothing_to_do):
            print(result.summary(), flush=True)
        self._said_nothing_to_do |= nothing_to_do
        return result.checkpoint

    def recalibrate(self, checkpoint: str, make_latest: bool = True) -> Recalibration:
        """Write ``checkpoint`` with population batch-norm statistics over ``batches`` batches of the input.

        ``make_latest``: also make it the latest checkpoint of its directory (only for a directory
        this process alone writes; in a cluster the chief does). Returns the original checkpoint
        when it is recalibrated already or the model has no batch-norm updates.
        """
        started = time.perf_counter()
        if is_recalibrated(checkpoint):
            return Recalibration(checkpoint, 0, 0, 0.0)
        if self._graph is None:
            self._graph = self._build()
        graph = self._graph
        if not graph.statistics:
            return Recalibration(checkpoint, 0, 0, time.perf_counter() - started)
        print(f"batch norm: recalibrating {checkpoint} on {self.batches} batches", file=sys.stderr, flush=True)
        recalibrated, batches = graph.recalibrate(checkpoint, self.batches)
        if make_latest:
            make_latest_checkpoint(recalibrated)
        remove_other_recalibrations(recalibrated)
        return Recalibration(recalibrated, len(graph.statistics), batches, time.perf_counter() - started)

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()


class _RecalibrationGraph:
    """The model's TRAINING graph on the recalibration input, with the batch statistics each moving average is fed."""

    def __init__(self, model_fn: Callable, input_fn: Callable, params: dict, session_config=None):
        self._graph = tf.Graph()
        with self._graph.as_default():
            v1.train.get_or_create_global_step()
            features, labels, self._restart = _batches(input_fn())
            model_fn(features, labels, tf.estimator.ModeKeys.TRAIN, params)
            self.statistics = batch_statistics(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
            variables = {variable.op.name: variable for variable in v1.global_variables()
                         if variable.op.name in self.statistics}
            self._values = {name: v1.placeholder(variable.dtype.base_dtype, variable.shape)
                            for name, variable in variables.items()}
            self._assign = tf.group(*[variable.assign(self._values[name]) for name, variable in variables.items()])
            self._saver = v1.train.Saver(save_relative_paths=True)
            self._step = v1.train.get_global_step()
        self._graph.finalize()
        self._session = v1.Session(graph=self._graph, config=session_config) if self.statistics else None

    def recalibrate(self, checkpoint: str, batches: int) -> tuple:
        """(the recalibrated checkpoint written beside ``checkpoint``, the number of batches measured)."""
        session = self._session
        self._saver.restore(session, checkpoint)
        if self._restart is not None:
            session.run(self._restart)  # the same batches for every checkpoint
        samples = collect(session, self.statistics, batches)
        session.run(self._assign, {self._values[name]: value for name, value in population_statistics(samples).items()})
        step = int(session.run(self._step))
        recalibrated = os.path.join(os.path.dirname(checkpoint), f"{PREFIX}-{step}")
        self._saver.save(session, recalibrated, write_meta_graph=False, write_state=False)
        return recalibrated, len(next(iter(samples.values())))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _batches(inputs) -> tuple:
    """(features, labels, the op restarting the input or None) of an input_fn's result: a Dataset or tensors,
    as Estimator takes both."""
    if isinstance(inputs, tf.data.Dataset):
        iterator = v1.data.make_initializable_iterator(inputs)
        return (*iterator.get_next(), iterator.initializer)
    return (*inputs, None)


def batch_statistics(update_ops) -> dict:
    """{name of a moving-average variable: the batch statistic its update feeds it} of every batch-norm update."""
    variables = {variable.op.name for variable in v1.global_variables()}
    found = {}
    for update in update_ops:
        for assign in _assign_ops(getattr(update, "op", update)):
            name = _variable_op(assign.inputs[0]).name
            batch = _batch_value(assign.inputs[1], name)
            if batch is None or name not in variables:
                raise RecalibrationError(
                    f"batch_norm_recalibration: the update {assign.name} of {name} is not an "
                    "'average - (average - batch) * (1 - momentum)' update; set batch_norm_recalibration_batches 0")
            found[name] = batch
    return found


def _assign_ops(op, depth=0) -> list:
    """The assign-sub ops an UPDATE_OPS entry runs: itself, or behind its control inputs (a read after the update)."""
    if op.type in _ASSIGNS:
        return [op]
    if depth >= _SEARCH_DEPTH:
        return []
    return [assign for control in op.control_inputs for assign in _assign_ops(control, depth + 1)]


def _variable_op(tensor):
    """The variable op (VarHandleOp, VariableV2) behind a handle, reference or read of it."""
    op = tensor.op
    while op.type in _READS:
        op = op.inputs[0].op
    return op


def _batch_value(delta, variable_name):
    """The ``batch`` of ``delta = (average - batch) * decay``, searched a few ops up from the delta; None if absent."""
    frontier = [delta.op]
    for _ in range(_SEARCH_DEPTH):
        for op in frontier:
            if op.type == "Sub" and _variable_op(op.inputs[0]).name == variable_name:
                return op.inputs[1]
        frontier = [tensor.op for op in frontier for tensor in op.inputs]
    return None


def collect(session, tensors: dict, batches: int) -> dict:
    """{name: [value of the tensor in each of ``batches`` runs]}; fewer when the input ends first."""
    samples = collections.defaultdict(list)
    for _ in range(batches):
        try:
            values = session.run(tensors)
        except tf.errors.OutOfRangeError:
            break
        for name, value in values.items():
            samples[name].append(np.asarray(value, np.float64))
    if not samples:
        raise RecalibrationError("batch_norm_recalibration: the recalibration input gave no batch; check train_data "
                                 "or set batch_norm_recalibration_batches 0")
    return dict(samples)


def population_statistics(samples: dict) -> dict:
    """Each moving statistic over all batches: means averaged; a variance averaged plus its mean's spread.

    With equal batches this is the variance of all activations together (law of total
    variance): mean of the batch variances + variance of the batch means.
    """
    result = {}
    for name, values in samples.items():
        value = np.mean(values, axis=0)
        means = samples.get(_mean_of(name)) if name.endswith(_VARIANCE) else None
        if means is not None:
            value = value + np.var(means, axis=0)
        result[name] = value
    return result


def _mean_of(variance_name: str) -> str:
    """The name of the moving mean that goes with a moving variance."""
    return variance_name[: -len(_VARIANCE)] + _MEAN


def make_latest_checkpoint(path: str) -> None:
    """Point the ``checkpoint`` state file of ``path``'s directory at it (one atomic write), the others still listed."""
    directory = os.path.dirname(path)
    state = v1.train.get_checkpoint_state(directory)
    others = [p for p in (state.all_model_checkpoint_paths if state else []) if not is_recalibrated(p)]
    model_directory.write_state(directory, path, others)


def remove_other_recalibrations(keep: str) -> None:
    """Delete the files of every recalibrated checkpoint in ``keep``'s directory but ``keep``'s (and leftovers)."""
    directory, name = os.path.split(keep)
    for file in tf.io.gfile.listdir(directory or os.curdir):
        if file.startswith(PREFIX + "-") and not file.startswith(name + "."):
            tf.io.gfile.remove(os.path.join(directory, file))
