"""One evaluation of a training's checkpoint, in one place: :meth:`Evaluator.evaluate` is what an evaluation is.

In order: recalibrate the checkpoint's batch norm (``library/evaluation/recalibration.py``), compute its
metrics in an evaluation graph built once per run (:class:`CheckpointEvaluation`) and its report
(``library/evaluation/report.py``), write both to TensorBoard's eval run, keep the report as
``model_dir/evaluation-<step>.json``, log the results in ``evaluations.jsonl`` (:class:`EvaluationLog`) and in
the run's HParams row, snapshot the checkpoint when its loss is the best so far
(``library/evaluation/best_checkpoint.py``, which also exports it on request) and print one line.

The cycles of a training run evaluate through it (``run_loop.Training.in_cycles``); a cluster's
evaluator task keeps its results through :meth:`Evaluator.record`; ``--mode evaluate`` through
:func:`evaluate_checkpoint` (``Estimator.evaluate``). When the model_fn's evaluation metrics
include a ``confusion_matrix`` (and optionally the ``mistakes/*`` of ``report.py``), every
evaluation gets a report, its classes named by ``params["class_names"]``. Only scalar results go
into evaluations.jsonl and the best-snapshot record.

Why a graph of its own: a cycle that ends its ``Estimator.train`` call, recalibrates and then runs
``Estimator.evaluate`` builds three graphs, opens three sessions, restores the checkpoint three
times and refills the training input's shuffle buffer: seconds on 2 CPU cores, more than a small
set's epoch of training. Here one ``Estimator.train`` call runs every cycle
(``library/training/cycles.py``), and :class:`CheckpointEvaluation`'s recalibration and
evaluation graphs and sessions are built once per run: the same model_fn in EVAL mode, the same
metrics as ``Estimator.evaluate`` (the loss as the mean of the batches' losses) and the same
scalar summaries in ``eval_dir``. Evaluating the checkpoint file, not the live variables, keeps
what the best snapshot copies identical to what was evaluated.
"""

import concurrent.futures
import dataclasses
import json
import os
import time
from typing import Callable, Mapping, Optional

import numpy as np

from library import atomic_file
from library.evaluation import report as evaluation_report
from library.evaluation.best_checkpoint import BestCheckpoint, json_ready
from library.evaluation.hparams_summary import SessionRow
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys
EVALUATIONS_FILE = "evaluations.jsonl"


@dataclasses.dataclass(kw_only=True)
class Evaluator:
    """The evaluations of one training (or one phase of it): what evaluates, where the results go, how they are told."""

    engine: Optional["CheckpointEvaluation"]  # None in a cluster, whose evaluator task evaluates with Estimator
    estimator: tf.estimator.Estimator  # its eval_dir is TensorBoard's eval run
    params: Mapping  # class_names name the report's classes
    best: BestCheckpoint
    log: "EvaluationLog"
    hparams_row: SessionRow
    finished: Callable[[int], bool]  # whether the run ends at a global step (its HParams row then says so)
    model_dir: str  # where evaluation-<step>.json is kept
    epochs: int
    steps_per_epoch: int
    phase: Optional[str] = None
    drawing: "Background" = dataclasses.field(default_factory=lambda: Background())  # the report's images

    def evaluate(self, checkpoint: str) -> str:
        """Evaluate ``checkpoint`` (batch norm recalibrated), write its summaries and report, log it, snapshot it if
        its loss is the best so far and print its line; returns the checkpoint evaluated (the recalibrated one, if
        any). The report's images are drawn while training goes on."""
        checkpoint, results = self.engine.evaluate(checkpoint)
        write_scalar_summaries(self.estimator.eval_dir(), results)
        results, report = evaluation_results(self.estimator, self.params, results,
                                             self.drawing.later(evaluation_report.write_summaries))
        epoch = results["global_step"] / self.steps_per_epoch
        improved = self.best.update_if_better(checkpoint, results, epoch, phase=self.phase)
        self.record(results, report, epoch, improved)
        return checkpoint

    def record(self, results: dict, report, epoch: float, improved: bool) -> None:
        """Keep an evaluation's report beside the log, log it for resumed runs and in the HParams row, print its line."""
        if report is not None:
            evaluation_report.write_json(evaluation_report.json_path(self.model_dir, results["global_step"]), report)
        self.log.append({"epoch": round(epoch, 3), **results, "new_best": improved, "time": time.time()})
        self.hparams_row.write(self.best.record, finished=self.finished(results["global_step"]))
        print(evaluation_summary(results, epoch, self.epochs, self.best.record, improved, phase=self.phase), flush=True)

    def close(self) -> None:
        """Wait for the report's images still drawing (raising their error), then close the engine."""
        try:
            self.drawing.finish()
        finally:
            if self.engine is not None:
                self.engine.close()


