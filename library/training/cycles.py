"""Evaluating at the end of every training cycle without leaving the training session.

A cycle that ends its ``Estimator.train`` call, recalibrates and then runs
``Estimator.evaluate`` builds three graphs, opens three sessions, restores the checkpoint
three times and refills the training input's shuffle buffer: seconds on 2 CPU cores, more
than a small set's epoch of training. Here one ``Estimator.train`` call runs every cycle.
At each cycle's last step :class:`CyclesHook` saves a checkpoint with the training's own
Saver and hands it to :class:`CheckpointEvaluation`, whose recalibration and evaluation
graphs and sessions are built once per run: the same model_fn in EVAL mode, the same
metrics as ``Estimator.evaluate`` (the loss as the mean of the batches' losses) and the
same scalar summaries in ``eval_dir``. Evaluating the checkpoint file, not the live
variables, keeps what the best snapshot copies identical to what was evaluated; a run
stopped between the save and the evaluation's log entry is evaluated on resume
(``run_loop.Training.in_cycles``).
"""

import concurrent.futures
import dataclasses

import numpy as np

from library.configuration.config import ConfigError
from library.tensorflow_env import import_tensorflow
from library.training.hooks import ProgressBarHook

tf = import_tensorflow()
v1 = tf.compat.v1


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """How many steps make an epoch, a cycle between evaluations and the whole run."""

    examples: int
    images_per_step: int
    steps_per_epoch: int
    cycle_steps: int
    total_steps: int


def plan_training(settings, examples: int, images_per_step: int) -> TrainingPlan:
    """Step counts from the epoch options; an epoch drops its last partial batch."""
    steps_per_epoch = examples // images_per_step
    if steps_per_epoch == 0:
        raise ConfigError(f"train_batch_size: {settings.train_batch_size} is larger than the {examples} training images; lower it")
    return TrainingPlan(examples, images_per_step, steps_per_epoch,
                        settings.epochs_between_evals * steps_per_epoch, settings.train_epochs * steps_per_epoch)


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


class CyclesHook(tf.estimator.SessionRunHook):
    """Training cycles inside one ``Estimator.train`` call: a progress bar per cycle and, at the last step of every
    cycle but the run's last (Estimator saves that one itself), a checkpoint handed to ``on_cycle_end(checkpoint)``,
    which returns True to end training there (an early stop)."""

    def __init__(self, plan, checkpoint_prefix: str, on_cycle_end):
        """``plan``: a :class:`TrainingPlan`; ``checkpoint_prefix``: model_dir/model.ckpt, where Estimator saves."""
        self._plan, self._prefix, self._on_cycle_end = plan, checkpoint_prefix, on_cycle_end
        self._bar = None

    def after_create_session(self, session, coord):
        self._global_step = v1.train.get_global_step()
        self._saver = v1.get_collection(v1.GraphKeys.SAVERS)[0]  # the Scaffold's, which Estimator saves with
        self._start_bar(session, int(session.run(self._global_step)))

    def _start_bar(self, session, step: int) -> None:
        plan = self._plan
        target = min((step // plan.cycle_steps + 1) * plan.cycle_steps, plan.total_steps)
        self._bar = ProgressBarHook(step - step % plan.cycle_steps, target, plan.images_per_step,
                                    f"epochs {step // plan.steps_per_epoch}-{target // plan.steps_per_epoch}")
        self._bar.begin()
        self._bar.after_create_session(session, None)

    def before_run(self, run_context):
        return self._bar.before_run(run_context)

    def after_run(self, run_context, run_values):
        self._bar.after_run(run_context, run_values)
        # The global step fetched with the step may have been read before or after the train op incremented it;
        # near a cycle's end, read it again (as Estimator's CheckpointSaverHook does), so that no cycle is missed.
        step = int(run_values.results["step"]) + 1
        if step % self._plan.cycle_steps > 1:
            return
        step = int(run_context.session.run(self._global_step))  # the step just run
        if step % self._plan.cycle_steps or step >= self._plan.total_steps:
            return
        self._bar.close()
        checkpoint = self._saver.save(run_context.session, self._prefix, global_step=step, write_meta_graph=False)
        try:
            stop = self._on_cycle_end(checkpoint)
        except tf.errors.OutOfRangeError as error:  # the training session would take it for its input's end
            raise RuntimeError(f"evaluation of {checkpoint} failed: {error.message}") from error
        if stop:
            run_context.request_stop()
        else:
            self._start_bar(run_context.session, step)

    def close(self) -> None:
        """Close the current bar; also when training stops by an exception, so that the error starts a line."""
        if self._bar is not None:
            self._bar.close()


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