class EvaluationLog:
    """Every evaluation of a run, one JSON line each, so a resumed run knows what was evaluated and since when the
    loss has not improved; the entries of a run in phases name their phase, and each phase reads its own."""

    def __init__(self, model_dir: str, phase: Optional[str] = None):
        self._path = os.path.join(model_dir, EVALUATIONS_FILE)
        self._phase = phase
        self.entries = []
        if tf.io.gfile.exists(self._path):
            with tf.io.gfile.GFile(self._path) as handle:
                self.entries = [json.loads(line) for line in handle if line.strip()]

    def _own(self) -> list:
        return [entry for entry in self.entries if entry.get("phase") == self._phase]

    @property
    def last_step(self):
        own = self._own()
        return own[-1]["global_step"] if own else None

    def evaluations_without_improvement(self) -> int:
        """This phase's evaluations since its last new best (an entry that does not say counts as one)."""
        count = 0
        for entry in reversed(self._own()):
            if entry.get("new_best", True):
                break
            count += 1
        return count

    def append(self, entry: dict) -> None:
        self.entries.append({"phase": self._phase, **entry} if self._phase else entry)
        atomic_file.write_text(self._path, "".join(json.dumps(e) + "\n" for e in self.entries))


def plain(results: dict) -> dict:
    """Evaluation results as JSON-ready Python numbers."""
    return {key: json_ready(value) for key, value in results.items()}


def evaluate_checkpoint(run, estimator, checkpoint, write_summaries=evaluation_report.write_summaries) -> tuple:
    """Evaluate ``checkpoint`` on the evaluation data with ``Estimator.evaluate`` (``run``: a run_loop ``Run``): see
    :func:`evaluation_results`."""
    results = estimator.evaluate(run.input_fn(ModeKeys.EVAL), checkpoint_path=checkpoint)
    return evaluation_results(estimator, run.params, results, write_summaries)


def evaluation_results(estimator, params, results: dict, write_summaries=evaluation_report.write_summaries) -> tuple:
    """(scalar results as plain numbers, the evaluation report or None); the report also goes to TensorBoard
    through ``write_summaries(eval_dir, report, arrays)``."""
    scalars, arrays = evaluation_report.split(results)
    scalars = plain(scalars)
    report = evaluation_report.build(arrays, params.get("class_names"), scalars["global_step"])
    if report is not None:
        write_summaries(estimator.eval_dir(), report, arrays)
    return scalars, report


def evaluation_summary(results: dict, epoch: float, epochs: int, record, improved: bool, *, phase=None) -> str:
    """One line a person can scan: where training is (in which phase), how it did, the best so far."""
    line = f"{epoch_label(phase, epoch)}/{epochs}  step {results['global_step']}  eval loss {results['loss']:.4f}"
    if "accuracy" in results:
        line += f"  accuracy {results['accuracy']:.2%}"
    if record:
        line += f"  best loss {record['loss']:.4f} ({epoch_label(record.get('phase'), record['epoch'])})"
    return line + ("  * new best" if improved else "")


def epoch_label(phase: Optional[str], epoch: float) -> str:
    """``epoch 3``, or ``head epoch 3`` in a phase: epochs count within their phase."""
    return f"{phase + ' ' if phase else ''}epoch {epoch:g}"


class CheckpointEvaluation:
    """An evaluation graph and session, built at the first evaluation, that evaluate any checkpoint of the model
    (recalibrated first by ``recalibrator``, a ``recalibration.Recalibrator`` or None)."""

    def __init__(self, model_fn, input_fn, recalibrator=None, session_config=None, seed=None):
        """``model_fn(features, labels, mode)`` gives the EstimatorSpec; ``input_fn()`` one pass of (features, labels)."""
        self._build = lambda: _EvaluationGraph(model_fn, input_fn, session_config, seed)
        self._graph = None
        self._recalibrator = recalibrator

    def evaluate(self, checkpoint: str) -> tuple:
        """(the checkpoint evaluated: ``checkpoint`` or its recalibration, its metrics as ``Estimator.evaluate``
        returns them)."""
        if self._recalibrator is not None:
            checkpoint = self._recalibrator.before_evaluation(checkpoint)
        if self._graph is None:
            self._graph = self._build()
        return checkpoint, self._graph.evaluate(checkpoint)

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
        if self._recalibrator is not None:
            self._recalibrator.close()


class _EvaluationGraph:
    """The model in EVAL mode on one pass of the evaluation input, with the metrics Estimator.evaluate computes.

    After each evaluation the metrics and the input are reset in a thread of their own, so that the next
    evaluation finds its input started (starting an input pipeline takes ~0.1 s) while training goes on.
    """

    def __init__(self, model_fn, input_fn, session_config=None, seed=None):
        self._graph = tf.Graph()
        with self._graph.as_default():
            if seed is not None:
                v1.set_random_seed(seed)  # as RunConfig.tf_random_seed does
            global_step = v1.train.get_or_create_global_step()
            iterator = v1.data.make_initializable_iterator(input_fn())
            features, labels = iterator.get_next()
            spec = model_fn(features, labels, tf.estimator.ModeKeys.EVAL)
            metrics = {**spec.eval_metric_ops, "loss": v1.metrics.mean(spec.loss)}
            self._values = {**{name: value for name, (value, _) in metrics.items()}, "global_step": global_step}
            self._update = tf.group(*[update for _, update in metrics.values()])
            self._reset = tf.group(v1.local_variables_initializer(), iterator.initializer)
            self._saver = v1.train.Saver()
            tables = v1.tables_initializer()
        self._graph.finalize()
        self._session = v1.Session(graph=self._graph, config=session_config)
        self._session.run(tables)
        self._resetting = Background()
        self._reset_later = self._resetting.later(lambda: self._session.run(self._reset))
        self._reset_later()

    def evaluate(self, checkpoint: str) -> dict:
        self._saver.restore(self._session, checkpoint)
        self._resetting.wait()
        while True:
            try:
                self._session.run(self._update)
            except tf.errors.OutOfRangeError:
                break
        values = self._session.run(self._values)
        self._reset_later()
        return values

    def close(self) -> None:
        try:
            self._resetting.finish()
        finally:
            self._session.close()


def write_scalar_summaries(eval_dir: str, results: dict) -> None:
    """The scalar results in TensorBoard's eval run at their global step, as ``Estimator.evaluate`` writes them."""
    values = [v1.Summary.Value(tag=name, simple_value=float(value)) for name, value in results.items()
              if np.ndim(value) == 0 and name != "global_step"]
    writer = v1.summary.FileWriterCache.get(eval_dir)
    writer.add_summary(v1.Summary(value=values), int(results["global_step"]))
    writer.flush()


class Background:
    """One worker thread for work training need not wait for (the evaluation report's images: matplotlib, ~0.2 s
    an evaluation; restarting the evaluation input); the work runs in the order handed over, and its error is
    raised at the next hand-over, :meth:`wait` or :meth:`finish`."""

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cycle-evaluation")
        self._pending = None

    def later(self, function):
        """``function`` made to run in the worker, once the work handed over before it has ended."""
        def submit(*args):
            self.wait()
            self._pending = self._executor.submit(function, *args)
        return submit

    def wait(self) -> None:
        """Wait for the work handed over (raising its error)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def finish(self) -> None:
        """Wait for the work handed over (raising its error), then stop the worker."""
        try:
            self.wait()
        finally:
            self._executor.shutdown()
